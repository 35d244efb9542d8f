//! Tests of the sync writes together: ack, pull apply, echo, remap and resolutions over one
//! in-memory transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::conflict::{Conflict, Resolution};
use crate::hlc::HybridClock;
use crate::local::test_txn::MapTxn;
use crate::local::{Schema, WriteOp};
use crate::transport::{PullPage, PushOutcome};

fn db() -> LocalDb {
    let schema = Schema::new([crate::TableSpec::new("posts").index("rank")])
        .unwrap_or_else(|e| panic!("{e}"));
    LocalDb::new(schema, Arc::new(HybridClock::new()))
}

fn rec(v: Value) -> Record {
    match v {
        Value::Object(m) => m,
        _ => Record::new(),
    }
}

fn key(s: &str) -> Key {
    Key::Str(s.to_owned())
}

fn meta(r: &Record) -> RemoteMeta {
    RemoteMeta {
        version: r.get("v").map(|v| v.to_string()),
        modified_ms: None,
    }
}

/// A page with a create, an update, an unchanged record, a bad record (object in an
/// indexed field), a delete and a delete of an unknown key.
fn page() -> PullPage {
    PullPage {
        records: vec![
            rec(json!({"id": "a", "rank": 1, "v": 1})),
            rec(json!({"id": "b", "rank": 5, "v": 2})),
            rec(json!({"id": "c", "rank": 3, "v": 1})),
            rec(json!({"id": "bad", "rank": {"x": 1}})),
        ],
        deleted: vec![key("d"), key("nope")],
        cursor: Some(json!("c1")),
        has_more: false,
        server_time_ms: None,
        total: None,
        warnings: Vec::new(),
    }
}

/// Records b, c, d as pulled earlier, plus `extra` (a record with a pending local edit
/// when `pending`).
fn seeded(db: &LocalDb, pending: bool) -> MapTxn {
    let mut txn = MapTxn::default();
    let earlier = PullPage {
        records: vec![
            rec(json!({"id": "b", "rank": 2, "v": 1})),
            rec(json!({"id": "c", "rank": 3, "v": 1})),
            rec(json!({"id": "d", "rank": 4, "v": 1})),
            rec(json!({"id": "extra", "rank": 9, "v": 1})),
        ],
        ..PullPage::default()
    };
    db.remote()
        .apply_pull_page(&mut txn, "posts", &earlier, &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    if pending {
        db.records()
            .apply_local(
                &mut txn,
                &[WriteOp::Update {
                    table: "posts".into(),
                    key: key("extra"),
                    patch: json!({"title": "local"}),
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }
    txn
}

fn without(txn: &MapTxn, skip: &[&str]) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
    txn.0
        .iter()
        .filter(|((ks, _), _)| !skip.iter().any(|s| ks.starts_with(s)))
        .filter(|((_, k), _)| {
            !(k.windows(5).any(|w| w == b"extra") || k.windows(9).any(|w| w == b"quarantin"))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Record `a` synced at `v` 1, then edited to `v` 2 (that entry sent: in flight) and to
/// `title` "x" (queued behind it). Returns the transaction and the sent entry's seq.
fn sent_head_with_an_edit_behind(db: &LocalDb) -> (MapTxn, u64) {
    let mut txn = MapTxn::default();
    let synced = PullPage {
        records: vec![rec(json!({"id": "a", "v": 1}))],
        ..PullPage::default()
    };
    db.remote()
        .apply_pull_page(&mut txn, "posts", &synced, &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    let update = |txn: &mut MapTxn, patch: Value| {
        db.records()
            .apply_local(
                txn,
                &[WriteOp::Update {
                    table: "posts".into(),
                    key: key("a"),
                    patch,
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
    };
    update(&mut txn, json!({"v": 2}));
    let head = db
        .outbox()
        .entries(&txn, None, 10)
        .unwrap_or_else(|e| panic!("{e}"))[0]
        .seq;
    db.outbox()
        .mark_in_flight(&mut txn, head)
        .unwrap_or_else(|e| panic!("{e}"));
    update(&mut txn, json!({"title": "x"}));
    (txn, head)
}

/// A pulled version showing what a sent head entry wrote (its answer lost) settles it and
/// keeps the edit behind it; a version that differs in what the head wrote is a conflict.
#[test]
fn the_echo_of_a_sent_head_settles_it_and_a_different_version_conflicts() {
    let db = db();
    let (mut txn, head) = sent_head_with_an_edit_behind(&db);
    db.outbox()
        .retry_later(&mut txn, head, 0, "answer lost")
        .unwrap_or_else(|e| panic!("{e}"));
    let page = |record: Value| PullPage {
        records: vec![rec(record)],
        ..PullPage::default()
    };

    let mut other = txn.clone();
    let applied = db
        .remote()
        .apply_pull_page(
            &mut other,
            "posts",
            &page(json!({"id": "a", "v": 3})),
            &meta,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied.conflicts.len(), 1, "v 3 is not what the head wrote");

    let echo = json!({"id": "a", "v": 2, "srv": 1});
    let applied = db
        .remote()
        .apply_pull_page(&mut txn, "posts", &page(echo.clone()), &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(applied.conflicts.is_empty());
    let want = rec(json!({"id": "a", "v": 2, "srv": 1, "title": "x"}));
    assert_eq!(
        db.records().get(&txn, "posts", &key("a")).ok().flatten(),
        Some(want.clone())
    );
    let base = db.records().base(&txn, "posts", &key("a")).ok().flatten();
    assert_eq!(base.map(|b| b.record), Some(rec(echo)));
    let queued = db
        .outbox()
        .pending(&txn, "posts", &key("a"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        queued.len(),
        1,
        "the head is settled, the edit behind it stays"
    );
    assert_eq!(queued[0].changed, vec!["title".to_owned()]);
    assert_eq!(queued[0].record, Some(want));
}

/// A head dead-lettered on a 2xx whose body did not decode was applied by the server: the
/// pulled version showing it settles the dead letter and frees the edit parked behind it.
/// A head the server refused (a 4xx) is still a conflict.
#[test]
fn the_echo_of_a_dead_lettered_head_the_server_applied_settles_it() {
    use crate::outbox::DeadLetterInfo;
    let db = db();
    let (txn, head) = sent_head_with_an_edit_behind(&db);
    let echo = PullPage {
        records: vec![rec(json!({"id": "a", "v": 2}))],
        ..PullPage::default()
    };
    for (kind, status, settles) in [("decode", 200, true), ("permanent", 422, false)] {
        let mut txn = txn.clone();
        let info = DeadLetterInfo {
            kind: kind.into(),
            error: "e".into(),
            status: Some(status),
            response_excerpt: None,
            at_ms: 0,
        };
        db.outbox()
            .dead_letter(&mut txn, head, info)
            .unwrap_or_else(|e| panic!("{e}"));
        let applied = db
            .remote()
            .apply_pull_page(&mut txn, "posts", &echo, &meta)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(applied.conflicts.is_empty(), settles, "{kind} {status}");
        let dead = db
            .outbox()
            .dead_letters(&txn, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dead.is_empty(), settles, "{kind} {status}: {dead:?}");
        if settles {
            let queued = db
                .outbox()
                .pending(&txn, "posts", &key("a"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(queued.len(), 1);
            assert_eq!(queued[0].changed, vec!["title".to_owned()]);
        }
    }
}

/// A table waits to be pulled while a create was sent and the server may have applied it:
/// in flight or waiting to retry, or dead-lettered on an answer that came after a commit;
/// not before it is sent, not after a refusal, not once acknowledged.
#[test]
fn a_sent_create_the_server_may_have_applied_holds_back_pulls() {
    use crate::outbox::DeadLetterInfo;
    let db = db();
    let mut txn = MapTxn::default();
    let waits = |txn: &MapTxn| {
        db.outbox()
            .has_unacknowledged_create(txn, "posts")
            .unwrap_or_else(|e| panic!("{e}"))
    };
    db.records()
        .apply_local(
            &mut txn,
            &[WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": "tmp", "v": 1}),
            }],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let seq = db
        .outbox()
        .entries(&txn, None, 10)
        .unwrap_or_else(|e| panic!("{e}"))[0]
        .seq;
    assert!(!waits(&txn), "not sent yet");
    db.outbox()
        .mark_in_flight(&mut txn, seq)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(waits(&txn), "in flight");
    db.outbox()
        .retry_later(&mut txn, seq, 0, "timeout")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(waits(&txn), "waiting to retry");
    let dead = |kind: &str, status: Option<u16>| DeadLetterInfo {
        kind: kind.into(),
        error: "e".into(),
        status,
        response_excerpt: None,
        at_ms: 0,
    };
    for (info, applied) in [
        (dead("decode", Some(200)), true),
        (dead("retries_exhausted", Some(503)), true),
        (dead("ack_failed", Some(201)), true),
        (dead("permanent", Some(422)), false),
        (dead("decode", Some(400)), false),
    ] {
        let mut dead_txn = txn.clone();
        db.outbox()
            .dead_letter(&mut dead_txn, seq, info.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(waits(&dead_txn), applied, "{info:?}");
    }
    let answer = PushOutcome::default();
    db.remote()
        .ack_push(&mut txn, seq, &answer)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!waits(&txn), "acknowledged");
}

/// BUG-15. A create is sent and its answer lost; a pull shows the record deleted on the
/// server. When the retry's answer says the create was applied (a replay), the delete came
/// after it: the acknowledgement deletes the record instead of installing the answer. With
/// an edit queued behind the create, the answer becomes that edit's base (the edit meets the
/// delete on the server). A create the server refused (turned into an upsert) forgets the
/// delete: no attempt applied it, so the delete came before it.
#[test]
fn a_delete_pulled_while_a_sent_create_is_unanswered_is_applied_by_its_ack() {
    let db = db();
    let mut txn = MapTxn::default();
    db.records()
        .apply_local(
            &mut txn,
            &[WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": "a", "title": "local"}),
            }],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let seq = db
        .outbox()
        .entries(&txn, None, 10)
        .unwrap_or_else(|e| panic!("{e}"))[0]
        .seq;
    db.outbox()
        .mark_in_flight(&mut txn, seq)
        .unwrap_or_else(|e| panic!("{e}"));
    db.outbox()
        .retry_later(&mut txn, seq, 0, "connection closed")
        .unwrap_or_else(|e| panic!("{e}"));
    let tombstone = PullPage {
        deleted: vec![key("a")],
        ..PullPage::default()
    };
    let applied = db
        .remote()
        .apply_pull_page(&mut txn, "posts", &tombstone, &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(applied.changes.is_empty() && applied.conflicts.is_empty());
    let entry = |txn: &MapTxn| {
        db.outbox()
            .entry(txn, seq)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(
        entry(&txn).is_some_and(|e| e.deleted_remotely),
        "the head keeps the delete"
    );
    let answer = PushOutcome {
        record: Some(rec(json!({"id": "a", "title": "local", "v": 1}))),
        version: Some("1".into()),
        ..PushOutcome::default()
    };
    let get = |txn: &MapTxn| {
        db.records()
            .get(txn, "posts", &key("a"))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let base = |txn: &MapTxn| {
        db.records()
            .base(txn, "posts", &key("a"))
            .unwrap_or_else(|e| panic!("{e}"))
    };

    // A later pull that shows the record live again (here: the create's echo, while its
    // retry is in flight) replaces the delete: the answer is installed as usual.
    let mut revived = txn.clone();
    db.outbox()
        .mark_in_flight(&mut revived, seq)
        .unwrap_or_else(|e| panic!("{e}"));
    let echo = PullPage {
        records: vec![rec(json!({"id": "a", "title": "local", "v": 1}))],
        ..PullPage::default()
    };
    db.remote()
        .apply_pull_page(&mut revived, "posts", &echo, &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(entry(&revived).is_some_and(|e| !e.deleted_remotely));
    db.remote()
        .ack_push(&mut revived, seq, &answer)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(get(&revived).is_some(), "the later live version stands");

    // Nothing behind it: the record goes, as the server's delete says.
    let mut alone = txn.clone();
    let acked = db
        .remote()
        .ack_push(&mut alone, seq, &answer)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&alone), None);
    assert_eq!(base(&alone), None);
    assert!(
        db.outbox()
            .pending(&alone, "posts", &key("a"))
            .unwrap_or_default()
            .is_empty()
    );
    assert!(
        acked
            .changes
            .iter()
            .any(|c| c.op == Op::Delete && c.origin == Origin::Pull)
    );

    // An edit queued behind it: the answer is its base, the edit stays queued.
    let mut edited = txn.clone();
    db.records()
        .apply_local(
            &mut edited,
            &[WriteOp::Update {
                table: "posts".into(),
                key: key("a"),
                patch: json!({"title": "edited"}),
            }],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    db.remote()
        .ack_push(&mut edited, seq, &answer)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        get(&edited).and_then(|r| r.get("title").cloned()),
        Some(json!("edited"))
    );
    assert_eq!(base(&edited).and_then(|b| b.version), Some("1".into()));
    assert_eq!(
        db.outbox()
            .pending(&edited, "posts", &key("a"))
            .unwrap_or_default()
            .len(),
        1
    );

    // Refused over the tombstone (409): the upsert forgets the delete and its ack keeps
    // the record.
    let mut refused = txn.clone();
    db.outbox()
        .create_as_upsert(&mut refused, seq)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(entry(&refused).is_some_and(|e| !e.deleted_remotely));
    db.remote()
        .ack_push(&mut refused, seq, &answer)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        get(&refused).and_then(|r| r.get("title").cloned()),
        Some(json!("local"))
    );
    assert_eq!(base(&refused).and_then(|b| b.version), Some("1".into()));
}

/// BUG-10. After a key's remap, a reference written to the old (temporary) key follows it
/// to the server's key, in the record and its outbox entry; a key that names a local
/// record again is left alone.
#[test]
fn a_reference_to_a_remapped_key_written_later_follows_the_remap() {
    let schema = Schema::new([
        crate::TableSpec::new("tasks"),
        crate::TableSpec::new("steps").references("task", "tasks"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
    let mut txn = MapTxn::default();
    let put = |txn: &mut MapTxn, table: &str, record: Value| {
        db.records()
            .apply_local(
                txn,
                &[WriteOp::Put {
                    table: table.into(),
                    record,
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
    };
    put(&mut txn, "tasks", json!({"id": "tmp", "title": "t"}));
    let seq = db
        .outbox()
        .entries(&txn, None, 10)
        .unwrap_or_else(|e| panic!("{e}"))[0]
        .seq;
    let answer = PushOutcome {
        record: Some(rec(json!({"id": 7, "title": "t"}))),
        server_key: Some(Key::Int(7)),
        ..PushOutcome::default()
    };
    db.remote()
        .ack_push(&mut txn, seq, &answer)
        .unwrap_or_else(|e| panic!("{e}"));
    put(&mut txn, "steps", json!({"id": "s1", "task": "tmp"}));
    let step = db
        .records()
        .get(&txn, "steps", &key("s1"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(step["task"], json!("7"), "the record follows the remap");
    let entries = db
        .outbox()
        .pending(&txn, "steps", &key("s1"))
        .unwrap_or_default();
    assert_eq!(
        entries[0].record.as_ref().and_then(|r| r.get("task")),
        Some(&json!("7")),
        "so does the entry pushed"
    );
    // A local record under the old key again: a reference to it means it.
    put(&mut txn, "tasks", json!({"id": "tmp", "title": "another"}));
    put(&mut txn, "steps", json!({"id": "s2", "task": "tmp"}));
    let step = db
        .records()
        .get(&txn, "steps", &key("s2"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(step["task"], json!("tmp"));
}

/// A create whose answer was lost is pulled under its server id (with a server edit) while
/// the application edits the temporary record; the replayed answer then remaps the record
/// onto the pulled copy: the copy's newer fields, its base and the local edit all survive.
#[test]
fn a_remap_onto_a_pulled_copy_keeps_the_copy_and_the_queued_edit() {
    let db = db();
    let mut txn = MapTxn::default();
    let put = |txn: &mut MapTxn, op: WriteOp| {
        db.records()
            .apply_local(txn, &[op])
            .unwrap_or_else(|e| panic!("{e}"));
    };
    put(
        &mut txn,
        WriteOp::Put {
            table: "posts".into(),
            record: json!({"id": "tmp", "cid": "c1", "v": 1, "title": "t"}),
        },
    );
    let create = db
        .outbox()
        .entries(&txn, None, 10)
        .unwrap_or_else(|e| panic!("{e}"))[0]
        .clone();
    db.outbox()
        .mark_in_flight(&mut txn, create.seq)
        .unwrap_or_else(|e| panic!("{e}"));
    put(
        &mut txn,
        WriteOp::Update {
            table: "posts".into(),
            key: key("tmp"),
            patch: json!({"v": 2}),
        },
    );
    let pulled = PullPage {
        records: vec![rec(
            json!({"id": "7", "cid": "c1", "v": 1, "title": "t", "srv": 9, "version": 2}),
        )],
        ..PullPage::default()
    };
    let version = |r: &Record| RemoteMeta {
        version: r.get("version").map(|v| v.to_string()),
        modified_ms: None,
    };
    db.remote()
        .apply_pull_page(&mut txn, "posts", &pulled, &version)
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = PushOutcome {
        record: Some(rec(
            json!({"id": 7, "cid": "c1", "v": 1, "title": "t", "version": 1}),
        )),
        version: Some("1".into()),
        server_key: Some(Key::Int(7)),
        server_time_ms: None,
    };
    let acked = db
        .remote()
        .ack_push(&mut txn, create.seq, &answer)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(acked.remapped, Some((key("tmp"), key("7"))));
    assert_eq!(
        db.records().get(&txn, "posts", &key("tmp")).ok().flatten(),
        None
    );
    assert_eq!(
        db.records().get(&txn, "posts", &key("7")).ok().flatten(),
        Some(rec(
            json!({"id": "7", "cid": "c1", "v": 2, "title": "t", "srv": 9, "version": 2})
        )),
        "the pulled copy with the local edit on top"
    );
    let base = db.records().base(&txn, "posts", &key("7")).ok().flatten();
    assert_eq!(base.and_then(|b| b.version), Some("2".into()));
    let queued = db
        .outbox()
        .pending(&txn, "posts", &key("7"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].changed, vec!["v".to_owned()]);
    assert_eq!(
        queued[0].record.as_ref().and_then(|r| r.get("srv")),
        Some(&json!(9)),
        "a whole-record PUT of the edit carries the server's newer fields"
    );
    assert!(
        db.outbox()
            .pending(&txn, "posts", &key("tmp"))
            .unwrap_or_default()
            .is_empty()
    );
}

#[test]
fn a_quiet_page_writes_what_the_isolated_path_writes() {
    let db = db();
    let mut quiet = seeded(&db, false);
    let mut busy = seeded(&db, true);
    assert!(db.remote().is_quiet(&quiet, "posts").unwrap_or(false));
    assert!(!db.remote().is_quiet(&busy, "posts").unwrap_or(true));
    let a = db
        .remote()
        .apply_pull_page_owned(&mut quiet, "posts", page(), &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    let b = db
        .remote()
        .apply_pull_page(&mut busy, "posts", &page(), &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.changes, b.changes);
    let ops: Vec<(String, Op)> = a
        .changes
        .iter()
        .map(|c| (c.key.to_string(), c.op))
        .collect();
    assert_eq!(
        ops,
        [
            ("a".to_owned(), Op::Create),
            ("b".to_owned(), Op::Update),
            ("d".to_owned(), Op::Delete)
        ]
    );
    assert_eq!(a.quarantined.len(), 1);
    assert_eq!(b.quarantined.len(), 1);
    assert_eq!(a.quarantined[0].key.as_deref(), Some("bad"));
    assert!(a.conflicts.is_empty() && b.conflicts.is_empty());
    // Records, index entries, bases and the checkpoint: byte for byte the same (the
    // outbox and meta differ only by the pending edit of `extra`).
    assert_eq!(
        without(&quiet, &["o/", "m", "q"]),
        without(&busy, &["o/", "m", "q"])
    );
    let base = db
        .records()
        .base(&quiet, "posts", &key("b"))
        .unwrap_or(None);
    assert_eq!(
        base,
        Some(Base {
            record: rec(json!({"id": "b", "rank": 5, "v": 2})),
            version: Some("2".into()),
        })
    );
    assert_eq!(
        db.records()
            .base(&quiet, "posts", &key("d"))
            .unwrap_or(None),
        None
    );
    assert_eq!(
        db.records()
            .get(&quiet, "posts", &key("bad"))
            .unwrap_or(None),
        None
    );
    assert_eq!(
        db.remote().checkpoint(&quiet, "posts").unwrap_or(None),
        Some(json!("c1"))
    );
    // Pulls never enqueue.
    assert_eq!(
        db.outbox()
            .entries(&quiet, None, 10)
            .map(|o| o.len())
            .unwrap_or(9),
        0
    );
}

#[test]
fn a_page_meeting_a_pending_edit_returns_the_conflict() {
    let db = db();
    let mut txn = seeded(&db, true);
    let page = PullPage {
        records: vec![
            rec(json!({"id": "extra", "rank": 9, "v": 2, "body": "remote"})),
            rec(json!({"id": "z", "rank": 0, "v": 1})),
        ],
        ..PullPage::default()
    };
    let applied = db
        .remote()
        .apply_pull_page_owned(&mut txn, "posts", page, &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied.changes.len(), 1);
    assert_eq!(applied.conflicts.len(), 1);
    assert_eq!(applied.conflicts[0].0.key, key("extra"));
}

#[test]
fn resolutions_apply_together_and_a_refused_one_alone_is_left_out() {
    let db = db();
    let mut txn = seeded(&db, true);
    db.records()
        .apply_local(
            &mut txn,
            &[WriteOp::Update {
                table: "posts".into(),
                key: key("c"),
                patch: json!({"title": "local c"}),
            }],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let page = PullPage {
        records: vec![
            rec(json!({"id": "extra", "rank": 9, "v": 2, "body": "remote"})),
            rec(json!({"id": "c", "rank": 3, "v": 2, "body": "remote c"})),
        ],
        ..PullPage::default()
    };
    let applied = db
        .remote()
        .apply_pull_page(&mut txn, "posts", &page, &meta)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied.conflicts.len(), 2);
    let mut resolved: Vec<(Conflict, Option<String>, Resolution)> = Vec::new();
    for (conflict, version) in applied.conflicts {
        let resolution = if conflict.key == key("c") {
            // Not storable: an object in the indexed field.
            Resolution::Merged(rec(json!({"id": "c", "rank": {"bad": true}})))
        } else {
            Resolution::TakeRemote
        };
        resolved.push((conflict, version, resolution));
    }
    let (changes, refused) = db
        .remote()
        .apply_resolutions(&mut txn, &resolved)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].key, key("extra"));
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].record_key(), Some("c"));
    // `extra` took the remote version, its pending edit dropped; `c` is untouched.
    let extra = db
        .records()
        .get(&txn, "posts", &key("extra"))
        .unwrap_or(None);
    assert_eq!(
        extra.and_then(|r| r.get("body").cloned()),
        Some(json!("remote"))
    );
    assert!(
        db.outbox()
            .pending(&txn, "posts", &key("extra"))
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        db.outbox()
            .pending(&txn, "posts", &key("c"))
            .map(|p| p.len())
            .unwrap_or(0),
        1
    );
}

/// Layout v2 keeps a base equal to its record as a marker (`base_row`): the base must read the
/// same as if it were stored whole, through local edits, deletes, acknowledgements and pulls.
#[test]
fn a_base_kept_as_the_record_row_reads_as_the_agreed_version_through_every_change() {
    let db = db();
    let mut txn = seeded(&db, false);
    let raw_base = |txn: &MapTxn| {
        txn.get(&layout::bases("posts"), &key("b").encode())
            .unwrap()
    };
    let pulled = rec(json!({"id": "b", "rank": 2, "v": 1}));
    let base_of = |txn: &MapTxn| db.records().base(txn, "posts", &key("b")).unwrap();
    // Pulled: one copy, the base is a marker that reads as the pulled version.
    assert_eq!(raw_base(&txn).map(|r| r[0]), Some(0x01));
    assert_eq!(base_of(&txn).map(|b| b.record), Some(pulled.clone()));
    // A local edit changes the record row: the base is written out first, unchanged.
    db.records()
        .apply_local(
            &mut txn,
            &[WriteOp::Update {
                table: "posts".into(),
                key: key("b"),
                patch: json!({"rank": 7}),
            }],
        )
        .unwrap();
    assert_eq!(raw_base(&txn).map(|r| r[0]), Some(b'{'));
    assert_eq!(base_of(&txn).map(|b| b.record), Some(pulled.clone()));
    // Its acknowledgement makes the server's answer the base and the record: a marker again.
    let seq = db.outbox().entries(&txn, None, 10).unwrap()[0].seq;
    db.outbox().mark_in_flight(&mut txn, seq).unwrap();
    let answer = rec(json!({"id": "b", "rank": 7, "v": 2}));
    db.remote()
        .ack_push(
            &mut txn,
            seq,
            &PushOutcome {
                record: Some(answer.clone()),
                version: Some("2".into()),
                server_key: None,
                server_time_ms: None,
            },
        )
        .unwrap();
    assert_eq!(
        db.records().get(&txn, "posts", &key("b")).unwrap(),
        Some(answer.clone())
    );
    assert_eq!(raw_base(&txn).map(|r| r[0]), Some(0x01));
    let base = base_of(&txn).unwrap();
    assert_eq!(
        (base.record, base.version),
        (answer.clone(), Some("2".into()))
    );
    // A local delete removes the record row: the base is written out, not lost.
    db.records()
        .apply_local(
            &mut txn,
            &[WriteOp::Delete {
                table: "posts".into(),
                key: key("b"),
            }],
        )
        .unwrap();
    assert_eq!(db.records().get(&txn, "posts", &key("b")).unwrap(), None);
    assert_eq!(base_of(&txn).map(|b| b.record), Some(answer));
}

/// An acknowledgement whose merged record differs from the server's answer (a field edited
/// again while the write was in flight keeps the local edit) stores the answer as a base of
/// its own; one whose merged record is the answer stores the marker (checked above).
#[test]
fn an_ack_over_an_edit_made_in_flight_keeps_the_edit_and_the_answer_as_its_own_base() {
    let db = db();
    let mut txn = seeded(&db, false);
    let edit = |txn: &mut MapTxn, rank: i64| {
        db.records()
            .apply_local(
                txn,
                &[WriteOp::Update {
                    table: "posts".into(),
                    key: key("b"),
                    patch: json!({"rank": rank}),
                }],
            )
            .unwrap();
    };
    edit(&mut txn, 7);
    let seq = db.outbox().entries(&txn, None, 10).unwrap()[0].seq;
    db.outbox().mark_in_flight(&mut txn, seq).unwrap();
    edit(&mut txn, 9);
    let answer = rec(json!({"id": "b", "rank": 7, "v": 2}));
    let acked = db
        .remote()
        .ack_push(
            &mut txn,
            seq,
            &PushOutcome {
                record: Some(answer.clone()),
                version: Some("2".into()),
                server_key: None,
                server_time_ms: None,
            },
        )
        .unwrap();
    let local = rec(json!({"id": "b", "rank": 9, "v": 2}));
    assert_eq!(
        db.records().get(&txn, "posts", &key("b")).unwrap(),
        Some(local.clone())
    );
    assert_eq!(acked.changes.len(), 1);
    assert_eq!(acked.changes[0].record, Some(local));
    let raw_base = txn
        .get(&layout::bases("posts"), &key("b").encode())
        .unwrap();
    assert_eq!(raw_base.map(|r| r[0]), Some(b'{'), "a base of its own");
    let base = db
        .records()
        .base(&txn, "posts", &key("b"))
        .unwrap()
        .unwrap();
    assert_eq!((base.record, base.version), (answer, Some("2".into())));
    // The edit made in flight is still queued, on top of the new base.
    assert_eq!(
        db.outbox().pending(&txn, "posts", &key("b")).unwrap().len(),
        1
    );
}
