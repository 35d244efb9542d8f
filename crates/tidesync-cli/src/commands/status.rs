//! `tidesync status`: what is waiting in the store, read offline.

use serde::Serialize;
use serde_json::Value;

use crate::commands::Ctx;
use crate::error::CliError;
use crate::output::{columns, human_ms};

/// One table's figures.
#[derive(Debug, Serialize)]
pub struct TableStatus {
    /// The table.
    pub name: String,
    /// Records stored locally.
    pub records: u64,
    /// Outbox entries waiting.
    pub queue_depth: u64,
    /// Age of the oldest waiting entry.
    pub oldest_pending_age_ms: Option<u64>,
    /// Local writes are pushed.
    pub push: bool,
    /// Remote changes are pulled.
    pub pull: bool,
}

/// The `status` document.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The config file.
    pub config: String,
    /// The store file.
    pub store: String,
    /// The server's base URL, if any.
    pub server: Option<String>,
    /// Whether a daemon holds the store (always false here: the store opened).
    pub daemon_running: bool,
    /// Entries waiting, all tables.
    pub queue_depth: u64,
    /// Age of the oldest waiting entry.
    pub oldest_pending_age_ms: Option<u64>,
    /// Dead letters waiting.
    pub dead_letters: u64,
    /// Conflicts parked for a decision.
    pub parked_conflicts: u64,
    /// Pulled items that could not be applied (see `tidesync quarantine list`).
    pub quarantined: u64,
    /// Per table.
    pub tables: Vec<TableStatus>,
}

/// Prints the status (exit 3 while a daemon holds the store).
pub async fn run(ctx: &Ctx) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let engine = &local.engine;
    let status = engine.status()?;
    let mut tables = Vec::new();
    for spec in &local.config.config.tables {
        let stats = engine.outbox_stats(&spec.name)?;
        let records = engine.table::<Value>(&spec.name)?.count().await?;
        tables.push(TableStatus {
            name: spec.name.clone(),
            records,
            queue_depth: stats.depth,
            oldest_pending_age_ms: stats
                .oldest_created_at_ms
                .map(|t| tidesync::core::hlc::wall_millis().saturating_sub(t)),
            push: spec.push,
            pull: spec.pull,
        });
    }
    let report = StatusReport {
        config: local.config.path.display().to_string(),
        store: local.config.store_path().display().to_string(),
        server: local
            .config
            .config
            .server
            .as_ref()
            .map(|s| s.base_url.clone()),
        daemon_running: false,
        queue_depth: status.queue_depth,
        oldest_pending_age_ms: status.oldest_pending_age_ms,
        dead_letters: status.dead_letters,
        parked_conflicts: status.parked_conflicts,
        quarantined: status.quarantined,
        tables,
    };
    if ctx.out.json {
        return ctx.out.json(&report);
    }
    let out = &ctx.out;
    out.line(format!("store:            {}", report.store));
    out.line(format!(
        "server:           {}",
        report.server.as_deref().unwrap_or("none (local only)")
    ));
    out.line("daemon:           not running (the store is free)");
    out.line(format!(
        "outbox:           {} waiting{}",
        report.queue_depth,
        report
            .oldest_pending_age_ms
            .map(|age| format!(", oldest {}", human_ms(age)))
            .unwrap_or_default()
    ));
    out.line(format!(
        "dead letters:     {}{}",
        report.dead_letters,
        if report.dead_letters > 0 {
            "  (tidesync dead-letters list)"
        } else {
            ""
        }
    ));
    out.line(format!(
        "parked conflicts: {}{}",
        report.parked_conflicts,
        if report.parked_conflicts > 0 {
            "  (tidesync conflicts list)"
        } else {
            ""
        }
    ));
    out.line(format!(
        "quarantined:      {}{}",
        report.quarantined,
        if report.quarantined > 0 {
            "  (tidesync quarantine list)"
        } else {
            ""
        }
    ));
    if !report.tables.is_empty() {
        out.line("");
        let rows: Vec<Vec<String>> = report
            .tables
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.records.to_string(),
                    t.queue_depth.to_string(),
                    t.oldest_pending_age_ms.map(human_ms).unwrap_or("-".into()),
                    match (t.push, t.pull) {
                        (true, true) => "push+pull",
                        (true, false) => "push only",
                        (false, true) => "pull only",
                        (false, false) => "local only",
                    }
                    .to_owned(),
                ]
            })
            .collect();
        out.line(columns(
            &["TABLE", "RECORDS", "WAITING", "OLDEST", "SYNC"],
            &rows,
        ));
    }
    Ok(())
}
