#![doc = include_str!("../README.md")]
//!
//! # Library layout
//!
//! The binary is a thin `main` over this library, so everything is testable:
//! [`config`] (the file's model, loading, validation with line and column),
//! [`build`] (config → store, transport, strategies, metrics, [`tidesync::Engine`]),
//! [`output`] (text and `--json` printing), [`cli`] (the clap command line),
//! [`commands`] (one module per command), [`error`] (exit codes), [`daemons`] (the registry
//! of running daemons).

pub mod build;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemons;
pub mod error;
pub mod output;
pub mod strategies;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};
use crate::error::{CliError, Exit};
use crate::output::{Output, stderr_is_terminal};

/// Structured logs on stderr: `RUST_LOG` if set, else `default`.
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(stderr_is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// The whole program: parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(Exit::Usage.code()));
        }
    };
    let out = Output::new(cli.json);
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "error",
    };
    init_logging(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            out.error(&CliError::msg(
                Exit::Failed,
                format!("cannot start the async runtime: {err}"),
            ));
            return ExitCode::from(Exit::Failed.code());
        }
    };
    let result = runtime.block_on(commands::dispatch(cli));
    if let Err(err) = &result {
        out.error(err);
    }
    ExitCode::from(commands::exit_of(&result).code())
}
