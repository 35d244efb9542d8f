//! The ConflictResolver actor: applies each table's strategy to conflicts from both paths.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use tidesync_core::{Conflict, ConflictStrategy, Resolution, Result, ServerWins};

use crate::events::{EventBus, SyncEvent};
use crate::telemetry;

/// Decide one conflict with its table's strategy.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Resolution>")]
pub struct Resolve(pub Conflict);

/// Decide many conflicts (a pulled page's) in one message, in order. Each conflict comes back
/// with its own outcome, so one failing strategy call does not hide the others' resolutions.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Vec<(Conflict, Result<Resolution>)>")]
pub struct ResolveAll(pub Vec<Conflict>);

/// The ConflictResolver actor.
pub struct ConflictResolverActor {
    strategies: HashMap<String, Arc<dyn ConflictStrategy>>,
    default: Arc<dyn ConflictStrategy>,
    events: EventBus,
}

impl ConflictResolverActor {
    /// A resolver with per-table strategies; tables without one use server-wins.
    pub fn new(strategies: HashMap<String, Arc<dyn ConflictStrategy>>, events: EventBus) -> Self {
        ConflictResolverActor {
            strategies,
            default: Arc::new(ServerWins),
            events,
        }
    }

    /// Replaces the strategy used for tables without their own.
    pub fn with_default(mut self, strategy: Arc<dyn ConflictStrategy>) -> Self {
        self.default = strategy;
        self
    }

    fn strategy(&self, table: &str) -> Arc<dyn ConflictStrategy> {
        self.strategies
            .get(table)
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }
}

impl Actor for ConflictResolverActor {
    type Context = Context<Self>;
}

/// Runs the strategy on one conflict and reports the outcome (metrics, log, event).
async fn resolve(
    strategy: &dyn ConflictStrategy,
    events: &EventBus,
    conflict: &Conflict,
) -> Result<Resolution> {
    let resolution = strategy
        .resolve(conflict)
        .await
        .map_err(|e| e.table(conflict.table.clone()).key(&conflict.key))?;
    telemetry::conflict(
        &conflict.table,
        strategy.name(),
        conflict.detected_by.as_str(),
        resolution.as_str(),
    );
    tracing::info!(
        table = %conflict.table, key = %conflict.key, strategy = strategy.name(),
        detected_by = conflict.detected_by.as_str(), outcome = resolution.as_str(), "conflict resolved"
    );
    events.emit(SyncEvent::Conflict {
        table: conflict.table.clone(),
        key: conflict.key.clone(),
        detected_by: conflict.detected_by,
        strategy: strategy.name().to_owned(),
        outcome: resolution.as_str().to_owned(),
    });
    Ok(resolution)
}

impl Handler<Resolve> for ConflictResolverActor {
    type Result = ResponseFuture<Result<Resolution>>;

    fn handle(&mut self, msg: Resolve, _ctx: &mut Context<Self>) -> Self::Result {
        let strategy = self.strategy(&msg.0.table);
        let events = self.events.clone();
        Box::pin(async move { resolve(&*strategy, &events, &msg.0).await })
    }
}

impl Handler<ResolveAll> for ConflictResolverActor {
    type Result = ResponseFuture<Vec<(Conflict, Result<Resolution>)>>;

    fn handle(&mut self, msg: ResolveAll, _ctx: &mut Context<Self>) -> Self::Result {
        let strategies: Vec<Arc<dyn ConflictStrategy>> =
            msg.0.iter().map(|c| self.strategy(&c.table)).collect();
        let events = self.events.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(msg.0.len());
            for (conflict, strategy) in msg.0.into_iter().zip(strategies) {
                let resolution = resolve(&*strategy, &events, &conflict).await;
                out.push((conflict, resolution));
            }
            out
        })
    }
}
