//! The field merge passes the testkit's conflict strategy suite under every default policy.

use tidesync_conflict_merge::{FieldMerge, MergePolicy};
use tidesync_core::Resolution;
use tidesync_testkit::conflict_suite::{self, Rules, Side, TimeRule};

fn rules(time: TimeRule) -> Rules {
    Rules {
        always: None,
        // "When the two sides are already equal the result is `TakeRemote`."
        converged: Some(Resolution::TakeRemote),
        ignores_detected_by: true,
        time,
    }
}

/// `Latest` orders by the record's times: ties and unknown times go to the server.
const LATEST: TimeRule = TimeRule::LastWriteWins {
    tie: Side::Remote,
    unknown: Some(Side::Remote),
};

#[test]
fn prefer_remote_prefer_local_and_park_ignore_times() {
    for policy in [
        MergePolicy::PreferRemote,
        MergePolicy::PreferLocal,
        MergePolicy::Park,
    ] {
        conflict_suite::run_all(&FieldMerge::with_default(policy), &rules(TimeRule::Ignored));
    }
}

#[test]
fn latest_ties_and_unknown_times_go_to_the_server() {
    conflict_suite::run_all(
        &FieldMerge::with_default(MergePolicy::Latest),
        &rules(LATEST),
    );
}

#[test]
fn per_field_policies() {
    let merge = FieldMerge::new()
        .field("title", MergePolicy::Latest)
        .field("meta", MergePolicy::PreferLocal)
        .field("meta.updatedAt", MergePolicy::Latest)
        .field("tags", MergePolicy::Park);
    conflict_suite::run_all(&merge, &rules(LATEST));
}
