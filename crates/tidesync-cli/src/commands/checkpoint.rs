//! `tidesync checkpoint show TABLE` and `tidesync checkpoint reset TABLE [--keep-filter]`: the
//! pull checkpoint of a table, as stored.
//!
//! The checkpoint is what the next pull starts from. `reset` deletes it, so the next sync reads
//! the table's whole feed again (records are applied again, which is harmless; pending local
//! changes meet the server's records through the usual conflict path). `--keep-filter` keeps the
//! filter values (where the feed's checkpoint filter stands) and drops only the walk in
//! progress, a learned page cap and the tie boost: the way out when a walk's state is wrong but
//! a full re-read is not wanted. Both need the store to themselves (not while `run` holds it).

use std::sync::Arc;

use serde_json::{Value, json};
use tidesync::core::hlc::HybridClock;
use tidesync::core::local::{LocalDb, Schema};
use tidesync_transport_rest::cursor::TableCursor;

use crate::build;
use crate::cli::CheckpointCommand;
use crate::commands::{Ctx, unknown_table};
use crate::error::CliError;

/// Runs a checkpoint command.
pub fn run(ctx: &Ctx, command: CheckpointCommand) -> Result<(), CliError> {
    let config = ctx.load()?;
    let table = match &command {
        CheckpointCommand::Show { table } | CheckpointCommand::Reset { table, .. } => table,
    };
    if config.table(table).is_none() {
        return Err(unknown_table(&config, table));
    }
    let store = build::open_store(&config)?;
    let schema = Schema::new(config.config.tables.clone()).map_err(CliError::engine)?;
    let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
    let read = |store: &tidesync::RedbStore| -> Result<Option<Value>, CliError> {
        let txn = tidesync::core::Store::read(store).map_err(CliError::engine)?;
        db.remote()
            .checkpoint(txn.as_ref(), table)
            .map_err(CliError::engine)
    };
    let current = read(&store)?;
    match command {
        CheckpointCommand::Show { .. } => {
            if ctx.out.json {
                return ctx
                    .out
                    .json(&json!({ "table": table, "checkpoint": current }));
            }
            match &current {
                None => ctx.out.line(format!(
                    "{table}: no checkpoint; the next sync reads the whole feed"
                )),
                Some(value) => {
                    let text = serde_json::to_string_pretty(value).unwrap_or_default();
                    ctx.out.line(format!("{table}:\n{text}"));
                }
            }
            Ok(())
        }
        CheckpointCommand::Reset { keep_filter, .. } => {
            let next = match (&current, keep_filter) {
                (None, _) | (Some(_), false) => None,
                (Some(value), true) => Some(keep_filter_values(table, value)?),
            };
            let mut txn = tidesync::core::Store::write(&store).map_err(CliError::engine)?;
            db.remote()
                .set_checkpoint(txn.as_mut(), table, next.as_ref())
                .map_err(CliError::engine)?;
            txn.commit().map_err(CliError::engine)?;
            if ctx.out.json {
                return ctx.out.json(&json!({
                    "table": table,
                    "previous": current,
                    "checkpoint": next,
                }));
            }
            match next {
                None => ctx.out.line(format!(
                    "{table}: checkpoint reset; the next sync reads the whole feed again"
                )),
                Some(_) => ctx.out.line(format!(
                    "{table}: walk state dropped, filter values kept; the next sync starts a \
                     new walk from them"
                )),
            }
            Ok(())
        }
    }
}

/// The stored cursor with only its filter values (and the server's opaque checkpoint token).
fn keep_filter_values(table: &str, value: &Value) -> Result<Value, CliError> {
    let mut cursor = TableCursor::load(table, Some(value)).map_err(|e| {
        CliError::engine(e).hint(
            "the stored checkpoint is not one this version reads; reset it without --keep-filter",
        )
    })?;
    for feed in [&mut cursor.changes, &mut cursor.deleted] {
        feed.pass = None;
        feed.boost = 1;
        feed.cap = None;
        feed.rewalks = 0;
    }
    cursor.phase = Default::default();
    Ok(cursor.to_value())
}
