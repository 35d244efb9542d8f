//! `tidesync outbox [--table T] [--limit N|--all]`: outbox entries in push order.

use tidesync::core::hlc::wall_millis;

use crate::cli::LimitArgs;
use crate::commands::Ctx;
use crate::error::CliError;
use crate::output::{columns, human_ms, short, truncation_note};

/// `outbox`'s default limit (text output).
pub const DEFAULT_OUTBOX_LIMIT: usize = 50;

/// Lists entries. When the limit cuts the list, a note on stderr says so and how to see the
/// rest; `--json` lists every entry unless `--limit` is given.
pub fn run(ctx: &Ctx, table: Option<&str>, limit: LimitArgs) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    local.check_table(table)?;
    let max = limit.resolve(DEFAULT_OUTBOX_LIMIT, ctx.out.json);
    let mut entries = local
        .engine
        .outbox_states(table, max.map_or(usize::MAX, |m| m.saturating_add(1)))?;
    let truncated = max.is_some_and(|m| entries.len() > m);
    if let Some(m) = max {
        entries.truncate(m);
    }
    let note = || {
        if truncated {
            ctx.out.note(truncation_note(
                "entries",
                entries.len(),
                limit.limit.is_none(),
                "",
            ));
        }
    };
    if ctx.out.json {
        ctx.out.json(&entries)?;
        note();
        return Ok(());
    }
    if entries.is_empty() {
        ctx.out
            .line("the outbox is empty: every local change has been pushed");
        return Ok(());
    }
    let now = wall_millis();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|pending| {
            let e = &pending.entry;
            vec![
                e.seq.to_string(),
                e.table.clone(),
                short(&e.key.to_string(), 40),
                e.op.as_str().to_owned(),
                e.attempts.to_string(),
                short(&pending.reason, 70),
                human_ms(now.saturating_sub(e.created_at_ms)),
            ]
        })
        .collect();
    ctx.out.line(columns(
        &[
            "SEQ",
            "TABLE",
            "KEY",
            "OP",
            "ATTEMPTS",
            "STATE AND REASON",
            "AGE",
        ],
        &rows,
    ));
    note();
    Ok(())
}
