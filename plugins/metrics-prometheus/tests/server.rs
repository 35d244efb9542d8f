//! The `/metrics` endpoint without a global recorder: address policy, routing, runtimes,
//! options and shutdown. Tests run in parallel, each with its own recorder and port.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::Method;
use tidesync_metrics_prometheus::{
    CONTENT_TYPE_TEXT, Error, Matcher, PrometheusMetrics, PrometheusMetricsBuilder,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

fn loopback() -> PrometheusMetricsBuilder {
    PrometheusMetrics::builder().listen(addr("127.0.0.1:0"))
}

/// Serves a recorder holding one gauge.
fn serve(builder: &PrometheusMetricsBuilder) -> PrometheusMetrics {
    let (recorder, handle) = builder.build_recorder().expect("a recorder");
    metrics::with_local_recorder(&recorder, || {
        tidesync_actors::telemetry::describe_all();
        metrics::gauge!(tidesync_actors::telemetry::ONLINE).set(1.0);
    });
    builder.serve(handle).expect("serve")
}

async fn wait_until_closed(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn non_loopback_addresses_are_refused_without_the_opt_in() {
    for a in [
        "0.0.0.0:0",
        "0.0.0.0:9187",
        "[::]:0",
        "192.0.2.1:9187",
        "[::ffff:10.0.0.1]:1",
    ] {
        let builder = PrometheusMetrics::builder().listen(addr(a));
        let handle = builder.build_recorder().expect("a recorder").1;
        match builder.serve(handle) {
            Err(err @ Error::NonLoopbackAddress { .. }) => {
                let message = err.to_string();
                assert!(message.contains(a), "{message}");
                assert!(message.contains("allow_non_loopback(true)"), "{message}");
            }
            other => panic!("{a}: expected NonLoopbackAddress, got {other:?}"),
        }
        // install() refuses before touching the global recorder.
        assert!(matches!(
            builder.install(),
            Err(Error::NonLoopbackAddress { .. })
        ));
    }
}

#[test]
fn the_opt_in_allows_all_interfaces() {
    let server = serve(
        &PrometheusMetrics::builder()
            .listen(addr("0.0.0.0:0"))
            .allow_non_loopback(true),
    );
    assert!(server.local_addr().ip().is_unspecified());
    let url = format!("http://127.0.0.1:{}/metrics", server.local_addr().port());
    let got = common::fetch_blocking(Method::GET, &url);
    assert_eq!(got.status, 200);
    assert!(got.body.contains("tidesync_online 1\n"), "{}", got.body);
    server.shutdown();
}

#[test]
fn the_default_address_is_loopback_9187() {
    assert_eq!(
        tidesync_metrics_prometheus::DEFAULT_LISTEN_ADDR,
        addr("127.0.0.1:9187")
    );
}

/// Inside a current-thread runtime (what `#[tokio::test]` gives) the endpoint runs as tasks.
#[tokio::test]
async fn routes_inside_a_current_thread_runtime() {
    let server = serve(&loopback());
    let url = server.url();

    let ok = common::fetch(Method::GET, &url).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.content_type, CONTENT_TYPE_TEXT);
    assert!(
        ok.body.contains("# TYPE tidesync_online gauge\n"),
        "{}",
        ok.body
    );
    assert_eq!(ok.body, server.render());

    let query = common::fetch(Method::GET, &format!("{url}?name[]=x")).await;
    assert_eq!(query.status, 200);

    let head = common::fetch(Method::HEAD, &url).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    for path in ["/", "/metrics/", "/metricsx", "/health", "/metrics/extra"] {
        let got = common::fetch(Method::GET, &common::with_path(&url, path)).await;
        assert_eq!(got.status, 404, "{path}");
        assert!(!got.body.contains("tidesync_"), "{path} leaked metrics");
    }
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let got = common::fetch(method.clone(), &url).await;
        assert_eq!(got.status, 405, "{method}");
        assert_eq!(got.allow, "GET, HEAD");
    }

    let addr = server.local_addr();
    server.shutdown();
    wait_until_closed(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_inside_a_multi_thread_runtime() {
    let server = serve(&loopback());
    let got = common::fetch(Method::GET, &server.url()).await;
    assert_eq!(got.status, 200);
    let addr = server.local_addr();
    server.shutdown();
    wait_until_closed(addr).await;
}

/// The engine's runtime: an actix System (a current-thread tokio runtime with a LocalSet).
#[actix_rt::test]
async fn serves_inside_an_actix_system() {
    let server = serve(&loopback());
    let got = common::fetch(Method::GET, &server.url()).await;
    assert_eq!(got.status, 200);
    assert!(got.body.contains("tidesync_online 1\n"));
    let addr = server.local_addr();
    server.shutdown();
    wait_until_closed(addr).await;
}

#[tokio::test]
async fn dedicated_thread_inside_a_runtime() {
    let server = serve(&loopback().dedicated_thread(true));
    let got = common::fetch(Method::GET, &server.url()).await;
    assert_eq!(got.status, 200);
    let addr = server.local_addr();
    // With its own thread, shutdown returns once the port is closed.
    server.shutdown();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn outside_a_runtime_it_runs_on_its_own_thread() {
    let server = serve(&loopback());
    let got = common::fetch_blocking(Method::GET, &server.url());
    assert_eq!(got.status, 200);
    assert!(got.body.contains("tidesync_online 1\n"));
    let addr = server.local_addr();
    server.shutdown();
    assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts");
}

#[test]
fn a_busy_address_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("an address");
    let builder = PrometheusMetrics::builder().listen(busy);
    let handle = builder.build_recorder().expect("a recorder").1;
    match builder.serve(handle) {
        Err(err @ Error::AddressInUse { .. }) => {
            let message = err.to_string();
            assert!(message.contains(&busy.to_string()), "{message}");
            assert!(message.contains("already in use"), "{message}");
        }
        other => panic!("expected AddressInUse, got {other:?}"),
    }
}

#[test]
fn invalid_options_are_refused() {
    for builder in [
        loopback().buckets(&[]),
        loopback().buckets(&[0.1, f64::NAN]),
        loopback().buckets(&[1.0, 0.5]),
        loopback().buckets_for(Matcher::Full("x_bytes".into()), &[10.0, 10.0]),
    ] {
        assert!(
            matches!(builder.build_recorder(), Err(Error::InvalidBuckets { .. })),
            "{builder:?}"
        );
    }
    let zero = loopback().upkeep_every(Duration::ZERO);
    let handle = zero.build_recorder().expect("a recorder").1;
    assert!(matches!(zero.serve(handle), Err(Error::InvalidOption(_))));
}

#[test]
fn buckets_and_global_labels() {
    let (recorder, handle) = PrometheusMetrics::builder()
        .buckets(&[0.1, 1.0])
        .buckets_for(Matcher::Full("payload_bytes".into()), &[100.0, 1000.0])
        .global_label("app", "inventory")
        .build_recorder()
        .expect("a recorder");
    metrics::with_local_recorder(&recorder, || {
        metrics::histogram!("tidesync_request_duration_seconds", "table" => "t", "kind" => "push")
            .record(0.5);
        metrics::histogram!("payload_bytes").record(150.0);
        metrics::histogram!("no_buckets_ratio").record(0.5);
        metrics::counter!("tidesync_push_total", "app" => "mine").increment(1);
    });
    let text = handle.render();
    for line in [
        "tidesync_request_duration_seconds_bucket{app=\"inventory\",table=\"t\",kind=\"push\",le=\"0.1\"} 0\n",
        "tidesync_request_duration_seconds_bucket{app=\"inventory\",table=\"t\",kind=\"push\",le=\"1\"} 1\n",
        "payload_bytes_bucket{app=\"inventory\",le=\"1000\"} 1\n",
        "# TYPE no_buckets_ratio summary\n",
        // A label set on the metric wins over the global one.
        "tidesync_push_total{app=\"mine\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

/// The store writer's histograms keep their sub-millisecond buckets when the host changes the
/// `_seconds` default, and take the host's own when it names them.
#[test]
fn store_histograms_have_their_own_buckets() {
    // A 700 µs commit, rendered by a recorder from `builder`.
    let render = |builder: PrometheusMetricsBuilder| {
        let (recorder, handle) = builder.build_recorder().expect("a recorder");
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!(tidesync_actors::telemetry::STORE_COMMIT_SECONDS).record(0.0007);
        });
        handle.render()
    };
    let text = render(PrometheusMetrics::builder().buckets(&[0.1, 1.0]));
    assert!(
        text.contains("tidesync_store_commit_duration_seconds_bucket{le=\"0.001\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("tidesync_store_commit_duration_seconds_bucket{le=\"0.1\"} 0\n"));

    let text = render(PrometheusMetrics::builder().buckets_for(
        Matcher::Prefix(tidesync_metrics_prometheus::STORE_METRICS_PREFIX.into()),
        &[0.01, 1.0],
    ));
    assert!(
        text.contains("tidesync_store_commit_duration_seconds_bucket{le=\"0.01\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("le=\"0.001\""), "{text}");
}
