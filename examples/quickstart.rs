//! # Quickstart: offline writes, sync, and a conflict, in one file
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! What it shows, step by step:
//!
//! 1. A REST API to sync with: the testkit's reference server, started in-process on a free
//!    port. In your app this is the API you already have.
//! 2. An engine on the default embedded store (redb, in a temporary directory), with one table,
//!    `posts`, read and written as a typed `Post` struct.
//! 3. Offline work: sync is *stopped* (`engine.stop()`, like airplane mode), yet writes go on.
//!    Each write lands in the durable outbox in the same transaction as the record, and edits
//!    of a record that has not been pushed yet coalesce: five writes, one outbox entry.
//! 4. Back online (`engine.start()` + `engine.sync()`): the entry is pushed, the server's copy
//!    (with its `version` and `updatedAt`) comes back into the local record.
//! 5. A conflict: another client edits the post on the server while we edit it locally. The
//!    push is refused (409), the table's strategy decides (server-wins by default), and the
//!    engine reports it as an event.
//! 6. The final state on both sides, then `status()` and `health()`.
//!
//! The example checks everything it prints: it exits non-zero if a claim does not hold.
//! Set `RUST_LOG=tidesync=debug` to see what the engine does underneath.

use std::time::Duration;

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tidesync::{Engine, HealthStatus, Op, RedbStore, SyncEvent, SyncSettings, TableSpec};
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{Feed, Filter, Pagination, RestTransport, TableRoutes, TimeFormat};

/// A post as the app sees it. Any serde type whose JSON form is an object works.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Post {
    /// The key. Left empty, the engine generates a UUIDv7 (client-generated ids make a
    /// retried create an idempotent upsert).
    #[serde(default)]
    id: String,
    title: String,
    #[serde(default)]
    tags: Vec<String>,
    /// Owned by the server: 1 on create, +1 on every change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

impl std::fmt::Display for Post {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "title={:?} tags={:?} version=", self.title, self.tags)?;
        match self.version {
            Some(version) => write!(f, "{version}"),
            None => f.write_str("(not synced)"),
        }
    }
}

/// How the reference server's `posts` collection looks over REST: `POST /api/posts`,
/// `PUT`/`DELETE /api/posts/{id}`, and a change feed `GET /api/posts?after_updated=…` read
/// with a gap-free keyset cursor. Describe your own API the same way (docs/rest-routes.md).
fn posts_routes() -> TableRoutes {
    TableRoutes::rest("/api/posts")
        .version_field("version")
        .pull(
            Feed::get("/api/posts")
                .query("after_updated", "{cursor}")
                .query("after_id", "{after_key}")
                .query("limit", "{limit}")
                .items("/data")
                .cursor_field("updatedAt", TimeFormat::EpochMs)
                .filter(Filter::Keyset)
                .pagination(Pagination::none().has_more("/hasMore"))
                .tombstone("deleted"),
        )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();

    // -- 1 ----------------------------------------------------------------------------------
    let server = ReferenceServer::start().await;
    println!("1. REST API (reference server) at {}", server.url());

    // -- 2 ----------------------------------------------------------------------------------
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.redb");
    let transport = RestTransport::builder(server.url())
        .table("posts", posts_routes())
        .build()?;
    let engine = Engine::builder()
        .store(RedbStore::open(&path)?)
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(SyncSettings {
            // This demo drives sync by hand so its output is always the same. An app keeps
            // the defaults: sync at start, every 30 s, and 250 ms after local writes.
            sync_on_start: false,
            interval: None,
            ..SyncSettings::default()
        })
        .start()?;
    let posts = engine.table::<Post>("posts")?;
    println!("2. Engine started on {}", path.display());

    // -- 3 ----------------------------------------------------------------------------------
    // Sync off: nothing reaches the server, but reads and writes work as usual.
    engine.stop()?;
    println!("3. Offline (sync stopped). Writing:");
    let key = posts
        .put(&Post {
            title: "Draft".into(),
            ..Post::default()
        })
        .await?;
    println!("   put     posts/{key} title=\"Draft\"");
    // Typed read-modify-write …
    let mut post = posts.get(key.clone()).await?.context("just written")?;
    post.title = "Hello, tidesync".into();
    posts.put(&post).await?;
    println!("   put     title=\"Hello, tidesync\"");
    // … or a JSON merge patch of just the changed fields.
    posts
        .update(key.clone(), json!({"tags": ["intro"]}))
        .await?;
    println!("   update  tags=[\"intro\"]");
    // A record created and deleted while offline never bothers the server.
    let scratch = posts
        .put(&Post {
            title: "scratch".into(),
            ..Post::default()
        })
        .await?;
    posts.delete(scratch.clone()).await?;
    println!("   put + delete posts/{scratch} (a scratch post)");

    let outbox = engine.outbox(Some("posts"), 10)?;
    println!("   outbox: {} entry for 5 writes (coalesced)", outbox.len());
    for entry in &outbox {
        let title = entry.record.as_ref().and_then(|r| r.get("title"));
        println!(
            "     #{} {} posts/{} title={}",
            entry.seq,
            entry.op.as_str(),
            entry.key,
            title.map(|t| t.to_string()).unwrap_or_default()
        );
    }
    ensure!(
        outbox.len() == 1,
        "expected one outbox entry, got {outbox:?}"
    );
    ensure!(outbox[0].op == Op::Create && outbox[0].key == key);
    ensure!(
        server.records("posts").is_empty(),
        "offline, yet the server has data"
    );
    println!("   server: 0 posts");

    // -- 4 ----------------------------------------------------------------------------------
    engine.start()?;
    let report = engine.sync().await?;
    println!(
        "4. Online: start() + sync() -> pushed {}, pulled {} page(s)",
        report.pushed, report.pages
    );
    let on_server = server
        .record("posts", key.to_string())
        .context("the post should be on the server")?;
    println!("   server: {on_server}");
    let local = posts.get(key.clone()).await?.context("local post")?;
    println!("   local:  {local}");
    ensure!(report.pushed == 1, "expected 1 pushed, got {report:?}");
    ensure!(on_server["title"] == "Hello, tidesync" && on_server["tags"] == json!(["intro"]));
    ensure!(server.record("posts", scratch.to_string()).is_none());
    ensure!(
        local.version == Some(1),
        "the server's version should be merged locally"
    );
    ensure!(engine.outbox(None, 10)?.is_empty());

    // -- 5 ----------------------------------------------------------------------------------
    println!("5. Conflict: both sides edit the title");
    let mut events = engine.events(); // subscribe before syncing
    let remote =
        server.update_direct("posts", key.to_string(), json!({"title": "Server title"}))?;
    println!(
        "   server: title=\"Server title\" (version {}, another client)",
        remote["version"]
    );
    posts
        .update(key.clone(), json!({"title": "Local title"}))
        .await?;
    println!("   local:  title=\"Local title\" (based on version 1)");
    let report = engine.sync().await?;
    println!("   sync() -> {} conflict(s)", report.conflicts);
    let event = events
        .wait_for(Duration::from_secs(2), |e| {
            matches!(e, SyncEvent::Conflict { .. })
        })
        .await
        .context("a conflict event")?;
    if let SyncEvent::Conflict {
        detected_by,
        strategy,
        outcome,
        ..
    } = &event
    {
        println!(
            "   event:  detected by {}, resolved by {strategy} -> {outcome}",
            detected_by.as_str()
        );
        ensure!(strategy == "server_wins" && outcome == "take_remote");
    }

    // -- 6 ----------------------------------------------------------------------------------
    let on_server = server
        .record("posts", key.to_string())
        .context("server post")?;
    let local = posts.get(key.clone()).await?.context("local post")?;
    println!("6. Final state");
    println!(
        "   server: title={} version={}",
        on_server["title"], on_server["version"]
    );
    println!("   local:  {local}");
    ensure!(on_server["title"] == "Server title" && on_server["version"] == 2);
    ensure!(local.title == "Server title" && local.version == Some(2));
    ensure!(engine.outbox(None, 10)?.is_empty(), "nothing left to push");
    println!(
        "   (change the strategy with .conflicts(\"posts\", …); see examples/custom_conflict.rs)"
    );

    let status = engine.status()?;
    println!(
        "   status: running={} online={} leader={} queue_depth={} dead_letters={} last_error={:?}",
        status.running,
        status.online,
        status.leader,
        status.queue_depth,
        status.dead_letters,
        status.last_error
    );
    let health = engine.health().await;
    println!("   health: {:?}", health.status);
    for check in &health.checks {
        let mark = if check.ok { "ok " } else { "!! " };
        println!("     {mark}{:<15} {}", check.name, check.detail);
    }
    ensure!(status.running && status.online && status.queue_depth == 0);
    ensure!(health.status == HealthStatus::Healthy, "{health:?}");

    engine.shutdown();
    println!("Done.");
    Ok(())
}

/// `RUST_LOG=tidesync=debug` shows the engine's logs (errors only by default).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
