//! The field merge through the `ConflictStrategy` trait object, as the engine calls it.

use std::sync::Arc;

use serde_json::{Value, json};
use tidesync_conflict_merge::{FieldMerge, FieldOutcome, MergePolicy, by_name};
use tidesync_core::{Conflict, ConflictStrategy, DetectedBy, Key, Record, Resolution, Stamp};

const DETECTIONS: [DetectedBy; 4] = [
    DetectedBy::Pull,
    DetectedBy::PushRejected,
    DetectedBy::RemoteDelete,
    DetectedBy::LocalDelete,
];

const POLICIES: [MergePolicy; 4] = [
    MergePolicy::PreferRemote,
    MergePolicy::PreferLocal,
    MergePolicy::Latest,
    MergePolicy::Park,
];

const LOCAL_MS: u64 = 1_700_000_000_000;

fn rec(v: Value) -> Record {
    match v {
        Value::Object(m) => m,
        other => panic!("test records are objects, got {other}"),
    }
}

fn opt(v: Value) -> Option<Record> {
    match v {
        Value::Null => None,
        other => Some(rec(other)),
    }
}

/// A conflict; `null` stands for "no base" / "deleted". The local write is 1 ms after the
/// remote one unless changed.
fn conflict(base: Value, local: Value, remote: Value) -> Conflict {
    Conflict {
        table: "contacts".into(),
        key: Key::from("c1"),
        base: opt(base),
        local: opt(local),
        remote: opt(remote),
        detected_by: DetectedBy::Pull,
        local_hlc: Stamp::from_millis(LOCAL_MS).0 + 9,
        remote_time_ms: Some(LOCAL_MS as i64 - 1),
    }
}

async fn resolve(strategy: &dyn ConflictStrategy, c: &Conflict) -> Resolution {
    match strategy.resolve(c).await {
        Ok(resolution) => resolution,
        Err(err) => panic!("{} failed on {c:?}: {err}", strategy.name()),
    }
}

/// The record the engine ends up with, `None` when deleted; panics on `Park`.
fn applied(c: &Conflict, resolution: &Resolution) -> Option<Record> {
    match resolution {
        Resolution::TakeRemote => c.remote.clone(),
        Resolution::KeepLocal => c.local.clone(),
        Resolution::Merged(record) => Some(record.clone()),
        Resolution::Park => panic!("unexpected park for {c:?}"),
    }
}

/// Resolves with every detection path and checks they agree; returns the resolution.
async fn resolve_all_paths(strategy: &dyn ConflictStrategy, c: &Conflict) -> Resolution {
    let first = resolve(strategy, c).await;
    for detected_by in DETECTIONS {
        let mut c = c.clone();
        c.detected_by = detected_by;
        assert_eq!(
            resolve(strategy, &c).await,
            first,
            "{detected_by:?} differs"
        );
    }
    first
}

#[tokio::test]
async fn disjoint_edits_merge() {
    let merge = FieldMerge::new();
    let cases = [
        (
            "different fields edited",
            json!({"a": 1, "b": 1, "c": 1}),
            json!({"a": 2, "b": 1, "c": 1}),
            json!({"a": 1, "b": 2, "c": 1}),
            json!({"a": 2, "b": 2, "c": 1}),
        ),
        (
            "added on each side",
            json!({"a": 1}),
            json!({"a": 1, "l": true}),
            json!({"a": 1, "r": true}),
            json!({"a": 1, "l": true, "r": true}),
        ),
        (
            "removed locally, edited elsewhere remotely",
            json!({"a": 1, "b": 1}),
            json!({"b": 1}),
            json!({"a": 1, "b": 2}),
            json!({"b": 2}),
        ),
        (
            "removed remotely, edited elsewhere locally",
            json!({"a": 1, "b": 1}),
            json!({"a": 1, "b": 2}),
            json!({"b": 1}),
            json!({"b": 2}),
        ),
        (
            "same change on both sides plus one each",
            json!({"a": 1, "b": 1, "c": 1}),
            json!({"a": 5, "b": 2, "c": 1}),
            json!({"a": 5, "b": 1, "c": 3}),
            json!({"a": 5, "b": 2, "c": 3}),
        ),
        (
            "null is a value, distinct from absent",
            json!({"a": 1, "b": 1}),
            json!({"a": null, "b": 1}),
            json!({"a": 1}),
            json!({"a": null}),
        ),
    ];
    for (name, base, local, remote, want) in cases {
        let c = conflict(base, local, remote);
        let got = resolve_all_paths(&merge, &c).await;
        assert_eq!(got, Resolution::Merged(rec(want)), "{name}");
        assert!(
            merge.merge(&c).conflicts.is_empty(),
            "{name}: no field needed a policy"
        );
    }
}

#[tokio::test]
async fn same_field_conflicts_follow_the_policy() {
    let base = json!({"title": "base", "body": "base"});
    let local = json!({"title": "local", "body": "local body"});
    let remote = json!({"title": "remote", "body": "base"});
    let with_title = |t: &str| json!({"title": t, "body": "local body"});
    let at = |offset: i64| Some(LOCAL_MS as i64 + offset);
    let cases = [
        (
            MergePolicy::PreferRemote,
            at(-1),
            Some(with_title("remote")),
        ),
        (MergePolicy::PreferLocal, at(1), Some(with_title("local"))),
        (MergePolicy::Latest, at(-1), Some(with_title("local"))),
        (MergePolicy::Latest, at(0), Some(with_title("remote"))),
        (MergePolicy::Latest, at(1), Some(with_title("remote"))),
        (MergePolicy::Latest, None, Some(with_title("remote"))),
        (MergePolicy::Park, at(-1), None),
    ];
    for (policy, remote_time_ms, want) in cases {
        for via_default in [true, false] {
            let merge = if via_default {
                FieldMerge::with_default(policy)
            } else {
                FieldMerge::new().field("title", policy)
            };
            let mut c = conflict(base.clone(), local.clone(), remote.clone());
            c.remote_time_ms = remote_time_ms;
            let got = resolve_all_paths(&merge, &c).await;
            let label = format!("{policy:?} at {remote_time_ms:?}, default {via_default}");
            match &want {
                // "local" title + local body is exactly the local record.
                Some(w) if w["title"] == "local" => {
                    assert_eq!(got, Resolution::KeepLocal, "{label}")
                }
                Some(w) => assert_eq!(got, Resolution::Merged(rec(w.clone())), "{label}"),
                None => assert_eq!(got, Resolution::Park, "{label}"),
            }
        }
    }
}

#[tokio::test]
async fn a_park_anywhere_parks_the_record_and_is_reported() {
    let merge = FieldMerge::new().field("balance", MergePolicy::Park);
    let c = conflict(
        json!({"name": "a", "balance": 1}),
        json!({"name": "b", "balance": 2}),
        json!({"name": "c", "balance": 3}),
    );
    assert_eq!(resolve_all_paths(&merge, &c).await, Resolution::Park);
    let outcome = merge.merge(&c);
    let parked: Vec<&str> = outcome
        .conflicts
        .iter()
        .filter(|f| f.outcome == FieldOutcome::Parked)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(parked, vec!["balance"]);
    // A Park policy on a field only one side changed never triggers.
    let c = conflict(
        json!({"name": "a", "balance": 1}),
        json!({"name": "b", "balance": 1}),
        json!({"name": "a", "balance": 3}),
    );
    assert_eq!(
        resolve(&merge, &c).await,
        Resolution::Merged(rec(json!({"name": "b", "balance": 3})))
    );
}

#[tokio::test]
async fn nested_objects_merge_with_path_policies() {
    let base = json!({"name": "Ann", "address": {"city": "Oslo", "zip": "0150", "geo": {"lat": 1, "lng": 1}}});
    let local = json!({"name": "Ann", "address": {"city": "Bergen", "zip": "0150", "geo": {"lat": 2, "lng": 2}}});
    let remote = json!({"name": "Anne", "address": {"city": "Trondheim", "zip": "5003", "geo": {"lat": 3, "lng": 1}}});
    let cases = [
        (
            FieldMerge::new(),
            json!({"name": "Anne", "address": {"city": "Trondheim", "zip": "5003", "geo": {"lat": 3, "lng": 2}}}),
        ),
        (
            FieldMerge::new().field("address.city", MergePolicy::PreferLocal),
            json!({"name": "Anne", "address": {"city": "Bergen", "zip": "5003", "geo": {"lat": 3, "lng": 2}}}),
        ),
        (
            // A parent path covers its children…
            FieldMerge::new().field("address", MergePolicy::PreferLocal),
            json!({"name": "Anne", "address": {"city": "Bergen", "zip": "5003", "geo": {"lat": 2, "lng": 2}}}),
        ),
        (
            // …unless a longer path has its own policy.
            FieldMerge::new()
                .field("address", MergePolicy::PreferLocal)
                .field("address.geo", MergePolicy::PreferRemote),
            json!({"name": "Anne", "address": {"city": "Bergen", "zip": "5003", "geo": {"lat": 3, "lng": 2}}}),
        ),
    ];
    for (merge, want) in cases {
        let c = conflict(base.clone(), local.clone(), remote.clone());
        let got = resolve_all_paths(&merge, &c).await;
        assert_eq!(got, Resolution::Merged(rec(want)), "{:?}", merge.config());
    }
}

#[tokio::test]
async fn a_type_change_conflicts_at_the_field_itself() {
    // "address" became a string locally and stayed an object (edited) remotely: the conflict
    // is at "address", so the policy of "address" applies, not that of "address.city".
    let merge = FieldMerge::new()
        .field("address", MergePolicy::PreferLocal)
        .field("address.city", MergePolicy::PreferRemote);
    let c = conflict(
        json!({"address": {"city": "Oslo"}}),
        json!({"address": "Bergen, Norway"}),
        json!({"address": {"city": "Trondheim"}}),
    );
    assert_eq!(resolve_all_paths(&merge, &c).await, Resolution::KeepLocal);
    let paths: Vec<String> = merge
        .merge(&c)
        .conflicts
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(paths, vec!["address"]);
}

#[tokio::test]
async fn arrays_are_values() {
    let merge = FieldMerge::new();
    let cases = [
        (
            "both appended: whole-array conflict, remote wins by default",
            json!({"tags": ["a"], "n": 1}),
            json!({"tags": ["a", "l"], "n": 2}),
            json!({"tags": ["a", "r"], "n": 1}),
            Resolution::Merged(rec(json!({"tags": ["a", "r"], "n": 2}))),
        ),
        (
            "only local changed the array",
            json!({"tags": ["a"], "n": 1}),
            json!({"tags": ["a", "l"], "n": 1}),
            json!({"tags": ["a"], "n": 2}),
            Resolution::Merged(rec(json!({"tags": ["a", "l"], "n": 2}))),
        ),
        (
            "objects inside arrays are not merged",
            json!({"items": [{"x": 1, "y": 1}]}),
            json!({"items": [{"x": 2, "y": 1}]}),
            json!({"items": [{"x": 1, "y": 2}]}),
            Resolution::TakeRemote,
        ),
    ];
    for (name, base, local, remote, want) in cases {
        let c = conflict(base, local, remote);
        assert_eq!(resolve_all_paths(&merge, &c).await, want, "{name}");
    }
    // With prefer_local the whole local array wins, elements untouched.
    let merge = FieldMerge::new().field("items", MergePolicy::PreferLocal);
    let c = conflict(
        json!({"items": [{"x": 1, "y": 1}]}),
        json!({"items": [{"x": 2, "y": 1}]}),
        json!({"items": [{"x": 1, "y": 2}]}),
    );
    assert_eq!(resolve(&merge, &c).await, Resolution::KeepLocal);
}

#[tokio::test]
async fn missing_base_treats_every_difference_as_a_conflict() {
    let local = json!({"same": 1, "a": 1, "only_local": 1, "nested": {"same": 1, "x": 1}});
    let remote =
        json!({"same": 1, "a": 2, "only_remote": 2, "nested": {"same": 1, "x": 2, "y": 2}});
    let cases = [
        (
            MergePolicy::PreferRemote,
            // "only_local" differs (present vs absent) and goes to the remote: removed.
            json!({"same": 1, "a": 2, "only_remote": 2, "nested": {"same": 1, "x": 2, "y": 2}}),
        ),
        (
            MergePolicy::PreferLocal,
            json!({"same": 1, "a": 1, "only_local": 1, "nested": {"same": 1, "x": 1}}),
        ),
    ];
    for (policy, want) in cases {
        let merge = FieldMerge::with_default(policy);
        let c = conflict(Value::Null, local.clone(), remote.clone());
        let got = resolve_all_paths(&merge, &c).await;
        assert_eq!(applied(&c, &got), Some(rec(want)), "{policy:?}");
        let mut paths: Vec<String> = merge
            .merge(&c)
            .conflicts
            .into_iter()
            .map(|f| f.path)
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            vec!["a", "nested.x", "nested.y", "only_local", "only_remote"],
            "{policy:?}"
        );
    }
    // Per-field policies mix both sides without a base.
    let merge = FieldMerge::new().field("a", MergePolicy::PreferLocal);
    let c = conflict(Value::Null, local, remote);
    assert_eq!(
        resolve(&merge, &c).await,
        Resolution::Merged(rec(
            json!({"same": 1, "a": 1, "only_remote": 2, "nested": {"same": 1, "x": 2, "y": 2}})
        ))
    );
}

#[tokio::test]
async fn an_object_added_on_both_sides_merges_against_an_empty_base() {
    // With a base, a field that did not exist in it was added; its sub-fields were too.
    let c = conflict(
        json!({"name": "a"}),
        json!({"name": "a", "address": {"city": "Oslo"}}),
        json!({"name": "a", "address": {"zip": "0150"}}),
    );
    let merged = json!({"name": "a", "address": {"city": "Oslo", "zip": "0150"}});
    assert_eq!(
        resolve_all_paths(&FieldMerge::new(), &c).await,
        Resolution::Merged(rec(merged))
    );
}

#[tokio::test]
async fn deletes_use_the_default_policy_for_the_whole_record() {
    let base = json!({"a": 1});
    let edited = json!({"a": 2});
    let later = Some(LOCAL_MS as i64 - 1);
    let tie = Some(LOCAL_MS as i64);
    // (default, local, remote, remote_time_ms, expected)
    let cases = [
        (
            MergePolicy::PreferRemote,
            edited.clone(),
            Value::Null,
            later,
            Resolution::TakeRemote,
        ),
        (
            MergePolicy::PreferRemote,
            Value::Null,
            edited.clone(),
            later,
            Resolution::TakeRemote,
        ),
        (
            MergePolicy::PreferLocal,
            edited.clone(),
            Value::Null,
            later,
            Resolution::KeepLocal,
        ),
        (
            MergePolicy::PreferLocal,
            Value::Null,
            edited.clone(),
            later,
            Resolution::KeepLocal,
        ),
        (
            MergePolicy::Latest,
            edited.clone(),
            Value::Null,
            later,
            Resolution::KeepLocal,
        ),
        (
            MergePolicy::Latest,
            Value::Null,
            edited.clone(),
            later,
            Resolution::KeepLocal,
        ),
        (
            MergePolicy::Latest,
            edited.clone(),
            Value::Null,
            tie,
            Resolution::TakeRemote,
        ),
        (
            MergePolicy::Latest,
            Value::Null,
            edited.clone(),
            None,
            Resolution::TakeRemote,
        ),
        (
            MergePolicy::Park,
            edited.clone(),
            Value::Null,
            later,
            Resolution::Park,
        ),
        (
            MergePolicy::Park,
            Value::Null,
            edited.clone(),
            later,
            Resolution::Park,
        ),
    ];
    for (default, local, remote, remote_time_ms, want) in cases {
        // A per-field policy must not matter for a delete.
        let merge = FieldMerge::with_default(default).field("a", MergePolicy::PreferLocal);
        for base in [base.clone(), Value::Null] {
            let mut c = conflict(base, local.clone(), remote.clone());
            c.remote_time_ms = remote_time_ms;
            let got = resolve_all_paths(&merge, &c).await;
            assert_eq!(
                got, want,
                "{default:?} local {local} remote {remote} {remote_time_ms:?}"
            );
        }
    }
    // Both deleted: converged, for every policy.
    for policy in POLICIES {
        let c = conflict(base.clone(), Value::Null, Value::Null);
        let got = resolve_all_paths(&FieldMerge::with_default(policy), &c).await;
        assert_eq!(got, Resolution::TakeRemote, "{policy:?}");
    }
}

#[tokio::test]
async fn results_equal_to_one_side_are_reported_as_that_side() {
    let merge = FieldMerge::new();
    let cases = [
        (
            "only remote changed",
            json!({"a": 1, "b": 1}),
            json!({"a": 1, "b": 1}),
            json!({"a": 2, "b": 1}),
            Resolution::TakeRemote,
        ),
        (
            "only local changed",
            json!({"a": 1, "b": 1}),
            json!({"a": 2, "b": 1}),
            json!({"a": 1, "b": 1}),
            Resolution::KeepLocal,
        ),
        (
            "both equal",
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"a": 2}),
            Resolution::TakeRemote,
        ),
        (
            "both empty",
            json!({"a": 1}),
            json!({}),
            json!({}),
            Resolution::TakeRemote,
        ),
        (
            "remote wins the only conflict",
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"a": 3}),
            Resolution::TakeRemote,
        ),
    ];
    for (name, base, local, remote, want) in cases {
        let c = conflict(base, local, remote);
        assert_eq!(resolve_all_paths(&merge, &c).await, want, "{name}");
    }
}

/// A spread of conflicts for the property-style tests below.
fn corpus() -> Vec<Conflict> {
    let base = json!({
        "title": "t", "n": 1, "tags": ["a"], "gone": true,
        "address": {"city": "Oslo", "zip": "1", "geo": {"lat": 1}}
    });
    let shapes = [
        (
            json!({"title": "L", "n": 1, "tags": ["a", "l"], "address": {"city": "Bergen", "zip": "1", "geo": {"lat": 1}}}),
            json!({"title": "R", "n": 2, "tags": ["a"], "gone": true, "address": {"city": "Oslo", "zip": "2", "geo": {"lat": 9}}}),
        ),
        (
            json!({"title": "t", "n": 5, "tags": "not an array", "address": null}),
            json!({"title": "R", "n": 6, "tags": ["a", "r"], "address": {"city": "Molde"}}),
        ),
        (json!({}), json!({"title": "R"})),
        (
            json!({"x": {"y": {"z": 1}}, "address": {"geo": {"lat": 2}}}),
            json!({"x": {"y": {"z": 2, "w": 1}}, "address": {"geo": "none"}}),
        ),
    ];
    let mut out = Vec::new();
    for (local, remote) in shapes {
        for base in [base.clone(), Value::Null] {
            for remote_time_ms in [Some(LOCAL_MS as i64 - 1), Some(LOCAL_MS as i64 + 1), None] {
                let mut c = conflict(base.clone(), local.clone(), remote.clone());
                c.remote_time_ms = remote_time_ms;
                out.push(c);
            }
        }
    }
    out
}

fn merges() -> Vec<FieldMerge> {
    let mut out = Vec::new();
    for default in [
        MergePolicy::PreferRemote,
        MergePolicy::PreferLocal,
        MergePolicy::Latest,
    ] {
        out.push(FieldMerge::with_default(default));
        out.push(
            FieldMerge::with_default(default)
                .field("address.city", MergePolicy::PreferLocal)
                .field("n", MergePolicy::Latest)
                .field("tags", MergePolicy::PreferRemote),
        );
    }
    out
}

#[tokio::test]
async fn merging_is_idempotent() {
    for merge in merges() {
        for c in corpus() {
            let first = resolve(&merge, &c).await;
            // The same input twice: the same answer.
            assert_eq!(resolve(&merge, &c).await, first);
            let result = applied(&c, &first);

            // Merging the result again with the same base and remote changes nothing.
            let mut again = c.clone();
            again.local = result.clone();
            let second = resolve(&merge, &again).await;
            assert_eq!(
                applied(&again, &second),
                result,
                "{:?} on {c:?}",
                merge.config()
            );

            // After the merge the remote becomes the base; merging again keeps the result
            // (only the local side differs from that base).
            let mut rebased = again.clone();
            rebased.base = c.remote.clone();
            let third = resolve(&merge, &rebased).await;
            assert_eq!(
                applied(&rebased, &third),
                result,
                "{:?} rebased",
                merge.config()
            );
        }
    }
}

#[tokio::test]
async fn swapping_the_sides_and_the_preferences_gives_the_same_record() {
    let pairs = [
        (
            FieldMerge::with_default(MergePolicy::PreferLocal),
            FieldMerge::with_default(MergePolicy::PreferRemote),
        ),
        (
            FieldMerge::new().field("address.city", MergePolicy::PreferLocal),
            FieldMerge::with_default(MergePolicy::PreferLocal)
                .field("address.city", MergePolicy::PreferRemote),
        ),
    ];
    for (merge, mirrored) in pairs {
        for c in corpus() {
            let mut swapped = c.clone();
            std::mem::swap(&mut swapped.local, &mut swapped.remote);
            let straight = applied(&c, &resolve(&merge, &c).await);
            let mirror = applied(&swapped, &resolve(&mirrored, &swapped).await);
            assert_eq!(straight, mirror, "{c:?}");
        }
    }
    // Disjoint edits merge to the same record whichever side is which, under any policy.
    let c = conflict(
        json!({"a": 1, "b": {"c": 1, "d": 1}}),
        json!({"a": 2, "b": {"c": 1, "d": 2}}),
        json!({"a": 1, "b": {"c": 3, "d": 1}, "e": 1}),
    );
    for policy in POLICIES {
        let merge = FieldMerge::with_default(policy);
        let mut swapped = c.clone();
        std::mem::swap(&mut swapped.local, &mut swapped.remote);
        let straight = applied(&c, &resolve(&merge, &c).await);
        let mirror = applied(&swapped, &resolve(&merge, &swapped).await);
        assert_eq!(straight, mirror, "{policy:?}");
        assert_eq!(
            straight,
            Some(rec(json!({"a": 2, "b": {"c": 3, "d": 2}, "e": 1})))
        );
    }
}

#[tokio::test]
async fn records_of_any_shape_never_fail() {
    let odd = [
        json!({}),
        json!({"": null}),
        json!({"a": {"": {"": 1}}}),
        json!({"a.b": 1, "a": {"b": 2}}),
        json!({"n": 1e308, "m": -0.0, "s": "\u{0}"}),
        json!({"a": [[[{}]]]}),
    ];
    let strategy: Arc<dyn ConflictStrategy> = by_name(
        "field_merge",
        &json!({"default": "latest", "fields": {"a.b": "prefer_local", "a": "park"}}),
    )
    .expect("valid options");
    for base in odd.iter().chain([&Value::Null]) {
        for local in &odd {
            for remote in &odd {
                let c = conflict(base.clone(), local.clone(), remote.clone());
                // Any outcome is fine as long as it is one and it is stable.
                let first = resolve(strategy.as_ref(), &c).await;
                assert_eq!(resolve(strategy.as_ref(), &c).await, first);
            }
        }
    }
}

#[tokio::test]
async fn by_name_builds_the_configured_merge() {
    let strategy = by_name(
        "field_merge",
        &json!({"default": "prefer_local", "fields": {"address.city": "prefer_remote"}}),
    )
    .expect("valid options");
    assert_eq!(strategy.name(), "field_merge");
    let c = conflict(
        json!({"a": 1, "address": {"city": "x"}}),
        json!({"a": 2, "address": {"city": "l"}}),
        json!({"a": 3, "address": {"city": "r"}}),
    );
    assert_eq!(
        resolve(strategy.as_ref(), &c).await,
        Resolution::Merged(rec(json!({"a": 2, "address": {"city": "r"}})))
    );
}
mod conformance;
