//! Core's default conflict strategy and leader elector pass their suites.

use std::sync::Arc;

use tidesync_core::{InProcessLeader, LeaderElector, Resolution, Result, ServerWins};
use tidesync_testkit::conflict_suite::{self, Rules, TimeRule};
use tidesync_testkit::leader_suite::{self, ElectorFactory};

#[test]
fn server_wins_passes_the_conflict_suite() {
    conflict_suite::run_all(
        &ServerWins,
        &Rules {
            always: Some(Resolution::TakeRemote),
            converged: Some(Resolution::TakeRemote),
            ignores_detected_by: true,
            time: TimeRule::Ignored,
        },
    );
}

/// `InProcessLeader` is for one process with one engine: every instance leads, so only the
/// checks of a lone elector apply.
struct InProcess;

impl ElectorFactory for InProcess {
    fn elector(&self) -> Result<Arc<dyn LeaderElector>> {
        Ok(Arc::new(InProcessLeader))
    }

    fn electors_compete(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_leader_passes_the_leader_suite() {
    leader_suite::run_all(&InProcess).await;
}
