//! Helpers shared by the test binaries (each uses a part of them).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use tidesync_actors::EngineState;
use tidesync_actors::telemetry;
use tidesync_core::ErrorKind;
use tidesync_core::hlc::wall_millis;

/// The source that defines every metric name, help text and unit.
pub const TELEMETRY_RS: &str = include_str!("../../../../crates/tidesync-actors/src/telemetry.rs");

/// The snapshot of the exposition text.
pub fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/exposition.txt")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `pub const NAME: &str = "value";` in telemetry.rs: constant name → metric name.
pub fn metric_constants() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in TELEMETRY_RS.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let Some((ident, value)) = rest.split_once(": &str = \"") else {
            continue;
        };
        let value = value
            .strip_suffix("\";")
            .unwrap_or_else(|| panic!("unexpected constant line: {line}"));
        out.insert(ident.trim().to_owned(), value.to_owned());
    }
    assert!(out.len() >= 10, "found too few metric constants: {out:?}");
    out
}

/// One `describe_*!` call of `describe_all`.
#[derive(Debug, Clone)]
pub struct Described {
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// The metric name.
    pub name: String,
    /// `Seconds` for `Unit::Seconds`.
    pub unit: Option<String>,
    /// The help text.
    pub help: String,
}

/// Parses `describe_all` in telemetry.rs.
pub fn described() -> Vec<Described> {
    let constants = metric_constants();
    let start = TELEMETRY_RS
        .find("pub fn describe_all()")
        .expect("describe_all in telemetry.rs");
    let body = &TELEMETRY_RS[start..];
    let body = &body[..body.find("\n}\n").expect("end of describe_all")];
    let mut out = Vec::new();
    for call in body.split("describe_").skip(2) {
        // `counter!(NAME, [Unit::X,] "help");`
        let (kind, args) = call.split_once("!(").expect("a describe macro");
        let args = &args[..args.find(");").expect("end of the macro call")];
        let ident = args.split(',').next().unwrap_or_default().trim();
        let name = constants
            .get(ident)
            .unwrap_or_else(|| panic!("describe_all uses unknown constant {ident}"))
            .clone();
        let unit = args.split_once("Unit::").map(|(_, rest)| {
            rest.split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_owned()
        });
        let quoted: Vec<&str> = args.split('"').collect();
        assert!(quoted.len() >= 3, "no help text in {args}");
        let help = quoted[quoted.len() - 2].to_owned();
        out.push(Described {
            kind: kind.trim().to_owned(),
            name,
            unit,
            help,
        });
    }
    assert_eq!(
        out.len(),
        constants.len(),
        "describe_all should describe every constant once"
    );
    out
}

/// Label keys used with each metric in the actors' sources (`"key" =>` in the macro call
/// that names the metric's constant).
pub fn labels_in_sources() -> BTreeMap<String, BTreeSet<String>> {
    let constants = metric_constants();
    let dir = workspace_root().join("crates/tidesync-actors/src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).expect("the actors' sources");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("a source file");
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in source.match_indices(macro_name) {
                if source[..at].ends_with("describe_") {
                    continue;
                }
                let args = macro_args(&source[at + macro_name.len()..]);
                let ident = args.split(',').next().unwrap_or_default().trim();
                let ident = ident.strip_prefix("telemetry::").unwrap_or(ident);
                let Some(name) = constants.get(ident) else {
                    continue;
                };
                out.entry(name.clone())
                    .or_default()
                    .extend(label_keys(args));
            }
        }
    }
    out
}

/// The arguments of a macro call, up to its closing parenthesis (strings respected).
fn macro_args(rest: &str) -> &str {
    let mut depth = 1;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return &rest[..i];
                }
            }
            _ => {}
        }
    }
    rest
}

/// The string literals followed by `=>` in macro arguments.
fn label_keys(args: &str) -> Vec<String> {
    let parts: Vec<&str> = args.split('"').collect();
    // Odd indices are inside quotes.
    (1..parts.len())
        .step_by(2)
        .filter(|&i| {
            parts
                .get(i + 1)
                .is_some_and(|after| after.trim_start().starts_with("=>"))
        })
        .map(|i| parts[i].to_owned())
        .collect()
}

/// Records every tidesync metric the way the engine does: through the telemetry helpers, and
/// for the store-derived gauges with the same names and labels as the Metrics actor and the
/// Scheduler.
pub fn record_every_metric() {
    telemetry::describe_all();

    telemetry::push_outcome("todos", "acked");
    telemetry::push_outcome("todos", "acked");
    telemetry::push_outcome("todos", "retry");
    telemetry::push_outcome("todos", "conflict");
    telemetry::push_outcome("todos", "dead_letter");
    telemetry::push_outcome("notes", "auth");
    telemetry::request_latency("todos", "push", Duration::from_millis(30));
    telemetry::request_latency("todos", "pull", Duration::from_millis(120));
    telemetry::request_latency("notes", "push", Duration::from_secs(2));
    telemetry::retry(ErrorKind::Network);
    telemetry::retry(ErrorKind::RateLimited);
    telemetry::dead_lettered("todos");
    telemetry::conflict("todos", "server_wins", "push_rejected", "take_remote");
    telemetry::conflict("notes", "field_merge", "pull", "merged");
    telemetry::pulled_page("todos", 25);
    telemetry::pull_request("todos", true);
    telemetry::pull_request("notes", false);
    telemetry::cycle(true, Duration::from_millis(1500));
    telemetry::cycle(false, Duration::from_secs(40));
    telemetry::observe_server_clock(&EngineState::default(), wall_millis() as i64 + 2_000);

    // As in metrics.rs (MetricsActor::refresh) and scheduler.rs.
    metrics::gauge!(telemetry::OUTBOX_DEPTH, "table" => "todos".to_owned()).set(3.0);
    metrics::gauge!(telemetry::OUTBOX_DEPTH, "table" => "notes".to_owned()).set(0.0);
    metrics::gauge!(telemetry::OUTBOX_OLDEST_AGE, "table" => "todos".to_owned()).set(42.5);
    metrics::gauge!(telemetry::OUTBOX_OLDEST_AGE, "table" => "notes".to_owned()).set(0.0);
    metrics::gauge!(telemetry::CHECKPOINT_LAG, "table" => "todos".to_owned()).set(7.0);
    metrics::gauge!(telemetry::DEAD_LETTERS).set(1.0);
    metrics::gauge!(telemetry::ONLINE).set(1.0);
    metrics::gauge!(telemetry::AUTH_REQUIRED).set(0.0);
    metrics::gauge!(telemetry::LEADER).set(1.0);
    metrics::gauge!(telemetry::LEADER_EPOCH).set(4.0);
    telemetry::outbox_states(&tidesync_core::local::OutboxSummary {
        total: 3,
        ready: 1,
        waiting: 1,
        dead_letters: 1,
        complete: true,
        ..Default::default()
    });
    telemetry::offline_for(Duration::from_secs(90));
    // As in live.rs (the live channel's connection loop).
    metrics::gauge!(telemetry::LIVE_CONNECTED).set(1.0);
    metrics::counter!(telemetry::LIVE_RECONNECTS_TOTAL).increment(2);
    metrics::counter!(telemetry::LIVE_EVENTS_TOTAL).increment(5);
    // As in store_writer.rs (one group commit of the writer thread).
    telemetry::store_group(
        Duration::from_micros(40),
        Duration::from_micros(300),
        Duration::from_micros(700),
    );
}

/// Normalises exposition text for the snapshot: sample values become `<v>`, families are
/// sorted by name and series by labels (the exporter's order is a hash order), and buckets stay
/// in `le` order.
pub fn normalise(text: &str) -> String {
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        let comments: Vec<String> = lines
            .iter()
            .filter(|l| l.starts_with('#'))
            .map(|l| (*l).to_owned())
            .collect();
        let name = comments
            .iter()
            .find_map(|l| l.strip_prefix("# TYPE "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("a family without # TYPE: {block}"))
            .to_owned();
        let mut samples: Vec<(String, u8, f64, String)> = lines
            .iter()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, _value) = l.rsplit_once(' ').expect("a sample line");
                let (metric, labels) = match series.split_once('{') {
                    Some((metric, labels)) => (metric, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                let mut le = f64::NEG_INFINITY;
                let mut rest = Vec::new();
                for pair in split_labels(labels) {
                    match pair.strip_prefix("le=") {
                        Some(v) => {
                            let v = v.trim_matches('"');
                            le = if v == "+Inf" {
                                f64::INFINITY
                            } else {
                                v.parse().expect("a bucket bound")
                            };
                        }
                        None => rest.push(pair),
                    }
                }
                let rank = if metric.ends_with("_bucket") {
                    0
                } else if metric.ends_with("_sum") {
                    1
                } else if metric.ends_with("_count") {
                    2
                } else {
                    0
                };
                (rest.join(","), rank, le, format!("{series} <v>"))
            })
            .collect();
        samples.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.total_cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        families.push((name, comments, samples.into_iter().map(|s| s.3).collect()));
    }
    families.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (_, comments, samples) in families {
        for line in comments.iter().chain(samples.iter()) {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Splits `a="x",b="y,z"` into `a="x"` and `b="y,z"` (commas inside quotes stay).
fn split_labels(labels: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in labels.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Compares with the stored snapshot, or rewrites it when `UPDATE_SNAPSHOTS` is set.
pub fn assert_snapshot(normalised: &str, update_allowed: bool) {
    let path = snapshot_path();
    if update_allowed && std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, normalised).expect("write the snapshot");
        eprintln!("updated {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {}: {err}; create it with \
             `UPDATE_SNAPSHOTS=1 cargo test -p tidesync-metrics-prometheus --test snapshot`",
            path.display()
        )
    });
    if expected != normalised {
        let want: BTreeSet<&str> = expected.lines().collect();
        let got: BTreeSet<&str> = normalised.lines().collect();
        let mut diff = String::new();
        for line in want.difference(&got) {
            diff.push_str(&format!("- {line}\n"));
        }
        for line in got.difference(&want) {
            diff.push_str(&format!("+ {line}\n"));
        }
        panic!(
            "the exposition text differs from {}:\n{diff}\nIf the change is deliberate, run \
             `UPDATE_SNAPSHOTS=1 cargo test -p tidesync-metrics-prometheus --test snapshot` and \
             review the snapshot's diff.",
            path.display()
        );
    }
}

/// An HTTP client for plain `http://` (reqwest is built without a default TLS provider).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client")
}

/// A response, reduced to what the tests look at.
#[derive(Debug)]
pub struct Fetched {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The `Allow` header.
    pub allow: String,
    /// The body.
    pub body: String,
}

/// Sends `method url` and reads the whole response.
pub async fn fetch(method: reqwest::Method, url: &str) -> Fetched {
    let response = client()
        .request(method, url)
        .send()
        .await
        .unwrap_or_else(|err| panic!("request to {url} failed: {err}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let status = response.status().as_u16();
    let content_type = header("content-type");
    let allow = header("allow");
    let body = response.text().await.expect("a body");
    Fetched {
        status,
        content_type,
        allow,
        body,
    }
}

/// `fetch` from blocking code (outside any runtime).
pub fn fetch_blocking(method: reqwest::Method, url: &str) -> Fetched {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(fetch(method, url))
}

/// Replaces the path of a `http://host:port/metrics` URL.
pub fn with_path(url: &str, path: &str) -> String {
    let base = url.strip_suffix("/metrics").expect("a /metrics URL");
    format!("{base}{path}")
}
