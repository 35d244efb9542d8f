//! Outbox entries and the coalescing rules (DESIGN invariant 4).
//!
//! The outbox is a per-record queue of operations waiting to reach the server. While a record's
//! last entry is still unsent, a new local change is folded into it:
//!
//! | queued (unsent) | new change | result                                   |
//! |-----------------|------------|------------------------------------------|
//! | create          | update     | create with the latest record            |
//! | update          | update     | one update, latest record, fields merged |
//! | create          | delete     | nothing (the record never existed there) |
//! | update          | delete     | delete                                   |
//!
//! An entry that is *sealed* (in flight, already attempted at least once, or dead-lettered) is
//! never rewritten: the server may already have applied it under its idempotency key, so the new
//! change queues behind it as a new entry.

use serde::{Deserialize, Serialize};

use crate::record::{Key, Record};

/// What an outbox entry asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Create the record.
    Create,
    /// Update the record.
    Update,
    /// Delete the record.
    Delete,
}

impl Op {
    /// A stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// One pending operation for one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Global enqueue sequence number; orders entries (per record and overall).
    pub seq: u64,
    /// The table.
    pub table: String,
    /// The record key.
    pub key: Key,
    /// The operation.
    pub op: Op,
    /// Create/update: the record as written locally. Delete: the record as it was before the
    /// delete (so URL templates can use its fields).
    pub record: Option<Record>,
    /// Update: the top-level fields changed since the record's last synced version.
    pub changed: Vec<String>,
    /// Stable idempotency key (UUIDv7), fixed at enqueue, sent on every retry.
    pub idempotency_key: String,
    /// HLC stamp of the latest local write folded into this entry.
    pub hlc: u64,
    /// Wall-clock milliseconds when the entry was first enqueued.
    pub created_at_ms: u64,
    /// How many times it was handed to the transport. Any attempt seals the entry.
    pub attempts: u32,
    /// How many answers of the server refused it for now (5xx, 408, 425, or a timeout while
    /// the server answered other requests): the dead-letter budget counts only these. Failures
    /// that are the server's state (unreachable, hung, throttling) never count; see
    /// [`crate::push_policy`].
    #[serde(default)]
    pub failures: u32,
    /// Not to be sent before this wall-clock millisecond (backoff).
    pub next_attempt_at_ms: u64,
    /// The last failure, if any (never contains secrets).
    pub last_error: Option<String>,
    /// Handed to the transport and not yet resolved.
    pub in_flight: bool,
    /// Moved to the dead-letter queue; the record's later entries wait behind it.
    pub dead: Option<DeadLetterInfo>,
    /// A write of a record the server did not know (a create, or one sent as an upsert),
    /// sent and still unanswered, met a pull that showed the record deleted on the server.
    /// An answer saying the server applied the write then means that delete came after it:
    /// the acknowledgement applies the delete instead of installing the answer
    /// ([`crate::local::RemoteChanges::ack_push`]). A live version pulled later, or a refusal of
    /// the create (no attempt applied it), clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted_remotely: bool,
}

/// Why an entry was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    /// The error kind (`permanent`, `decode`, …).
    pub kind: String,
    /// The error message.
    pub error: String,
    /// The HTTP status, if any.
    pub status: Option<u16>,
    /// An excerpt of the response body, if any.
    pub response_excerpt: Option<String>,
    /// Wall-clock milliseconds when it was dead-lettered.
    pub at_ms: u64,
}

impl DeadLetterInfo {
    /// Whether the write may have been applied by the server although it was dead-lettered:
    /// the server accepted it but its answer could not be used (a 2xx whose body did not
    /// decode, or an answer the store could not apply), or its retries ran out on failures
    /// that can come after a commit (a timeout, a dropped connection, a 5xx). A refusal
    /// (4xx) was not applied.
    pub fn may_have_been_applied(&self) -> bool {
        match self.kind.as_str() {
            "ack_failed" | "retries_exhausted" => true,
            "decode" => self.status.is_some_and(|s| (200..300).contains(&s)),
            _ => false,
        }
    }
}

impl OutboxEntry {
    /// Whether the entry may already have reached the server (or is dead), so it must not be
    /// rewritten by coalescing.
    pub fn sealed(&self) -> bool {
        self.in_flight || self.attempts > 0 || self.dead.is_some()
    }
}

/// A local change to a record, before it meets the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalChange {
    /// The operation the change amounts to.
    pub op: Op,
    /// The record after the change (create/update) or before it (delete).
    pub record: Option<Record>,
    /// Update: the fields the change touched.
    pub changed: Vec<String>,
}

/// What coalescing decided for a new change.
#[derive(Debug, Clone, PartialEq)]
pub enum Coalesced {
    /// Queue a new entry after the existing ones.
    Append,
    /// Rewrite the (unsent) tail entry in place, keeping its position and idempotency key.
    Replace(Box<OutboxEntry>),
    /// Remove the (unsent) tail entry; nothing is queued.
    RemoveTail,
}

/// Folds `change` into the record's last queued entry, following the table in the module docs.
pub fn coalesce(tail: Option<&OutboxEntry>, change: &LocalChange, hlc: u64) -> Coalesced {
    let Some(tail) = tail.filter(|t| !t.sealed()) else {
        return Coalesced::Append;
    };
    let rewrite = |op: Op, changed: Vec<String>| {
        let mut entry = tail.clone();
        entry.op = op;
        entry.record = change.record.clone();
        entry.changed = changed;
        entry.hlc = hlc;
        Coalesced::Replace(Box::new(entry))
    };
    match (tail.op, change.op) {
        (Op::Create, Op::Update) => rewrite(Op::Create, Vec::new()),
        (Op::Create, Op::Delete) => Coalesced::RemoveTail,
        (Op::Update, Op::Update) => {
            let mut changed = tail.changed.clone();
            changed.extend(change.changed.iter().cloned());
            changed.sort();
            changed.dedup();
            rewrite(Op::Update, changed)
        }
        (Op::Update, Op::Delete) => rewrite(Op::Delete, Vec::new()),
        // delete then re-create, or anything unexpected: keep both, in order.
        _ => Coalesced::Append,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: serde_json::Value) -> Option<Record> {
        v.as_object().cloned()
    }

    fn entry(op: Op) -> OutboxEntry {
        OutboxEntry {
            seq: 1,
            table: "posts".into(),
            key: Key::from("p1"),
            op,
            record: record(json!({"id": "p1", "title": "a"})),
            changed: if op == Op::Update {
                vec!["title".into()]
            } else {
                vec![]
            },
            idempotency_key: "k1".into(),
            hlc: 1,
            created_at_ms: 0,
            attempts: 0,
            failures: 0,
            next_attempt_at_ms: 0,
            last_error: None,
            in_flight: false,
            dead: None,
            deleted_remotely: false,
        }
    }

    fn change(op: Op, changed: &[&str]) -> LocalChange {
        LocalChange {
            op,
            record: record(json!({"id": "p1", "title": "b", "body": "x"})),
            changed: changed.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn sealed_variants(op: Op) -> Vec<(&'static str, OutboxEntry)> {
        let mut in_flight = entry(op);
        in_flight.in_flight = true;
        let mut attempted = entry(op);
        attempted.attempts = 1;
        let mut dead = entry(op);
        dead.dead = Some(DeadLetterInfo {
            kind: "permanent".into(),
            error: "400".into(),
            status: Some(400),
            response_excerpt: None,
            at_ms: 0,
        });
        vec![
            ("in flight", in_flight),
            ("attempted", attempted),
            ("dead", dead),
        ]
    }

    #[test]
    fn first_change_appends() {
        assert_eq!(
            coalesce(None, &change(Op::Create, &[]), 2),
            Coalesced::Append
        );
    }

    #[test]
    fn create_then_update_is_one_create_with_the_latest_record() {
        let Coalesced::Replace(e) =
            coalesce(Some(&entry(Op::Create)), &change(Op::Update, &["title"]), 2)
        else {
            panic!("expected a rewrite");
        };
        assert_eq!(e.op, Op::Create);
        assert_eq!(
            e.record,
            record(json!({"id": "p1", "title": "b", "body": "x"}))
        );
        assert_eq!(
            e.idempotency_key, "k1",
            "idempotency key is fixed at enqueue"
        );
        assert_eq!(e.seq, 1, "keeps its place in the order");
        assert_eq!(e.hlc, 2);
    }

    #[test]
    fn update_then_update_merges_changed_fields() {
        let Coalesced::Replace(e) =
            coalesce(Some(&entry(Op::Update)), &change(Op::Update, &["body"]), 2)
        else {
            panic!("expected a rewrite");
        };
        assert_eq!(e.op, Op::Update);
        assert_eq!(e.changed, vec!["body".to_string(), "title".to_string()]);
        assert_eq!(
            e.record,
            record(json!({"id": "p1", "title": "b", "body": "x"}))
        );
    }

    #[test]
    fn create_then_delete_is_nothing() {
        assert_eq!(
            coalesce(Some(&entry(Op::Create)), &change(Op::Delete, &[]), 2),
            Coalesced::RemoveTail
        );
    }

    #[test]
    fn update_then_delete_is_delete() {
        let Coalesced::Replace(e) = coalesce(Some(&entry(Op::Update)), &change(Op::Delete, &[]), 2)
        else {
            panic!("expected a rewrite");
        };
        assert_eq!(e.op, Op::Delete);
        assert!(e.changed.is_empty());
    }

    #[test]
    fn delete_then_create_keeps_both() {
        assert_eq!(
            coalesce(Some(&entry(Op::Delete)), &change(Op::Create, &[]), 2),
            Coalesced::Append
        );
    }

    #[test]
    fn every_rule_appends_behind_a_sealed_entry() {
        for tail_op in [Op::Create, Op::Update] {
            for new_op in [Op::Update, Op::Delete] {
                for (why, tail) in sealed_variants(tail_op) {
                    assert_eq!(
                        coalesce(Some(&tail), &change(new_op, &["title"]), 2),
                        Coalesced::Append,
                        "{tail_op:?} {why} + {new_op:?} must queue behind, not rewrite"
                    );
                }
            }
        }
    }
}
