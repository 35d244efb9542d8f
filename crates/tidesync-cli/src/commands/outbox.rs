//! `tidesync outbox [--table T] [--limit N|--all]`: outbox entries in push order.

use tidesync::OutboxEntry;
use tidesync::core::hlc::wall_millis;

use crate::cli::LimitArgs;
use crate::commands::Ctx;
use crate::error::CliError;
use crate::output::{columns, human_ms, short, truncation_note};

/// The state of an entry, in words.
pub fn state(entry: &OutboxEntry, now_ms: u64) -> String {
    if let Some(dead) = &entry.dead {
        return match dead.status {
            Some(status) => format!("dead ({status})"),
            None => format!("dead ({})", dead.kind),
        };
    }
    if entry.in_flight {
        return "in flight".to_owned();
    }
    if entry.next_attempt_at_ms > now_ms {
        return format!(
            "retry in {}",
            human_ms(entry.next_attempt_at_ms.saturating_sub(now_ms))
        );
    }
    "ready".to_owned()
}

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
        .outbox(table, max.map_or(usize::MAX, |m| m.saturating_add(1)))?;
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
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.table.clone(),
                short(&e.key.to_string(), 40),
                e.op.as_str().to_owned(),
                e.attempts.to_string(),
                state(e, now),
                human_ms(now.saturating_sub(e.created_at_ms)),
                short(e.last_error.as_deref().unwrap_or("-"), 60),
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
            "STATE",
            "AGE",
            "LAST ERROR",
        ],
        &rows,
    ));
    note();
    Ok(())
}
