//! # Prometheus metrics
//!
//! ```text
//! cargo run --example prometheus
//! ```
//!
//! The engine reports through the [`metrics`](https://docs.rs/metrics) facade; without a
//! recorder that costs next to nothing. `tidesync-metrics-prometheus` installs a Prometheus
//! recorder and serves `GET /metrics` (loopback only unless told otherwise). Here it listens
//! on `127.0.0.1:0` (a free port), the engine syncs against the reference server, and the
//! example scrapes `/metrics` over HTTP as Prometheus would and prints the `tidesync_` series.
//!
//! In an app: install the recorder once, early (before starting the engine), on a fixed port
//! (the default is `127.0.0.1:9187`), and point Prometheus at it. Metric names and their
//! meaning: `tidesync_actors::telemetry` and `docs/observability.md`.

use std::time::Duration;

use anyhow::ensure;
use serde_json::{Value, json};
use tidesync::{Engine, MemoryStore, SyncSettings, TableSpec};
use tidesync_metrics_prometheus::PrometheusMetrics;
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{RestTransport, TableRoutes};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The recorder first: metrics recorded before it is installed are lost.
    let metrics = PrometheusMetrics::builder()
        .listen("127.0.0.1:0".parse()?)
        .global_label("app", "prometheus-example")
        // Help texts and units of every tidesync metric.
        .describe_with(tidesync::actors::telemetry::describe_all)
        .install()?;
    println!("1. /metrics served at {}", metrics.url());

    // 2. An engine, and some sync traffic.
    let server = ReferenceServer::start().await;
    let transport = RestTransport::builder(server.url())
        .table("posts", TableRoutes::reference_server("posts"))
        .build()?; // also installs rustls' `ring` provider, which the scrape below uses
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(SyncSettings {
            sync_on_start: false,
            interval: None,
            debounce: Duration::from_secs(600),
            ..SyncSettings::default()
        })
        .start()?;
    let posts = engine.table::<Value>("posts")?;
    for i in 1..=3 {
        posts
            .put(&json!({"id": format!("p{i}"), "title": format!("post {i}")}))
            .await?;
    }
    server.insert_direct("posts", json!({"id": "remote", "title": "from the server"}))?;
    let report = engine.sync().await?;
    println!(
        "2. synced: pushed {}, applied {} remote record(s)",
        report.pushed, report.applied
    );

    // 3. Scrape, as Prometheus would.
    let response = reqwest::get(metrics.url()).await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await?;
    println!("3. GET /metrics -> {status} ({content_type})");
    let interesting = [
        "tidesync_push_total{",
        "tidesync_pull_total{",
        "tidesync_records_applied_total{",
        "tidesync_request_duration_seconds_count{",
        "tidesync_sync_cycle_duration_seconds_count{",
        "tidesync_store_commit_duration_seconds_count{",
        "tidesync_leader{",
    ];
    for line in text.lines() {
        if interesting.iter().any(|prefix| line.starts_with(prefix)) {
            println!("   {line}");
        }
    }
    let series = text.lines().filter(|l| l.starts_with("tidesync_")).count();
    println!("   … {series} tidesync_ series in all");

    ensure!(status.is_success(), "scrape failed: {status}");
    ensure!(
        text.contains("# HELP tidesync_push_total"),
        "descriptions missing"
    );
    ensure!(
        text.lines().any(|l| l.starts_with("tidesync_push_total{")
            && l.contains("outcome=\"acked\"")
            && l.ends_with(" 3")),
        "three acknowledged pushes should be counted"
    );
    ensure!(text.contains("tidesync_request_duration_seconds_bucket{"));
    // Every write reached the store through the writer's group commits: the three puts each
    // committed alone (each awaited before the next), then the sync's own commits.
    let commits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tidesync_store_commit_duration_seconds_count{"))
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    ensure!(
        commits >= 4,
        "store commits should be counted: three writes and the sync, got {commits}"
    );

    engine.shutdown();
    metrics.shutdown();
    println!("Done.");
    Ok(())
}
