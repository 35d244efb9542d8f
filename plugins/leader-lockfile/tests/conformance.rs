//! The lock-file election passes the testkit's leader election suite: electors on one database
//! path compete as processes would (each opens the lock file itself).

use std::path::PathBuf;
use std::sync::Arc;

use tidesync_core::{LeaderElector, Result};
use tidesync_leader_lockfile::LockfileLeader;
use tidesync_testkit::leader_suite::{self, ElectorFactory};

struct OneDatabase {
    _dir: tempfile::TempDir,
    database: PathBuf,
}

impl ElectorFactory for OneDatabase {
    fn elector(&self) -> Result<Arc<dyn LeaderElector>> {
        Ok(Arc::new(LockfileLeader::for_database(&self.database)?))
    }

    fn electors_compete(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lockfile_leader_passes_the_leader_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("app.redb");
    let factory = OneDatabase {
        _dir: dir,
        database: database.clone(),
    };
    leader_suite::run_all(&factory).await;
    // Every check ran on the same election: its epoch file saw every change of leader.
    let probe = LockfileLeader::for_database(&database).expect("probe");
    assert!(
        probe.persisted_epoch().expect("epoch file") > leader_suite::HANDOVERS as u64,
        "the suite's handovers did not reach the epoch file"
    );
}
