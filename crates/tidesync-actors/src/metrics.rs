//! The Metrics actor: keeps the gauges that are read off the store (outbox depth, oldest
//! pending age, dead letters, checkpoint lag) fresh, and follows the event bus for the rest.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use metrics::gauge;

use tidesync_core::hlc::wall_millis;

use crate::events::SyncEvent;
use crate::shared::SyncShared;
use crate::telemetry;

/// Refresh the gauges now.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Refresh;

/// The Metrics actor.
pub struct MetricsActor {
    shared: SyncShared,
    every: Duration,
    last_pull_ms: HashMap<String, u64>,
}

impl MetricsActor {
    /// Refreshes gauges every `every`.
    pub fn new(shared: SyncShared, every: Duration) -> Self {
        MetricsActor {
            shared,
            every,
            last_pull_ms: HashMap::new(),
        }
    }

    fn refresh(&mut self) {
        let sh = &self.shared;
        let now = wall_millis();
        let read = match sh.store.read() {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!(error = %err, "metrics: cannot read the store");
                return;
            }
        };
        // One pass over the outbox for every table's figures.
        let stats_by_table = match sh.db.outbox().stats_by_table(&*read) {
            Ok(stats) => Some(stats),
            Err(err) => {
                tracing::warn!(error = %err, "metrics: cannot read the outbox");
                None
            }
        };
        for spec in sh.db.schema().tables() {
            if let Some(by_table) = &stats_by_table {
                let stats = by_table.get(&spec.name).copied().unwrap_or_default();
                gauge!(telemetry::OUTBOX_DEPTH, "table" => spec.name.clone())
                    .set(stats.depth as f64);
                let age = stats
                    .oldest_created_at_ms
                    .map(|t| now.saturating_sub(t))
                    .unwrap_or(0);
                gauge!(telemetry::OUTBOX_OLDEST_AGE, "table" => spec.name.clone())
                    .set(age as f64 / 1000.0);
            }
            if let Some(at) = self.last_pull_ms.get(&spec.name) {
                gauge!(telemetry::CHECKPOINT_LAG, "table" => spec.name.clone())
                    .set(now.saturating_sub(*at) as f64 / 1000.0);
            }
        }
        if let Ok(count) = sh.db.outbox().dead_letter_count(&*read) {
            gauge!(telemetry::DEAD_LETTERS).set(count as f64);
        }
        let auth = sh.state.auth_required.load(Ordering::SeqCst);
        gauge!(telemetry::AUTH_REQUIRED).set(if auth { 1.0 } else { 0.0 });
        gauge!(telemetry::ONLINE).set(if sh.state.online.load(Ordering::SeqCst) {
            1.0
        } else {
            0.0
        });
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let mut events = self.shared.events.subscribe();
        let me = ctx.address();
        // Follow pull completions for the checkpoint-lag gauge.
        ctx.spawn(actix::fut::wrap_future(async move {
            loop {
                match events.recv().await {
                    Ok(SyncEvent::PullCompleted { table, .. }) => me.do_send(PulledAt(table)),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }));
        self.refresh();
        ctx.run_interval(self.every, |act, _| act.refresh());
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct PulledAt(String);

impl Handler<PulledAt> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: PulledAt, _ctx: &mut Context<Self>) {
        self.last_pull_ms.insert(msg.0, wall_millis());
    }
}

impl Handler<Refresh> for MetricsActor {
    type Result = ();

    fn handle(&mut self, _msg: Refresh, _ctx: &mut Context<Self>) {
        self.refresh();
    }
}
