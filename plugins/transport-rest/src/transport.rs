//! The [`Transport`] implementation.

use async_trait::async_trait;
use serde_json::Value;
use tidesync_core::{
    Error, Fetched, Key, PullPage, PullRequest, PushOutcome, PushRequest, Record, Result,
    TableSpec, Transport,
};

use crate::client::RestTransport;
use crate::routes::TableRoutes;

#[async_trait]
impl Transport for RestTransport {
    fn name(&self) -> &str {
        "rest"
    }

    async fn push(&self, request: PushRequest) -> Result<PushOutcome> {
        self.push_one(&request).await
    }

    fn check_table(&self, spec: &TableSpec) -> Result<()> {
        if !spec.push && !spec.pull {
            return Ok(());
        }
        match self.config.tables.get(&spec.name) {
            Some(routes) => routes.check_spec(spec),
            None => Err(Error::config(
                "the table syncs (push or pull) but the REST transport has no routes for it",
            )
            .table(&spec.name)),
        }
    }

    fn supports_batch(&self, table: &str) -> bool {
        self.config
            .tables
            .get(table)
            .is_some_and(TableRoutes::has_bulk)
    }

    fn reconcile_every(&self, table: &str) -> Option<std::time::Duration> {
        self.config.tables.get(table)?.reconcile_every
    }

    fn assigns_keys(&self, table: &str) -> bool {
        self.config
            .tables
            .get(table)
            .is_some_and(|routes| routes.server_ids)
    }

    async fn push_batch(&self, requests: Vec<PushRequest>) -> Result<Vec<Result<PushOutcome>>> {
        let bulk = requests
            .first()
            .is_some_and(|first| self.supports_batch(&first.table));
        if bulk {
            return self.push_bulk(&requests).await;
        }
        let mut results = Vec::with_capacity(requests.len());
        for request in &requests {
            results.push(self.push_one(request).await);
        }
        Ok(results)
    }

    async fn pull(&self, request: PullRequest) -> Result<PullPage> {
        self.pull_page(&request).await
    }

    async fn fetch(&self, table: &str, key: &Key) -> Result<Option<Fetched>> {
        self.fetch_one(table, key).await
    }

    fn modified_at_ms(&self, table: &str, record: &Record) -> Option<i64> {
        let feed = self.config.tables.get(table)?.pull.as_ref()?;
        let field = feed.cursor_field.as_ref()?;
        let ns = feed.timestamp.parse(record.get(field)?)?;
        i64::try_from(ns / 1_000_000).ok()
    }

    fn live(&self) -> Option<std::sync::Arc<dyn tidesync_core::live::LiveChannel>> {
        let config = self.config.live.clone()?;
        let client = self.live_client.clone()?;
        Some(std::sync::Arc::new(crate::live::RestLive::new(
            self.clone(),
            config,
            client,
        )))
    }

    fn pull_before_push(&self, table: &str) -> bool {
        self.config
            .tables
            .get(table)
            .is_some_and(|routes| routes.conflict_detection.pulls_first())
    }

    fn version_of(&self, table: &str, record: &Record) -> Option<String> {
        let field = self.config.tables.get(table)?.version.field.as_ref()?;
        match record.get(field)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}
