//! The leader election conformance suite: what every [`LeaderElector`] must do (DESIGN
//! invariant 9: only the leader syncs, and its fencing epoch grows with every new leader).
//!
//! An elector crate runs it from an integration test with an [`ElectorFactory`] whose
//! electors all compete in one election (e.g. one database path):
//!
//! ```no_run
//! use std::sync::Arc;
//! use tidesync_core::{InProcessLeader, LeaderElector, Result};
//! use tidesync_testkit::leader_suite::{self, ElectorFactory};
//!
//! struct Single;
//! impl ElectorFactory for Single {
//!     fn elector(&self) -> Result<Arc<dyn LeaderElector>> {
//!         Ok(Arc::new(InProcessLeader))
//!     }
//!     fn electors_compete(&self) -> bool {
//!         false // every InProcessLeader leads: there is nobody to compete with
//!     }
//! }
//! # async fn demo() {
//! leader_suite::run_all(&Single).await;
//! # }
//! ```
//!
//! The checks never assume a fresh election: epochs from earlier checks (or earlier runs on the
//! same files) may be higher than 1. Each check drops its electors before returning, and the
//! electors it resigns are never asked to lead again (resigning may be final). A check panics
//! with a message naming the elector, the check and what was wrong. Run them on a
//! multi-threaded runtime: campaigns are started concurrently.

use std::sync::Arc;

use tidesync_core::{LeaderElector, Result};
use tokio::task::JoinSet;

/// Hands out electors for the suite.
pub trait ElectorFactory: Send + Sync {
    /// A new elector (a new member, as another process would be), in the same election as every
    /// other elector this factory handed out.
    fn elector(&self) -> Result<Arc<dyn LeaderElector>>;

    /// Whether electors from [`elector`](ElectorFactory::elector) compete with each other. When
    /// `false` (a backend for a single process, such as `InProcessLeader`), only the checks of
    /// one elector on its own run.
    fn electors_compete(&self) -> bool;
}

/// Electors per election in the multi-elector checks.
pub const ELECTORS: usize = 4;

/// Changes of leader in [`resign_hands_over_with_a_higher_epoch`].
pub const HANDOVERS: usize = 5;

/// Runs every check.
pub async fn run_all(factory: &dyn ElectorFactory) {
    lone_elector_leads(factory).await;
    renew_keeps_the_epoch(factory).await;
    resign_twice_is_harmless(factory).await;
    one_leader_at_a_time(factory).await;
    resign_hands_over_with_a_higher_epoch(factory).await;
    follower_resign_leaves_the_leader(factory).await;
}

fn new_elector(factory: &dyn ElectorFactory, check: &str) -> Arc<dyn LeaderElector> {
    factory
        .elector()
        .unwrap_or_else(|e| panic!("[{check}] cannot create an elector: {e}"))
}

async fn campaign(elector: &dyn LeaderElector, check: &str) -> Option<u64> {
    elector
        .campaign()
        .await
        .unwrap_or_else(|e| panic!("[{}] {check}: campaign failed: {e}", elector.name()))
}

async fn resign(elector: &dyn LeaderElector, check: &str) {
    elector
        .resign()
        .await
        .unwrap_or_else(|e| panic!("[{}] {check}: resign failed: {e}", elector.name()));
}

/// Every elector campaigns at once; returns each one's answer, in the order of `electors`.
async fn campaign_all(electors: &[Arc<dyn LeaderElector>], check: &str) -> Vec<Option<u64>> {
    let mut set = JoinSet::new();
    for (i, elector) in electors.iter().enumerate() {
        let elector = Arc::clone(elector);
        set.spawn(async move { (i, elector.campaign().await) });
    }
    let mut answers = vec![None; electors.len()];
    while let Some(joined) = set.join_next().await {
        let (i, answer) = joined.unwrap_or_else(|e| panic!("[{check}] a campaign panicked: {e}"));
        answers[i] = answer.unwrap_or_else(|e| panic!("[{check}] campaign failed: {e}"));
    }
    answers
}

/// The only leader among `answers`: panics unless exactly one elector leads.
fn only_leader(answers: &[Option<u64>], check: &str) -> (usize, u64) {
    let leaders: Vec<(usize, u64)> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.map(|epoch| (i, epoch)))
        .collect();
    match leaders.as_slice() {
        [one] => *one,
        _ => panic!("[{check}] want exactly one leader, campaigns answered {answers:?}"),
    }
}

/// An elector alone in its election leads, with an epoch of at least 1.
pub async fn lone_elector_leads(factory: &dyn ElectorFactory) {
    const CHECK: &str = "lone_elector_leads";
    let elector = new_elector(factory, CHECK);
    let epoch = campaign(elector.as_ref(), CHECK)
        .await
        .unwrap_or_else(|| panic!("[{}] {CHECK}: a lone elector does not lead", elector.name()));
    assert!(epoch >= 1, "[{CHECK}] epoch {epoch}: epochs start at 1");
    resign(elector.as_ref(), CHECK).await;
}

/// A leader that campaigns again stays leader with the same epoch.
pub async fn renew_keeps_the_epoch(factory: &dyn ElectorFactory) {
    const CHECK: &str = "renew_keeps_the_epoch";
    let elector = new_elector(factory, CHECK);
    let first = campaign(elector.as_ref(), CHECK).await;
    assert!(first.is_some(), "[{CHECK}] a lone elector does not lead");
    for round in 1..=5 {
        let again = campaign(elector.as_ref(), CHECK).await;
        assert_eq!(
            again, first,
            "[{CHECK}] renewal {round} changed the leadership"
        );
    }
    resign(elector.as_ref(), CHECK).await;
}

/// Resigning twice, or resigning without ever leading, succeeds.
pub async fn resign_twice_is_harmless(factory: &dyn ElectorFactory) {
    const CHECK: &str = "resign_twice_is_harmless";
    let never_led = new_elector(factory, CHECK);
    resign(never_led.as_ref(), CHECK).await;
    let leader = new_elector(factory, CHECK);
    assert!(
        campaign(leader.as_ref(), CHECK).await.is_some(),
        "[{CHECK}] a lone elector does not lead"
    );
    resign(leader.as_ref(), CHECK).await;
    resign(leader.as_ref(), CHECK).await;
}

/// [`ELECTORS`] electors campaign at once, round after round: exactly one leads, always the
/// same one with the same epoch.
pub async fn one_leader_at_a_time(factory: &dyn ElectorFactory) {
    const CHECK: &str = "one_leader_at_a_time";
    if !factory.electors_compete() {
        return;
    }
    let electors: Vec<_> = (0..ELECTORS).map(|_| new_elector(factory, CHECK)).collect();
    let first = only_leader(&campaign_all(&electors, CHECK).await, CHECK);
    for round in 1..=5 {
        let again = only_leader(&campaign_all(&electors, CHECK).await, CHECK);
        assert_eq!(
            again, first,
            "[{CHECK}] round {round}: leader (index, epoch) changed without a resign"
        );
    }
    resign(electors[first.0].as_ref(), CHECK).await;
}

/// The leader resigns, the others campaign at once: exactly one of them takes over, with a
/// strictly higher epoch, and the resigned elector does not lead beside it. Repeated
/// [`HANDOVERS`] times, a fresh elector joining for each one that resigned.
pub async fn resign_hands_over_with_a_higher_epoch(factory: &dyn ElectorFactory) {
    const CHECK: &str = "resign_hands_over_with_a_higher_epoch";
    if !factory.electors_compete() {
        return;
    }
    let mut electors: Vec<_> = (0..ELECTORS).map(|_| new_elector(factory, CHECK)).collect();
    let (mut leader, mut epoch) = only_leader(&campaign_all(&electors, CHECK).await, CHECK);
    let mut epochs = vec![epoch];
    for handover in 1..=HANDOVERS {
        let resigned = electors.remove(leader);
        resign(resigned.as_ref(), CHECK).await;
        electors.push(new_elector(factory, CHECK));
        let (next, next_epoch) = only_leader(&campaign_all(&electors, CHECK).await, CHECK);
        epochs.push(next_epoch);
        assert!(
            next_epoch > epoch,
            "[{CHECK}] handover {handover}: epochs must strictly increase, saw {epochs:?}"
        );
        assert_eq!(
            campaign(resigned.as_ref(), CHECK).await,
            None,
            "[{CHECK}] handover {handover}: the resigned elector leads beside the new leader"
        );
        (leader, epoch) = (next, next_epoch);
    }
    resign(electors[leader].as_ref(), CHECK).await;
}

/// A follower that resigns changes nothing: the leader keeps leading with its epoch and the
/// other followers stay followers.
pub async fn follower_resign_leaves_the_leader(factory: &dyn ElectorFactory) {
    const CHECK: &str = "follower_resign_leaves_the_leader";
    if !factory.electors_compete() {
        return;
    }
    let electors: Vec<_> = (0..ELECTORS).map(|_| new_elector(factory, CHECK)).collect();
    let first = only_leader(&campaign_all(&electors, CHECK).await, CHECK);
    let follower = (first.0 + 1) % electors.len();
    resign(electors[follower].as_ref(), CHECK).await;
    let again = only_leader(&campaign_all(&electors, CHECK).await, CHECK);
    assert_eq!(
        again, first,
        "[{CHECK}] a follower's resign changed the leadership"
    );
    resign(electors[first.0].as_ref(), CHECK).await;
}
