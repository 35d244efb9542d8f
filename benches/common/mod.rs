//! Helpers shared by the bench binaries (this folder is a module, not a bench target).
//!
//! Conventions every bench follows:
//! - `cargo bench --bench <name>` runs the full measurement (cargo passes `--bench`); run by
//!   `cargo test --benches` instead, a bench does a *smoke* pass with tiny sizes and one run,
//!   so the code is exercised without the cost.
//! - `TIDESYNC_BENCH_RUNS` (default 3) runs per figure; each figure is the median, measured
//!   next to its baseline in the same run (the order alternates between runs).
//! - Every section prints the 1-minute load average and how many `rustc` processes run, so
//!   figures taken on a busy machine can be told apart.

pub mod store_times;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidesync::{SyncSettings, TableSpec};
use tidesync_transport_rest::{BulkRoute, RestTransport, TableRoutes};

/// Whether the binary runs as a benchmark (`cargo bench` passes `--bench`), rather than as a
/// smoke test under `cargo test --benches`.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `name` from the environment, else `default` (or `smoke` outside bench mode).
pub fn env_usize(name: &str, default: usize, smoke: usize) -> usize {
    match std::env::var(name).ok().and_then(|s| s.parse().ok()) {
        Some(v) => v,
        None if bench_mode() => default,
        None => smoke,
    }
}

/// Runs per figure: `TIDESYNC_BENCH_RUNS` (default 3; 1 in smoke mode), at least 1.
pub fn runs() -> usize {
    env_usize("TIDESYNC_BENCH_RUNS", 3, 1).max(1)
}

/// Whether an opt-in flag (e.g. `TIDESYNC_BENCH_BIG=1`) is set.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The median (upper median for an even count). `xs` must not be empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The `p`-th percentile (0..=100) of sorted durations, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// How many `rustc` processes are running (other engineers compiling).
pub fn rustc_count() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "rustc")
        })
        .count()
}

/// `load 1.23, rustc 0`: the machine's business right now.
pub fn machine_note() -> String {
    format!("load {:.2}, rustc {}", loadavg(), rustc_count())
}

/// Prints a section title with the machine's business at its start.
pub fn section(title: &str) {
    println!();
    println!("== {title}   [{}]", machine_note());
}

/// Prints the machine's business at a section's end.
pub fn section_end() {
    println!("   (end of section: {})", machine_note());
}

/// A field from `/proc/self/status` in kB (e.g. `VmHWM`, `VmRSS`).
pub fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// CPU time this process has used so far, all threads together (user + system), from
/// `/proc/self/stat` in clock ticks of 10 ms (Linux); `None` elsewhere. Both sides of a bench run
/// in one process (the reference server too), so the difference over a measurement is what that
/// measurement cost the machine.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: the state
    // is field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux build that matters here.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Microseconds of CPU per operation between two [`process_cpu`] readings (NaN if unknown).
pub fn cpu_us_per(before: Option<Duration>, after: Option<Duration>, ops: usize) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) if ops > 0 => a.saturating_sub(b).as_secs_f64() * 1e6 / ops as f64,
        _ => f64::NAN,
    }
}

/// Seconds since `start`.
pub fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Bench record `i`: the same bytes everywhere (about 260 bytes of JSON).
pub fn record(i: usize) -> Value {
    json!({"id": format!("rec-{i:08}"), "title": format!("title {i}"), "body": "x".repeat(200), "n": i})
}

/// Record `i`: about 1 KB of JSON (the `import` and `store_size` benches' record).
pub fn record_1k(i: usize) -> Value {
    json!({
        "id": format!("rec-{i:08}"),
        "title": format!("title {i}"),
        "author": format!("author-{}", i % 97),
        "published": i.is_multiple_of(3),
        "score": i as f64 / 7.0,
        "tags": ["alpha", "beta", format!("t{}", i % 13)],
        "body": "lorem ipsum dolor sit amet ".repeat(34),
    })
}

/// A multi-thread tokio runtime for the bench's own async code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Installs rustls' ring provider (reqwest is built with `rustls-no-provider`).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain reqwest client, as a baseline would build it.
pub fn http_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().build().expect("reqwest client")
}

/// One page of the reference server's keyset feed of `posts` (the engine's query), read the
/// way the benches' raw clients read it: the items and whether more follow. Moves `cursor` to
/// the page's last item.
pub async fn raw_keyset_page(
    client: &reqwest::Client,
    url: &str,
    page: usize,
    cursor: &mut Option<(String, String)>,
) -> (Vec<Value>, bool) {
    // Ids are `rec-NNNNNNNN` or alike: nothing to escape.
    let target = match cursor.as_ref() {
        Some((ts, id)) => format!("{url}/api/posts?after_updated={ts}&after_id={id}&limit={page}"),
        None => format!("{url}/api/posts?limit={page}"),
    };
    let body = client
        .get(target)
        .send()
        .await
        .expect("get")
        .error_for_status()
        .expect("status")
        .bytes()
        .await
        .expect("body");
    let mut body: Value = serde_json::from_slice(&body).expect("json");
    let has_more = body["hasMore"].as_bool().unwrap_or(false);
    let Value::Array(items) = body["data"].take() else {
        panic!("no data array");
    };
    if let Some(last) = items.last() {
        *cursor = Some((
            last["updatedAt"].to_string(),
            last["id"].as_str().expect("string id").to_owned(),
        ));
    }
    (items, has_more)
}

/// Routes for a reference-server collection, as in `tests/sync/support.rs`: CRUD with a
/// version field and a keyset change feed; with `bulk`, also the bulk endpoint.
pub fn routes(collection: &str, bulk: bool) -> TableRoutes {
    let routes = TableRoutes::reference_server(collection);
    if bulk {
        routes.bulk(BulkRoute::post(&format!("/api/{collection}/bulk")))
    } else {
        routes
    }
}

/// A REST transport for `posts` on the server at `url`.
pub fn transport(url: &str, bulk: bool) -> RestTransport {
    RestTransport::builder(url)
        .table("posts", routes("posts", bulk))
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("transport")
}

/// The bench table.
pub fn posts() -> TableSpec {
    TableSpec::new("posts")
}

/// Settings with no automatic sync (no timer, no sync at start, local writes never trigger
/// one by themselves): the bench decides when to push and pull.
pub fn manual_settings() -> SyncSettings {
    SyncSettings {
        interval: None,
        sync_on_start: false,
        debounce: Duration::from_secs(3600),
        ..SyncSettings::default()
    }
}

/// `12345` → `12 345` (thin grouping for readability).
pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS by writing `5` to
/// `/proc/self/clear_refs` (Linux ≥ 4.0), so that a later `VmHWM` covers only what follows.
/// Returns whether the reset took effect (the peak is then within 1 MiB of the current RSS).
pub fn reset_peak_rss() -> bool {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        return false;
    }
    match (proc_status_kb("VmHWM"), proc_status_kb("VmRSS")) {
        (Some(hwm), Some(rss)) => hwm <= rss + 1024,
        _ => false,
    }
}
