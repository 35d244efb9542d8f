//! Every policy × every detection path × every shape of the data (edits, deletes on either side,
//! both deleted, already converged), through the `ConflictStrategy` trait object as the engine
//! calls it.

use std::sync::Arc;

use serde_json::{Value, json};
use tidesync_conflict_policies::{
    ClientWins, LastWriteWins, ParkForApp, ServerWins, async_strategy_fn, by_name, strategy_fn,
};
use tidesync_core::{Conflict, ConflictStrategy, DetectedBy, Key, Record, Resolution, Stamp};

const DETECTIONS: [DetectedBy; 4] = [
    DetectedBy::Pull,
    DetectedBy::PushRejected,
    DetectedBy::RemoteDelete,
    DetectedBy::LocalDelete,
];

const LOCAL_MS: u64 = 1_700_000_000_000;

fn rec(v: Value) -> Record {
    match v {
        Value::Object(m) => m,
        other => panic!("test records are objects, got {other}"),
    }
}

/// The shapes of a conflict's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Both sides edited the record differently.
    BothEdited,
    /// Edited locally, deleted on the server.
    RemoteDeleted,
    /// Deleted locally, edited on the server.
    LocalDeleted,
    /// Deleted on both sides.
    BothDeleted,
    /// Both sides hold the same record.
    Equal,
}

const SHAPES: [Shape; 5] = [
    Shape::BothEdited,
    Shape::RemoteDeleted,
    Shape::LocalDeleted,
    Shape::BothDeleted,
    Shape::Equal,
];

/// The remote write's time relative to the local one.
#[derive(Debug, Clone, Copy)]
enum RemoteClock {
    /// `remote_time_ms` one millisecond before the local write.
    Older,
    /// `remote_time_ms` in the same millisecond as the local write.
    Same,
    /// `remote_time_ms` one millisecond after the local write.
    Newer,
    /// No `remote_time_ms` (and no field).
    Unknown,
}

fn conflict(shape: Shape, detected_by: DetectedBy, clock: RemoteClock) -> Conflict {
    let base = rec(json!({"id": "p1", "title": "base", "tags": ["a"]}));
    let local = rec(json!({"id": "p1", "title": "local", "tags": ["a"]}));
    let remote = rec(json!({"id": "p1", "title": "remote", "tags": ["a", "b"]}));
    let (local, remote) = match shape {
        Shape::BothEdited => (Some(local), Some(remote)),
        Shape::RemoteDeleted => (Some(local), None),
        Shape::LocalDeleted => (None, Some(remote)),
        Shape::BothDeleted => (None, None),
        Shape::Equal => (Some(remote.clone()), Some(remote)),
    };
    let local_ms = LOCAL_MS as i64;
    Conflict {
        table: "posts".into(),
        key: Key::from("p1"),
        base: Some(base),
        local,
        remote,
        detected_by,
        // A non-zero counter: it must not matter.
        local_hlc: Stamp::from_millis(LOCAL_MS).0 + 42,
        remote_time_ms: match clock {
            RemoteClock::Older => Some(local_ms - 1),
            RemoteClock::Same => Some(local_ms),
            RemoteClock::Newer => Some(local_ms + 1),
            RemoteClock::Unknown => None,
        },
    }
}

async fn resolve(strategy: &dyn ConflictStrategy, conflict: &Conflict) -> Resolution {
    match strategy.resolve(conflict).await {
        Ok(resolution) => resolution,
        Err(err) => panic!("{} failed on {conflict:?}: {err}", strategy.name()),
    }
}

fn fixed(shape: Shape, converged: Resolution, otherwise: Resolution) -> Resolution {
    match shape {
        Shape::BothDeleted | Shape::Equal => converged,
        _ => otherwise,
    }
}

#[tokio::test]
async fn server_wins_takes_the_remote_version_everywhere() {
    let strategies: Vec<Arc<dyn ConflictStrategy>> = vec![
        Arc::new(ServerWins),
        by_name("server_wins", &Value::Null).expect("builds"),
    ];
    for strategy in &strategies {
        assert_eq!(strategy.name(), "server_wins");
        for shape in SHAPES {
            for detected_by in DETECTIONS {
                let c = conflict(shape, detected_by, RemoteClock::Older);
                let got = resolve(strategy.as_ref(), &c).await;
                assert_eq!(got, Resolution::TakeRemote, "{shape:?} {detected_by:?}");
            }
        }
    }
}

#[tokio::test]
async fn client_wins_keeps_local_unless_already_converged() {
    let strategies: Vec<Arc<dyn ConflictStrategy>> = vec![
        Arc::new(ClientWins),
        by_name("client_wins", &json!({})).expect("builds"),
    ];
    for strategy in &strategies {
        assert_eq!(strategy.name(), "client_wins");
        for shape in SHAPES {
            for detected_by in DETECTIONS {
                let c = conflict(shape, detected_by, RemoteClock::Newer);
                let got = resolve(strategy.as_ref(), &c).await;
                let want = fixed(shape, Resolution::TakeRemote, Resolution::KeepLocal);
                assert_eq!(got, want, "{shape:?} {detected_by:?}");
            }
        }
    }
}

#[tokio::test]
async fn park_parks_everything() {
    let strategies: Vec<Arc<dyn ConflictStrategy>> = vec![
        Arc::new(ParkForApp),
        by_name("park", &Value::Null).expect("builds"),
    ];
    for strategy in &strategies {
        assert_eq!(strategy.name(), "park");
        for shape in SHAPES {
            for detected_by in DETECTIONS {
                let c = conflict(shape, detected_by, RemoteClock::Older);
                let got = resolve(strategy.as_ref(), &c).await;
                assert_eq!(got, Resolution::Park, "{shape:?} {detected_by:?}");
            }
        }
    }
}

#[tokio::test]
async fn last_write_wins_matrix() {
    let strategies: Vec<Arc<dyn ConflictStrategy>> = vec![
        Arc::new(LastWriteWins::new()),
        by_name("last_write_wins", &json!({"timestamp_field": "updatedAt"})).expect("builds"),
    ];
    let clocks = [
        (RemoteClock::Older, Resolution::KeepLocal),
        (RemoteClock::Same, Resolution::TakeRemote),
        (RemoteClock::Newer, Resolution::TakeRemote),
        (RemoteClock::Unknown, Resolution::TakeRemote),
    ];
    for strategy in &strategies {
        assert_eq!(strategy.name(), "last_write_wins");
        for shape in SHAPES {
            for detected_by in DETECTIONS {
                for (clock, when_differing) in &clocks {
                    let c = conflict(shape, detected_by, *clock);
                    let got = resolve(strategy.as_ref(), &c).await;
                    let want = fixed(shape, Resolution::TakeRemote, when_differing.clone());
                    assert_eq!(got, want, "{shape:?} {detected_by:?} {clock:?}");
                }
            }
        }
    }
}

#[tokio::test]
async fn last_write_wins_reads_the_fallback_field_only_when_the_server_time_is_unknown() {
    let lww = LastWriteWins::new().timestamp_field("updatedAt");
    let before = "2023-11-14T22:13:19.999Z"; // 1 ms before LOCAL_MS
    let same = "2023-11-14T22:13:20Z"; // LOCAL_MS exactly
    let cases = [
        // (field value, remote_time_ms, expected)
        (json!(before), None, Resolution::KeepLocal),
        (json!(same), None, Resolution::TakeRemote),
        (json!(LOCAL_MS - 1), None, Resolution::KeepLocal),
        (json!(LOCAL_MS), None, Resolution::TakeRemote),
        (json!(LOCAL_MS / 1_000 - 1), None, Resolution::KeepLocal), // epoch seconds
        (json!(LOCAL_MS / 1_000), None, Resolution::TakeRemote),
        (json!("not a time"), None, Resolution::TakeRemote),
        (json!(null), None, Resolution::TakeRemote),
        // The corrected server time wins over the field, both ways.
        (
            json!(before),
            Some(LOCAL_MS as i64 + 1),
            Resolution::TakeRemote,
        ),
        (
            json!(LOCAL_MS + 10_000),
            Some(LOCAL_MS as i64 - 1),
            Resolution::KeepLocal,
        ),
    ];
    for detected_by in DETECTIONS {
        for (field, remote_time_ms, want) in &cases {
            let mut c = conflict(Shape::BothEdited, detected_by, RemoteClock::Unknown);
            if let Some(remote) = c.remote.as_mut() {
                remote.insert("updatedAt".into(), field.clone());
            }
            c.remote_time_ms = *remote_time_ms;
            assert_eq!(
                resolve(&lww, &c).await,
                *want,
                "{detected_by:?} field {field} time {remote_time_ms:?}"
            );
            // The same conflict as a local delete: a delete is a write with a time too.
            c.local = None;
            assert_eq!(
                resolve(&lww, &c).await,
                *want,
                "local delete, field {field}"
            );
        }
    }
}

#[tokio::test]
async fn last_write_wins_ignores_the_local_records_own_timestamp() {
    // The seed SDK compared `updatedAt` on both sides; an app that forgot to bump it lost the
    // edit. Here the local record carries a stale copy of the server's old time, and a newer
    // HLC stamp still wins.
    let lww = LastWriteWins::new().timestamp_field("updatedAt");
    let mut c = conflict(Shape::BothEdited, DetectedBy::Pull, RemoteClock::Unknown);
    if let Some(local) = c.local.as_mut() {
        local.insert("updatedAt".into(), json!(1));
    }
    if let Some(remote) = c.remote.as_mut() {
        remote.insert("updatedAt".into(), json!(LOCAL_MS - 5));
    }
    assert_eq!(resolve(&lww, &c).await, Resolution::KeepLocal);
}

#[tokio::test]
async fn last_write_wins_without_a_local_time_lets_the_server_win() {
    let lww = LastWriteWins::new();
    for shape in [Shape::BothEdited, Shape::RemoteDeleted, Shape::LocalDeleted] {
        let mut c = conflict(shape, DetectedBy::Pull, RemoteClock::Older);
        c.local_hlc = 0;
        assert_eq!(resolve(&lww, &c).await, Resolution::TakeRemote, "{shape:?}");
    }
}

#[tokio::test]
async fn ties_are_decided_identically_on_every_device() {
    // Two devices edit in the same millisecond as the server's version (different HLC
    // counters): both must take the server's version, so they converge on it.
    let lww = LastWriteWins::new();
    for counter in [0, 1, 65_535] {
        let mut c = conflict(Shape::BothEdited, DetectedBy::Pull, RemoteClock::Same);
        c.local_hlc = Stamp::from_millis(LOCAL_MS).0 + counter;
        assert_eq!(
            resolve(&lww, &c).await,
            Resolution::TakeRemote,
            "counter {counter}"
        );
    }
}

#[tokio::test]
async fn custom_strategies_see_every_detection_path_and_shape() {
    // A custom rule: deletes on either side win; otherwise park push rejections and take the
    // server's version on pulls.
    fn rule(c: &Conflict) -> Resolution {
        match (&c.local, &c.remote, c.detected_by) {
            (_, None, _) => Resolution::TakeRemote,
            (None, Some(_), _) => Resolution::KeepLocal,
            (Some(_), Some(_), DetectedBy::PushRejected) => Resolution::Park,
            (Some(l), Some(_), _) => Resolution::Merged(l.clone()),
        }
    }
    let sync: Arc<dyn ConflictStrategy> = Arc::new(strategy_fn("deletes_win", |c| Ok(rule(c))));
    let asynchronous: Arc<dyn ConflictStrategy> =
        Arc::new(async_strategy_fn("deletes_win_async", |c| async move {
            tokio::task::yield_now().await;
            Ok(rule(&c))
        }));
    for strategy in [&sync, &asynchronous] {
        for shape in SHAPES {
            for detected_by in DETECTIONS {
                let c = conflict(shape, detected_by, RemoteClock::Unknown);
                let got = resolve(strategy.as_ref(), &c).await;
                assert_eq!(
                    got,
                    rule(&c),
                    "{} {shape:?} {detected_by:?}",
                    strategy.name()
                );
            }
        }
    }
    let c = conflict(Shape::BothEdited, DetectedBy::Pull, RemoteClock::Unknown);
    let want = Resolution::Merged(c.local.clone().expect("local exists"));
    assert_eq!(resolve(asynchronous.as_ref(), &c).await, want);
}

#[tokio::test]
async fn strategies_survive_records_of_any_shape() {
    // Remote records that look nothing like the local one, odd field types, odd keys.
    let remotes = [
        json!({}),
        json!({"updatedAt": [1, 2]}),
        json!({"updatedAt": {"nested": true}}),
        json!({"updatedAt": "2023-02-30T00:00:00Z"}),
        json!({"updatedAt": -1e308}),
        json!({"updatedAt": "9".repeat(400)}),
        json!({"title": {"a": {"b": {"c": null}}}}),
    ];
    let strategies: Vec<Arc<dyn ConflictStrategy>> = vec![
        Arc::new(ServerWins),
        Arc::new(ClientWins),
        Arc::new(ParkForApp),
        Arc::new(LastWriteWins::new().timestamp_field("updatedAt")),
    ];
    for remote in remotes {
        for strategy in &strategies {
            let mut c = conflict(
                Shape::BothEdited,
                DetectedBy::PushRejected,
                RemoteClock::Unknown,
            );
            c.key = Key::Int(i64::MIN);
            c.remote = Some(rec(remote.clone()));
            // Any outcome is fine as long as it is an outcome; LWW can't read these times.
            let got = resolve(strategy.as_ref(), &c).await;
            if strategy.name() == "last_write_wins" {
                assert_eq!(got, Resolution::TakeRemote, "{remote}");
            }
        }
    }
}
mod conformance;
