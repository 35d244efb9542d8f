//! `tidesync outbox [--table T] [--limit N]`: outbox entries in push order.

use tidesync::core::hlc::wall_millis;

use crate::commands::Ctx;
use crate::error::CliError;
use crate::output::{columns, human_ms, short};

/// Lists entries.
pub fn run(ctx: &Ctx, table: Option<&str>, limit: usize) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    local.check_table(table)?;
    let entries = local.engine.outbox_states(table, limit)?;
    if ctx.out.json {
        return ctx.out.json(&entries);
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
    if entries.len() == limit {
        ctx.out.note(format!(
            "showing the first {limit}; pass --limit N for more"
        ));
    }
    Ok(())
}
