//! Installs the global recorder (once per process, so this binary has a single test), records
//! through tidesync's telemetry helpers and scrapes `/metrics` over real HTTP.

mod common;

use std::net::TcpStream;

use reqwest::Method;
use tidesync_metrics_prometheus::{CONTENT_TYPE_TEXT, Error, PrometheusMetrics};

#[test]
fn install_serves_the_engine_metrics_over_http() {
    // Outside any runtime: the endpoint gets a thread of its own.
    let metrics = PrometheusMetrics::builder()
        .listen("127.0.0.1:0".parse().expect("an address"))
        .describe_with(tidesync_actors::telemetry::describe_all)
        .install()
        .expect("install");
    assert!(metrics.local_addr().ip().is_loopback());
    assert_ne!(metrics.local_addr().port(), 0);

    common::record_every_metric();

    let scraped = common::fetch_blocking(Method::GET, &metrics.url());
    assert_eq!(scraped.status, 200);
    assert_eq!(scraped.content_type, CONTENT_TYPE_TEXT);
    let body = scraped.body;

    // Names, types and help texts, exactly as telemetry.rs describes them.
    for d in common::described() {
        assert!(
            body.contains(&format!("# HELP {} {}\n", d.name, d.help)),
            "help of {} missing in:\n{body}",
            d.name
        );
        assert!(
            body.contains(&format!("# TYPE {} {}\n", d.name, d.kind)),
            "{} should be a {}",
            d.name,
            d.kind
        );
    }
    // Values and labels as the helpers record them.
    for line in [
        "tidesync_push_total{table=\"todos\",outcome=\"acked\"} 2\n",
        "tidesync_push_total{table=\"notes\",outcome=\"auth\"} 1\n",
        "tidesync_retries_total{class=\"rate_limited\"} 1\n",
        "tidesync_conflicts_total{table=\"todos\",strategy=\"server_wins\",path=\"push_rejected\",outcome=\"take_remote\"} 1\n",
        "tidesync_records_applied_total{table=\"todos\"} 25\n",
        "tidesync_pull_total{table=\"notes\",outcome=\"error\"} 1\n",
        "tidesync_outbox_depth{table=\"todos\"} 3\n",
        "tidesync_outbox_oldest_age_seconds{table=\"todos\"} 42.5\n",
        "tidesync_dead_letters_waiting 1\n",
        "tidesync_leader_epoch 4\n",
        "tidesync_request_duration_seconds_bucket{table=\"notes\",kind=\"push\",le=\"1\"} 0\n",
        "tidesync_request_duration_seconds_bucket{table=\"notes\",kind=\"push\",le=\"2.5\"} 1\n",
        "tidesync_request_duration_seconds_sum{table=\"notes\",kind=\"push\"} 2\n",
        "tidesync_sync_cycle_duration_seconds_bucket{outcome=\"failed\",le=\"60\"} 1\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in:\n{body}");
    }
    let skew: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("tidesync_clock_skew_seconds "))
        .and_then(|v| v.parse().ok())
        .expect("a clock skew sample");
    assert!(
        (1.0..=2.5).contains(&skew),
        "a skew of about 2 s, got {skew}"
    );

    // What went over HTTP is what the snapshot holds.
    common::assert_snapshot(&common::normalise(&body), false);

    // Only /metrics is served.
    let other = common::fetch_blocking(Method::GET, &common::with_path(&metrics.url(), "/"));
    assert_eq!(other.status, 404);
    let post = common::fetch_blocking(Method::POST, &metrics.url());
    assert_eq!(post.status, 405);
    assert_eq!(post.allow, "GET, HEAD");

    // A second global recorder is refused, and leaves nothing behind.
    let again = PrometheusMetrics::builder()
        .listen("127.0.0.1:0".parse().expect("an address"))
        .install();
    match again {
        Err(err @ Error::RecorderAlreadyInstalled) => {
            assert!(err.to_string().contains("already installed"), "{err}");
        }
        other => panic!("expected RecorderAlreadyInstalled, got {other:?}"),
    }

    // Shutdown closes the port (the endpoint has its own thread, so at once).
    let addr = metrics.local_addr();
    let handle = metrics.handle().clone();
    metrics.shutdown();
    assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts");
    // The recorder is still installed and still records.
    metrics::counter!(tidesync_actors::telemetry::DEAD_LETTERS_TOTAL, "table" => "todos")
        .increment(1);
    assert!(
        handle
            .render()
            .contains("tidesync_dead_letters_total{table=\"todos\"} 2\n")
    );
}
