//! `tidesync dead-letters list|retry SEQ|edit SEQ --record JSON|discard SEQ`.
//!
//! A dead letter is an entry the server refused for good (a 4xx other than auth/conflict, or an
//! undecodable answer); its record's later entries wait behind it. Retrying puts it back at its
//! place in the record's order; the next `sync` (or `run`) pushes it.

use tidesync::OutboxEntry;
use tidesync::core::hlc::wall_millis;

use crate::cli::DeadLetterCommand;
use crate::commands::{Ctx, read_record};
use crate::error::CliError;
use crate::output::{columns, human_ms, short};

/// Runs a dead-letter command.
pub async fn run(ctx: &Ctx, command: DeadLetterCommand) -> Result<(), CliError> {
    let local = ctx.open_local()?;
    let engine = &local.engine;
    let not_found = |seq: u64| {
        move |err: tidesync::Error| {
            let err = CliError::engine(err);
            if err.exit == crate::error::Exit::NotFound {
                err.hint(format!(
                    "no dead letter has seq {seq}: list them with `tidesync dead-letters list`"
                ))
            } else {
                err
            }
        }
    };
    let (entry, verb) = match command {
        DeadLetterCommand::List { table } => {
            local.check_table(table.as_deref())?;
            let entries = engine.dead_letters(table.as_deref())?;
            return list(ctx, &entries);
        }
        DeadLetterCommand::Retry { seq } => (
            engine
                .retry_dead_letter(seq, None)
                .await
                .map_err(not_found(seq))?,
            "re-queued",
        ),
        DeadLetterCommand::Edit { seq, record } => {
            let record = read_record(&record, "the edited record")?;
            (
                engine
                    .retry_dead_letter(seq, Some(record))
                    .await
                    .map_err(not_found(seq))?,
                "edited and re-queued",
            )
        }
        DeadLetterCommand::Discard { seq } => (
            engine
                .discard_dead_letter(seq)
                .await
                .map_err(not_found(seq))?,
            "discarded",
        ),
    };
    if ctx.out.json {
        return ctx.out.json(&entry);
    }
    ctx.out.line(format!(
        "{verb} seq {} ({} {}/{})",
        entry.seq,
        entry.op.as_str(),
        entry.table,
        entry.key
    ));
    if verb != "discarded" {
        ctx.out
            .note("it is pushed by the next `tidesync sync` or `tidesync run`");
    }
    Ok(())
}

fn list(ctx: &Ctx, entries: &[OutboxEntry]) -> Result<(), CliError> {
    if ctx.out.json {
        return ctx.out.json(entries);
    }
    if entries.is_empty() {
        ctx.out.line("no dead letters");
        return Ok(());
    }
    let now = wall_millis();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let dead = e.dead.as_ref();
            vec![
                e.seq.to_string(),
                e.table.clone(),
                short(&e.key.to_string(), 40),
                e.op.as_str().to_owned(),
                dead.and_then(|d| d.status)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| dead.map(|d| d.kind.clone()).unwrap_or_default()),
                dead.map(|d| human_ms(now.saturating_sub(d.at_ms)))
                    .unwrap_or_default(),
                // The server's own answer says most; the error names what was refused.
                short(
                    &dead
                        .map(|d| match &d.response_excerpt {
                            Some(excerpt) => format!("{} — {}", excerpt.trim(), d.error),
                            None => d.error.clone(),
                        })
                        .unwrap_or_default(),
                    120,
                ),
            ]
        })
        .collect();
    ctx.out.line(columns(
        &[
            "SEQ",
            "TABLE",
            "KEY",
            "OP",
            "STATUS",
            "AGE",
            "SERVER ANSWER — ERROR",
        ],
        &rows,
    ));
    ctx.out.note(
        "retry with `tidesync dead-letters retry SEQ`, fix the record with `edit SEQ --record \
         JSON`, or drop it with `discard SEQ`",
    );
    Ok(())
}
