//! The commands, one module each, and what they share: loading the config, opening the store
//! for inspection (a local-only engine: no transport, no sync, works offline), reading keys and
//! JSON arguments.

pub mod check;
pub mod checkpoint;
pub mod conflicts;
pub mod dead_letters;
pub mod doctor;
pub mod import;
pub mod init;
pub mod outbox;
pub mod quarantine;
pub mod reconcile;
pub mod records;
pub mod run;
pub mod status;
pub mod sync;

use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;
use tidesync::{Engine, Key, KeyKind, Record, TableSpec};

use crate::build;
use crate::cli::{Cli, Command};
use crate::config::{self, LoadedConfig};
use crate::error::{CliError, Exit};
use crate::output::Output;

/// What every command gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The config file (`-c`).
    pub config_path: PathBuf,
    /// Text or JSON output.
    pub out: Output,
}

impl Ctx {
    /// Loads and validates the config (any error → exit 2 with a hint to run `check`).
    pub fn load(&self) -> Result<LoadedConfig, CliError> {
        Ok(config::load(&self.config_path)?)
    }

    /// Loads the config and opens the store with a local-only engine (no sync), for inspection
    /// and local writes. A store held by a running daemon is exit 3, naming its process.
    pub fn open_local(&self) -> Result<Local, CliError> {
        let config = self.load()?;
        let store = build::open_store(&config)?;
        let engine = build::engine(&config, store, None, config.config.sync.clone())?;
        Ok(Local { config, engine })
    }
}

/// A config and a local-only engine on its store; shuts the engine down when dropped.
#[derive(Debug)]
pub struct Local {
    /// The config.
    pub config: LoadedConfig,
    /// The engine (no transport).
    pub engine: Engine,
}

impl Local {
    /// The spec of a declared table, or a usage error listing the declared ones.
    pub fn spec(&self, table: &str) -> Result<&TableSpec, CliError> {
        self.config
            .table(table)
            .ok_or_else(|| unknown_table(&self.config, table))
    }

    /// Checks an optional `--table` filter.
    pub fn check_table(&self, table: Option<&str>) -> Result<(), CliError> {
        match table {
            Some(table) => self.spec(table).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Parses a key given on the command line, in the table's key kind.
    pub fn key(&self, table: &str, text: &str) -> Result<Key, CliError> {
        parse_key(self.spec(table)?, text)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

/// A usage error for a table that is not declared.
pub fn unknown_table(config: &LoadedConfig, table: &str) -> CliError {
    let names = config.table_names();
    CliError::usage(format!("unknown table `{table}`")).hint(if names.is_empty() {
        format!(
            "{} declares no tables; add a [[tables]] section",
            config.path.display()
        )
    } else {
        format!("declared tables: {}", names.join(", "))
    })
}

/// Parses a key in a table's key kind (integer keys must be integers).
pub fn parse_key(spec: &TableSpec, text: &str) -> Result<Key, CliError> {
    match spec.key_kind {
        KeyKind::Integer => text.trim().parse::<i64>().map(Key::Int).map_err(|_| {
            CliError::usage(format!(
                "table `{}` has integer keys; `{text}` is not an integer",
                spec.name
            ))
        }),
        KeyKind::String if text.is_empty() => Err(CliError::usage("a key cannot be empty")),
        KeyKind::String => Ok(Key::Str(text.to_owned())),
    }
}

/// Reads a JSON argument: the text itself, or stdin for `-`.
pub fn read_json(arg: &str, what: &str) -> Result<Value, CliError> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("cannot read {what} from stdin: {e}")))?;
        text
    } else {
        arg.to_owned()
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!("{what} is not valid JSON: {e}")).hint(
            "pass one JSON object, quoted for the shell (e.g. '{\"id\": \"p1\", \"title\": \
             \"Hello\"}'), or - to read it from stdin",
        )
    })
}

/// Reads a JSON object argument (a record).
pub fn read_record(arg: &str, what: &str) -> Result<Record, CliError> {
    match read_json(arg, what)? {
        Value::Object(record) => Ok(record),
        other => Err(CliError::usage(format!(
            "{what} must be a JSON object, got {}",
            tidesync::core::spec::describe(&other)
        ))),
    }
}

/// Runs the command.
pub async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let ctx = Ctx {
        config_path: cli.config,
        out: Output::new(cli.json),
    };
    match cli.command {
        Command::Init { path, force } => init::run(&ctx, path, force),
        Command::Check => check::run(&ctx),
        Command::Run { shutdown_timeout } => run::run(&ctx, shutdown_timeout).await,
        Command::Sync { table } => sync::run(&ctx, table.as_deref()).await,
        Command::Status => status::run(&ctx).await,
        Command::Outbox { table, limit } => outbox::run(&ctx, table.as_deref(), limit),
        Command::DeadLetters(command) => dead_letters::run(&ctx, command).await,
        Command::Checkpoint(command) => checkpoint::run(&ctx, command),
        Command::Doctor { table, write } => doctor::run(&ctx, table.as_deref(), write).await,
        Command::Reconcile { table, dry_run } => reconcile::run(&ctx, &table, dry_run).await,
        Command::Conflicts(command) => conflicts::run(&ctx, command).await,
        Command::Get { table, key } => records::get(&ctx, &table, &key).await,
        Command::Put {
            table,
            record,
            wait: false,
            ..
        } => records::put(&ctx, &table, &record).await,
        Command::Put {
            table,
            record,
            wait: true,
            timeout,
        } => records::put_and_wait(&ctx, &table, &record, timeout).await,
        Command::Delete { table, key } => records::delete(&ctx, &table, &key).await,
        Command::Scan {
            table,
            limit,
            after,
        } => records::scan(&ctx, &table, limit, after.as_deref()).await,
        Command::Patch { table, key, patch } => records::patch(&ctx, &table, &key, &patch).await,
        Command::Import(args) => import::run(&ctx, args).await,
        Command::Export { table, filters } => records::export(&ctx, &table, &filters).await,
        Command::Quarantine(command) => quarantine::run(&ctx, command).await,
    }
}

/// The exit code of a result.
pub fn exit_of(result: &Result<(), CliError>) -> Exit {
    match result {
        Ok(()) => Exit::Ok,
        Err(err) => err.exit,
    }
}
