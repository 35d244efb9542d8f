//! # The reference REST server as a standalone backend
//!
//! ```text
//! cargo run --example reference_server -- --port 8080
//! ```
//!
//! The testkit's reference server is a small, well-behaved REST API over in-memory data —
//! CRUD with versions and optimistic concurrency, a gap-free change feed, tombstones,
//! idempotency keys — the kind of API tidesync syncs with. This example runs it on its own,
//! as a backend to point an app, the CLI or `curl` at (it is tidesync's counterpart of the
//! seed SDK's Express example). It prints its URL and a few `curl` commands, and serves until
//! Ctrl-C. Data lives in memory and is gone when it stops.
//!
//! Options: `--port N` (default 8080; 0 picks a free port), `--empty` (no demo posts).
//! Endpoints: see the docs of `tidesync_testkit::server`. The same server, with fault
//! injection and auth options, is the `tidesync-reference-server` binary of the testkit.

use std::process::ExitCode;

use serde_json::json;
use tidesync_testkit::server::ReferenceServer;

const USAGE: &str = "usage: reference_server [--port N] [--empty]";

fn main() -> ExitCode {
    let mut port: u16 = 8080;
    let mut demo_data = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => match args.next().and_then(|v| v.parse().ok()) {
                Some(p) => port = p,
                None => {
                    eprintln!("--port needs a port number\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--empty" => demo_data = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument `{other}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }

    // A thread of its own with its own runtime: no async `main` needed.
    let server = match ReferenceServer::builder().port(port).try_start_background() {
        Ok(server) => server,
        Err(err) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {err}");
            return ExitCode::FAILURE;
        }
    };
    if demo_data {
        for (id, title) in [
            ("welcome", "Welcome to tidesync"),
            ("hello", "Hello, world"),
        ] {
            // As another client would: the server stamps `version` and `updatedAt`.
            if let Err(err) = server.insert_direct("posts", json!({"id": id, "title": title})) {
                eprintln!("cannot seed demo data: {err}");
                return ExitCode::FAILURE;
            }
        }
    }

    let url = server.url();
    println!("listening on {url}");
    println!();
    println!("Try:");
    println!("  curl {url}/api/posts");
    println!("  curl {url}/api/posts/welcome");
    println!(
        "  curl -X POST {url}/api/posts -H 'Content-Type: application/json' \\\n       -d '{{\"id\":\"p1\",\"title\":\"Hi\"}}'"
    );
    println!(
        "  curl -X PUT {url}/api/posts/p1 -H 'Content-Type: application/json' \\\n       -d '{{\"id\":\"p1\",\"title\":\"Edited\",\"version\":1}}'\n       # run it twice: the second gets 409, the record is at version 2 by then"
    );
    println!("  curl '{url}/api/posts?after_updated=0&limit=10'     # the change feed");
    println!("  curl -X DELETE {url}/api/posts/p1                   # a tombstone");
    println!();
    println!("Collections are created on first write. Ctrl-C to stop.");

    // Serve until the process is interrupted (the server runs on its own thread).
    loop {
        std::thread::park();
    }
}
