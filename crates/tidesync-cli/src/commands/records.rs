//! `get`, `put`, `delete`, `scan`: records as JSON, straight from the local store (offline).
//! Writes are queued in the outbox like any application write and pushed by the next `sync`
//! or by `run`.

use serde_json::Value;
use tidesync::Table;

use crate::commands::{Ctx, Local, read_record};
use crate::error::CliError;

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

/// `tidesync scan TABLE [--limit N] [--after KEY]`: records in key order, one JSON object per
/// line (a JSON array with `--json`).
pub async fn scan(
    ctx: &Ctx,
    name: &str,
    limit: usize,
    after: Option<&str>,
) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let after = after.map(|a| local.key(name, a)).transpose()?;
    let records = table(&local, name)?.scan(after.as_ref(), limit).await?;
    if ctx.out.json {
        return ctx.out.json(&records);
    }
    for record in &records {
        ctx.out.json_line(record)?;
    }
    Ok(())
}
