//! `tidesync run`: the sync daemon.
//!
//! Order of start: signal handlers first (so a SIGTERM at any later point is a clean stop),
//! config, transport (credentials from the environment), store (exit 3 if another process holds
//! it), registration in `<store>.daemons/<pid>.json` (see [`crate::daemons`]; each daemon
//! writes only its own file, so any number can start together on a multi-process store),
//! metrics endpoint, engine. On SIGINT/SIGTERM: stop syncing, let the in-flight cycle finish
//! (up to `--shutdown-timeout`; a second signal stops waiting), shut the engine down, stop the
//! endpoint, remove the registration. Entries still in flight at that point are re-queued
//! (with their idempotency keys) at the next start.

use std::time::{Duration, Instant};

use tidesync::{Engine, EventItem, Events, SyncEvent};

use crate::build;
use crate::commands::Ctx;
use crate::daemons::{self, Registration};
use crate::error::{CliError, Exit};

/// SIGINT and SIGTERM (Ctrl-C elsewhere).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Runs the daemon until a signal.
pub async fn run(ctx: &Ctx, shutdown_timeout: Duration) -> Result<(), CliError> {
    let mut signals = Signals::install().map_err(|e| {
        CliError::msg(
            Exit::Failed,
            format!("cannot install the signal handlers: {e}"),
        )
    })?;
    let loaded = ctx.load()?;
    let file = loaded.path.display().to_string();
    for warning in &loaded.warnings {
        tracing::warn!(config = %file, "{warning}");
    }
    let transport = build::transport(&loaded, &build::process_env)?;
    let store = build::open_store(&loaded).map_err(|e| {
        let err = CliError::from(e);
        if err.exit == Exit::Locked {
            err.hint("only one `tidesync run` can sync a store; stop the other one first")
        } else {
            err
        }
    })?;
    let registration = Registration::register(&loaded.store_path()).map_err(|e| {
        CliError::msg(
            Exit::Failed,
            format!(
                "cannot register the daemon in {}: {e}",
                loaded.daemons_dir().display()
            ),
        )
        .hint("this process needs write access to the store's directory")
    })?;
    // Listing removes the registrations of daemons that died without cleaning up.
    let running = daemons::live(&loaded.store_path())
        .map(|live| live.len())
        .unwrap_or(1);
    let metrics = match &loaded.config.metrics {
        None => None,
        Some(config) => Some(build::metrics(config).map_err(|e| {
            CliError::msg(
                Exit::Failed,
                format!("cannot start the metrics endpoint on {}: {e}", config.listen),
            )
            .hint("is another process using that port? change [metrics] listen, or remove the section")
        })?),
    };
    let engine = build::engine(&loaded, store, Some(transport), loaded.config.sync.clone())?;
    let logger = tokio::spawn(log_events(engine.events()));
    tracing::info!(
        pid = std::process::id(),
        config = %file,
        store = %loaded.store_path().display(),
        server = loaded.config.server.as_ref().map(|s| s.base_url.as_str()).unwrap_or_default(),
        tables = %loaded.table_names().join(","),
        metrics = metrics.as_ref().map(|m| m.url()).unwrap_or_default(),
        registration = %registration.path().display(),
        daemons_on_store = running,
        "tidesync daemon started"
    );

    let signal = signals.recv().await;
    tracing::info!(
        signal,
        timeout_ms = u64::try_from(shutdown_timeout.as_millis()).unwrap_or(u64::MAX),
        "stopping: no new sync cycles; letting the one in flight finish"
    );
    if let Err(err) = engine.stop() {
        tracing::warn!(error = %err, "cannot stop the scheduler");
    }
    match wait_idle(&engine, shutdown_timeout, &mut signals).await {
        Idle::Done => {}
        Idle::TimedOut => tracing::warn!(
            "the in-flight cycle did not finish in time; its entries are re-queued at the next \
             start (same idempotency keys, so no duplicates)"
        ),
        Idle::Interrupted(signal) => tracing::warn!(
            signal,
            "second signal: not waiting any longer; in-flight entries are re-queued at the next \
             start"
        ),
    }
    let stopping = engine.clone();
    if tokio::task::spawn_blocking(move || stopping.shutdown())
        .await
        .is_err()
    {
        tracing::error!("the engine shutdown panicked");
    }
    logger.abort();
    if let Some(metrics) = metrics {
        metrics.shutdown();
    }
    drop(registration);
    tracing::info!("tidesync daemon stopped");
    Ok(())
}

enum Idle {
    Done,
    TimedOut,
    Interrupted(&'static str),
}

async fn wait_idle(engine: &Engine, timeout: Duration, signals: &mut Signals) -> Idle {
    let deadline = Instant::now() + timeout;
    loop {
        let syncing = engine.status().map(|s| s.syncing).unwrap_or(false);
        if !syncing {
            return Idle::Done;
        }
        if Instant::now() >= deadline {
            return Idle::TimedOut;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            signal = signals.recv() => return Idle::Interrupted(signal),
        }
    }
}

async fn log_events(mut events: Events) {
    while let Some(item) = events.next().await {
        match item {
            EventItem::Event(event) => log_event(&event),
            EventItem::Lagged(missed) => {
                tracing::warn!(missed, "the event log fell behind and skipped events");
            }
        }
    }
}

/// One structured log line per engine event that matters to an operator.
fn log_event(event: &SyncEvent) {
    match event {
        // Each cycle's outcome (converged, incomplete with its reasons, failed) and a long
        // cycle's progress are logged by the engine itself.
        SyncEvent::DeadLettered {
            table,
            key,
            seq,
            error,
        } => tracing::warn!(
            table,
            key = %key,
            seq,
            error,
            "entry dead-lettered: see `tidesync dead-letters list` after stopping the daemon"
        ),
        SyncEvent::Conflict {
            table,
            key,
            detected_by,
            strategy,
            outcome,
        } => tracing::info!(
            table,
            key = %key,
            detected_by = detected_by.as_str(),
            strategy,
            outcome,
            "conflict resolved"
        ),
        SyncEvent::PullFailed { table, error } => tracing::warn!(table, error, "pull failed"),
        SyncEvent::Quarantined { table, key, error } => tracing::warn!(
            table,
            key = key.as_deref().unwrap_or_default(),
            error,
            "pulled item quarantined"
        ),
        SyncEvent::IdRemapped { table, from, to } => {
            tracing::info!(table, from = %from, to = %to, "server assigned a new key");
        }
        SyncEvent::AuthRequired { table } => tracing::error!(
            table,
            "the server refused the credentials: pushing is paused; fix the variables named in \
             [auth] and restart"
        ),
        SyncEvent::Online => tracing::info!("server reachable"),
        SyncEvent::Offline => tracing::warn!("server unreachable: probing until it is back"),
        SyncEvent::LeadershipChanged { leader, epoch } => {
            tracing::info!(leader, epoch, "leadership changed");
        }
        SyncEvent::ActorFailed { actor, error } => {
            tracing::error!(actor, error, "an engine actor failed");
        }
        other => tracing::debug!(event = ?other, "sync event"),
    }
}
