//! The leader election plugin contract (DESIGN invariant 9): only the leader syncs.

use async_trait::async_trait;

use crate::error::Result;

/// An election backend. The leader holds a fencing epoch that grows with every new leader;
/// pushes and checkpoint writes carry it so a deposed leader's work can be refused.
#[async_trait]
pub trait LeaderElector: Send + Sync + 'static {
    /// A short name for logs (`"in_process"`, `"lockfile"`).
    fn name(&self) -> &str;
    /// Tries to become (or stay) leader; returns the epoch when leading, `None` otherwise.
    async fn campaign(&self) -> Result<Option<u64>>;
    /// Gives leadership up (on shutdown).
    async fn resign(&self) -> Result<()>;
}

/// The default for a single process: always the leader, epoch 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcessLeader;

#[async_trait]
impl LeaderElector for InProcessLeader {
    fn name(&self) -> &str {
        "in_process"
    }
    async fn campaign(&self) -> Result<Option<u64>> {
        Ok(Some(1))
    }
    async fn resign(&self) -> Result<()> {
        Ok(())
    }
}
