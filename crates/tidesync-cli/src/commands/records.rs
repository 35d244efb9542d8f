//! `get`, `put`, `patch`, `delete`, `scan`, `export`: records as JSON, straight from the local store (offline).
//! Writes are queued in the outbox like any application write and pushed by the next `sync`
//! or by `run`.

use std::time::Duration;

use serde_json::Value;
use tidesync::actors::events::human_ms;
use tidesync::{Key, PushError, Pushed, ReceiptState, Table, Written};

use crate::build;
use crate::cli::LimitArgs;
use crate::commands::{Ctx, Local, read_record, unknown_table};
use crate::error::{CliError, Exit};
use crate::output::{JsonLines, stderr_is_terminal, truncation_note};

/// `scan`'s default limit (text output).
pub const DEFAULT_SCAN_LIMIT: usize = 100;

fn table(local: &Local, name: &str) -> Result<Table<Value>, CliError> {
    local.spec(name)?;
    Ok(local.engine.table::<Value>(name)?)
}

/// `tidesync get TABLE KEY`: the record as JSON (exit 4 if there is none).
pub async fn get(ctx: &Ctx, name: &str, key: &str) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let key = local.key(name, key)?;
    let record = table(&local, name)?.get(key.clone()).await?;
    match record {
        Some(record) if ctx.out.json => ctx.out.json_line(&record),
        Some(record) => ctx.out.json(&record),
        None => Err(
            CliError::not_found(format!("no record with key `{key}` in table `{name}`"))
                .hint(format!("list keys with `tidesync scan {name}`")),
        ),
    }
}

/// `tidesync put TABLE JSON|-`: inserts or replaces a record; prints its key.
pub async fn put(ctx: &Ctx, name: &str, json: &str) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let record = read_record(json, "the record")?;
    let handle = table(&local, name)?;
    let key = handle.put(&Value::Object(record)).await?;
    if ctx.out.json {
        let stored = handle.get(key.clone()).await?;
        return ctx.out.json_line(&serde_json::json!({
            "table": name,
            "key": key,
            "record": stored,
        }));
    }
    ctx.out.line(key.to_string());
    ctx.out.note(format!(
        "put {name}/{key}: queued for push by the next `tidesync sync` or `tidesync run`"
    ));
    Ok(())
}

/// `tidesync put --wait [--timeout 30s] TABLE JSON|-`: puts the record, pushes it now (with a
/// syncing engine on the configured server) and waits for its receipt. Exit 0 once the server
/// has it (acknowledged, or settled by a conflict: the outcome is printed), 6 if the server
/// refused it (dead-lettered, with the reason), 5 if it is not on the server within the
/// timeout (it stays queued: nothing is lost).
pub async fn put_and_wait(
    ctx: &Ctx,
    name: &str,
    json: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let loaded = ctx.load()?;
    loaded
        .table(name)
        .ok_or_else(|| unknown_table(&loaded, name))?;
    let record = read_record(json, "the record")?;
    let transport = build::transport(&loaded, &build::process_env)?;
    let store = build::open_store(&loaded)?;
    let mut settings = loaded.config.sync.clone();
    settings.interval = None;
    settings.sync_on_start = false;
    let engine = build::engine(&loaded, store, Some(transport), settings)?;
    let guard = ShutdownOnDrop(engine.clone());
    let handle = engine.table::<Value>(name)?;
    let Written {
        value: key,
        receipt,
    } = handle.put_with_receipt(&Value::Object(record)).await?;
    let change = receipt.change_id();
    // Push now (later attempts, after a retry delay or once the server is back, are the
    // engine's own); then wait for the receipt, whatever push settles it.
    let waited = tokio::time::timeout(timeout, async {
        if let Err(err) = engine.push().await {
            tracing::debug!(error = %err, "push before waiting for the receipt");
        }
        receipt.pushed().await
    })
    .await;
    let pending_reason = match receipt.state() {
        ReceiptState::Pending(entry) => entry.last_error,
        ReceiptState::Done(_) => None,
    };
    drop(guard);
    let outcome = match waited {
        Ok(Ok(pushed)) => Ok(pushed),
        Ok(Err(err)) => Err(err),
        Err(_) => {
            let why = pending_reason
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            return Err(CliError::msg(
                Exit::Incomplete,
                format!(
                    "{name}/{key} is not on the server after {}{why}",
                    human_ms(timeout.as_millis() as u64)
                ),
            )
            .hint(
                "nothing is lost: it stays queued for the next `tidesync sync` or `tidesync run`",
            ));
        }
    };
    let pushed = match outcome {
        Ok(pushed) => pushed,
        Err(err @ PushError::Refused { .. }) => {
            return Err(CliError::msg(Exit::Refused, err)
                .hint("see it with `tidesync dead-letters list`; fix and retry, or discard it"));
        }
        Err(err) => return Err(CliError::msg(Exit::Failed, err)),
    };
    let (outcome, detail) = match &pushed {
        Pushed::Acked => ("acked", String::new()),
        Pushed::Conflict {
            resolution,
            follow_up,
        } => (
            "conflict",
            match follow_up {
                Some(id) => format!(" ({resolution}; the outcome is pushed as change {id})"),
                None => format!(" ({resolution})"),
            },
        ),
        Pushed::Superseded => ("superseded", String::new()),
        Pushed::NothingToPush => ("nothing_to_push", String::new()),
    };
    if ctx.out.json {
        let stored = engine.table::<Value>(name)?.get(key.clone()).await?;
        return ctx.out.json_line(&serde_json::json!({
            "table": name,
            "key": key,
            "record": stored,
            "change_id": change.map(|c| c.0),
            "pushed": outcome,
            "resolution": match &pushed {
                Pushed::Conflict { resolution, .. } => Some(resolution.clone()),
                _ => None,
            },
        }));
    }
    ctx.out.line(key.to_string());
    ctx.out.note(format!(
        "put {name}/{key}: on the server: {outcome}{detail}"
    ));
    Ok(())
}

/// Shuts the engine down when the command ends, however it ends.
struct ShutdownOnDrop(tidesync::Engine);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// `tidesync delete TABLE KEY`: deletes a record (exit 4 if there is none).
pub async fn delete(ctx: &Ctx, name: &str, key: &str) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let key = local.key(name, key)?;
    let existed = table(&local, name)?.delete(key.clone()).await?;
    if !existed {
        return Err(CliError::not_found(format!(
            "no record with key `{key}` in table `{name}`"
        )));
    }
    if ctx.out.json {
        return ctx.out.json_line(&serde_json::json!({
            "table": name,
            "key": key,
            "deleted": true,
        }));
    }
    ctx.out.note(format!(
        "deleted {name}/{key}: queued for push by the next `tidesync sync` or `tidesync run`"
    ));
    Ok(())
}

/// Records read per store page by `scan` and `export` (memory stays bounded by one page).
const PAGE: usize = 1000;

/// Calls `each` with the records of `name` in key order after `after`, page by page, until
/// it returns `false` or the table ends.
async fn walk(
    local: &Local,
    name: &str,
    after: Option<Key>,
    mut each: impl FnMut(Value) -> Result<bool, CliError>,
) -> Result<(), CliError> {
    let spec = local.spec(name)?.clone();
    let handle = table(local, name)?;
    let mut after = after;
    loop {
        let page = handle.scan(after.as_ref(), PAGE).await?;
        let full = page.len() == PAGE;
        for record in page {
            after = match &record {
                Value::Object(map) => spec.key_of(map)?,
                _ => None,
            };
            if !each(record)? {
                return Ok(());
            }
        }
        if !full || after.is_none() {
            return Ok(());
        }
    }
}

/// `tidesync scan TABLE [--limit N|--all] [--after KEY]`: records in key order, one JSON
/// object per line (a JSON array with `--json`), streamed page by page. When the limit cuts
/// the output, a note on stderr says so and how to see the rest.
pub async fn scan(
    ctx: &Ctx,
    name: &str,
    limit: LimitArgs,
    after: Option<&str>,
) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let after = after.map(|a| local.key(name, a)).transpose()?;
    let max = limit.resolve(DEFAULT_SCAN_LIMIT, ctx.out.json);
    let spec = local.spec(name)?.clone();
    let mut out = JsonLines::new(ctx.out.json);
    let (mut shown, mut truncated, mut last) = (0usize, false, None);
    walk(&local, name, after, |record| {
        if max.is_some_and(|m| shown >= m) {
            truncated = true;
            return Ok(false);
        }
        out.push(&record)?;
        last = record
            .as_object()
            .and_then(|r| spec.key_of(r).ok().flatten());
        shown += 1;
        Ok(!out.closed)
    })
    .await?;
    out.finish();
    if truncated {
        let next = last
            .map(|k| format!(", or page on with --after {k}"))
            .unwrap_or_default();
        ctx.out.note(truncation_note(
            "records",
            shown,
            limit.limit.is_none(),
            &next,
        ));
    }
    Ok(())
}

/// `tidesync patch TABLE KEY JSON|-`: applies a JSON merge patch; prints the updated record.
pub async fn patch(ctx: &Ctx, name: &str, key: &str, json: &str) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let key = local.key(name, key)?;
    let patch = Value::Object(read_record(json, "the patch")?);
    let handle = table(&local, name)?;
    let record = handle.update(key.clone(), patch).await.map_err(|err| {
        let err = CliError::engine(err);
        if err.exit == crate::error::Exit::NotFound {
            err.hint(format!(
                "patch changes an existing record; create it with `tidesync put {name} JSON`"
            ))
        } else {
            err
        }
    })?;
    ctx.out.json_line(&record)?;
    if !ctx.out.json {
        ctx.out.note(format!(
            "patched {name}/{key}: queued for push by the next `tidesync sync` or `tidesync run`"
        ));
    }
    Ok(())
}

/// Parses `--where FIELD=VALUE` (VALUE as JSON when it parses, else a string).
fn parse_filter(text: &str) -> Result<(String, Value), CliError> {
    let Some((field, value)) = text.split_once('=') else {
        return Err(
            CliError::usage(format!("--where `{text}` is not FIELD=VALUE"))
                .hint("e.g. --where status=active, --where done=true, --where count=3"),
        );
    };
    if field.is_empty() {
        return Err(CliError::usage(format!(
            "--where `{text}` has no field name"
        )));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((field.to_owned(), value))
}

/// `tidesync export TABLE [--where FIELD=VALUE]…`: every (matching) record as NDJSON, in key
/// order, page by page.
pub async fn export(ctx: &Ctx, name: &str, filters: &[String]) -> Result<(), CliError> {
    let filters = filters
        .iter()
        .map(|f| parse_filter(f))
        .collect::<Result<Vec<_>, _>>()?;
    let local = ctx.open_local()?;
    let mut out = JsonLines::new(false);
    let (mut seen, mut written) = (0u64, 0u64);
    walk(&local, name, None, |record| {
        seen += 1;
        let matches = filters
            .iter()
            .all(|(field, value)| record.get(field).unwrap_or(&Value::Null) == value);
        if matches {
            out.push(&record)?;
            written += 1;
        }
        Ok(!out.closed)
    })
    .await?;
    let closed = out.closed;
    out.finish();
    if !closed && stderr_is_terminal() {
        ctx.out
            .note(format!("exported {written} of {seen} records of `{name}`"));
    }
    Ok(())
}
