//! `tidesync quarantine list|retry SEQ|discard SEQ`.
//!
//! A pulled item that cannot be applied (no key, a key of the wrong type, a non-scalar value in
//! an indexed field …) is kept in quarantine while the rest of its page is applied. Retrying
//! applies it again exactly as a pull would (useful after fixing the table's spec); discarding
//! drops it.

use tidesync::Quarantined;
use tidesync::core::hlc::wall_millis;

use crate::cli::{LimitArgs, QuarantineCommand};
use crate::commands::Ctx;
use crate::error::{CliError, Exit};
use crate::output::{columns, human_ms, short, truncation_note};

/// `quarantine list`'s default limit (text output).
pub const DEFAULT_QUARANTINE_LIMIT: usize = 50;

/// Runs a quarantine command.
pub async fn run(ctx: &Ctx, command: QuarantineCommand) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let engine = &local.engine;
    let not_found = |seq: u64| {
        move |err: tidesync::Error| {
            let err = CliError::engine(err);
            if err.exit == Exit::NotFound {
                err.hint(format!(
                    "no quarantined item has number {seq}: list them with `tidesync quarantine \
                     list`"
                ))
            } else {
                err
            }
        }
    };
    match command {
        QuarantineCommand::List { table, limit } => {
            local.check_table(table.as_deref())?;
            let mut items = engine.quarantined(usize::MAX)?;
            if let Some(table) = &table {
                items.retain(|i| &i.table == table);
            }
            list(ctx, items, limit)
        }
        QuarantineCommand::Retry { seq } => {
            let applied = engine
                .retry_quarantined(seq)
                .await
                .map_err(not_found(seq))?;
            let again = applied.quarantined.first();
            if ctx.out.json {
                ctx.out.json(&serde_json::json!({
                    "seq": seq,
                    "applied": again.is_none(),
                    "changes": applied.changes.len(),
                    "quarantined_again": again,
                }))?;
            } else if let Some(item) = again {
                ctx.out.line(format!(
                    "item {seq} was refused again and is back in quarantine as item {}: {}",
                    item.seq, item.error
                ));
            } else {
                ctx.out.line(format!(
                    "item {seq} applied ({} change{})",
                    applied.changes.len(),
                    if applied.changes.len() == 1 { "" } else { "s" }
                ));
            }
            match again {
                Some(item) => Err(CliError::reported(
                    Exit::Failed,
                    format!("item {seq} was refused again: {}", item.error),
                )),
                None => Ok(()),
            }
        }
        QuarantineCommand::Discard { seq } => {
            let item = engine
                .discard_quarantined(seq)
                .await
                .map_err(not_found(seq))?;
            if ctx.out.json {
                return ctx.out.json(&serde_json::json!({
                    "seq": seq,
                    "discarded": true,
                    "item": item,
                }));
            }
            ctx.out.line(format!(
                "discarded item {seq} ({}{})",
                item.table,
                item.key.map(|k| format!("/{k}")).unwrap_or_default()
            ));
            Ok(())
        }
    }
}

fn list(ctx: &Ctx, mut items: Vec<Quarantined>, limit: LimitArgs) -> Result<(), CliError> {
    let max = limit.resolve(DEFAULT_QUARANTINE_LIMIT, ctx.out.json);
    let truncated = max.is_some_and(|m| items.len() > m);
    if let Some(m) = max {
        items.truncate(m);
    }
    let note = || {
        if truncated {
            ctx.out.note(truncation_note(
                "items",
                items.len(),
                limit.limit.is_none(),
                "",
            ));
        }
    };
    if ctx.out.json {
        ctx.out.json(&items)?;
        note();
        return Ok(());
    }
    if items.is_empty() {
        ctx.out.line("nothing is quarantined");
        return Ok(());
    }
    let now = wall_millis();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                i.seq.to_string(),
                i.table.clone(),
                short(i.key.as_deref().unwrap_or("-"), 40),
                human_ms(now.saturating_sub(i.at_ms)),
                short(&i.error, 100),
            ]
        })
        .collect();
    ctx.out
        .line(columns(&["SEQ", "TABLE", "KEY", "AGE", "ERROR"], &rows));
    note();
    ctx.out.note(
        "retry one with `tidesync quarantine retry SEQ` (after fixing the table's spec), or \
         drop it with `tidesync quarantine discard SEQ`",
    );
    Ok(())
}
