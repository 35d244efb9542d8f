//! The command line (clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::DEFAULT_CONFIG_FILE;
use crate::error::EXIT_CODES_HELP;

/// tidesync: sync a local redb store with your REST API, and inspect it offline.
#[derive(Debug, Parser)]
#[command(
    name = "tidesync",
    version,
    about = "Sync a local tidesync store with your REST API, and inspect it offline.",
    long_about = "Sync a local tidesync store with your REST API, and inspect it offline.\n\n\
        Everything is driven by one TOML config file (see `tidesync init`). `run` is the sync \
        daemon; the inspection commands (status, outbox, dead-letters, conflicts, quarantine, \
        get, put, patch, delete, scan, import, export) open the store directly and work \
        offline, but not while a daemon holds the store.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// The config file.
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "TIDESYNC_CONFIG",
        default_value = DEFAULT_CONFIG_FILE,
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// Print machine-readable JSON instead of text (errors too, on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// Log format (logs go to stderr; the level comes from RUST_LOG, default `info` for `run`
    /// and `error` otherwise).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented sample config (works against the testkit reference server).
    Init {
        /// Where to write it (default: the -c path, `tidesync.toml`).
        path: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate the config: every problem with its line and column.
    Check,
    /// The sync daemon: syncs on an interval and on demand, serves /metrics when configured,
    /// stops cleanly on SIGINT/SIGTERM.
    Run {
        /// How long to let an in-flight sync cycle finish at shutdown (e.g. `10s`, `500ms`).
        #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
        shutdown_timeout: Duration,
    },
    /// Run one sync cycle (push, then pull) with progress; exits 1 if it failed.
    Sync {
        /// Only this table.
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
    },
    /// Queue depth, dead letters, parked conflicts and per-table figures.
    Status,
    /// List outbox entries in push order (the first 50 unless --limit or --all; with --json,
    /// all of them unless --limit). A cut list says so on stderr.
    Outbox {
        /// Only this table.
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
        /// How many to list.
        #[command(flatten)]
        limit: LimitArgs,
    },
    /// Entries the server refused for good: list, retry, edit and retry, discard.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Conflicts parked for a decision: list, settle.
    #[command(subcommand)]
    Conflicts(ConflictCommand),
    /// A table's pull checkpoint: show it, or reset it.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Check the configured server against the config, table by table: one finding per line
    /// with the table, the setting to change and the fix. Exits 1 if a finding is an error.
    Doctor {
        /// Only this table.
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
        /// Also write: create, update and delete a scratch record per table and check each
        /// change comes back through the pull feed.
        #[arg(long)]
        write: bool,
    },
    /// Find records the server deleted for good: list the server's keys (the pull feed walked
    /// from the start) and delete locally the records it no longer has and that have no
    /// pending local change (no outbox entries are made). Needs the store to itself.
    Reconcile {
        /// The table.
        table: String,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a record as JSON.
    Get {
        /// The table.
        table: String,
        /// The record key.
        key: String,
    },
    /// Insert or replace a record (queued for push); JSON object as argument or `-` for stdin.
    /// With --wait, push it now and wait until the server has it: exit 6 if the server
    /// refused it (dead-lettered), 5 if it is not on the server within --timeout.
    Put {
        /// The table.
        table: String,
        /// The record as a JSON object, or `-` to read it from stdin.
        #[arg(value_name = "JSON")]
        record: String,
        /// Push the write now and wait for the server's answer (needs the server).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. `30s`, `500ms`); the write stays queued after it.
        #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", requires = "wait")]
        timeout: Duration,
    },
    /// Delete a record (queued for push).
    Delete {
        /// The table.
        table: String,
        /// The record key.
        key: String,
    },
    /// Print records in key order, one JSON object per line (a JSON array with --json); the
    /// first 100 unless --limit or --all (with --json, all unless --limit). A cut list says so
    /// on stderr.
    Scan {
        /// The table.
        table: String,
        /// How many to list.
        #[command(flatten)]
        limit: LimitArgs,
        /// Start after this key (exclusive), to page.
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
    },
    /// Apply a JSON merge patch (RFC 7386: `null` removes a field) to a record; only the
    /// changed fields are pushed where the route uses PATCH. Prints the updated record.
    Patch {
        /// The table.
        table: String,
        /// The record key.
        key: String,
        /// The patch as a JSON object, or `-` to read it from stdin.
        #[arg(value_name = "JSON")]
        patch: String,
    },
    /// Write many records from NDJSON or a JSON array (detected), in batches of one
    /// transaction each (with their outbox entries); prints a summary with every rejected
    /// record's line (or array item) and why. Exits 1 if any record was rejected.
    Import(ImportArgs),
    /// Print every record of a table (optionally only those matching --where) as NDJSON, in
    /// key order, read from the store page by page (constant memory).
    Export {
        /// The table.
        table: String,
        /// Only records whose FIELD equals VALUE (VALUE is read as JSON when it parses, e.g.
        /// `true`, `5`, `null`, else as a string); repeat to require several.
        #[arg(long = "where", value_name = "FIELD=VALUE")]
        filters: Vec<String>,
    },
    /// Pulled items that could not be applied: list, retry, discard.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

/// `--limit N` / `--all` of the listing commands.
#[derive(Debug, Clone, Copy, Args)]
pub struct LimitArgs {
    /// At most this many (default: 100 for `scan`, 50 for `outbox` and `quarantine list`;
    /// no limit with --json).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub limit: Option<usize>,
    /// Everything, no limit.
    #[arg(long)]
    pub all: bool,
}

impl LimitArgs {
    /// The limit to apply: `None` for everything. Text output has a default limit; `--json`
    /// output is complete unless `--limit` is given.
    pub fn resolve(&self, default: usize, json: bool) -> Option<usize> {
        match (self.all, self.limit) {
            (true, _) => None,
            (false, Some(n)) => Some(n),
            (false, None) if json => None,
            (false, None) => Some(default),
        }
    }
}

/// How `import` writes each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportMode {
    /// Only new records; a record whose key exists is rejected.
    Insert,
    /// Insert or replace whole records.
    Upsert,
    /// Apply each record as a JSON merge patch to the existing record with its key.
    Merge,
}

/// `tidesync import TABLE [FILE|-]`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The table.
    pub table: String,
    /// NDJSON (one object per line) or a JSON array of objects; `-` (default) reads stdin.
    #[arg(default_value = "-", value_name = "FILE")]
    pub file: String,
    /// What to do with each record.
    #[arg(long, value_enum, default_value_t = ImportMode::Upsert)]
    pub mode: ImportMode,
    /// Records per batch (one transaction each).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub batch_size: usize,
    /// Seed a local-only table: refuse the import unless the table is never pushed
    /// (`push = false`), so nothing imported is queued for the server.
    #[arg(long)]
    pub local_only: bool,
}

/// `tidesync quarantine …`
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined pulled items with the reason (oldest first).
    List {
        /// Only this table.
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
        /// How many to list.
        #[command(flatten)]
        limit: LimitArgs,
    },
    /// Apply a quarantined item again (e.g. after fixing the table's spec); if it is refused
    /// again it stays quarantined under a new number.
    Retry {
        /// The item's number (from `list`).
        seq: u64,
    },
    /// Drop a quarantined item for good.
    Discard {
        /// The item's number (from `list`).
        seq: u64,
    },
}

/// `tidesync checkpoint …`
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Print the stored pull checkpoint of a table.
    Show {
        /// The table.
        table: String,
    },
    /// Delete the pull checkpoint: the next sync reads the table's whole feed again.
    Reset {
        /// The table.
        table: String,
        /// Keep the filter values; drop only the page walk in progress, a learned page cap
        /// and the tie boost.
        #[arg(long)]
        keep_filter: bool,
    },
}

/// `tidesync dead-letters …`
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters with the server's answer.
    List {
        /// Only this table.
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
    },
    /// Put a dead letter back in the queue, at its place in its record's order.
    Retry {
        /// The entry's sequence number (from `list`).
        seq: u64,
    },
    /// Replace a dead letter's record, then retry it.
    Edit {
        /// The entry's sequence number (from `list`).
        seq: u64,
        /// The corrected record as a JSON object, or `-` for stdin.
        #[arg(long, value_name = "JSON")]
        record: String,
    },
    /// Drop a dead letter for good; the record's later entries proceed.
    Discard {
        /// The entry's sequence number (from `list`).
        seq: u64,
    },
}

/// `tidesync conflicts …`
#[derive(Debug, Subcommand)]
pub enum ConflictCommand {
    /// List parked conflicts (base, local and remote versions).
    List {
        /// Only this table.
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
    },
    /// Settle a parked conflict.
    Settle(SettleArgs),
}

/// `tidesync conflicts settle TABLE KEY --take-remote|--keep-local|--merged JSON`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("decision").required(true).multiple(false)))]
pub struct SettleArgs {
    /// The table.
    pub table: String,
    /// The record key.
    pub key: String,
    /// Take the server's version.
    #[arg(long, group = "decision")]
    pub take_remote: bool,
    /// Keep the local version (it is pushed again).
    #[arg(long, group = "decision")]
    pub keep_local: bool,
    /// Use this merged record (JSON object, or `-` for stdin); it is pushed.
    #[arg(long, group = "decision", value_name = "JSON")]
    pub merged: Option<String>,
}

/// Parses `250ms`, `10s`, `5m`, `1h` or plain milliseconds (the config file's syntax).
pub use tidesync::actors::settings::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_parses() {
        let lines: &[&[&str]] = &[
            &["init"],
            &["init", "x.toml", "--force"],
            &["check", "-c", "x.toml", "--json"],
            &["run", "--shutdown-timeout", "5s", "--log-format", "json"],
            &["sync", "--table", "posts"],
            &["status", "--json"],
            &["outbox", "--table", "posts", "--limit", "5"],
            &["dead-letters", "list", "--table", "posts"],
            &["dead-letters", "retry", "3"],
            &["dead-letters", "edit", "3", "--record", "{}"],
            &["dead-letters", "discard", "3"],
            &["conflicts", "list"],
            &["conflicts", "settle", "posts", "p1", "--take-remote"],
            &["conflicts", "settle", "posts", "p1", "--merged", "{}"],
            &["get", "posts", "p1", "--json"],
            &["put", "posts", "{}", "--json"],
            &["put", "posts", "-"],
            &["delete", "posts", "p1"],
            &["scan", "posts", "--limit", "3", "--after", "p1"],
            &["scan", "posts", "--all"],
            &["outbox", "--all"],
            &["patch", "posts", "p1", "{}"],
            &["import", "posts"],
            &[
                "import",
                "posts",
                "x.ndjson",
                "--mode",
                "merge",
                "--batch-size",
                "10",
            ],
            &["import", "drafts", "-", "--local-only"],
            &["export", "posts", "--where", "a=1", "--where", "b=x"],
            &["quarantine", "list", "--limit", "3"],
            &["quarantine", "retry", "3"],
            &["quarantine", "discard", "3"],
        ];
        for line in lines {
            let args = std::iter::once("tidesync").chain(line.iter().copied());
            let parsed = Cli::try_parse_from(args);
            assert!(parsed.is_ok(), "{line:?}: {:?}", parsed.err());
        }
        let both = [
            "tidesync",
            "conflicts",
            "settle",
            "t",
            "k",
            "--take-remote",
            "--keep-local",
        ];
        assert!(Cli::try_parse_from(both).is_err());
        assert!(Cli::try_parse_from(["tidesync", "conflicts", "settle", "t", "k"]).is_err());
        let both = ["tidesync", "scan", "t", "--all", "--limit", "3"];
        assert!(Cli::try_parse_from(both).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
