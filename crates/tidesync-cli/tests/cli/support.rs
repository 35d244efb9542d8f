//! Shared set-up: a reference server, a temp directory with a config made by `tidesync init`,
//! and helpers that run the built binary.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidesync_testkit::server::ReferenceServer;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tidesync");

/// What a finished command printed, and its exit code.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Parses stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self:?}"))
    }
}

/// A temp dir with a config pointing at a reference server.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub server: ReferenceServer,
    pub config: PathBuf,
}

/// Replaces `from` with `to` in `text`, failing the test if `from` is not there.
pub fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the sample lacks {from:?}");
    text.replace(from, to)
}

impl Env {
    /// A reference server (no auth) and the sample config from `tidesync init`, with the
    /// server's URL, fast retries and no metrics section.
    pub fn new() -> Env {
        Env::with_server(ReferenceServer::start_background())
    }

    /// The same with a given server.
    pub fn with_server(server: ReferenceServer) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("tidesync.toml");
        let init = Command::new(BIN)
            .arg("init")
            .arg(&config)
            .output()
            .expect("runs");
        assert!(init.status.success(), "init failed: {init:?}");
        let env = Env {
            dir,
            server,
            config,
        };
        env.edit(|text| {
            let text = replace(
                text,
                "base_url = \"http://127.0.0.1:8080\"",
                &format!("base_url = \"{}\"", env.server.url()),
            );
            let text = replace(&text, "[metrics]\nlisten = \"127.0.0.1:9187\"\n", "");
            let text = replace(&text, "backoff_base = \"500ms\"", "backoff_base = \"20ms\"");
            replace(&text, "backoff_cap = \"5m\"", "backoff_cap = \"100ms\"")
        });
        env
    }

    /// Rewrites the config file.
    pub fn edit(&self, change: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("config readable");
        std::fs::write(&self.config, change(&text)).expect("config writable");
    }

    /// A command with `-c <config>` and a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("TIDESYNC_CONFIG")
            .stdin(Stdio::null());
        command
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("the binary runs"))
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code,
            0,
            "`tidesync {}` failed: {run:#?}",
            args.join(" ")
        );
        run
    }

    /// Runs a command with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writes stdin");
        Run::from(child.wait_with_output().expect("finishes"))
    }

    /// A path in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The registration file of the daemon with this pid (`app.redb.daemons/<pid>.json`).
    pub fn registration(&self, pid: u32) -> PathBuf {
        self.path("app.redb.daemons").join(format!("{pid}.json"))
    }
}

/// Polls `check` every 25 ms until it holds, or fails after `secs`.
pub fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "not within {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A tiny HTTP/1.1 GET over a plain TCP stream: `(status, body)`.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
