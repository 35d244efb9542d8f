//! The parent side: spawns child processes (this test binary re-run as `leader_child`), reads
//! their reports, and keeps the facts the tests check: acknowledged writes, leadership
//! changes with their times, and any moment two live processes of one database both claimed
//! leadership.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidesync_testkit::server::ReferenceServer;

use crate::child;

/// One spawned process.
pub struct Proc {
    /// Its name (the prefix of its record ids).
    pub name: String,
    /// The database it opened.
    pub db: PathBuf,
    /// Its pid.
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Not killed or exited yet.
    pub alive: bool,
    /// Its engine started.
    pub ready: bool,
    /// The epoch it leads with, per its last report.
    pub leading: Option<u64>,
    /// Its write loop ended.
    pub stopped: bool,
    /// Its last `DEPTH` report.
    pub depth: Option<(u64, u64)>,
    /// `CYCLE` reports (sync cycles that ended) and `SYNCED` answers.
    pub cycles: usize,
    /// The answers to `SYNC` commands.
    pub synced: Vec<String>,
    /// Its stderr, for diagnostics.
    pub log: PathBuf,
}

/// A leadership report.
#[derive(Debug, Clone)]
pub struct LeaderEvent {
    /// The process (index into `procs`).
    pub proc: usize,
    /// When the parent read the line.
    pub at: Instant,
    /// The epoch.
    pub epoch: u64,
}

struct Line {
    proc: usize,
    at: Instant,
    text: String,
}

/// The processes of a test and what they reported.
pub struct Cluster {
    exe: PathBuf,
    logs: PathBuf,
    tx: Sender<Line>,
    rx: Receiver<Line>,
    /// Every process ever spawned, in spawn order.
    pub procs: Vec<Proc>,
    /// Acknowledged writes: id → the last acknowledged `touched` value (`None`: created only).
    pub acked: BTreeMap<String, Option<u64>>,
    /// Every `LEADER` report, in arrival order.
    pub leaders: Vec<LeaderEvent>,
    /// Two live processes of one database leading at once, as reported (not counted once
    /// [`Cluster::shutdown_all`] began: a follower may take over from a resigning leader).
    pub violations: Vec<String>,
    shutting_down: bool,
}

impl Cluster {
    /// A cluster writing child logs into `logs`.
    pub fn new(logs: &Path) -> Self {
        let (tx, rx) = channel();
        Cluster {
            exe: std::env::current_exe().expect("test binary"),
            logs: logs.to_owned(),
            tx,
            rx,
            procs: Vec::new(),
            acked: BTreeMap::new(),
            leaders: Vec::new(),
            violations: Vec::new(),
            shutting_down: false,
        }
    }

    /// Starts a process on `db`, syncing with `server`; `env` adds child settings.
    pub fn spawn(
        &mut self,
        db: &Path,
        server: &ReferenceServer,
        name: &str,
        env: &[(&str, &str)],
    ) -> usize {
        let index = self.procs.len();
        let log = self.logs.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("child log");
        let mut command = Command::new(&self.exe);
        command
            .args(["--exact", "leader_child", "--nocapture", "--test-threads=1"])
            .env(child::DB_ENV, db)
            .env(child::URL_ENV, server.url())
            .env(child::NAME_ENV, name)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut process = command.spawn().expect("spawn a child");
        let stdout = process.stdout.take().expect("child stdout");
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(text) = line else { break };
                let at = Instant::now();
                // The harness may print `test leader_child ... ` before the first report.
                if let Some((_, report)) = text.split_once("@@ ") {
                    let line = Line {
                        proc: index,
                        at,
                        text: report.to_owned(),
                    };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        self.procs.push(Proc {
            name: name.to_owned(),
            db: db.to_owned(),
            pid: process.id(),
            stdin: process.stdin.take(),
            child: process,
            alive: true,
            ready: false,
            leading: None,
            stopped: false,
            depth: None,
            cycles: 0,
            synced: Vec::new(),
            log,
        });
        index
    }

    fn handle(&mut self, line: Line) {
        let mut words = line.text.split_whitespace();
        let proc = line.proc;
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("READY"), ..) => self.procs[proc].ready = true,
            (Some("ACK"), Some("C"), Some(id), None) => {
                self.acked.entry(id.to_owned()).or_insert(None);
            }
            (Some("ACK"), Some("U"), Some(id), Some(n)) => {
                let n: u64 = n.parse().expect("touched value");
                self.acked.insert(id.to_owned(), Some(n));
            }
            (Some("LEADER"), Some(epoch), None, None) => {
                let epoch: u64 = epoch.parse().expect("epoch");
                let db = self.procs[proc].db.clone();
                for (other, p) in self.procs.iter().enumerate() {
                    if !self.shutting_down
                        && other != proc
                        && p.alive
                        && p.db == db
                        && p.leading.is_some()
                    {
                        self.violations.push(format!(
                            "{} leads with epoch {epoch} while {} (alive) leads with epoch {:?}",
                            self.procs[proc].name, p.name, p.leading
                        ));
                    }
                }
                self.procs[proc].leading = Some(epoch);
                self.leaders.push(LeaderEvent {
                    proc,
                    at: line.at,
                    epoch,
                });
            }
            (Some("FOLLOWER"), ..) => self.procs[proc].leading = None,
            (Some("CYCLE"), ..) => self.procs[proc].cycles += 1,
            (Some("SYNCED"), ..) => self.procs[proc].synced.push(line.text.clone()),
            (Some("STOPPED"), ..) => self.procs[proc].stopped = true,
            (Some("DEPTH"), Some(queue), Some(dead), None) => {
                self.procs[proc].depth = Some((
                    queue.parse().expect("depth"),
                    dead.parse().expect("dead letters"),
                ));
            }
            _ => {}
        }
    }

    /// Reads reports for `wait`.
    pub fn pump(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.handle(line),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Reads reports until `done` holds (true) or `within` passed (false).
    pub fn wait_until(&mut self, within: Duration, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        let until = Instant::now() + within;
        loop {
            if done(self) {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(line) = self.rx.recv_timeout(left.min(Duration::from_millis(50))) {
                self.handle(line);
            }
        }
    }

    /// The live process that leads `db`, if any (per reports).
    pub fn leader_of(&self, db: &Path) -> Option<usize> {
        self.procs
            .iter()
            .position(|p| p.alive && p.db == db && p.leading.is_some())
    }

    /// The first leadership report for `db` that arrived after `since`.
    pub fn leader_since(&self, db: &Path, since: Instant) -> Option<LeaderEvent> {
        self.leaders
            .iter()
            .find(|e| e.at > since && self.procs[e.proc].db == db)
            .cloned()
    }

    /// SIGKILLs a process; returns when it was killed.
    pub fn kill(&mut self, proc: usize) -> Instant {
        let p = &mut self.procs[proc];
        p.child.kill().expect("SIGKILL");
        let at = Instant::now();
        p.child.wait().expect("reap");
        p.alive = false;
        p.leading = None;
        at
    }

    /// Sends a signal with the `kill` command (`STOP`, `CONT`).
    pub fn signal(&self, proc: usize, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.procs[proc].pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends a command line to a process.
    pub fn command(&mut self, proc: usize, command: &str) {
        if let Some(stdin) = self.procs[proc].stdin.as_mut() {
            writeln!(stdin, "{command}").expect("write a command");
            stdin.flush().expect("flush a command");
        }
    }

    /// Stops every live process's writes and waits until they confirm.
    pub fn stop_writers(&mut self) {
        let live: Vec<usize> = (0..self.procs.len())
            .filter(|&i| self.procs[i].alive)
            .collect();
        for &i in &live {
            self.command(i, "STOP");
        }
        assert!(
            self.wait_until(Duration::from_secs(20), |c| live
                .iter()
                .all(|&i| c.procs[i].stopped)),
            "the writers did not stop: {}",
            self.diagnostics()
        );
    }

    /// Closes every live process's stdin (it shuts down) and checks that it exits cleanly.
    pub fn shutdown_all(&mut self) {
        self.shutting_down = true;
        for p in &mut self.procs {
            p.stdin = None;
        }
        for i in 0..self.procs.len() {
            if !self.procs[i].alive {
                continue;
            }
            let until = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(status) = self.procs[i].child.try_wait().expect("try_wait") {
                    break status;
                }
                assert!(
                    Instant::now() < until,
                    "{} did not exit: {}",
                    self.procs[i].name,
                    self.diagnostics()
                );
                self.pump(Duration::from_millis(20));
            };
            self.procs[i].alive = false;
            self.procs[i].leading = None;
            assert!(
                status.success(),
                "{} exited with {status}: {}",
                self.procs[i].name,
                self.log_tail(i)
            );
        }
        self.pump(Duration::from_millis(50));
    }

    /// The ids and `touched` values acknowledged by processes whose name starts with `prefix`.
    pub fn acked_with_prefix(&self, prefix: &str) -> Vec<(&String, &Option<u64>)> {
        self.acked
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .collect()
    }

    /// The acknowledged writes of `prefix` that the server does not have (yet), as
    /// descriptions.
    pub fn missing_on(&self, server: &ReferenceServer, prefix: &str) -> Vec<String> {
        let records: BTreeMap<String, Value> = server
            .records(child::TABLE)
            .into_iter()
            .filter_map(|r| Some((r["id"].as_str()?.to_owned(), r)))
            .collect();
        let mut missing = Vec::new();
        for (id, touched) in self.acked_with_prefix(prefix) {
            match (records.get(id), touched) {
                (None, _) => missing.push(format!("{id}: absent")),
                (Some(record), Some(n)) if record["touched"].as_u64() != Some(*n) => {
                    missing.push(format!("{id}: touched {:?}, acked {n}", record["touched"]))
                }
                _ => {}
            }
        }
        missing
    }

    /// The last lines of a process's stderr.
    pub fn log_tail(&self, proc: usize) -> String {
        let text = std::fs::read_to_string(&self.procs[proc].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// A summary for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = format!("{} writes acknowledged", self.acked.len());
        for (i, p) in self.procs.iter().enumerate() {
            out.push_str(&format!(
                "\n  {} pid {} alive {} ready {} leading {:?} stopped {} depth {:?} cycles {}\n{}",
                p.name,
                p.pid,
                p.alive,
                p.ready,
                p.leading,
                p.stopped,
                p.depth,
                p.cycles,
                self.log_tail(i)
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if p.alive {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}
