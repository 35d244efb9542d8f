//! # A custom transport plugin: a logging, counting decorator around the REST transport
//!
//! ```text
//! cargo run --example custom_transport
//! ```
//!
//! A transport is any type implementing [`tidesync::Transport`]: `push` one outbox entry,
//! `pull` one page of changes, `fetch` one record, each a single attempt whose failures are
//! classified through [`tidesync::ErrorKind`] (the engine does the retrying, backoff and dead
//! letters). Wrapping an existing transport is the easy way to add cross-cutting behaviour:
//! logging, counting, tracing headers, request signing, a circuit breaker, a test double.
//!
//! `Logged<T>` prints every call with its duration and outcome and counts them; it delegates
//! everything to the wrapped transport — including the methods that have defaults
//! (`supports_batch`, `assigns_keys`, `push_batch`, `version_of`, `modified_at_ms`). Forgetting
//! one of those would silently change behaviour: without `version_of`, for example, the engine
//! would no longer know the version a record was based on, and stale writes would not be
//! detected; without `assigns_keys`, a table whose ids the server assigns could be pulled while
//! a create's answer is missing, and show the application two copies of one record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use async_trait::async_trait;
use serde_json::{Value, json};
use tidesync::core::{Fetched, PullPage, PullRequest, PushOutcome, PushRequest};
use tidesync::{Engine, Key, MemoryStore, Record, SyncSettings, TableSpec, Transport};
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{RestTransport, TableRoutes};

/// Call counters, shared between the decorator (owned by the engine) and the app.
#[derive(Debug, Default)]
struct Counters {
    pushes: AtomicU64,
    pulls: AtomicU64,
    fetches: AtomicU64,
    failures: AtomicU64,
}

/// Wraps any transport; logs and counts every call.
struct Logged<T> {
    inner: T,
    counters: Arc<Counters>,
}

impl<T> Logged<T> {
    /// Prints one line per call and counts failures.
    fn log<R>(&self, what: String, started: Instant, result: &tidesync::Result<R>) {
        let ms = started.elapsed().as_millis();
        match result {
            Ok(_) => println!("  [transport] {what} -> ok ({ms} ms)"),
            Err(err) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                println!("  [transport] {what} -> {} ({ms} ms)", err.kind().as_str());
            }
        }
    }
}

#[async_trait]
impl<T: Transport> Transport for Logged<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn push(&self, request: PushRequest) -> tidesync::Result<PushOutcome> {
        self.counters.pushes.fetch_add(1, Ordering::Relaxed);
        let what = format!(
            "push {} {}/{}",
            request.op.as_str(),
            request.table,
            request.key
        );
        let started = Instant::now();
        let result = self.inner.push(request).await;
        self.log(what, started, &result);
        result
    }

    // The defaulted methods: delegate them too, or the inner transport's behaviour is lost.
    fn supports_batch(&self, table: &str) -> bool {
        self.inner.supports_batch(table)
    }

    fn assigns_keys(&self, table: &str) -> bool {
        self.inner.assigns_keys(table)
    }

    async fn push_batch(
        &self,
        requests: Vec<PushRequest>,
    ) -> tidesync::Result<Vec<tidesync::Result<PushOutcome>>> {
        self.counters
            .pushes
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        let what = format!("push_batch of {}", requests.len());
        let started = Instant::now();
        let result = self.inner.push_batch(requests).await;
        self.log(what, started, &result);
        result
    }

    async fn pull(&self, request: PullRequest) -> tidesync::Result<PullPage> {
        self.counters.pulls.fetch_add(1, Ordering::Relaxed);
        let what = format!(
            "pull {} ({})",
            request.table,
            if request.cursor.is_some() {
                "from checkpoint"
            } else {
                "initial"
            }
        );
        let started = Instant::now();
        let result = self.inner.pull(request).await;
        match &result {
            Ok(page) => println!(
                "  [transport] {what} -> {} record(s), {} delete(s), more={} ({} ms)",
                page.records.len(),
                page.deleted.len(),
                page.has_more,
                started.elapsed().as_millis()
            ),
            Err(_) => self.log(what, started, &result),
        }
        result
    }

    async fn fetch(&self, table: &str, key: &Key) -> tidesync::Result<Option<Fetched>> {
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.inner.fetch(table, key).await;
        self.log(format!("fetch {table}/{key}"), started, &result);
        result
    }

    fn version_of(&self, table: &str, record: &Record) -> Option<String> {
        self.inner.version_of(table, record)
    }

    fn modified_at_ms(&self, table: &str, record: &Record) -> Option<i64> {
        self.inner.modified_at_ms(table, record)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = ReferenceServer::start().await;
    let rest = RestTransport::builder(server.url())
        .table("posts", TableRoutes::reference_server("posts"))
        .build()?;
    let counters = Arc::new(Counters::default());
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts"))
        .transport(Logged {
            inner: rest,
            counters: counters.clone(),
        })
        .settings(SyncSettings {
            sync_on_start: false,
            interval: None,
            debounce: Duration::from_secs(600), // this demo calls sync() itself
            ..SyncSettings::default()
        })
        .start()?;
    let posts = engine.table::<Value>("posts")?;

    println!("1. two local posts, then sync()");
    posts.put(&json!({"id": "a", "title": "first"})).await?;
    posts.put(&json!({"id": "b", "title": "second"})).await?;
    let report = engine.sync().await?;
    println!(
        "   pushed {}, pulled {} page(s)",
        report.pushed, report.pages
    );

    println!("2. another client creates a post on the server, then sync()");
    server.insert_direct("posts", json!({"id": "c", "title": "from elsewhere"}))?;
    let report = engine.sync().await?;
    println!("   applied {} remote change(s)", report.applied);

    println!("3. a stale local edit (the server moved on): the decorator sees the 409");
    server.update_direct("posts", "a", json!({"title": "edited elsewhere"}))?;
    posts.update("a", json!({"title": "edited here"})).await?;
    let report = engine.sync().await?;
    println!("   conflicts resolved: {} (server wins)", report.conflicts);

    let (pushes, pulls, fetches, failures) = (
        counters.pushes.load(Ordering::Relaxed),
        counters.pulls.load(Ordering::Relaxed),
        counters.fetches.load(Ordering::Relaxed),
        counters.failures.load(Ordering::Relaxed),
    );
    println!("counters: pushes={pushes} pulls={pulls} fetches={fetches} failures={failures}");
    // Every request the engine made went through the decorator: compare with the server's log.
    let writes = server
        .request_log()
        .iter()
        .filter(|r| r.method != "GET")
        .count() as u64;
    ensure!(
        pushes == writes,
        "pushes {pushes} != server writes {writes}"
    );
    ensure!(
        pushes == 3 && failures == 1,
        "expected 3 pushes, one refused"
    );
    ensure!(pulls >= 3);
    let local_c = posts.get("c").await?.context("c pulled")?;
    ensure!(local_c["title"] == "from elsewhere");
    let local_a = posts.get("a").await?.context("a")?;
    ensure!(local_a["title"] == "edited elsewhere", "server wins");

    engine.shutdown();
    println!("Done.");
    Ok(())
}
