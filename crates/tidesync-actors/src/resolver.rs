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
}

impl Actor for ConflictResolverActor {
    type Context = Context<Self>;
}

impl Handler<Resolve> for ConflictResolverActor {
    type Result = ResponseFuture<Result<Resolution>>;

    fn handle(&mut self, msg: Resolve, _ctx: &mut Context<Self>) -> Self::Result {
        let strategy = self
            .strategies
            .get(&msg.0.table)
            .cloned()
            .unwrap_or_else(|| self.default.clone());
        let events = self.events.clone();
        Box::pin(async move {
            let conflict = msg.0;
            let resolution = strategy
                .resolve(&conflict)
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
        })
    }
}
