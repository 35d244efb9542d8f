//! Runs the examples in `examples/` as real processes and checks their exit code and output,
//! so that what the documentation shows keeps working.
//!
//! `cargo test` and `cargo nextest run` build the examples next to the test binaries
//! (`target/<profile>/examples/<name>`); when one is missing (e.g. `cargo test --test
//! examples` alone) or older than its source, it is built first with `cargo build --example
//! <name>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest any example may run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One cargo build at a time (they would only wait for each other's lock).
static BUILD: Mutex<()> = Mutex::new(());

/// The path of the built example `name`, building it if it is not there yet.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/examples-<hash>  →  target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if needs_build(name, &path) {
        let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        if needs_build(name, &path) {
            build(name, profile_dir);
        }
    }
    assert!(
        path.exists(),
        "example `{name}` not found at {} even after building it",
        path.display()
    );
    path
}

/// Missing, or older than its source (e.g. after `cargo test --test examples` alone, which
/// does not build examples).
fn needs_build(name: &str, binary: &Path) -> bool {
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    match (modified(binary), modified(&source)) {
        (None, _) => true,
        (Some(built), Some(written)) => written > built,
        (Some(_), None) => false,
    }
}

fn build(name: &str, profile_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "--manifest-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        "-p",
        "tidesync",
        "--example",
        name,
    ]);
    match profile_dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "cargo build --example {name} failed");
}

/// What a finished example printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs an example to completion (killed after [`TIMEOUT`]).
fn run(name: &str, args: &[&str]) -> Run {
    let mut child = command(name, args).spawn().expect("the example starts");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example `{name}` still running after {TIMEOUT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn command(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(example(name));
    command
        .args(args)
        .env_remove("RUST_LOG") // the output checked below is the examples' own
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Reads a pipe to the end on a thread of its own (so a full pipe never blocks the child).
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// Runs an example and checks that it succeeded and printed every one of `expected`, in
/// that order.
fn check(name: &str, expected: &[&str]) -> Run {
    let run = run(name, &[]);
    assert_eq!(run.code, Some(0), "example `{name}` failed:\n{run}");
    let mut rest = run.stdout.as_str();
    for line in expected {
        match rest.find(line) {
            Some(at) => rest = &rest[at + line.len()..],
            None => panic!("example `{name}`: `{line}` missing or out of order:\n{run}"),
        }
    }
    run
}

#[test]
fn quickstart() {
    check(
        "quickstart",
        &[
            "1. REST API (reference server) at http://127.0.0.1:",
            "2. Engine started on ",
            "3. Offline (sync stopped).",
            "outbox: 1 entry for 5 writes (coalesced)",
            "#1 create posts/",
            "server: 0 posts",
            "4. Online: start() + sync() -> pushed 1",
            "\"title\":\"Hello, tidesync\"",
            "5. Conflict",
            "sync() -> 1 conflict(s)",
            "detected by push_rejected, resolved by server_wins -> take_remote",
            "6. Final state",
            "server: title=\"Server title\" version=2",
            "local:  title=\"Server title\" tags=[\"intro\"] version=2",
            "queue_depth=0",
            "health: Healthy",
            "Done.",
        ],
    );
}

#[test]
fn custom_conflict() {
    check(
        "custom_conflict",
        &[
            "conflict: posts/p1 detected by push_rejected, strategy merge_tags -> merged",
            "\"tags\":[\"rust\",\"offline\",\"sync\"],\"title\":\"Tides and syncs\"",
            "Done:",
        ],
    );
}

#[test]
fn custom_transport() {
    check(
        "custom_transport",
        &[
            "[transport] push create posts/a -> ok",
            "[transport] pull posts (initial) -> 2 record(s)",
            "applied 1 remote change(s)",
            "[transport] push update posts/a -> conflict",
            "counters: pushes=3 pulls=3 fetches=0 failures=1",
            "Done.",
        ],
    );
}

#[test]
fn compose_actors() {
    check(
        "compose_actors",
        &[
            "actors started in the host's System",
            "LocalWrite committed 2 change(s)",
            // The debounced push the commit triggered may already have sent the writes (and
            // pulled the server's post); the example itself checks the server and the outbox.
            "SyncNow -> pushed ",
            "pulled 1 page(s)",
            "\"title\":\"already there\"",
            "Done.",
        ],
    );
}

#[test]
fn prometheus() {
    let run = check(
        "prometheus",
        &[
            "/metrics served at http://127.0.0.1:",
            "synced: pushed 3, applied 1",
            "GET /metrics -> 200 OK (text/plain; version=0.0.4",
            "Done.",
        ],
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("tidesync_push_total{")
                && l.contains("outcome=\"acked\"")
                && l.ends_with(" 3")),
        "no acked push counter in the scrape:\n{run}"
    );
    let commits: u64 = run
        .stdout
        .lines()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix("tidesync_store_commit_duration_seconds_count{")
        })
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        commits >= 4,
        "the three writes and the sync commit through the store writer:\n{run}"
    );
}

/// Kills the child when the test ends, whatever happens.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn reference_server_serves_until_killed() {
    let mut child = KillOnDrop(
        command("reference_server", &["--port", "0"])
            .spawn()
            .expect("the example starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout is piped");
    // Read its first line (the URL) without hanging if it never comes.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let first = rx.recv_timeout(TIMEOUT).expect("the server prints its URL");
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
    let authority = url.strip_prefix("http://").expect("an http URL");

    let mut stream = TcpStream::connect(authority).expect("the server accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(
        stream,
        "GET /api/posts HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a response arrives");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "GET /api/posts: {response}"
    );
    assert!(
        response.contains("Welcome to tidesync"),
        "the demo posts are served: {response}"
    );

    assert!(
        child.0.try_wait().expect("poll the server").is_none(),
        "the server keeps running until killed"
    );
}
