//! The exposition text of every tidesync metric, compared with `tests/snapshots/exposition.txt`
//! so that a rename, a new label or a changed help text is a deliberate, reviewed change.
//!
//! Update after a deliberate change:
//! `UPDATE_SNAPSHOTS=1 cargo test -p tidesync-metrics-prometheus --test snapshot`

mod common;

use tidesync_metrics_prometheus::PrometheusMetrics;

fn render_everything() -> String {
    let (recorder, handle) = PrometheusMetrics::builder()
        .build_recorder()
        .expect("a recorder");
    metrics::with_local_recorder(&recorder, common::record_every_metric);
    handle.render()
}

#[test]
fn exposition_matches_the_snapshot() {
    let text = render_everything();
    common::assert_snapshot(&common::normalise(&text), true);
}

#[test]
fn every_metric_is_exposed_with_its_type_and_help() {
    let text = render_everything();
    for d in common::described() {
        assert!(
            text.contains(&format!("# HELP {} {}\n", d.name, d.help)),
            "missing help of {}",
            d.name
        );
        assert!(
            text.contains(&format!("# TYPE {} {}\n", d.name, d.kind)),
            "{} should be a {}",
            d.name,
            d.kind
        );
    }
}

/// The unit lives in the name (the exporter puts no unit in the text format), so the unit given
/// to `describe_*!` and the name's suffix must agree; counters end in `_total` and nothing
/// else does.
#[test]
fn names_follow_prometheus_conventions() {
    for d in common::described() {
        let suffix = match d.unit.as_deref() {
            None => None,
            Some("Seconds") => Some("_seconds"),
            Some("Bytes") => Some("_bytes"),
            Some(other) => panic!("{}: add a suffix check for Unit::{other}", d.name),
        };
        match suffix {
            Some(suffix) => assert!(d.name.ends_with(suffix), "{} needs {suffix}", d.name),
            None => assert!(
                !d.name.ends_with("_seconds") && !d.name.ends_with("_bytes"),
                "{} has a unit suffix but no unit in describe_all",
                d.name
            ),
        }
        assert!(d.name.starts_with("tidesync_"), "{}", d.name);
        assert_eq!(
            d.name.ends_with("_total"),
            d.kind == "counter",
            "{}: only counters end in _total",
            d.name
        );
    }
}

#[test]
fn seconds_histograms_are_real_histograms() {
    let text = render_everything();
    for d in common::described().iter().filter(|d| d.kind == "histogram") {
        assert!(
            text.contains(&format!("{}_bucket{{", d.name)),
            "{} has no buckets",
            d.name
        );
        assert!(!text.contains("quantile="), "a summary was rendered");
    }
    // 30 ms lands in the 0.05 bucket, not in 0.025.
    assert!(text.contains(
        "tidesync_request_duration_seconds_bucket{table=\"todos\",kind=\"push\",le=\"0.025\"} 0\n"
    ));
    assert!(text.contains(
        "tidesync_request_duration_seconds_bucket{table=\"todos\",kind=\"push\",le=\"0.05\"} 1\n"
    ));
    assert!(text.contains(
        "tidesync_request_duration_seconds_bucket{table=\"todos\",kind=\"push\",le=\"+Inf\"} 1\n"
    ));
    assert!(text.contains("tidesync_sync_cycle_duration_seconds_count{outcome=\"failed\"} 1\n"));
    // The store writer's histograms have sub-millisecond buckets: a 700 µs commit lands in
    // 0.001, not in 0.0005 (nor in the sync metrics' first bucket, 0.005).
    assert!(text.contains("tidesync_store_commit_duration_seconds_bucket{le=\"0.0005\"} 0\n"));
    assert!(text.contains("tidesync_store_commit_duration_seconds_bucket{le=\"0.001\"} 1\n"));
    assert!(text.contains("tidesync_store_queue_wait_seconds_bucket{le=\"0.0001\"} 1\n"));
}

#[test]
fn normalise_is_order_independent() {
    let a = "# TYPE b counter\nb{x=\"2\"} 1\nb{x=\"1\"} 5\n\n# TYPE a gauge\na 3\n\n";
    let b = "# TYPE a gauge\na 4\n\n# TYPE b counter\nb{x=\"1\"} 9\nb{x=\"2\"} 0\n\n";
    assert_eq!(common::normalise(a), common::normalise(b));
    assert_eq!(
        common::normalise(a),
        "# TYPE a gauge\na <v>\n\n# TYPE b counter\nb{x=\"1\"} <v>\nb{x=\"2\"} <v>\n\n"
    );
}
