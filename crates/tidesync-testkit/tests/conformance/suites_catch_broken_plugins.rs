//! The suites can fail: plugins that break a rule are caught by the check for that rule.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tidesync_core::{
    Conflict, ConflictStrategy, InProcessLeader, LeaderElector, Resolution, Result, Stamp,
};
use tidesync_testkit::conflict_suite::{self, Rules, Side, TimeRule};
use tidesync_testkit::leader_suite::{self, ElectorFactory};

/// Alternates its answer: not deterministic.
#[derive(Default)]
struct Flaky(AtomicU64);

#[async_trait]
impl ConflictStrategy for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn resolve(&self, _conflict: &Conflict) -> Result<Resolution> {
        Ok(
            if self.0.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                Resolution::TakeRemote
            } else {
                Resolution::KeepLocal
            },
        )
    }
}

/// Panics on a remote tombstone.
struct PanicsOnTombstones;

#[async_trait]
impl ConflictStrategy for PanicsOnTombstones {
    fn name(&self) -> &str {
        "panics_on_tombstones"
    }
    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution> {
        let remote = conflict.remote.as_ref().map(|r| r.contains_key("deleted"));
        assert_ne!(remote, Some(true), "tombstone");
        Ok(Resolution::TakeRemote)
    }
}

/// Last write wins, but a tie goes to the local side.
struct TieToLocal;

#[async_trait]
impl ConflictStrategy for TieToLocal {
    fn name(&self) -> &str {
        "tie_to_local"
    }
    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution> {
        let local_ms = i64::try_from(Stamp(conflict.local_hlc).millis()).unwrap_or(i64::MAX);
        Ok(match conflict.remote_time_ms {
            Some(remote_ms) if conflict.local_hlc != 0 && local_ms >= remote_ms => {
                Resolution::KeepLocal
            }
            _ => Resolution::TakeRemote,
        })
    }
}

#[test]
#[should_panic(expected = "deterministic")]
fn a_flaky_strategy_fails_determinism() {
    conflict_suite::deterministic(&Flaky::default(), &Rules::default());
}

#[test]
#[should_panic(expected = "resolves_every_input")]
fn a_panicking_strategy_fails_the_no_panic_check() {
    conflict_suite::resolves_every_input(&PanicsOnTombstones, &Rules::default());
}

#[test]
#[should_panic(expected = "a tie")]
fn a_strategy_breaking_its_tie_rule_fails_it() {
    conflict_suite::time_rule(
        &TieToLocal,
        &Rules {
            time: TimeRule::LastWriteWins {
                tie: Side::Remote,
                unknown: Some(Side::Remote),
            },
            ..Rules::default()
        },
    );
}

#[test]
fn the_same_strategy_passes_with_its_true_tie_rule() {
    conflict_suite::time_rule(
        &TieToLocal,
        &Rules {
            time: TimeRule::LastWriteWins {
                tie: Side::Local,
                unknown: Some(Side::Remote),
            },
            ..Rules::default()
        },
    );
}

/// `InProcessLeader` claimed to be an election among many: every instance leads.
struct EveryoneLeads;

impl ElectorFactory for EveryoneLeads {
    fn elector(&self) -> Result<Arc<dyn LeaderElector>> {
        Ok(Arc::new(InProcessLeader))
    }
    fn electors_compete(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "exactly one leader")]
async fn electors_that_all_lead_fail_one_leader_at_a_time() {
    leader_suite::one_leader_at_a_time(&EveryoneLeads).await;
}

/// A shared seat that hands over properly but never raises the epoch.
#[derive(Default)]
struct FixedEpochSeat {
    holder: Mutex<Option<u64>>,
    next_id: AtomicU64,
}

struct FixedEpochElector {
    seat: Arc<FixedEpochSeat>,
    id: u64,
}

#[async_trait]
impl LeaderElector for FixedEpochElector {
    fn name(&self) -> &str {
        "fixed_epoch"
    }
    async fn campaign(&self) -> Result<Option<u64>> {
        let mut holder = self.seat.holder.lock().unwrap_or_else(|e| e.into_inner());
        match *holder {
            None => {
                *holder = Some(self.id);
                Ok(Some(1))
            }
            Some(id) if id == self.id => Ok(Some(1)),
            Some(_) => Ok(None),
        }
    }
    async fn resign(&self) -> Result<()> {
        let mut holder = self.seat.holder.lock().unwrap_or_else(|e| e.into_inner());
        if *holder == Some(self.id) {
            *holder = None;
        }
        Ok(())
    }
}

struct FixedEpoch(Arc<FixedEpochSeat>);

impl ElectorFactory for FixedEpoch {
    fn elector(&self) -> Result<Arc<dyn LeaderElector>> {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(FixedEpochElector {
            seat: Arc::clone(&self.0),
            id,
        }))
    }
    fn electors_compete(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_epoch_seat_keeps_one_leader() {
    let factory = FixedEpoch(Arc::default());
    leader_suite::one_leader_at_a_time(&factory).await;
    leader_suite::follower_resign_leaves_the_leader(&factory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "strictly increase")]
async fn a_handover_without_a_new_epoch_fails() {
    leader_suite::resign_hands_over_with_a_higher_epoch(&FixedEpoch(Arc::default())).await;
}
