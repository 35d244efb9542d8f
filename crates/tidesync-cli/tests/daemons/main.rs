//! Several `tidesync run` daemons on one store, as real processes of the built binary against
//! the testkit's reference server: simultaneous starts (no spurious failure), `status` listing
//! the live daemons and the leader across SIGKILL and SIGTERM, the single-process store still
//! refusing a second daemon with exit 3 and the holder's pid.
//!
//! `TIDESYNC_DAEMON_ROUNDS` sets the number of rounds of the six-daemon test (default 20);
//! `TIDESYNC_TEST_DAEMON_LOG` sets the daemons' `RUST_LOG` (their logs are in the failure
//! messages).

#[allow(dead_code)]
#[path = "../cli/support.rs"]
mod support;

mod proxy;
mod takeover;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::{Env, Run, replace};

/// The followers' campaign interval in these tests.
const CAMPAIGN_EVERY: Duration = Duration::from_millis(200);

/// A daemon process and its log.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Daemon {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the exit (fails after `secs`).
    pub(crate) fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon {} did not exit within {secs}s:\n{}",
                self.pid(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Sends `signal` to every pid at once (one `kill` process).
pub(crate) fn signal(pids: &[u32], signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pids:?}");
}

/// The reference server's sample config with a multi-process store, the lock-file election
/// campaigning every 200 ms and a short sync interval.
pub(crate) fn multi_process_env(env: Env) -> Env {
    env.edit(|t| {
        let t = replace(t, "interval = \"30s\"", "interval = \"300ms\"");
        let t = replace(&t, "# multi_process = true", "multi_process = true");
        replace(
            &t,
            "# [leader]\n# lockfile = true\n# campaign_every = \"1s\"",
            &format!(
                "[leader]\nlockfile = true\ncampaign_every = \"{}ms\"",
                CAMPAIGN_EVERY.as_millis()
            ),
        )
    });
    env
}

/// Starts the given commands at the same instant (threads released by one barrier), each
/// with stderr to `<name>.log`; returns the children in order.
pub(crate) fn start_together(env: &Env, commands: &[(String, Vec<String>)]) -> Vec<Daemon> {
    let barrier = Arc::new(Barrier::new(commands.len()));
    std::thread::scope(|scope| {
        let handles: Vec<_> = commands
            .iter()
            .map(|(name, args)| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    let log = env.path(&format!("{name}.log"));
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let mut command = env.command(&args);
                    if let Ok(filter) = std::env::var("TIDESYNC_TEST_DAEMON_LOG") {
                        command.env("RUST_LOG", filter);
                    }
                    command
                        .stdout(Stdio::null())
                        .stderr(File::create(&log).expect("log file"));
                    barrier.wait();
                    Daemon {
                        child: command.spawn().expect("spawns"),
                        log,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("spawner thread"))
            .collect()
    })
}

/// `status --json`, which must succeed.
pub(crate) fn status(env: &Env) -> Value {
    let run: Run = env.run(&["status", "--json"]);
    assert_eq!(run.code, 0, "status failed: {run:#?}");
    run.json()
}

/// The pids `status` lists, and the pids it marks as leader.
fn listed(status: &Value) -> (BTreeSet<u32>, Vec<u32>) {
    let daemons = status["daemons"].as_array().cloned().unwrap_or_default();
    let pid = |d: &Value| d["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
    let pids = daemons.iter().filter_map(pid).collect();
    let leaders = daemons
        .iter()
        .filter(|d| d["role"] == "leader")
        .filter_map(pid)
        .collect();
    (pids, leaders)
}

/// `Some(leader pid)` when `status` lists exactly `expected` and exactly one of them leads,
/// consistently with its `leader` field.
fn one_leader_among(status: &Value, expected: &BTreeSet<u32>) -> Option<u32> {
    let (pids, leaders) = listed(status);
    let leader = status["leader"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())?;
    (pids == *expected && leaders == [leader] && status["leader"]["daemon"] == true)
        .then_some(leader)
}

/// Polls `status` until `check` gives a value; fails (with the daemons' logs) if a daemon
/// exits meanwhile or after `secs`.
fn poll_status<T>(
    env: &Env,
    daemons: &mut [Daemon],
    secs: u64,
    what: &str,
    mut check: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        for d in daemons.iter_mut() {
            if let Some(exit) = d.child.try_wait().expect("wait") {
                panic!(
                    "daemon {} exited ({exit}) while {what}:\n{}",
                    d.pid(),
                    d.log()
                );
            }
        }
        let last = status(env);
        if let Some(found) = check(&last) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "not within {secs}s: {what}; last status: {last:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rounds() -> usize {
    std::env::var("TIDESYNC_DAEMON_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[test]
fn six_daemons_start_together_and_status_follows_the_leader_through_kills_and_stops() {
    const DAEMONS: usize = 6;
    const WRITERS: usize = 2;
    let env = multi_process_env(Env::new());
    // A new leader holds what a killed one left in flight for the request timeout.
    env.edit(|t| replace(t, "request_timeout_ms = 30000", "request_timeout_ms = 2000"));
    let rounds = rounds();
    let (mut up_times, mut failovers) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for round in 0..rounds {
        // Six daemons and two local writes, all at the same instant (the first round on a
        // store file that does not exist yet).
        let mut commands: Vec<(String, Vec<String>)> = (0..DAEMONS)
            .map(|i| (format!("r{round}-d{i}"), vec!["run".to_owned()]))
            .collect();
        for w in 0..WRITERS {
            commands.push((
                format!("r{round}-w{w}"),
                vec![
                    "put".to_owned(),
                    "posts".to_owned(),
                    format!(r#"{{"id": "r{round}-w{w}", "title": "round {round}"}}"#),
                ],
            ));
        }
        let t0 = Instant::now();
        let mut all = start_together(&env, &commands);
        let mut writers = all.split_off(DAEMONS);
        let mut daemons = all;
        for w in &mut writers {
            let exit = w.wait(30);
            assert!(
                exit.success(),
                "a put started with the daemons failed ({exit}):\n{}",
                w.log()
            );
        }
        let mut pids: BTreeSet<u32> = daemons.iter().map(Daemon::pid).collect();
        let leader = poll_status(&env, &mut daemons, 30, "six daemons and one leader", |s| {
            one_leader_among(s, &pids)
        });
        up_times.push(t0.elapsed());

        // SIGKILL the leader: five remain and one of them leads, within the campaign
        // interval plus a margin (measured, and bounded only by a generous deadline).
        let index = daemons
            .iter()
            .position(|d| d.pid() == leader)
            .expect("the leader is one of ours");
        let mut killed = daemons.swap_remove(index);
        let t_kill = Instant::now();
        signal(&[leader], "KILL");
        let _ = killed.wait(10);
        pids.remove(&leader);
        let successor = poll_status(
            &env,
            &mut daemons,
            15,
            "five daemons and a new leader",
            |s| one_leader_among(s, &pids),
        );
        failovers.push(t_kill.elapsed());
        assert_ne!(successor, leader);
        // The dead daemon's registration was cleaned up by whoever listed the registry.
        assert!(!env.registration(leader).exists());
        assert!(!env.registration(leader).with_extension("lock").exists());
        let after = status(&env);
        let old_epoch = after["leader"]["epoch"].as_u64().expect("epoch");
        assert!(old_epoch >= 2, "a new epoch after the kill: {after:#}");

        // The round's writes reach the server through whoever leads.
        support::eventually(20, "the round's writes on the server", || {
            let on_server = env.server.records("posts");
            (0..WRITERS).all(|w| {
                on_server
                    .iter()
                    .any(|p| p["id"] == format!("r{round}-w{w}").as_str())
            })
        });

        // SIGTERM all at once: every one exits 0, and `status` lists none.
        let remaining: Vec<u32> = daemons.iter().map(Daemon::pid).collect();
        signal(&remaining, "TERM");
        for d in &mut daemons {
            let exit = d.wait(30);
            assert!(
                exit.success(),
                "daemon {} stopped with {exit}:\n{}",
                d.pid(),
                d.log()
            );
        }
        let done = status(&env);
        assert_eq!(done["daemons"], serde_json::json!([]), "{done:#}");
        assert_eq!(done["daemon_running"], false, "{done:#}");
        assert!(done["leader"].is_null(), "{done:#}");
    }
    up_times.sort();
    failovers.sort();
    let median = |v: &[Duration]| ms(v[v.len() / 2]);
    eprintln!(
        "{rounds} rounds of {DAEMONS} daemons in {} ms; start to `status` showing {DAEMONS} and a \
         leader: median {} ms, max {} ms; SIGKILL of the leader to `status` showing the new one \
         (campaign_every {} ms): median {} ms, max {} ms",
        ms(started.elapsed()),
        median(&up_times),
        ms(up_times[up_times.len() - 1]),
        ms(CAMPAIGN_EVERY),
        median(&failovers),
        ms(failovers[failovers.len() - 1]),
    );
}

#[test]
fn a_single_process_store_refuses_a_second_daemon_with_exit_3_naming_the_holder() {
    let env = Env::new();
    env.edit(|t| replace(t, "interval = \"30s\"", "interval = \"300ms\""));
    // The store file exists (its creation is not what this test is about).
    env.ok(&["status"]);
    let commands: Vec<(String, Vec<String>)> = (0..3)
        .map(|i| (format!("single-{i}"), vec!["run".to_owned()]))
        .collect();
    let mut daemons = start_together(&env, &commands);
    // Exactly one keeps running; the others exit 3.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = Vec::new();
    while refused.len() < 2 {
        assert!(Instant::now() < deadline, "two of three did not exit");
        let mut i = 0;
        while i < daemons.len() {
            if let Some(exit) = daemons[i].child.try_wait().expect("wait") {
                let d = daemons.swap_remove(i);
                assert_eq!(exit.code(), Some(3), "{exit}:\n{}", d.log());
                refused.push(d);
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(daemons.len(), 1);
    let holder = daemons[0].pid();
    for d in &refused {
        assert!(d.log().contains("is locked by"), "{}", d.log());
    }
    support::eventually(20, "the holder's registration", || {
        env.registration(holder).exists()
    });

    // A second daemon now: exit 3, naming the holder's pid.
    let second = env.run(&["run"]);
    assert_eq!(second.code, 3, "{second:#?}");
    assert!(
        second
            .stderr
            .contains(&format!("is locked by process {holder}")),
        "{second:#?}"
    );
    signal(&[holder], "TERM");
    let exit = daemons[0].wait(30);
    assert!(exit.success(), "{exit}:\n{}", daemons[0].log());
    assert!(!env.registration(holder).exists());
}
