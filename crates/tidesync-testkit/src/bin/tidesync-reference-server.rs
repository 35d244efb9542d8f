//! `tidesync-reference-server`: runs the testkit's reference REST server standalone, for
//! trying the engine, the CLI or examples against it by hand.
//!
//! ```text
//! tidesync-reference-server [--bind ADDR] [--port N] [--seed N] [--auth-ttl SECS]
//! ```
//!
//! Prints the base URL (and the refresh token when `--auth-ttl` is given) on stdout, then
//! serves until killed. See `tidesync_testkit::server` for the endpoints.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use tidesync_testkit::server::{DEFAULT_SEED, ReferenceServer};

const USAGE: &str =
    "usage: tidesync-reference-server [--bind ADDR] [--port N] [--seed N] [--auth-ttl SECS]

  --bind ADDR      address to listen on (default 127.0.0.1; an ADDR:PORT form is accepted too)
  --port N         port to listen on (default 0: any free port)
  --seed N         seed of the fault generator
  --auth-ttl SECS  require Bearer tokens on /api, valid SECS seconds
  -h, --help       this help";

#[derive(Debug, PartialEq)]
struct Args {
    ip: IpAddr,
    port: Option<u16>,
    seed: u64,
    auth_ttl: Option<u64>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut out = Args {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: None,
        seed: DEFAULT_SEED,
        auth_ttl: None,
    };
    let mut bind_port = None;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--bind" => {
                let v = value()?;
                if let Ok(sa) = v.parse::<SocketAddr>() {
                    out.ip = sa.ip();
                    bind_port = Some(sa.port());
                } else {
                    out.ip = v
                        .parse()
                        .map_err(|_| format!("--bind: `{v}` is not an IP address"))?;
                }
            }
            "--port" => {
                let v = value()?;
                out.port = Some(
                    v.parse()
                        .map_err(|_| format!("--port: `{v}` is not a port number"))?,
                );
            }
            "--seed" => {
                let v = value()?;
                out.seed = v
                    .parse()
                    .map_err(|_| format!("--seed: `{v}` is not an unsigned integer"))?;
            }
            "--auth-ttl" => {
                let v = value()?;
                out.auth_ttl = Some(
                    v.parse()
                        .map_err(|_| format!("--auth-ttl: `{v}` is not a number of seconds"))?,
                );
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if out.port.is_none() {
        out.port = bind_port;
    }
    Ok(Some(out))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = ReferenceServer::builder()
        .bind(SocketAddr::new(args.ip, args.port.unwrap_or(0)))
        .seed(args.seed);
    if let Some(ttl) = args.auth_ttl {
        builder = builder.auth(Duration::from_secs(ttl));
    }
    let server = match builder.try_start_background() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.url());
    if args.auth_ttl.is_some() {
        println!("refresh token: {}", server.refresh_token());
    }
    // Serve until the process is killed.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(v.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_flags() {
        let a = parse(&[
            "--port",
            "8080",
            "--seed=9",
            "--bind",
            "0.0.0.0",
            "--auth-ttl",
            "60",
        ]);
        assert_eq!(
            a,
            Ok(Some(Args {
                ip: "0.0.0.0"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port: Some(8080),
                seed: 9,
                auth_ttl: Some(60),
            }))
        );
        let b = parse(&["--bind", "127.0.0.1:7000"]);
        assert!(matches!(
            b,
            Ok(Some(Args {
                port: Some(7000),
                ..
            }))
        ));
        assert_eq!(parse(&["--help"]), Ok(None));
        assert!(parse(&["--port"]).is_err());
        assert!(parse(&["--port", "x"]).is_err());
        assert!(parse(&["--what"]).is_err());
    }
}
