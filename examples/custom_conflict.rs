//! # A custom conflict strategy plugin
//!
//! ```text
//! cargo run --example custom_conflict
//! ```
//!
//! A conflict strategy is any type implementing [`tidesync::ConflictStrategy`]: given the
//! conflict — the `base` both sides last agreed on, the `local` and the `remote` versions, and
//! how it was detected — it returns a [`Resolution`]: take the remote version, keep the local
//! one, a merged record, or park it for the app to settle later.
//!
//! This one, `MergeTags`, merges the tag lists of both versions and keeps the longer title.
//! It is wired to a table with `.conflicts("posts", MergeTags)` and then demonstrated with a
//! real conflict against the reference server: the server and this device both edit the same
//! post; the push is refused with 409; the strategy merges; the merged record is pushed.
//!
//! Ready-made strategies live in `tidesync-conflict-policies` (server-wins, client-wins,
//! last-write-wins, park, closures with `strategy_fn`) and `tidesync-conflict-merge`
//! (field-level three-way merge).

use std::time::Duration;

use anyhow::{Context, ensure};
use async_trait::async_trait;
use serde_json::{Value, json};
use tidesync::{
    Conflict, ConflictStrategy, Engine, MemoryStore, Record, Resolution, SyncEvent, SyncSettings,
    TableSpec,
};
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{RestTransport, TableRoutes};

/// Merges the `tags` of both sides (local order first, no duplicates) and keeps the longer
/// `title`. Every other field comes from the remote version, so server-owned fields (its
/// `version`, `updatedAt`) are current. Deletes on either side: the server wins.
#[derive(Debug, Clone, Copy)]
struct MergeTags;

#[async_trait]
impl ConflictStrategy for MergeTags {
    fn name(&self) -> &str {
        "merge_tags" // shows up in events, logs and metrics
    }

    async fn resolve(&self, conflict: &Conflict) -> tidesync::Result<Resolution> {
        let (Some(local), Some(remote)) = (&conflict.local, &conflict.remote) else {
            return Ok(Resolution::TakeRemote);
        };
        let mut merged: Record = remote.clone();

        let mut tags: Vec<Value> = Vec::new();
        for tag in [local, remote].into_iter().flat_map(tags_of) {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        merged.insert("tags".into(), Value::Array(tags));

        let title = |r: &Record| {
            r.get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let longest = [title(local), title(remote)]
            .into_iter()
            .max_by_key(|t| t.chars().count())
            .unwrap_or_default();
        merged.insert("title".into(), Value::String(longest));

        Ok(Resolution::Merged(merged))
    }
}

fn tags_of(record: &Record) -> &[Value] {
    record
        .get("tags")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = ReferenceServer::start().await;
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts"))
        .transport(
            RestTransport::builder(server.url())
                .table("posts", TableRoutes::reference_server("posts"))
                .build()?,
        )
        .conflicts("posts", MergeTags) // <- the plugin
        .settings(SyncSettings {
            sync_on_start: false,
            interval: None,
            debounce: Duration::from_secs(600), // this demo calls sync() itself
            ..SyncSettings::default()
        })
        .start()?;
    let posts = engine.table::<Value>("posts")?;

    posts
        .put(&json!({"id": "p1", "title": "Tides", "tags": ["rust"]}))
        .await?;
    engine.sync().await?;
    println!("synced:   {}", server.record("posts", "p1").context("p1")?);

    // Both sides edit the same post from version 1.
    server.update_direct(
        "posts",
        "p1",
        json!({"title": "Tides and syncs", "tags": ["rust", "sync"]}),
    )?;
    posts
        .update(
            "p1",
            json!({"title": "Tides!", "tags": ["rust", "offline"]}),
        )
        .await?;
    println!("server:   title=\"Tides and syncs\" tags=[rust, sync]");
    println!("local:    title=\"Tides!\" tags=[rust, offline]");

    let mut events = engine.events();
    // The push is refused (409: the server is at version 2), MergeTags decides, and the merged
    // record is queued against version 2. Sync until it is pushed.
    for _ in 0..3 {
        engine.sync().await?;
        if engine.outbox(None, 1)?.is_empty() {
            break;
        }
    }
    let event = events
        .wait_for(Duration::from_secs(2), |e| {
            matches!(e, SyncEvent::Conflict { .. })
        })
        .await
        .context("a conflict event")?;
    if let SyncEvent::Conflict {
        key,
        detected_by,
        strategy,
        outcome,
        ..
    } = &event
    {
        println!(
            "conflict: posts/{key} detected by {}, strategy {strategy} -> {outcome}",
            detected_by.as_str()
        );
        ensure!(strategy == "merge_tags" && outcome == "merged");
    }

    let on_server = server.record("posts", "p1").context("p1 on the server")?;
    let local = posts.get("p1").await?.context("p1 locally")?;
    println!("server:   {on_server}");
    println!("local:    {}", Value::Object(strip(&local)));
    ensure!(on_server["title"] == "Tides and syncs");
    ensure!(on_server["tags"] == json!(["rust", "offline", "sync"]));
    ensure!(on_server["version"] == 3, "the merged record was pushed");
    ensure!(local["title"] == on_server["title"] && local["tags"] == on_server["tags"]);
    ensure!(engine.outbox(None, 10)?.is_empty());

    engine.shutdown();
    println!("Done: both tag lists kept, the longer title kept, on both sides.");
    Ok(())
}

/// The record's title and tags, for a short printout.
fn strip(record: &Value) -> serde_json::Map<String, Value> {
    ["id", "title", "tags", "version"]
        .iter()
        .filter_map(|f| record.get(*f).map(|v| ((*f).to_owned(), v.clone())))
        .collect()
}
