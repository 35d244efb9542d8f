//! `tidesync conflicts list|settle TABLE KEY --take-remote|--keep-local|--merged JSON`.
//!
//! Conflicts are parked for a decision by the `park` strategy (or a `field_merge` field with
//! the `park` policy). Settling rewrites the record, its base and its pending entry in one
//! transaction; a kept or merged version is pushed by the next `sync` or `run`.

use serde_json::Value;
use tidesync::core::hlc::wall_millis;
use tidesync::{ParkedConflict, Resolution};

use crate::cli::{ConflictCommand, SettleArgs};
use crate::commands::{Ctx, read_record};
use crate::error::{CliError, Exit};
use crate::output::{columns, human_ms, short};

/// Runs a conflicts command.
pub async fn run(ctx: &Ctx, command: ConflictCommand) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    match command {
        ConflictCommand::List { table } => {
            local.check_table(table.as_deref())?;
            let parked = local.engine.parked_conflicts(table.as_deref())?;
            list(ctx, &parked)
        }
        ConflictCommand::Settle(args) => {
            let SettleArgs {
                table,
                key,
                take_remote,
                keep_local,
                merged,
            } = args;
            let key = local.key(&table, &key)?;
            let resolution = match (take_remote, keep_local, merged) {
                (true, _, _) => Resolution::TakeRemote,
                (_, true, _) => Resolution::KeepLocal,
                (_, _, Some(json)) => Resolution::Merged(read_record(&json, "the merged record")?),
                _ => {
                    return Err(CliError::usage(
                        "say how to settle: --take-remote, --keep-local or --merged JSON",
                    ));
                }
            };
            let outcome = resolution.as_str();
            local
                .engine
                .settle_conflict(&table, key.clone(), resolution)
                .await
                .map_err(|err| {
                    let err = CliError::engine(err);
                    if err.exit == Exit::NotFound {
                        err.hint("list parked conflicts with `tidesync conflicts list`")
                    } else {
                        err
                    }
                })?;
            if ctx.out.json {
                return ctx.out.json(&serde_json::json!({
                    "table": table,
                    "key": key,
                    "settled": outcome,
                }));
            }
            ctx.out.line(format!("settled {table}/{key}: {outcome}"));
            Ok(())
        }
    }
}

fn compact(record: &Option<serde_json::Map<String, Value>>) -> String {
    match record {
        None => "(deleted)".to_owned(),
        Some(record) => serde_json::to_string(record).unwrap_or_default(),
    }
}

fn list(ctx: &Ctx, parked: &[ParkedConflict]) -> Result<(), CliError> {
    if ctx.out.json {
        return ctx.out.json(parked);
    }
    if parked.is_empty() {
        ctx.out.line("no parked conflicts");
        return Ok(());
    }
    let now = wall_millis();
    let rows: Vec<Vec<String>> = parked
        .iter()
        .map(|p| {
            let c = &p.conflict;
            vec![
                c.table.clone(),
                short(&c.key.to_string(), 40),
                c.detected_by.as_str().to_owned(),
                human_ms(now.saturating_sub(p.parked_at_ms)),
                short(&compact(&c.local), 50),
                short(&compact(&c.remote), 50),
            ]
        })
        .collect();
    ctx.out.line(columns(
        &["TABLE", "KEY", "DETECTED BY", "AGE", "LOCAL", "REMOTE"],
        &rows,
    ));
    ctx.out.note(
        "settle with `tidesync conflicts settle TABLE KEY --take-remote | --keep-local | \
         --merged JSON` (--json shows the base, local and remote versions in full)",
    );
    Ok(())
}
