//! A SIGKILLed leader's requests still inside a slow server must not land after its
//! successor's newer edits of the same records (`takeover_hold`).
//!
//! The server here checks nothing that would save us: the config sends no idempotency key, no
//! base version, and the epoch under a header the reference server does not know, so it
//! applies every write in arrival order, as a naive JSON API does. The daemons reach it through
//! [`SlowProxy`], which holds the first leader's updates and delivers them after it died.
//! Local edits win conflicts (`client_wins`): the successor's edits are the newest.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tidesync_testkit::server::LoggedRequest;

use crate::proxy::SlowProxy;
use crate::support::{Env, eventually, replace};
use crate::{Daemon, multi_process_env, one_leader_among, poll_status, signal, start_together};

/// The transport's request timeout, hence the new leader's hold (long: the dead leader's
/// requests must not time out while the test makes its edits on a loaded machine).
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long the test lets the successor work before the dead leader's requests land (well
/// within the hold): without the hold it would have sent everything by then.
const HEAD_START: Duration = Duration::from_millis(1000);
const RECORDS: usize = 4;

fn title(record: &Value) -> String {
    record["title"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_dead_leaders_slow_requests_do_not_overwrite_its_successors_newer_edits() {
    let env = multi_process_env(Env::new());
    let proxy = SlowProxy::start(env.server.addr());
    env.edit(|t| {
        let t = replace(
            t,
            &format!("base_url = \"{}\"", env.server.url()),
            &format!("base_url = \"{}\"", proxy.url()),
        );
        let t = replace(
            &t,
            "request_timeout_ms = 30000",
            &format!("request_timeout_ms = {REQUEST_TIMEOUT_MS}\nepoch_header = \"X-Unchecked-Epoch\""),
        );
        let t = replace(
            &t,
            "# idempotency_header = \"Idempotency-Key\"",
            "idempotency_header = false",
        );
        let t = replace(
            &t,
            "version = { field = \"version\" }  # optimistic concurrency: the base version travels in the body\n",
            "",
        );
        replace(
            &t,
            "posts = { strategy = \"last_write_wins\", timestamp_field = \"updatedAt\" }",
            "posts = { strategy = \"client_wins\" }",
        )
    });
    let ids: Vec<String> = (0..RECORDS).map(|i| format!("p{i}")).collect();
    let put = |id: &str, title: &str| {
        env.ok(&[
            "put",
            "posts",
            &format!(r#"{{"id": "{id}", "title": "{title}"}}"#),
        ]);
    };
    let on_server = |id: &str| env.server.record("posts", id).map(|r| title(&r));

    let commands: Vec<(String, Vec<String>)> = (0..2)
        .map(|i| (format!("takeover-d{i}"), vec!["run".to_owned()]))
        .collect();
    let mut daemons = start_together(&env, &commands);
    let pids: BTreeSet<u32> = daemons.iter().map(Daemon::pid).collect();
    let leader = poll_status(&env, &mut daemons, 30, "two daemons and a leader", |s| {
        one_leader_among(s, &pids)
    });

    // v0 exists on the server.
    for id in &ids {
        put(id, "v0");
    }
    eventually(20, "v0 on the server", || {
        ids.iter().all(|id| on_server(id).as_deref() == Some("v0"))
    });

    // The leader's v1 updates sit in the proxy.
    proxy.hold_next(RECORDS);
    for id in &ids {
        put(id, "v1");
    }
    // (Its push cycle waits for them, so records edited after the first one was held may stay
    // queued: those have no request in flight.)
    eventually(15, "the leader's v1 updates held", || {
        !proxy.held().is_empty()
    });
    // The leader dies with all of them inside the proxy.
    let index = daemons
        .iter()
        .position(|d| d.pid() == leader)
        .expect("the leader is ours");
    let mut killed = daemons.swap_remove(index);
    signal(&[leader], "KILL");
    // Only the dead leader's requests are held, not its successor's.
    proxy.stop_holding();
    let _ = killed.wait(10);
    // A record the dead leader had nothing in flight for, and newer edits of the held ones
    // (queued behind their heads).
    put("other", "fresh");
    for id in &ids {
        put(id, "v2");
    }

    let survivor: BTreeSet<u32> = daemons.iter().map(Daemon::pid).collect();
    poll_status(&env, &mut daemons, 15, "the survivor leads", |s| {
        one_leader_among(s, &survivor)
    });
    eventually(20, "the unrelated record on the server", || {
        on_server("other").is_some()
    });
    // The dead leader's requests land now, after the successor took over and the newer edits
    // were made.
    std::thread::sleep(HEAD_START);
    let held = proxy.held();
    let released_at = env.server.request_log().len() as u64;
    proxy.release();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ids.iter().all(|id| on_server(id).as_deref() == Some("v2")) {
        if std::time::Instant::now() > deadline {
            let writes: Vec<String> = env
                .server
                .request_log()
                .iter()
                .filter(|r| r.is_write())
                .map(|r| format!("{} {} {:?} {}", r.method, r.path, r.status, r.body))
                .collect();
            panic!(
                "v2 not on the server within 30s: {:?}\nwrites: {writes:#?}\noutbox: {}\nsurvivor: {}",
                ids.iter().map(|id| on_server(id)).collect::<Vec<_>>(),
                env.run(&["outbox"]).stdout,
                daemons
                    .iter()
                    .chain([&killed])
                    .map(Daemon::log)
                    .collect::<String>()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The dead leader's held updates reached the server and were answered; v2 still stands.
    eventually(
        20,
        "the dead leader's updates delivered and answered",
        || {
            proxy.delivered() == held.len()
                && env
                    .server
                    .request_log()
                    .iter()
                    .filter(|r| r.is_write())
                    .all(|r| r.handler_status.is_some())
        },
    );
    let log = env.server.request_log();
    let writes = || {
        log.iter()
            .filter(|r| r.is_write())
            .map(|r| format!("{} {} {} {}", r.seq, r.method, r.path, r.body))
            .collect::<Vec<_>>()
    };
    for id in &ids {
        assert_eq!(
            on_server(id).as_deref(),
            Some("v2"),
            "record {id}: {:#?}\n{}",
            writes(),
            daemons
                .iter()
                .chain([&killed])
                .map(Daemon::log)
                .collect::<String>()
        );
    }
    let puts = |title: &str| -> Vec<&LoggedRequest> {
        let title = format!("\"title\":\"{title}\"");
        log.iter()
            .filter(|r| r.method == "PUT" && r.body.contains(&title))
            .collect()
    };
    // The dead leader's held updates were applied, after the successor took over: without the
    // hold they would have overwritten v2. The successor sent v2 of those records only after
    // (the late v1 showed as a remote change, and the local edit won; or, for a record whose
    // request never reached the server, the hold ran out), and the unrelated record at once.
    let other = log
        .iter()
        .find(|r| r.method == "POST" && r.body.contains("\"other\""))
        .map(|r| r.seq)
        .expect("the unrelated record was pushed");
    let (v1, v2) = (puts("v1"), puts("v2"));
    for path in &held {
        let late = v1
            .iter()
            .find(|r| &r.path == path && r.seq >= released_at)
            .unwrap_or_else(|| panic!("{path}: the held v1 did not land: {:#?}", writes()));
        assert!(late.applied_fresh(), "{late:#?}");
        let next = v2.iter().find(|r| &r.path == path).map(|r| r.seq);
        assert!(
            next.is_some_and(|n| n > late.seq && n > other),
            "{path}: v2 ({next:?}) after the late v1 ({}) and the unrelated record ({other}): {:#?}",
            late.seq,
            writes()
        );
    }
    eprintln!(
        "takeover: {} request(s) of the dead leader landed after its successor took over; \
         {} record(s) end with the newest value",
        held.len(),
        ids.len()
    );

    signal(&survivor.iter().copied().collect::<Vec<_>>(), "TERM");
    for d in &mut daemons {
        let exit = d.wait(30);
        assert!(exit.success(), "{exit}:\n{}", d.log());
    }
}
