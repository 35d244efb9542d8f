//! Helpers shared by the integration tests.

use std::collections::BTreeSet;

use serde_json::Value;
use tidesync_core::{Key, Op, PullPage, PullRequest, PushRequest, Record, Transport};
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{RestTransport, TableRoutes};

/// A reference server without auth.
pub async fn server() -> ReferenceServer {
    ReferenceServer::builder().without_auth().start().await
}

/// A transport with one table.
pub fn transport(server: &ReferenceServer, table: &str, routes: TableRoutes) -> RestTransport {
    RestTransport::builder(server.url())
        .request_timeout(std::time::Duration::from_secs(5))
        .table(table, routes)
        .build()
        .expect("valid routes")
}

/// A JSON object as a record.
pub fn rec(value: Value) -> Record {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A push request.
pub fn push(table: &str, op: Op, key: impl Into<Key>, record: Option<Value>) -> PushRequest {
    let key = key.into();
    PushRequest {
        table: table.to_owned(),
        idempotency_key: format!("idem-{table}-{key}-{}", op.as_str())
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect(),
        key,
        op,
        record: record.map(rec),
        changed: Vec::new(),
        base_version: None,
        epoch: None,
    }
}

/// Everything one pull cycle returned.
#[derive(Debug, Default)]
pub struct Drained {
    /// Changed records' ids (as strings), in order.
    pub changed: Vec<String>,
    /// Deleted keys (as strings).
    pub deleted: Vec<String>,
    /// The final cursor.
    pub cursor: Option<Value>,
    /// Every page.
    pub pages: Vec<PullPage>,
}

impl Drained {
    /// The changed ids as a set.
    pub fn changed_set(&self) -> BTreeSet<String> {
        self.changed.iter().cloned().collect()
    }
}

/// Pulls until `has_more` is false.
pub async fn drain(
    t: &dyn Transport,
    table: &str,
    cursor: Option<Value>,
    page_size: usize,
) -> anyhow::Result<Drained> {
    let mut out = Drained {
        cursor,
        ..Drained::default()
    };
    for _ in 0..300 {
        let page = t
            .pull(PullRequest {
                table: table.to_owned(),
                cursor: out.cursor.clone(),
                page_size,
            })
            .await?;
        for r in &page.records {
            out.changed.push(key_text(r.get("id")));
        }
        out.deleted
            .extend(page.deleted.iter().map(ToString::to_string));
        out.cursor = page.cursor.clone();
        let more = page.has_more;
        out.pages.push(page);
        if !more {
            return Ok(out);
        }
    }
    anyhow::bail!("pull did not finish")
}

/// A key value as text.
pub fn key_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "<none>".into(),
    }
}

/// Seeds `n` records `{prefix}{i}` directly on the server.
pub fn seed(server: &ReferenceServer, table: &str, prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}{i:03}");
            server
                .insert_direct(table, serde_json::json!({"id": id, "n": i}))
                .expect("seed");
            id
        })
        .collect()
}
