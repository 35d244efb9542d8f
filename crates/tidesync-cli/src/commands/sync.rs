//! `tidesync sync [--table T]`: one sync cycle (push, then pull) with a progress display fed by
//! the engine's events: a spinner (a bar while an initial sync reports a total) on a terminal,
//! plain lines otherwise. Exit 0 when everything converged, 5 when the cycle could not send or
//! pull everything yet (waiting, blocked, offline: each reason is printed), 1 when it failed
//! (the server refused entries for good, or an error that a retry will not cure).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tidesync::{Engine, EventItem, Key, SyncEvent, SyncReport};

use crate::build;
use crate::commands::{Ctx, unknown_table};
use crate::error::{CliError, Exit};
use crate::output::{Output, stderr_is_terminal};

/// A dead letter made during the cycle.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterNote {
    /// The table.
    pub table: String,
    /// The record key.
    pub key: Key,
    /// The entry's sequence number.
    pub seq: u64,
    /// Why.
    pub error: String,
}

/// Turns engine events into progress output.
struct Progress {
    bar: Option<ProgressBar>,
    out: Output,
    quiet: bool,
    failed_report: Option<SyncReport>,
    dead: Vec<DeadLetterNote>,
}

impl Progress {
    fn new(out: Output) -> Self {
        let quiet = out.json;
        let bar = (!quiet && stderr_is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar.set_message("starting…");
            bar
        });
        Progress {
            bar,
            out,
            quiet,
            failed_report: None,
            dead: Vec::new(),
        }
    }

    fn say(&self, line: String) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(line),
            None => self.out.note(line),
        }
    }

    fn status(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    fn event(&mut self, event: &SyncEvent) {
        match event {
            SyncEvent::SyncStarted { .. } => self.status("syncing…".into()),
            SyncEvent::PushStarted => self.status("pushing…".into()),
            SyncEvent::PushCompleted { pushed, retried } => {
                let retry = if *retried > 0 {
                    format!(", {retried} to retry later")
                } else {
                    String::new()
                };
                self.say(format!("push: {pushed} pushed{retry}"));
            }
            SyncEvent::PullStarted { table } => {
                if let Some(bar) = &self.bar {
                    bar.set_style(spinner_style());
                    bar.set_length(0);
                    bar.set_position(0);
                }
                self.status(format!("pulling {table}…"));
            }
            SyncEvent::InitialSyncProgress {
                table,
                pages,
                records,
                total,
            } => match &self.bar {
                Some(bar) => {
                    if let Some(total) = total {
                        bar.set_style(bar_style());
                        bar.set_length(*total);
                        bar.set_position(*records);
                    }
                    bar.set_message(format!("initial sync of {table}"));
                }
                None => {
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    self.say(format!(
                        "initial sync of {table}: {records}{of} records ({pages} page{})",
                        if *pages == 1 { "" } else { "s" }
                    ));
                }
            },
            SyncEvent::PullCompleted {
                table,
                pages,
                applied,
            } => self.say(format!(
                "pull {table}: {applied} applied ({pages} page{})",
                if *pages == 1 { "" } else { "s" }
            )),
            SyncEvent::Reconciled {
                table,
                listed,
                deleted,
                kept,
                listing_ms,
            } => self.say(format!(
                "reconcile {table}: {listed} server keys listed in {:.1}s; {deleted} deleted \
                 locally, {kept} kept for their pending change",
                *listing_ms as f64 / 1000.0
            )),
            SyncEvent::PullWarning { table, warning } => {
                self.say(format!("warning: pull {table}: {warning}"));
            }
            SyncEvent::PullFailed { table, error } => {
                self.say(format!("pull {table} failed: {error}"));
            }
            SyncEvent::Conflict {
                table,
                key,
                strategy,
                outcome,
                ..
            } => self.say(format!("conflict {table}/{key}: {outcome} ({strategy})")),
            SyncEvent::DeadLettered {
                table,
                key,
                seq,
                error,
            } => {
                self.say(format!("dead-lettered {table}/{key} (seq {seq}): {error}"));
                self.dead.push(DeadLetterNote {
                    table: table.clone(),
                    key: key.clone(),
                    seq: *seq,
                    error: error.clone(),
                });
            }
            SyncEvent::Quarantined { table, key, error } => self.say(format!(
                "quarantined a pulled {table} item{}: {error}",
                key.as_deref()
                    .map(|k| format!(" `{k}`"))
                    .unwrap_or_default()
            )),
            SyncEvent::IdRemapped { table, from, to } => {
                self.say(format!("{table}/{from} is now {table}/{to} (server id)"));
            }
            SyncEvent::AuthRequired { table } => self.say(format!(
                "the server refused the credentials (table {table}); pushing is paused"
            )),
            SyncEvent::Offline => self.say("the server is unreachable".into()),
            SyncEvent::UpgradeRequired { table } => self.say(format!(
                "the server says this version is too old (HTTP 426, table {table}); pushing is \
                 paused and nothing is lost: upgrade the application"
            )),
            SyncEvent::SyncFailed { report, .. } => self.failed_report = Some((**report).clone()),
            _ => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({eta} left)")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Shuts the engine down when dropped (on every path out of the command).
struct Shutdown(Engine);

impl Drop for Shutdown {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

#[derive(Serialize)]
struct Outcome<'a> {
    /// Converged (exit 0).
    ok: bool,
    /// `converged`, `incomplete` (exit 5) or `failed` (exit 1).
    outcome: &'static str,
    table: Option<&'a str>,
    report: &'a SyncReport,
    /// Why it did not converge, one line per reason.
    reasons: &'a [String],
    error: Option<String>,
    kind: Option<&'a str>,
    dead_lettered: &'a [DeadLetterNote],
}

fn describe(report: &SyncReport) -> String {
    let mut parts = vec![format!("pushed {}", report.pushed)];
    if report.retried > 0 {
        parts.push(format!("{} to retry", report.retried));
    }
    if report.pull_retries > 0 {
        parts.push(format!(
            "{} pull page{} fetched again",
            report.pull_retries,
            if report.pull_retries == 1 { "" } else { "s" }
        ));
    }
    if report.dead_lettered > 0 {
        parts.push(format!("{} dead-lettered", report.dead_lettered));
    }
    parts.push(format!(
        "pulled {} page{} ({} applied)",
        report.pages,
        if report.pages == 1 { "" } else { "s" },
        report.applied
    ));
    if report.conflicts > 0 {
        parts.push(format!("{} conflicts", report.conflicts));
    }
    if report.reconciled > 0 {
        parts.push(format!(
            "{} deleted by reconciliation (gone from the server)",
            report.reconciled
        ));
    }
    parts.join(", ")
}

/// Runs one cycle.
pub async fn run(ctx: &Ctx, table: Option<&str>) -> Result<(), CliError> {
    let loaded = ctx.load()?;
    if let Some(name) = table {
        let spec = loaded
            .table(name)
            .ok_or_else(|| unknown_table(&loaded, name))?;
        if !spec.push && !spec.pull {
            return Err(CliError::usage(format!(
                "table `{name}` is local only (push = false, pull = false): nothing to sync"
            )));
        }
    }
    let transport = build::transport(&loaded, &build::process_env)?;
    let store = build::open_store(&loaded)?;
    let mut settings = loaded.config.sync.clone();
    settings.interval = None;
    settings.sync_on_start = false;
    let engine = build::engine(&loaded, store, Some(transport), settings)?;
    let guard = Shutdown(engine.clone());

    let mut events = engine.events();
    let mut progress = Progress::new(ctx.out);
    let cycle = async {
        match table {
            Some(name) => engine.sync_table(name).await,
            None => engine.sync().await,
        }
    };
    tokio::pin!(cycle);
    let mut open = true;
    let result = loop {
        tokio::select! {
            result = &mut cycle => break result,
            item = events.next(), if open => match item {
                Some(EventItem::Event(event)) => progress.event(&event),
                Some(EventItem::Lagged(_)) => {}
                None => open = false,
            },
        }
    };
    // Events published just before the answer may still be queued.
    if open {
        loop {
            match tokio::time::timeout(Duration::from_millis(20), events.next()).await {
                Ok(Some(EventItem::Event(event))) => progress.event(&event),
                Ok(Some(EventItem::Lagged(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    progress.finish();
    drop(guard);

    let (report, verdict) = judge(result, &progress);
    let reasons = report.remaining.reasons(tidesync::core::hlc::wall_millis());
    let (outcome, failure) = match verdict {
        Verdict::Converged => ("converged", None),
        Verdict::Incomplete(err) => {
            let message = match err {
                Some(err) => format!("sync incomplete: {err}"),
                None => "sync incomplete: not everything could be sent or pulled yet".into(),
            };
            let failure = CliError::msg(Exit::Incomplete, message).hint(
                "nothing is lost: what waits goes out with the next `tidesync sync` or \
                 `tidesync run`",
            );
            ("incomplete", Some((failure, None)))
        }
        Verdict::Failed(failure, kind) => ("failed", Some((failure, Some(kind)))),
    };
    if ctx.out.json {
        ctx.out.json(&Outcome {
            ok: failure.is_none(),
            outcome,
            table,
            report: &report,
            reasons: &reasons,
            error: failure.as_ref().map(|(f, _)| f.error.to_string()),
            kind: failure.as_ref().and_then(|(_, kind)| *kind),
            dead_lettered: &progress.dead,
        })?;
        return match failure {
            None => Ok(()),
            Some((mut failure, _)) => {
                failure.reported = true;
                Err(failure)
            }
        };
    }
    let Some((mut failure, _)) = failure else {
        ctx.out.line(format!("sync ok: {}", describe(&report)));
        // Converged, with what the configuration should fix (the pages were applied).
        for reason in &reasons {
            ctx.out.line(format!("  - {reason}"));
        }
        return Ok(());
    };
    ctx.out
        .line(format!("sync {outcome}: {}", describe(&report)));
    for reason in &reasons {
        ctx.out.line(format!("  - {reason}"));
    }
    if !progress.dead.is_empty() {
        let n = progress.dead.len();
        failure = failure.hint(format!(
            "{n} entr{} dead-lettered: inspect with `tidesync dead-letters list`, then `retry`, \
             `edit` or `discard`",
            if n == 1 { "y was" } else { "ies were" }
        ));
    }
    Err(failure)
}

/// What a cycle's result means for the command.
enum Verdict {
    /// Everything converged: exit 0.
    Converged,
    /// Something could not be sent or pulled yet, and a later sync can (exit 5): the error
    /// that stopped it, if any.
    Incomplete(Option<tidesync::Error>),
    /// The server refused entries for good, or an error a retry will not cure (exit 1).
    Failed(CliError, &'static str),
}

/// Sorts a cycle's result into converged, incomplete and failed.
fn judge(result: tidesync::Result<SyncReport>, progress: &Progress) -> (SyncReport, Verdict) {
    let (report, error) = match result {
        Ok(report) => (report, None),
        Err(err) => (
            progress.failed_report.clone().unwrap_or_default(),
            Some(err),
        ),
    };
    // The server refused data for good in this cycle: for a command that is a failure.
    if report.dead_lettered > 0 {
        let n = report.dead_lettered;
        let message = format!(
            "the server refused {n} entr{} for good; {} dead-lettered",
            if n == 1 { "y" } else { "ies" },
            if n == 1 { "it was" } else { "they were" }
        );
        return (
            report,
            Verdict::Failed(CliError::msg(Exit::Failed, message), "dead_lettered"),
        );
    }
    match error {
        None if report.converged => (report, Verdict::Converged),
        None => (report, Verdict::Incomplete(None)),
        Some(err) if report.remaining.offline || err.retryable() => {
            (report, Verdict::Incomplete(Some(err)))
        }
        Some(err) => {
            let kind = err.kind().as_str();
            let mut failure = CliError::engine(err);
            if failure.exit != Exit::Usage {
                failure.exit = Exit::Failed;
            }
            (report, Verdict::Failed(failure, kind))
        }
    }
}
