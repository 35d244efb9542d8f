//! `tidesync reconcile TABLE [--dry-run]`: finds the records a server deleted for good.
//!
//! Most CRUD APIs delete rows for good and have no deleted-ids feed, so a change feed never
//! reports their deletes. This pass lists every key the server has (the table's pull feed
//! walked from the start, page by page, through the REST transport exactly as a first sync
//! walks it; the checkpoint is neither read nor moved), then deletes locally, like a pulled
//! delete (no outbox entries), each local record the server no longer lists and that has no
//! pending local change or parked conflict. It needs the store to itself (not while `run`
//! holds it) and costs one full walk of the feed: see the keys/s it reports.
//!
//! It is idempotent: after a crash or an interrupted listing nothing was written, and running
//! it again starts the listing over.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tidesync::actors::reconcile::list_server_keys;
use tidesync::core::hlc::HybridClock;
use tidesync::core::local::{LocalDb, Schema};

use crate::build;
use crate::commands::{Ctx, unknown_table};
use crate::error::CliError;

/// Runs a reconciliation pass.
pub async fn run(ctx: &Ctx, table: &str, dry_run: bool) -> Result<(), CliError> {
    let loaded = ctx.load()?;
    let spec = loaded
        .table(table)
        .ok_or_else(|| unknown_table(&loaded, table))?
        .clone();
    if !spec.pull {
        return Err(CliError::usage(format!(
            "table `{table}` does not pull (pull = false): there is no server listing to \
             compare with"
        )));
    }
    let transport = build::transport(&loaded, &build::process_env)?;
    // Open the store first: a store held by a daemon fails before any request.
    let store = build::open_store(&loaded)?;
    let page_size = loaded.config.sync.page_size.max(1);

    let started = Instant::now();
    // The same listing as the engine's scheduled passes (`reconcile_every`).
    let (keys, pages) = list_server_keys(&transport, &spec, page_size)
        .await
        .map_err(|e| {
            CliError::engine(e).hint(
                "nothing was deleted: the listing must be complete; run `tidesync doctor` to \
                 check the pull feed",
            )
        })?;
    let listing = started.elapsed();
    let keys_per_s = if listing.as_secs_f64() > 0.0 {
        keys.len() as f64 / listing.as_secs_f64()
    } else {
        0.0
    };

    let schema = Schema::new(loaded.config.tables.clone()).map_err(CliError::engine)?;
    let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
    let mut txn = tidesync::core::Store::write(&store).map_err(CliError::engine)?;
    let result = db
        .remote()
        .reconcile_deletes(txn.as_mut(), table, &keys, dry_run)
        .map_err(CliError::engine)?;
    txn.commit().map_err(CliError::engine)?;
    tracing::info!(
        table,
        server_keys = keys.len(),
        deleted = result.deleted.len(),
        kept = result.kept.len(),
        dry_run,
        "reconciliation pass"
    );

    if ctx.out.json {
        return ctx.out.json(&json!({
            "table": table,
            "dry_run": dry_run,
            "server_keys": keys.len(),
            "pages": pages,
            "listing_ms": listing.as_millis() as u64,
            "keys_per_s": keys_per_s.round(),
            "local_checked": result.checked,
            "deleted": result.deleted.iter().map(|k| k.to_json()).collect::<Vec<_>>(),
            "kept_pending": result.kept.iter().map(|k| k.to_json()).collect::<Vec<_>>(),
        }));
    }
    ctx.out.line(format!(
        "{table}: listed {} server keys in {pages} page(s), {:.2}s ({:.0} keys/s); {} local \
         record(s) checked",
        keys.len(),
        listing.as_secs_f64(),
        keys_per_s,
        result.checked
    ));
    let verb = if dry_run { "would delete" } else { "deleted" };
    ctx.out.line(format!(
        "{table}: {verb} {} local record(s) the server no longer has{}",
        result.deleted.len(),
        if result.deleted.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                result
                    .deleted
                    .iter()
                    .take(20)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    if !result.kept.is_empty() {
        ctx.out.line(format!(
            "{table}: kept {} record(s) the server no longer has because they have pending \
             local changes (their push decides): {}",
            result.kept.len(),
            result
                .kept
                .iter()
                .take(20)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}
