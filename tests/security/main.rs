//! Security checks (issue 8):
//! - credentials (bearer tokens, secret headers) never show in logs (a `tracing` subscriber at
//!   TRACE level writing to a buffer), errors, events, status, outbox entries, dead letters,
//!   `/metrics`, or the bytes of the store file;
//! - the Prometheus endpoint refuses non-loopback addresses unless opted in;
//! - TLS verification cannot be switched off: the REST transport has no such option, and an
//!   `https://` base URL against a plain-HTTP server fails instead of falling back.
//!
//! Limits: only `tracing` events are captured. Dependencies that log through the `log` crate
//! (reqwest, rustls) are not seen here (the workspace's `tracing-subscriber` has no
//! `tracing-log` bridge); the transport marks auth header values sensitive, which is what
//! keeps them out of `http`'s and reqwest's own `Debug` output.
//!
//! Dependency policy (licenses, bans, sources) is `cargo deny --offline check licenses bans
//! sources`, run by CI (`.ci/run`), see docs/reliability.md.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tidesync::{Engine, ErrorKind, EventItem, MemoryStore, RedbStore, SyncSettings, TableSpec};
use tidesync_testkit::server::{FaultFilter, FaultKind, ReferenceServer, ServerHandle};
use tidesync_transport_rest::{RestConfig, RestTransport, StaticAuth, TableRoutes};

// ----- log capture ---------------------------------------------------------------------------

/// Everything every `tracing` event of this process wrote, at TRACE level.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static CAPTURE: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
            let sink = buffer.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || Sink(sink.clone()))
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            buffer
        })
        .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// Fails if any of `secrets` occurs in `haystack`.
fn assert_secret_free(what: &str, haystack: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !haystack.contains(secret),
            "a secret leaked into {what}: …{}…",
            context_of(haystack, secret)
        );
    }
}

fn context_of(haystack: &str, needle: &str) -> String {
    let at = haystack.find(needle).unwrap_or(0);
    let start = haystack[..at]
        .char_indices()
        .rev()
        .nth(80)
        .map_or(0, |(i, _)| i);
    haystack[start..].chars().take(needle.len() + 160).collect()
}

// ----- set-up --------------------------------------------------------------------------------

fn settings() -> SyncSettings {
    SyncSettings {
        interval: None,
        sync_on_start: false,
        debounce: Duration::from_secs(600),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        ..SyncSettings::default()
    }
}

fn engine(url: &str, auth: StaticAuth, store: impl tidesync::Store) -> Engine {
    let transport = RestTransport::builder(url)
        .table("posts", TableRoutes::reference_server("posts"))
        .auth(auth)
        .request_timeout(Duration::from_secs(3))
        .build()
        .expect("transport");
    Engine::builder()
        .store(store)
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(settings())
        .start()
        .expect("engine")
}

/// Everything the engine exposes about its state, as text.
fn exposed(engine: &Engine) -> String {
    let outbox = engine.outbox(None, usize::MAX).unwrap();
    let dead = engine.dead_letters(None).unwrap();
    format!(
        "{:?}\n{}\n{:?}\n{}\n{:?}",
        outbox,
        serde_json::to_string(&outbox).unwrap(),
        dead,
        serde_json::to_string(&dead).unwrap(),
        engine.status().unwrap()
    )
}

async fn drain_events(events: &mut tidesync::Events) -> String {
    let mut out = String::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await
    {
        if let EventItem::Event(event) = item {
            out.push_str(&format!(
                "{event:?} {}\n",
                serde_json::to_string(&event).unwrap()
            ));
        }
    }
    out
}

// ----- secrets -------------------------------------------------------------------------------

#[tokio::test]
async fn refused_credentials_leak_nowhere() {
    let logs = logs();
    const TOKEN: &str = "tok-REFUSED-4f9a2c7e51b3";
    const API_KEY: &str = "key-REFUSED-8d1e6b0a37c2";
    let server = ReferenceServer::builder()
        .auth(Duration::from_secs(60))
        .start()
        .await;
    let engine = engine(
        server.url(),
        StaticAuth::bearer(TOKEN).header("X-Api-Key", API_KEY),
        MemoryStore::new(),
    );
    let mut events = engine.events();
    let posts = engine.table::<Value>("posts").unwrap();
    posts
        .put(&json!({"id": "a1", "title": "hi"}))
        .await
        .unwrap();
    let err = engine
        .sync()
        .await
        .expect_err("the server refuses the token");
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(
        server.auth_rejections() >= 2,
        "refused, refreshed, refused again"
    );
    let status = engine.status().unwrap();
    assert!(status.auth_required);
    assert_eq!(
        engine.dead_letters(None).unwrap().len(),
        0,
        "auth is never a dead letter"
    );
    let seen = drain_events(&mut events).await;
    assert!(seen.contains("AuthRequired"), "{seen}");

    let secrets = [TOKEN, API_KEY];
    assert_secret_free("the error", &format!("{err} {err:?}"), &secrets);
    assert_secret_free("the engine's state", &exposed(&engine), &secrets);
    assert_secret_free("events", &seen, &secrets);
    let text = log_text();
    assert!(
        text.contains("tidesync rest request") && text.contains("credentials refused"),
        "the capture works (debug lines of the transport are there)"
    );
    assert_secret_free("the logs", &text, &secrets);
    drop(logs);
    engine.shutdown();
}

#[tokio::test]
async fn accepted_credentials_stay_out_of_dead_letters_and_the_store_file() {
    let _logs = logs();
    let server = ReferenceServer::builder()
        .auth(Duration::from_secs(60))
        .start()
        .await;
    let token = server.issue_token();
    const API_KEY: &str = "key-ACCEPTED-0c5b9e2f7a41";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secure.redb");
    let engine = engine(
        server.url(),
        StaticAuth::bearer(token.clone()).header("X-Api-Key", API_KEY),
        RedbStore::open(&path).unwrap(),
    );
    let posts = engine.table::<Value>("posts").unwrap();
    const MARKER: &str = "plain-record-data-7c3f";
    for i in 0..20 {
        posts
            .put(&json!({"id": format!("p{i}"), "title": MARKER}))
            .await
            .unwrap();
    }
    // One request refused for good (dead letter, with the request and the response kept), one
    // refused credential after the token expired (auth-required, entry kept).
    server.fail_next_where(FaultFilter::method("POST"), 1, FaultKind::status(422));
    engine.sync().await.unwrap();
    let dead = engine.dead_letters(None).unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].dead.as_ref().unwrap().response_excerpt.is_some());
    assert_eq!(server.records("posts").len(), 19);
    server.expire_all_tokens();
    posts.update("p1", json!({"title": "later"})).await.unwrap();
    let err = engine.sync().await.expect_err("expired");
    assert_eq!(err.kind(), ErrorKind::Auth);

    let secrets = [token.as_str(), API_KEY];
    assert_secret_free("dead letters and outbox", &exposed(&engine), &secrets);
    assert_secret_free("the logs", &log_text(), &secrets);
    engine.shutdown();
    drop(engine);
    let bytes = std::fs::read(&path).unwrap();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains(MARKER),
        "the store keeps record text as is (the grep works)"
    );
    for secret in secrets {
        assert!(
            !contains(secret),
            "a credential was written to the store file"
        );
    }
}

/// A server that answers every request with 400 and echoes the request's headers in the
/// body, as some debug error pages and proxies do.
fn echoing_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&request).into_owned();
            let body = json!({"error": "bad request", "echo": head}).to_string();
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    addr
}

/// BUG-6 (security). The transport keeps an excerpt of every error response (in the error,
/// then in the dead letter and the store). A server that echoes request headers in its error
/// body (debug error pages, some proxies) thus gets the bearer token stored in plain text in
/// the dead-letter queue, although DESIGN says secrets are never stored in dead letters. The
/// transport knows its credential values: it should redact them from excerpts.
#[tokio::test]

async fn bug6_credentials_echoed_by_the_server_are_stored_in_dead_letters() {
    const TOKEN: &str = "tok-ECHOED-93d0a7b2c6e1";
    let addr = echoing_server();
    let engine = engine(
        &format!("http://{addr}"),
        StaticAuth::bearer(TOKEN),
        MemoryStore::new(),
    );
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "e1"}))
        .await
        .unwrap();
    let _ = engine.push().await;
    let dead = engine.dead_letters(None).unwrap();
    assert_eq!(dead.len(), 1, "a 400 is a dead letter");
    assert_secret_free("the dead letter", &exposed(&engine), &[TOKEN]);
}

// ----- metrics endpoint ----------------------------------------------------------------------

#[test]
fn metrics_endpoint_refuses_non_loopback_addresses_without_opt_in() {
    use tidesync_metrics_prometheus::{Error, PrometheusMetrics};
    for addr in [
        "0.0.0.0:0",
        "[::]:0",
        "10.1.2.3:9187",
        "192.168.0.10:0",
        "8.8.8.8:80",
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        let builder = PrometheusMetrics::builder().listen(addr);
        let (_, handle) = builder.build_recorder().unwrap();
        let err = builder.serve(handle).expect_err("refused before binding");
        assert!(
            matches!(err, Error::NonLoopbackAddress { addr: a } if a == addr),
            "{addr}: {err}"
        );
        assert!(err.to_string().contains("allow_non_loopback"), "{err}");
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_loopback_without_credentials() {
    let _logs = logs();
    let metrics = tidesync_metrics_prometheus::PrometheusMetrics::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .install()
        .expect("the only recorder of this test binary");
    let server = ReferenceServer::builder()
        .auth(Duration::from_secs(60))
        .start()
        .await;
    let token = server.issue_token();
    let engine = engine(
        server.url(),
        StaticAuth::bearer(token.clone()),
        MemoryStore::new(),
    );
    let posts = engine.table::<Value>("posts").unwrap();
    posts.put(&json!({"id": "m1"})).await.unwrap();
    engine.sync().await.unwrap();
    server.expire_all_tokens();
    posts.put(&json!({"id": "m2"})).await.unwrap();
    let _ = engine.sync().await;

    let addr = metrics.local_addr();
    assert!(
        addr.ip().is_loopback(),
        "default listen address is loopback: {addr}"
    );
    let body = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("tidesync_"),
        "tidesync metrics are exported: {body}"
    );
    assert_secret_free("/metrics", &body, &[token.as_str()]);
    engine.shutdown();
    metrics.shutdown();
}

// ----- TLS -------------------------------------------------------------------------------------

#[test]
fn no_config_option_turns_certificate_verification_off() {
    for field in [
        "danger_accept_invalid_certs",
        "danger_accept_invalid_hostnames",
        "accept_invalid_certs",
        "insecure",
        "insecure_skip_verify",
        "tls_verify",
        "verify_tls",
        "tls",
        "ca_certificates",
    ] {
        for value in [json!(true), json!(false), json!({})] {
            let text = json!({"base_url": "https://api.example.com", field: value}).to_string();
            let err = RestConfig::from_json(&text).expect_err(field);
            assert!(
                err.to_string()
                    .contains(&format!("unknown field `{field}`")),
                "{field}: {err}"
            );
        }
    }
    // Nor in code: the transport never calls reqwest's or rustls' verification switches.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/transport-rest/src");
    let mut scanned = 0;
    let mut pending = vec![src];
    let mut files = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path); // e.g. live/: the WebSocket channel's TLS set-up
            } else {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for switch in [
            "danger_accept_invalid",
            "dangerous()",
            "ServerCertVerifier",
            "tls_built_in_root_certs(false)",
        ] {
            assert!(!text.contains(switch), "{} uses {switch}", path.display());
        }
        scanned += 1;
    }
    assert!(
        scanned >= 10,
        "scanned the transport's sources ({scanned} files)"
    );
}

async fn push_over_https_to(server: &ServerHandle) -> tidesync::Error {
    let url = server.url().replacen("http://", "https://", 1);
    let engine = engine(
        &url,
        StaticAuth::bearer("tok-tls-unused"),
        MemoryStore::new(),
    );
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "t1"}))
        .await
        .unwrap();
    let err = engine.push().await.expect_err("no TLS there");
    let entry = engine.outbox(None, 1).unwrap().pop().expect("still queued");
    assert!(
        entry.dead.is_none(),
        "a TLS failure is retried, not dead-lettered"
    );
    engine.shutdown();
    err
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_instead_of_downgrading() {
    let server = ReferenceServer::start().await;
    let err = push_over_https_to(&server).await;
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    assert!(
        server.records("posts").is_empty() && server.request_log().is_empty(),
        "nothing reached the server as HTTP"
    );
}
