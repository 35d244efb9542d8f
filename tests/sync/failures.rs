//! Failures: every class handled as DESIGN invariant 8 says, and never wedged.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidesync::{SyncEvent, SyncSettings};
use tidesync_testkit::server::{FaultFilter, FaultKind, Faults, ReferenceServer, RetryAfter};

use crate::support::{drain, engine, engine_with, expect_event, settings};

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_and_never_delays_other_records() {
    // Upstream scenario 17, restated: 400 → dead letter with the response; the others go on.
    // One request at a time, so the first POST (the one the fault hits) is `bad`'s.
    let server = ReferenceServer::start().await;
    let one_at_a_time = SyncSettings {
        concurrency: 1,
        ..settings()
    };
    let engine = engine_with(&server, one_at_a_time, |b| b);
    let posts = engine.table::<Value>("posts").unwrap();
    server.fail_next_where(FaultFilter::method("POST"), 1, FaultKind::status(400));
    posts
        .put(&json!({"id": "bad", "title": "x"}))
        .await
        .unwrap();
    for i in 0..5 {
        posts.put(&json!({"id": format!("ok{i}")})).await.unwrap();
    }
    let mut events = engine.events();
    let report = engine.push().await.unwrap();
    assert_eq!((report.pushed, report.dead_lettered), (5, 1));
    assert_eq!(server.records("posts").len(), 5);
    let dead = engine.dead_letters(None).unwrap();
    assert_eq!(dead.len(), 1);
    let info = dead[0].dead.as_ref().unwrap();
    assert_eq!(info.status, Some(400));
    assert!(
        info.response_excerpt.is_some(),
        "the response is kept: {info:?}"
    );
    let seen = drain(&mut events).await;
    let dead_event = seen
        .iter()
        .any(|e| matches!(e, SyncEvent::DeadLettered { key, .. } if key == &"bad".into()));
    assert!(dead_event, "{seen:?}");

    // A later edit of the poisoned record waits behind its dead letter (parked, not failed).
    posts
        .update("bad", json!({"title": "fixed"}))
        .await
        .unwrap();
    engine.push().await.unwrap();
    assert!(server.record("posts", "bad").is_none());
    // Retrying puts it back in its place: the create goes first, then the update.
    engine.retry_dead_letter(dead[0].seq, None).await.unwrap();
    engine.push().await.unwrap();
    assert_eq!(server.record("posts", "bad").unwrap()["title"], "fixed");
    assert!(engine.dead_letters(None).unwrap().is_empty());
    assert!(engine.outbox(None, 10).unwrap().is_empty());
}

#[tokio::test]
async fn dead_letters_can_be_edited_and_discarded() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    server.fail_next_where(FaultFilter::method("POST"), 2, FaultKind::status(422));
    posts
        .put(&json!({"id": "e1", "title": "bad"}))
        .await
        .unwrap();
    posts
        .put(&json!({"id": "e2", "title": "bad"}))
        .await
        .unwrap();
    engine.push().await.unwrap();
    let dead = engine.dead_letters(Some("posts")).unwrap();
    assert_eq!(dead.len(), 2);
    let edited = json!({"id": "e1", "title": "good"}).as_object().cloned();
    engine.retry_dead_letter(dead[0].seq, edited).await.unwrap();
    engine.discard_dead_letter(dead[1].seq).await.unwrap();
    engine.push().await.unwrap();
    assert_eq!(server.record("posts", "e1").unwrap()["title"], "good");
    assert!(server.record("posts", "e2").is_none());
    assert_eq!(engine.status().unwrap().dead_letters, 0);
}

#[tokio::test]
async fn retryable_failures_back_off_and_honour_retry_after() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    server.fail_next_where(
        FaultFilter::method("POST"),
        1,
        FaultKind::status_retry_after(429, RetryAfter::Seconds(1)),
    );
    posts.put(&json!({"id": "r1"})).await.unwrap();
    let started = Instant::now();
    let err = engine.push().await.unwrap_err();
    assert_eq!(
        err.kind(),
        tidesync::ErrorKind::RateLimited,
        "a failed cycle fails: {err}"
    );
    let entry = &engine.outbox(None, 1).unwrap()[0];
    assert_eq!(entry.attempts, 1);
    assert!(
        entry.next_attempt_at_ms >= tidesync::core::hlc::wall_millis() + 500,
        "Retry-After honoured"
    );
    // The retry timer pushes it once due, without a manual call.
    let mut events = engine.events();
    expect_event(&mut events, 5, "push completed", |e| {
        matches!(e, SyncEvent::PushCompleted { pushed: 1, .. })
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(server.create_count("posts", "r1"), 1);
}

#[tokio::test]
async fn commit_then_fail_on_create_does_not_duplicate() {
    // The server applies the create, then the client sees a 503 (or a dropped connection);
    // the retry carries the same idempotency key and gets the original answer.
    for fault in [FaultKind::CommitThenStatus(503), FaultKind::CommitThenDrop] {
        let server = ReferenceServer::start().await;
        let engine = engine(&server);
        server.fail_next_where(FaultFilter::method("POST"), 1, fault.clone());
        engine
            .table::<Value>("posts")
            .unwrap()
            .put(&json!({"id": "once", "title": "t"}))
            .await
            .unwrap();
        // The first attempt fails; its retry may go out in the same cycle (the server
        // answered, and a full-jitter delay can be 0 ms) or later.
        let _ = engine.push().await;
        let first = server
            .request_log()
            .into_iter()
            .find(|r| r.method == "POST")
            .expect("a create was sent");
        assert_ne!(
            first.status,
            Some(201),
            "{fault:?}: the first attempt fails"
        );
        // The retry (timer or offline probe) pushes it again with the same key.
        crate::support::eventually(5, "the retry is acknowledged", || {
            engine.outbox(None, 1).unwrap().is_empty()
        })
        .await;
        assert_eq!(
            server.create_count("posts", "once"),
            1,
            "{fault:?}: created exactly once"
        );
        assert_eq!(
            server.replay_count(),
            1,
            "{fault:?}: the retry was answered by the idempotency store"
        );
        let keys: Vec<_> = server
            .request_log()
            .into_iter()
            .filter(|r| r.method == "POST")
            .filter_map(|r| r.idempotency_key().map(str::to_owned))
            .collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], keys[1], "same idempotency key on the retry");
    }
}

#[tokio::test]
async fn an_unreachable_server_takes_the_engine_offline_and_a_probe_brings_it_back() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let mut events = engine.events();
    server.set_faults(Faults::none().rule(1.0, FaultKind::Drop));
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "o1"}))
        .await
        .unwrap();
    let err = engine.sync().await.unwrap_err();
    assert!(matches!(err.kind(), tidesync::ErrorKind::Network), "{err}");
    expect_event(&mut events, 5, "offline", |e| {
        matches!(e, SyncEvent::Offline)
    })
    .await;
    assert!(!engine.status().unwrap().online);
    server.clear_faults();
    expect_event(&mut events, 5, "online", |e| matches!(e, SyncEvent::Online)).await;
    // Coming back online pushes what waited, without waiting out its backoff.
    crate::support::eventually(5, "the record reaches the server", || {
        server.record("posts", "o1").is_some()
    })
    .await;
    assert!(engine.status().unwrap().online);
    assert!(
        engine.dead_letters(None).unwrap().is_empty(),
        "transient failures are never dead-lettered"
    );
}

#[tokio::test]
async fn requests_that_hang_time_out_and_are_retried() {
    let server = ReferenceServer::start().await;
    let engine = engine_with(&server, settings(), |b| b);
    server.fail_next_where(
        FaultFilter::method("POST"),
        1,
        FaultKind::Hang(Duration::from_secs(30)),
    );
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "h1"}))
        .await
        .unwrap();
    let started = Instant::now();
    let err = engine.push().await.unwrap_err();
    assert_eq!(err.kind(), tidesync::ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the request timeout"
    );
    crate::support::eventually(5, "the retry is acknowledged", || {
        engine.outbox(None, 1).unwrap().is_empty()
    })
    .await;
    assert_eq!(server.create_count("posts", "h1"), 1);
}

#[tokio::test]
async fn retries_give_up_after_max_attempts_into_the_dead_letter_queue() {
    let server = ReferenceServer::start().await;
    let settings = SyncSettings {
        max_attempts: 3,
        ..settings()
    };
    let engine = engine_with(&server, settings, |b| b);
    server.set_faults(
        Faults::none()
            .filter(FaultFilter::method("POST"))
            .rule(1.0, FaultKind::status(500)),
    );
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "x"}))
        .await
        .unwrap();
    let mut events = engine.events();
    let _ = engine.push().await;
    expect_event(&mut events, 10, "dead lettered", |e| {
        matches!(e, SyncEvent::DeadLettered { .. })
    })
    .await;
    let dead = engine.dead_letters(None).unwrap();
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].dead.as_ref().unwrap().kind, "retries_exhausted");
}

/// A retry whose delay runs out while its push cycle ends is still made: the scheduler's
/// retry timer counts entries already due, not only those due later (before, with short
/// delays, such an entry waited for another trigger, which a test without a timer never
/// gives: `retries_give_up_…` above failed 4 times in 30).
#[tokio::test]
async fn a_retry_that_falls_due_as_its_cycle_ends_is_still_made() {
    for round in 0..10 {
        let server = ReferenceServer::start().await;
        let settings = SyncSettings {
            retry_delay: Some(std::sync::Arc::new(|_| Duration::from_millis(2))),
            ..settings()
        };
        let engine = engine_with(&server, settings, |b| b);
        server.fail_next_where(FaultFilter::method("POST"), 3, FaultKind::status(500));
        let key = format!("r{round}");
        engine
            .table::<Value>("posts")
            .unwrap()
            .put(&json!({"id": key}))
            .await
            .unwrap();
        let _ = engine.push().await;
        let started = Instant::now();
        while server.record("posts", key.as_str()).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round}: the retries stopped: {:?}",
                engine.outbox(None, 10).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.shutdown();
    }
}

#[tokio::test]
async fn malformed_pulled_records_are_quarantined_and_the_rest_applies() {
    let server = ReferenceServer::start().await;
    // A nested object in an indexed field cannot be stored: that record is quarantined.
    server
        .insert_direct("posts", json!({"id": "good1"}))
        .unwrap();
    let bad = json!({"id": "nested", "author": {"name": "x"}});
    server.insert_direct("posts", bad).unwrap();
    server
        .insert_direct("posts", json!({"id": "good2"}))
        .unwrap();
    let engine = engine(&server);
    let mut events = engine.events();
    engine.sync().await.unwrap();
    let posts = engine.table::<Value>("posts").unwrap();
    assert!(posts.get("good1").await.unwrap().is_some());
    assert!(posts.get("good2").await.unwrap().is_some());
    assert_eq!(posts.get("nested").await.unwrap(), None);
    let quarantined: Vec<_> = drain(&mut events)
        .await
        .into_iter()
        .filter_map(|e| match e {
            SyncEvent::Quarantined { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let error = &quarantined[0];
    let named = ["table `posts`", "key `nested`", "field `author`"];
    assert!(named.iter().all(|n| error.contains(n)), "{error}");
    // The engine runs on: the next sync succeeds and the checkpoint moved past the bad item.
    assert_eq!(engine.sync().await.unwrap().applied, 0);
}

#[tokio::test]
async fn a_426_pauses_pushing_without_loss_until_a_newer_version_runs() {
    let server = ReferenceServer::start().await;
    let store = tidesync::MemoryStore::new();
    let old_version = engine_with(&server, settings(), |b| b.store(store.clone()));
    let posts = old_version.table::<Value>("posts").unwrap();
    for id in ["u1", "u2"] {
        posts.put(&json!({"id": id})).await.unwrap();
    }
    server.set_faults(
        Faults::none()
            .filter(FaultFilter::writes())
            .errors(1.0, 426, None),
    );
    let mut events = old_version.events();
    let err = old_version.push().await.unwrap_err();
    assert_eq!(err.kind(), tidesync::ErrorKind::UpgradeRequired, "{err}");
    expect_event(&mut events, 5, "upgrade required", |e| {
        matches!(e, SyncEvent::UpgradeRequired { .. })
    })
    .await;
    let status = old_version.status().unwrap();
    assert!(status.upgrade_required, "{status:?}");
    assert!(old_version.dead_letters(None).unwrap().is_empty());
    let queued = old_version.outbox(None, 10).unwrap();
    assert_eq!(queued.len(), 2);
    assert!(queued.iter().all(|e| e.failures == 0), "{queued:?}");
    // Paused: further pushes send nothing.
    let writes_before = server.request_log().iter().filter(|r| r.is_write()).count();
    let _ = old_version.push().await;
    let writes_after = server.request_log().iter().filter(|r| r.is_write()).count();
    assert_eq!(writes_before, writes_after, "nothing is sent while paused");
    let health = old_version.health().await;
    assert!(
        health
            .checks
            .iter()
            .any(|c| c.name == "client_version" && !c.ok),
        "{health:?}"
    );
    old_version.shutdown();

    // The upgraded application (a new engine on the same store) pushes what waited.
    server.clear_faults();
    let new_version = engine_with(&server, settings(), |b| b.store(store.clone()));
    new_version.push().await.unwrap();
    assert!(new_version.outbox(None, 10).unwrap().is_empty());
    assert_eq!(server.records("posts").len(), 2);
    new_version.shutdown();
}
