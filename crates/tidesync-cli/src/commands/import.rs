//! `tidesync import TABLE [FILE|-]`: many records through the library's bulk write
//! ([`tidesync::Table::write_batch`]), in batches of one transaction each, with their outbox
//! entries. The input is NDJSON or a JSON array (told apart by its first character); it is
//! parsed on its own thread while the previous batch is written, and never held whole.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;
use tokio::sync::mpsc;

use tidesync::BulkMode;

use crate::cli::{ImportArgs, ImportMode};
use crate::commands::Ctx;
use crate::error::{CliError, Exit};
use crate::output::stderr_is_terminal;

/// Rejected records listed in the text summary (`--json` lists them all).
const LISTED: usize = 20;

/// Where a record was in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// NDJSON: the 1-based line.
    Line(usize),
    /// JSON array: the 1-based item.
    Item(usize),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Item(n) => write!(f, "item {n}"),
        }
    }
}

/// What the parser thread sends.
enum Parsed {
    /// A JSON value (the bulk write checks that it is an object with a good key).
    Record(Position, Value),
    /// A line that is not JSON.
    Bad(Position, String),
    /// The input cannot be read further (IO error, or broken JSON inside an array).
    Fatal(String),
}

/// A record that was not written.
#[derive(Debug, Serialize)]
pub struct RejectedLine {
    /// Where it was.
    #[serde(flatten)]
    pub at: Position,
    /// Its key, when it had one.
    pub key: Option<String>,
    /// Why.
    pub reason: String,
}

/// The summary (`--json` prints it as is).
#[derive(Debug, Serialize)]
pub struct ImportReport {
    /// The table.
    pub table: String,
    /// `insert`, `upsert` or `merge`.
    pub mode: &'static str,
    /// `ndjson` or `array`.
    pub format: &'static str,
    /// Records read (including rejected ones).
    pub records: usize,
    /// Transactions committed.
    pub batches: usize,
    /// Records written.
    pub written: usize,
    /// Records that changed something.
    pub changed: usize,
    /// Whether the written changes were queued for push (the table pushes).
    pub queued: bool,
    /// Every rejected record, in input order.
    pub rejected: Vec<RejectedLine>,
    /// Why the import stopped early, if it did (the batches before stay committed).
    pub error: Option<String>,
    /// Wall-clock time, in ms.
    pub elapsed_ms: u64,
}

fn mode_of(mode: ImportMode) -> BulkMode {
    match mode {
        ImportMode::Insert => BulkMode::Insert,
        ImportMode::Upsert => BulkMode::Upsert,
        ImportMode::Merge => BulkMode::Merge,
    }
}

/// Runs the import; exit 1 if a record was rejected or a batch failed.
pub async fn run(ctx: &Ctx, args: ImportArgs) -> Result<(), CliError> {
    if args.batch_size == 0 {
        return Err(CliError::usage("--batch-size must be at least 1"));
    }
    let local = ctx.open_local()?;
    let spec = local.spec(&args.table)?.clone();
    if args.local_only && spec.push {
        return Err(CliError::usage(format!(
            "table `{}` is pushed (push = true): --local-only refuses to import into it, so \
             that seed data is never queued for the server",
            spec.name
        ))
        .hint(
            "declare the table with push = false (local only: push = false, pull = false), \
             or drop --local-only to import and push the records to the server",
        ));
    }
    let input: Box<dyn Read + Send> = if args.file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&args.file).map_err(|e| {
            CliError::usage(format!("cannot open the input file {}: {e}", args.file))
        })?)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let (first, skipped_lines) = first_byte(&mut reader)?;
    let array = first == Some(b'[');
    // A few batches in flight between the parser and the writer, no more.
    let (tx, mut rx) = mpsc::channel::<Parsed>(args.batch_size.saturating_mul(2).max(64));
    let parser = std::thread::Builder::new()
        .name("tidesync-import-parse".into())
        .spawn(move || {
            if array {
                parse_array(reader, &tx);
            } else {
                parse_lines(reader, skipped_lines, &tx);
            }
        })?;

    let handle = local.engine.table::<Value>(&args.table)?;
    let mode = mode_of(args.mode);
    let started = Instant::now();
    let bar = (!ctx.out.json && stderr_is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos} records ({per_sec}) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut report = ImportReport {
        table: args.table.clone(),
        mode: mode.as_str(),
        format: if array { "array" } else { "ndjson" },
        records: 0,
        batches: 0,
        written: 0,
        changed: 0,
        queued: spec.push,
        rejected: Vec::new(),
        error: None,
        elapsed_ms: 0,
    };
    let mut writer = handle.bulk_writer(mode);
    // Where the records of the batch being written came from.
    let mut in_flight: Option<Vec<Position>> = None;
    let mut batch: Vec<Value> = Vec::with_capacity(args.batch_size);
    let mut positions: Vec<Position> = Vec::with_capacity(args.batch_size);
    let mut done = false;
    while !done {
        match rx.recv().await {
            Some(Parsed::Record(at, value)) => {
                report.records += 1;
                batch.push(value);
                positions.push(at);
            }
            Some(Parsed::Bad(at, reason)) => {
                report.records += 1;
                report.rejected.push(RejectedLine {
                    at,
                    key: None,
                    reason,
                });
            }
            Some(Parsed::Fatal(reason)) => {
                report.error = Some(reason);
                done = true;
            }
            None => done = true,
        }
        if batch.len() >= args.batch_size || (done && !batch.is_empty()) {
            let records = std::mem::take(&mut batch);
            let at = std::mem::take(&mut positions);
            // The answer is for the batch queued before this one (`answered`), which
            // committed while this one was prepared; this one is queued unless it failed.
            let outcome = writer.write(records).await;
            let answered = in_flight.replace(at);
            match outcome {
                Ok(Some(result)) => count_batch(&mut report, result, &answered.unwrap_or_default()),
                Ok(None) => {}
                Err(err) => {
                    let current = in_flight.take();
                    batch_failed(&mut report, &err, &answered.or(current).unwrap_or_default());
                    done = true;
                }
            }
            if let Some(bar) = &bar {
                bar.set_position(report.records as u64);
                if !report.rejected.is_empty() {
                    bar.set_message(format!("{} rejected", report.rejected.len()));
                }
            }
        }
    }
    if let Some(at) = in_flight.take() {
        match writer.finish().await {
            Ok(Some(result)) => count_batch(&mut report, result, &at),
            Ok(None) => {}
            Err(err) => batch_failed(&mut report, &err, &at),
        }
    }
    // Stop the parser if we stopped early (it sees the channel closed), then wait for it.
    drop(rx);
    let _ = parser.join();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report.rejected.sort_by_key(|r| match r.at {
        Position::Line(n) | Position::Item(n) => n,
    });
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    print(ctx, &report)?;
    let failed = report.error.is_some() || !report.rejected.is_empty();
    if !failed {
        return Ok(());
    }
    let message = match &report.error {
        Some(error) => format!("the import stopped: {error}"),
        None => format!(
            "{} of {} records rejected",
            report.rejected.len(),
            report.records
        ),
    };
    if ctx.out.json {
        return Err(CliError::reported(Exit::Failed, message));
    }
    Err(CliError::msg(Exit::Failed, message)
        .hint("fix the rejected records and import them again (the others are written)"))
}

/// Counts a written batch into the report; `at`: where its records came from.
fn count_batch(report: &mut ImportReport, result: tidesync::BatchResult, at: &[Position]) {
    report.batches += 1;
    report.written += result.written;
    report.changed += result.changed;
    for rejected in result.rejected {
        // Positions within the batch: the writer counts over the whole input.
        let in_batch = rejected.index.checked_sub(result.first);
        if let Some(position) = in_batch.and_then(|i| at.get(i)) {
            report.rejected.push(RejectedLine {
                at: *position,
                key: rejected.key.map(|k| k.to_string()),
                reason: rejected.error.to_string(),
            });
        }
    }
}

/// Records why a batch was not written (the import stops there).
fn batch_failed(report: &mut ImportReport, err: &tidesync::Error, at: &[Position]) {
    let span = match (at.first(), at.last()) {
        (Some(first), Some(last)) => format!(" ({first} to {last})"),
        _ => String::new(),
    };
    report.error = Some(format!(
        "batch {}{span} was not written, nor anything after it: {err}",
        report.batches + 1
    ));
}

fn print(ctx: &Ctx, report: &ImportReport) -> Result<(), CliError> {
    if ctx.out.json {
        return ctx.out.json(report);
    }
    let secs = (report.elapsed_ms as f64 / 1000.0).max(0.001);
    ctx.out.line(format!(
        "imported into `{}` ({}, {}): {} records in {} batch{}: {} written ({} changed), {} \
         rejected, {:.1}s ({:.0} records/s)",
        report.table,
        report.format,
        report.mode,
        report.records,
        report.batches,
        if report.batches == 1 { "" } else { "es" },
        report.written,
        report.changed,
        report.rejected.len(),
        secs,
        report.records as f64 / secs,
    ));
    for rejected in report.rejected.iter().take(LISTED) {
        let key = rejected
            .key
            .as_ref()
            .map(|k| format!(" (key `{k}`)"))
            .unwrap_or_default();
        ctx.out
            .line(format!("  {}{key}: {}", rejected.at, rejected.reason));
    }
    if report.rejected.len() > LISTED {
        ctx.out.line(format!(
            "  … and {} more rejected (--json lists them all)",
            report.rejected.len() - LISTED
        ));
    }
    if report.changed > 0 {
        ctx.out.note(if report.queued {
            "the changes are queued for push by the next `tidesync sync` or `tidesync run`"
        } else {
            "the table is not pushed: nothing was queued for the server"
        });
    }
    Ok(())
}

/// Skips the input's leading whitespace; returns its first other byte (not consumed) and how
/// many line breaks were skipped (so NDJSON line numbers stay right).
fn first_byte(reader: &mut impl BufRead) -> Result<(Option<u8>, usize), CliError> {
    let mut lines = 0;
    loop {
        let buf = reader
            .fill_buf()
            .map_err(|e| CliError::msg(Exit::Failed, format!("cannot read the input: {e}")))?;
        if buf.is_empty() {
            return Ok((None, lines));
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let first = buf[i];
                lines += buf[..i].iter().filter(|b| **b == b'\n').count();
                reader.consume(i);
                return Ok((Some(first), lines));
            }
            None => {
                let len = buf.len();
                lines += buf.iter().filter(|b| **b == b'\n').count();
                reader.consume(len);
            }
        }
    }
}

/// NDJSON: one value per non-blank line.
fn parse_lines(mut reader: impl BufRead, skipped_lines: usize, tx: &mpsc::Sender<Parsed>) {
    let mut line = String::new();
    let mut number = skipped_lines;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.blocking_send(Parsed::Fatal(format!(
                    "cannot read line {}: {e}",
                    number + 1
                )));
                return;
            }
        }
        number += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let at = Position::Line(number);
        let item = match serde_json::from_str::<Value>(text) {
            Ok(value) => Parsed::Record(at, value),
            Err(e) => Parsed::Bad(at, format!("not valid JSON: {e}")),
        };
        if tx.blocking_send(item).is_err() {
            return; // the import stopped
        }
    }
}

/// A JSON array, item by item (never held whole).
fn parse_array(reader: impl Read, tx: &mpsc::Sender<Parsed>) {
    struct Items<'a> {
        tx: &'a mpsc::Sender<Parsed>,
    }
    impl<'de> Visitor<'de> for Items<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array of records")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut number = 0usize;
            while let Some(value) = seq.next_element::<Value>()? {
                number += 1;
                if self
                    .tx
                    .blocking_send(Parsed::Record(Position::Item(number), value))
                    .is_err()
                {
                    return Ok(()); // the import stopped
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    let outcome = (&mut de)
        .deserialize_seq(Items { tx })
        .and_then(|()| de.end());
    if let Err(e) = outcome {
        let _ = tx.blocking_send(Parsed::Fatal(format!("the JSON array is broken: {e}")));
    }
}
