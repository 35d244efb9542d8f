//! `run`: the daemon syncs, serves /metrics, locks the store (naming its pid), registers in
//! `<store>.daemons` and stops cleanly on SIGTERM.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Env, eventually, free_port, http_get, replace};

#[test]
fn run_syncs_serves_metrics_locks_the_store_and_stops_on_sigterm() {
    let env = Env::new();
    let port = free_port();
    env.edit(|t| {
        let t = replace(t, "interval = \"30s\"", "interval = \"200ms\"");
        format!("{t}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")
    });
    env.ok(&[
        "put",
        "posts",
        r#"{"id": "p1", "title": "Before the daemon"}"#,
    ]);

    let log = std::fs::File::create(env.path("run.log")).expect("log file");
    let mut child = env
        .command(&["run", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the daemon starts");
    let log = || std::fs::read_to_string(env.path("run.log")).unwrap_or_default();
    let pid = child.id();
    let registration = env.registration(pid);
    eventually(20, "the registration", || registration.exists());
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&registration).expect("registration"))
            .expect("JSON");
    assert_eq!(info["pid"], pid);

    // It pushes what was queued before it started, and pulls what changes on the server.
    eventually(20, "the push", || {
        env.server.records("posts").iter().any(|p| p["id"] == "p1")
    });
    env.server
        .insert_direct("posts", json!({"id": "s1", "title": "Remote"}))
        .expect("server insert");
    let addr = format!("127.0.0.1:{port}");
    eventually(20, "the pull, seen in /metrics", || {
        http_get(&addr, "/metrics").is_ok_and(|(status, body)| {
            status == 200
                && body.lines().any(|l| {
                    l.starts_with("tidesync_records_applied_total{table=\"posts\"}")
                        && !l.ends_with(" 0")
                })
        })
    });
    let (status, body) = http_get(&addr, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE tidesync_push_total counter"),
        "{body}"
    );
    assert!(body.contains("# HELP tidesync_push_total"), "{body}");

    // The store is locked: inspection commands say by whom, with exit 3.
    let run = env.run(&["status"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains(&format!("locked by process {pid}")),
        "{run:?}"
    );
    assert_eq!(env.run(&["get", "posts", "p1"]).code, 3);
    // A second daemon too.
    let second = env.run(&["run"]);
    assert_eq!(second.code, 3, "{second:?}");

    // SIGTERM: a clean stop, the registration removed.
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(status.success(), "exit {status:?}\n{}", log());
    assert!(!registration.exists(), "the registration is left behind");
    let text = log();
    for line in text.lines() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON log line: {line}");
    }
    assert!(text.contains("tidesync daemon started"), "{text}");
    assert!(
        text.contains("SIGTERM") && text.contains("tidesync daemon stopped"),
        "{text}"
    );

    // The store is free again and holds the pulled record.
    let pulled = env.ok(&["get", "posts", "s1"]).json();
    assert_eq!(pulled["title"], "Remote");
    let status = env.ok(&["status", "--json"]).json();
    assert_eq!(status["queue_depth"], 0);
    assert_eq!(status["daemon_running"], false, "{status}");
    assert_eq!(status["daemons"], json!([]), "{status}");
}

#[test]
fn sigterm_during_a_hung_push_stops_in_time_and_the_entry_is_requeued() {
    use tidesync_testkit::server::{FaultFilter, FaultKind};

    let env = Env::new();
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "Slow"}"#]);
    let before = env.ok(&["outbox", "--json"]).json();
    let key = before[0]["idempotency_key"].clone();
    env.server.fail_next_where(
        FaultFilter::writes().under("/api/posts"),
        1,
        FaultKind::Hang(Duration::from_secs(60)),
    );
    let log = std::fs::File::create(env.path("run.log")).expect("log file");
    let mut child = env
        .command(&["run", "--shutdown-timeout", "300ms"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the daemon starts");
    let log = || std::fs::read_to_string(env.path("run.log")).unwrap_or_default();
    eventually(20, "the push in flight", || {
        env.server.pending_faults() == 0
    });

    let started = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the daemon did not stop:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(status.success(), "exit {status:?}\n{}", log());
    assert!(log().contains("did not finish in time"), "{}", log());
    assert!(!env.registration(child.id()).exists());

    // The entry is back in the queue, sealed with the same idempotency key.
    let after = env.ok(&["outbox", "--json"]).json();
    assert_eq!(after[0]["key"], "p1", "{after}");
    assert_eq!(after[0]["in_flight"], false, "{after}");
    assert_eq!(after[0]["idempotency_key"], key, "{after}");
    assert!(
        after[0]["attempts"].as_u64().is_some_and(|a| a >= 1),
        "{after}"
    );
}
