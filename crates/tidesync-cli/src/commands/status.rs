//! `tidesync status`: what is waiting in the store, read offline, and which daemons run on it
//! (from their registrations, see [`crate::daemons`]) and which of them leads (the holder of
//! the leader lock, see `tidesync-leader-lockfile`).

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tidesync::core::HybridClock;
use tidesync::core::local::{LocalDb, TableSchemaStatus};
use tidesync_leader_lockfile::LockfileLeader;

use crate::build;
use crate::commands::{Ctx, Local};
use crate::config::LoadedConfig;
use crate::daemons::{self, DaemonInfo};
use crate::error::{CliError, Exit};
use crate::output::{columns, human_ms};

/// A live daemon on the store.
#[derive(Debug, Serialize)]
pub struct DaemonStatus {
    /// Its process id.
    pub pid: u32,
    /// When it started (Unix milliseconds).
    pub since_ms: u64,
    /// How long it has been running.
    pub up_ms: u64,
    /// `leader` or `follower` with `[leader] lockfile = true`; `syncing` without an election
    /// (every daemon syncs).
    pub role: &'static str,
    /// The epoch it leads with (leader only).
    pub epoch: Option<u64>,
    /// The `tidesync` version it runs.
    pub version: String,
}

/// The current sync leader.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LeaderStatus {
    /// Its process id.
    pub pid: u32,
    /// Its fencing epoch.
    pub epoch: u64,
    /// Whether it is a registered `tidesync run` daemon (else another process of the app,
    /// e.g. `tidesync sync` or a program using the library).
    pub daemon: bool,
}

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
    /// The version of the record shape the store held before this command opened it (`None`:
    /// not recorded yet).
    pub schema_version: Option<u32>,
    /// The version the config declares (`[[tables]] version`).
    pub declared_version: u32,
    /// Indexes this open built over the stored records (declared since the last open).
    pub indexes_built: Vec<String>,
    /// Indexes this open dropped (no longer declared).
    pub indexes_dropped: Vec<String>,
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
    /// Whether any daemon runs on the store (only possible with `[store] multi_process =
    /// true`: otherwise a running daemon holds the store and `status` exits 3).
    pub daemon_running: bool,
    /// The live daemons, oldest first.
    pub daemons: Vec<DaemonStatus>,
    /// The election in use: `lockfile` or `none`.
    pub election: &'static str,
    /// The current leader, if one is alive.
    pub leader: Option<LeaderStatus>,
    /// Entries waiting, all tables.
    pub queue_depth: u64,
    /// Age of the oldest waiting entry.
    pub oldest_pending_age_ms: Option<u64>,
    /// Dead letters waiting.
    pub dead_letters: u64,
    /// Conflicts parked for a decision.
    pub parked_conflicts: u64,
    /// The outbox by entry state (ready, waiting to retry, blocked, dead …).
    pub outbox: tidesync::OutboxSummary,
    /// Pulled items that could not be applied (see `tidesync quarantine list`).
    pub quarantined: u64,
    /// Per table.
    pub tables: Vec<TableStatus>,
}

/// How many outbox entries `status` reads to count them by state.
const STATES_READ_AT_MOST: usize = 100_000;

/// `2 ready, 1 waiting to retry (next in 3.0s), 1 blocked behind a dead letter`.
fn outbox_states(summary: &tidesync::OutboxSummary) -> String {
    let now = tidesync::core::hlc::wall_millis();
    let mut parts = Vec::new();
    let mut add = |n: u64, what: String| {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    };
    add(summary.ready, "ready".into());
    add(summary.in_flight, "in flight".into());
    add(
        summary.waiting,
        format!(
            "waiting to retry{}",
            summary
                .next_retry_at_ms
                .map(|at| format!(" (next in {})", human_ms(at.saturating_sub(now))))
                .unwrap_or_default()
        ),
    );
    add(
        summary.behind_dead_letter,
        "blocked behind a dead letter".into(),
    );
    add(
        summary.waiting_for_reference,
        "waiting for a referenced create".into(),
    );
    add(summary.parked, "blocked by a parked conflict".into());
    add(
        summary.behind_head,
        "queued behind their record's head".into(),
    );
    if !summary.complete {
        parts.push(format!("(oldest {STATES_READ_AT_MOST} counted)"));
    }
    parts.join(", ")
}

/// Prints the status (exit 3 while a daemon holds the store).
pub async fn run(ctx: &Ctx) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = build::open_store(&config)?;
    // What the store holds, read before the engine brings it in step with the config.
    let schema = tidesync::core::local::Schema::new(config.config.tables.clone())?;
    let before = LocalDb::new(schema, Arc::new(HybridClock::new()))
        .schema_sync()
        .schema_status(&store)?;
    let pending: Vec<&TableSchemaStatus> = before
        .iter()
        .filter(|t| !t.pending_migrations.is_empty())
        .collect();
    if !pending.is_empty() {
        // The engine would refuse to open (no migrations registered): say what waits.
        let what: Vec<String> = pending
            .iter()
            .map(|t| {
                format!(
                    "table `{}`: the store holds version {}, the config declares {}                      ({} migration step{} pending)",
                    t.table,
                    t.stored_version.unwrap_or(0),
                    t.declared_version.unwrap_or(0),
                    t.pending_migrations.len(),
                    if t.pending_migrations.len() == 1 { "" } else { "s" }
                )
            })
            .collect();
        return Err(CliError::msg(
            Exit::Failed,
            format!(
                "{}; migrations are Rust code: open the store with the application that                  registers them (EngineBuilder::migration), then run status again",
                what.join("; ")
            ),
        ));
    }
    let engine = build::engine(&config, store, None, config.config.sync.clone())?;
    let local = Local { config, engine };
    let engine = &local.engine;
    let status = engine.status()?;
    let mut tables = Vec::new();
    for spec in &local.config.config.tables {
        let stats = engine.outbox_stats(&spec.name)?;
        let records = engine.table::<Value>(&spec.name)?.count().await?;
        let schema = before.iter().find(|t| t.table == spec.name);
        tables.push(TableStatus {
            name: spec.name.clone(),
            records,
            queue_depth: stats.depth,
            oldest_pending_age_ms: stats
                .oldest_created_at_ms
                .map(|t| tidesync::core::hlc::wall_millis().saturating_sub(t)),
            push: spec.push,
            pull: spec.pull,
            schema_version: schema.and_then(|t| t.stored_version),
            declared_version: spec.version,
            indexes_built: schema
                .map(|t| t.indexes_to_build.clone())
                .unwrap_or_default(),
            indexes_dropped: schema
                .map(|t| t.indexes_to_drop.clone())
                .unwrap_or_default(),
        });
    }
    let live = daemons::live(&local.config.store_path()).map_err(|e| {
        CliError::msg(
            Exit::Failed,
            format!(
                "cannot read the daemon registry {}: {e}",
                local.config.daemons_dir().display()
            ),
        )
    })?;
    let leader = current_leader(&local.config, &live)?;
    let now = tidesync::core::hlc::wall_millis();
    let election = local.config.config.leader.lockfile;
    let daemons: Vec<DaemonStatus> = live
        .iter()
        .map(|d| {
            let leads = leader.filter(|l| l.pid == d.pid);
            DaemonStatus {
                pid: d.pid,
                since_ms: d.started_at_ms,
                up_ms: now.saturating_sub(d.started_at_ms),
                role: match (election, leads) {
                    (false, _) => "syncing",
                    (true, Some(_)) => "leader",
                    (true, None) => "follower",
                },
                epoch: leads.map(|l| l.epoch),
                version: d.version.clone(),
            }
        })
        .collect();
    let report = StatusReport {
        config: local.config.path.display().to_string(),
        store: local.config.store_path().display().to_string(),
        server: local
            .config
            .config
            .server
            .as_ref()
            .map(|s| s.base_url.clone()),
        daemon_running: !daemons.is_empty(),
        daemons,
        election: if election { "lockfile" } else { "none" },
        leader,
        queue_depth: status.queue_depth,
        oldest_pending_age_ms: status.oldest_pending_age_ms,
        dead_letters: status.dead_letters,
        parked_conflicts: status.parked_conflicts,
        outbox: engine.outbox_summary(STATES_READ_AT_MOST)?,
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
    print_daemons(ctx, &report);
    // The oldest age counts only when something waits (dead letters are listed below).
    out.line(format!(
        "outbox:           {} waiting{}",
        report.queue_depth,
        report
            .oldest_pending_age_ms
            .filter(|_| report.queue_depth > 0)
            .map(|age| format!(", oldest {}", human_ms(age)))
            .unwrap_or_default()
    ));
    let states = outbox_states(&report.outbox);
    if !states.is_empty() {
        out.line(format!("                  {states}"));
    }
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
                    schema_cell(t),
                ]
            })
            .collect();
        out.line(columns(
            &["TABLE", "RECORDS", "WAITING", "OLDEST", "SYNC", "SCHEMA"],
            &rows,
        ));
    }
    Ok(())
}

/// `v2`, or `v2, index title built (this open)`.
fn schema_cell(t: &TableStatus) -> String {
    let mut cell = format!("v{}", t.declared_version);
    if t.schema_version.is_none() {
        cell.push_str(" (new)");
    }
    for index in &t.indexes_built {
        cell.push_str(&format!(", index {index} built"));
    }
    for index in &t.indexes_dropped {
        cell.push_str(&format!(", index {index} dropped"));
    }
    cell
}

/// The process that leads the store's election, if it is alive: the holder recorded in the
/// leader lock file when it is a live registered daemon, or another live process that holds
/// the lock. A SIGKILLed leader's record stays in the file, so the record alone is not enough.
fn current_leader(
    loaded: &LoadedConfig,
    live: &[DaemonInfo],
) -> Result<Option<LeaderStatus>, CliError> {
    if !loaded.config.leader.lockfile {
        return Ok(None);
    }
    let elector = LockfileLeader::for_database(loaded.store_path())?;
    let Some(holder) = elector.last_holder()? else {
        return Ok(None);
    };
    if live.iter().any(|d| d.pid == holder.pid) {
        return Ok(Some(LeaderStatus {
            pid: holder.pid,
            epoch: holder.epoch,
            daemon: true,
        }));
    }
    // Not a daemon: another process of the app may lead. Probe the lock only if the recorded
    // process exists (the probe can delay a campaign by one interval).
    if daemons::process_exists(holder.pid) && elector.lock_is_held()? {
        return Ok(Some(LeaderStatus {
            pid: holder.pid,
            epoch: holder.epoch,
            daemon: false,
        }));
    }
    Ok(None)
}

fn print_daemons(ctx: &Ctx, report: &StatusReport) {
    let out = &ctx.out;
    if report.daemons.is_empty() {
        out.line("daemons:          none running");
    } else {
        out.line(format!(
            "daemons:          {} running",
            report.daemons.len()
        ));
    }
    match (&report.leader, report.election) {
        (_, "none") if !report.daemons.is_empty() => {
            out.line(
                "leader:           no election ([leader] lockfile is off): every daemon syncs",
            );
        }
        (_, "none") => {}
        (Some(leader), _) => out.line(format!(
            "leader:           pid {}, epoch {}{}",
            leader.pid,
            leader.epoch,
            if leader.daemon {
                ""
            } else {
                " (not a `tidesync run` daemon)"
            }
        )),
        (None, _) => out.line("leader:           none alive"),
    }
    if !report.daemons.is_empty() {
        let rows: Vec<Vec<String>> = report
            .daemons
            .iter()
            .map(|d| {
                vec![
                    format!("  {}", d.pid),
                    d.role.to_owned(),
                    d.epoch.map(|e| e.to_string()).unwrap_or("-".into()),
                    human_ms(d.up_ms),
                ]
            })
            .collect();
        out.line(columns(&["  PID", "ROLE", "EPOCH", "UP"], &rows));
    }
}
