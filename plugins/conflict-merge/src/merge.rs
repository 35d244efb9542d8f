//! The field-level three-way merge.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use serde_json::Value;
use tidesync_core::{Conflict, ConflictStrategy, Record, Resolution, Result, Stamp};

use crate::config::{FieldMergeConfig, MergePolicy};

/// Objects nested deeper than this are compared as whole values instead of being merged field
/// by field, so no input can exhaust the stack. (`serde_json` refuses to parse deeper documents
/// anyway.)
pub const MAX_DEPTH: usize = 128;

/// The base of an object that did not exist in the base.
static EMPTY: LazyLock<Record> = LazyLock::new(Record::new);

/// Whether the local write is strictly later than the remote one: the local HLC stamp's
/// milliseconds against `remote_time_ms`. Equal milliseconds, an unknown remote time or an
/// unknown local time (`local_hlc == 0`) all go to the server, so every device decides alike.
///
/// This is the rule of `tidesync-conflict-policies`' `last_write_winner`, kept here as a few
/// lines so the crates stay independent.
pub fn local_is_later(local_hlc: u64, remote_time_ms: Option<i64>) -> bool {
    match remote_time_ms {
        Some(remote_ms) if local_hlc != 0 => {
            i64::try_from(Stamp(local_hlc).millis()).unwrap_or(i64::MAX) > remote_ms
        }
        _ => false,
    }
}

/// Which value a conflicting field got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOutcome {
    /// The local value.
    Local,
    /// The remote value.
    Remote,
    /// A [`MergePolicy::Park`] policy applied: the whole record is parked.
    Parked,
}

/// One field both sides changed to different values, and how it was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// The dotted path of the field (`"address.city"`); empty for the whole record (a delete).
    pub path: String,
    /// The policy that applied.
    pub policy: MergePolicy,
    /// What it decided.
    pub outcome: FieldOutcome,
}

/// A merge's resolution together with the fields that needed a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOutcome {
    /// What the engine should do.
    pub resolution: Resolution,
    /// Every field changed on both sides to different values, in the order they were met; one
    /// entry with an empty path when a delete decided the whole record; empty when the edits
    /// were disjoint.
    pub conflicts: Vec<FieldConflict>,
}

/// Field-level three-way merge against the base.
///
/// Each field is compared across `base`, `local` and `remote`:
///
/// | change | result |
/// |---|---|
/// | same value on both sides (including both removed) | that value |
/// | changed on one side only (added, edited or removed) | that side's value |
/// | changed on both sides, both to objects | merged recursively, field by field |
/// | changed on both sides to different values | the field's policy decides |
///
/// - **Policies.** [`policy_for`](FieldMerge::policy_for) a path is the policy of the longest
///   configured path that is the field's path or a parent of it (`"address"` covers
///   `"address.city"` unless `"address.city"` has its own), else the default
///   ([`MergePolicy::PreferRemote`] unless configured). A conflict at `"address"` itself (e.g.
///   an object on one side and a string on the other) uses the policy of `"address"`, not of its
///   children. Field names that contain dots cannot be addressed unambiguously.
/// - **Arrays** are plain values: two different arrays are a conflict on the whole array; their
///   elements are never merged.
/// - **Missing base** (the record was never synced): every field that differs between the sides
///   counts as changed on both, so the policies decide it (equal fields are kept; objects still
///   merge recursively with no base). With a base, a field missing from the base was added:
///   its sub-fields merge against an empty base.
/// - **Deletes** (`local` or `remote` is `None`): there are no fields to merge, so the
///   **default** policy decides the whole record: `PreferRemote` → `TakeRemote` (a remote delete
///   deletes locally; a local delete is undone by the server's record), `PreferLocal` →
///   `KeepLocal` (the record is re-created, or the delete is pushed), `Latest` → whichever write
///   is later (ties to the server), `Park` → `Park`. Per-field policies do not apply. Both sides
///   deleted → `TakeRemote`.
/// - **Result.** [`Resolution::Park`] if any `Park` policy was triggered; otherwise
///   [`Resolution::TakeRemote`] if the merge equals the remote record (nothing to push),
///   [`Resolution::KeepLocal`] if it equals the local record, else [`Resolution::Merged`]. When
///   the two sides are already equal the result is `TakeRemote`.
///
/// The merge is deterministic and idempotent: merging its result again with the same base and
/// remote gives the same result, and so does merging it against the remote as the new base.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMerge {
    default: MergePolicy,
    fields: BTreeMap<String, MergePolicy>,
}

impl FieldMerge {
    /// A merge with the default policy [`MergePolicy::PreferRemote`] and no per-field policies.
    pub fn new() -> Self {
        Self::default()
    }

    /// A merge with `policy` as the default.
    pub fn with_default(policy: MergePolicy) -> Self {
        FieldMerge {
            default: policy,
            fields: BTreeMap::new(),
        }
    }

    /// Sets the default policy.
    pub fn default_policy(mut self, policy: MergePolicy) -> Self {
        self.default = policy;
        self
    }

    /// Sets the policy of a dotted field path (`"address.city"`) and everything below it.
    /// A path with empty segments never matches; [`FieldMerge::from_config`] rejects it.
    pub fn field(mut self, path: impl Into<String>, policy: MergePolicy) -> Self {
        self.fields.insert(path.into(), policy);
        self
    }

    /// A merge from its configuration, after [`FieldMergeConfig::validate`].
    pub fn from_config(config: FieldMergeConfig) -> Result<Self> {
        config.validate()?;
        Ok(FieldMerge {
            default: config.default,
            fields: config.fields,
        })
    }

    /// The configuration of this merge.
    pub fn config(&self) -> FieldMergeConfig {
        FieldMergeConfig {
            default: self.default,
            fields: self.fields.clone(),
        }
    }

    /// The policy that applies to a conflict at `path`.
    pub fn policy_for(&self, path: &str) -> MergePolicy {
        let mut prefix = path;
        loop {
            if let Some(policy) = self.fields.get(prefix) {
                return *policy;
            }
            match prefix.rfind('.') {
                Some(dot) => prefix = &prefix[..dot],
                None => return self.default,
            }
        }
    }

    /// Merges a conflict and reports which fields needed a policy.
    pub fn merge(&self, conflict: &Conflict) -> MergeOutcome {
        let mut ctx = Ctx {
            local_later: local_is_later(conflict.local_hlc, conflict.remote_time_ms),
            conflicts: Vec::new(),
        };
        let resolution = match (&conflict.local, &conflict.remote) {
            (local, remote) if local == remote => Resolution::TakeRemote,
            (Some(local), Some(remote)) => {
                let base = conflict.base.as_ref();
                let mut path = String::new();
                let merged = self.merge_objects(&mut ctx, &mut path, base, local, remote, 0);
                if ctx.parked() {
                    Resolution::Park
                } else if merged == *remote {
                    Resolution::TakeRemote
                } else if merged == *local {
                    Resolution::KeepLocal
                } else {
                    Resolution::Merged(merged)
                }
            }
            // One side deleted: the default policy decides the whole record.
            _ => {
                let outcome = ctx.decide(self.default);
                ctx.conflicts.push(FieldConflict {
                    path: String::new(),
                    policy: self.default,
                    outcome,
                });
                match outcome {
                    FieldOutcome::Local => Resolution::KeepLocal,
                    FieldOutcome::Remote => Resolution::TakeRemote,
                    FieldOutcome::Parked => Resolution::Park,
                }
            }
        };
        MergeOutcome {
            resolution,
            conflicts: ctx.conflicts,
        }
    }

    /// The resolution alone, synchronously.
    pub fn decide(&self, conflict: &Conflict) -> Resolution {
        self.merge(conflict).resolution
    }

    /// Merges two objects field by field. `base` is `None` when there is no base at all (never
    /// synced).
    fn merge_objects(
        &self,
        ctx: &mut Ctx,
        path: &mut String,
        base: Option<&Record>,
        local: &Record,
        remote: &Record,
        depth: usize,
    ) -> Record {
        let mut out = Record::new();
        let keys = local
            .keys()
            .chain(remote.keys().filter(|k| !local.contains_key(*k)));
        for key in keys {
            let parent_len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let sides = Sides {
                base: base.map(|b| b.get(key)),
                local: local.get(key),
                remote: remote.get(key),
            };
            if let Some(value) = self.merge_field(ctx, path, sides, depth) {
                out.insert(key.clone(), value);
            }
            path.truncate(parent_len);
        }
        out
    }

    fn merge_field(
        &self,
        ctx: &mut Ctx,
        path: &mut String,
        sides: Sides<'_>,
        depth: usize,
    ) -> Option<Value> {
        let Sides {
            base,
            local,
            remote,
        } = sides;
        if local == remote {
            return local.cloned();
        }
        if let Some(base) = base {
            if local == base {
                return remote.cloned();
            }
            if remote == base {
                return local.cloned();
            }
        }
        // Changed on both sides (or no base to tell).
        if let (Some(Value::Object(l)), Some(Value::Object(r))) = (local, remote)
            && depth < MAX_DEPTH
        {
            let sub_base = base.map(|b| match b {
                Some(Value::Object(b)) => b,
                // The base had no object here: its fields did not exist.
                _ => &*EMPTY,
            });
            let merged = self.merge_objects(ctx, path, sub_base, l, r, depth + 1);
            return Some(Value::Object(merged));
        }
        let policy = self.policy_for(path);
        let outcome = ctx.decide(policy);
        ctx.conflicts.push(FieldConflict {
            path: path.clone(),
            policy,
            outcome,
        });
        match outcome {
            FieldOutcome::Local => local.cloned(),
            // A parked merge is discarded; keep the remote value meanwhile.
            FieldOutcome::Remote | FieldOutcome::Parked => remote.cloned(),
        }
    }
}

/// One field on the three sides. `base` is `None` when there is no base at all, `Some(None)`
/// when the base lacks the field.
#[derive(Clone, Copy)]
struct Sides<'a> {
    base: Option<Option<&'a Value>>,
    local: Option<&'a Value>,
    remote: Option<&'a Value>,
}

struct Ctx {
    local_later: bool,
    conflicts: Vec<FieldConflict>,
}

impl Ctx {
    fn decide(&self, policy: MergePolicy) -> FieldOutcome {
        match policy {
            MergePolicy::PreferRemote => FieldOutcome::Remote,
            MergePolicy::PreferLocal => FieldOutcome::Local,
            MergePolicy::Latest if self.local_later => FieldOutcome::Local,
            MergePolicy::Latest => FieldOutcome::Remote,
            MergePolicy::Park => FieldOutcome::Parked,
        }
    }

    fn parked(&self) -> bool {
        self.conflicts
            .iter()
            .any(|c| c.outcome == FieldOutcome::Parked)
    }
}

#[async_trait]
impl ConflictStrategy for FieldMerge {
    fn name(&self) -> &str {
        "field_merge"
    }

    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution> {
        let outcome = self.merge(conflict);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let paths: Vec<&str> = outcome.conflicts.iter().map(|c| c.path.as_str()).collect();
            tracing::debug!(
                strategy = "field_merge",
                table = %conflict.table,
                key = %conflict.key,
                detected_by = conflict.detected_by.as_str(),
                local_deleted = conflict.local.is_none(),
                remote_deleted = conflict.remote.is_none(),
                has_base = conflict.base.is_some(),
                conflicting_fields = ?paths,
                outcome = outcome.resolution.as_str(),
                "conflict resolved"
            );
        }
        Ok(outcome.resolution)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidesync_core::{DetectedBy, Key};

    fn rec(v: Value) -> Option<Record> {
        match v {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    fn conflict(base: Value, local: Value, remote: Value) -> Conflict {
        Conflict {
            table: "t".into(),
            key: Key::Int(1),
            base: rec(base),
            local: rec(local),
            remote: rec(remote),
            detected_by: DetectedBy::Pull,
            local_hlc: Stamp::from_millis(1_000).0,
            remote_time_ms: Some(999),
        }
    }

    #[test]
    fn policy_lookup_uses_the_longest_configured_prefix() {
        let m = FieldMerge::new()
            .field("address", MergePolicy::PreferLocal)
            .field("address.geo.lat", MergePolicy::Park)
            .field("addr", MergePolicy::Latest);
        let cases = [
            ("address", MergePolicy::PreferLocal),
            ("address.city", MergePolicy::PreferLocal),
            ("address.geo", MergePolicy::PreferLocal),
            ("address.geo.lat", MergePolicy::Park),
            ("address.geo.lat.x", MergePolicy::Park),
            ("address.geo.lng", MergePolicy::PreferLocal),
            ("addresses", MergePolicy::PreferRemote),
            ("addr", MergePolicy::Latest),
            ("addr.x", MergePolicy::Latest),
            ("title", MergePolicy::PreferRemote),
            ("", MergePolicy::PreferRemote),
            (".", MergePolicy::PreferRemote),
        ];
        for (path, want) in cases {
            assert_eq!(m.policy_for(path), want, "{path:?}");
        }
    }

    #[test]
    fn local_is_later_table() {
        let at = |ms: u64| Stamp::from_millis(ms).0;
        let cases = [
            (at(10), Some(9), true),
            (at(10) + 5, Some(10), false),
            (at(10), Some(11), false),
            (at(10), None, false),
            (0, Some(-5), false),
            (u64::MAX, Some(i64::MAX), false),
            (at(1), Some(i64::MIN), true),
        ];
        for (local, remote, want) in cases {
            assert_eq!(local_is_later(local, remote), want, "{local} vs {remote:?}");
        }
    }

    #[test]
    fn conflicts_are_reported_with_their_paths_and_outcomes() {
        let m = FieldMerge::new().field("b.c", MergePolicy::PreferLocal);
        let outcome = m.merge(&conflict(
            json!({"a": 1, "b": {"c": 1, "d": 1}, "e": 1}),
            json!({"a": 2, "b": {"c": 2, "d": 2}, "e": 2}),
            json!({"a": 3, "b": {"c": 3, "d": 1}, "e": 1}),
        ));
        assert_eq!(
            outcome.conflicts,
            vec![
                FieldConflict {
                    path: "a".into(),
                    policy: MergePolicy::PreferRemote,
                    outcome: FieldOutcome::Remote
                },
                FieldConflict {
                    path: "b.c".into(),
                    policy: MergePolicy::PreferLocal,
                    outcome: FieldOutcome::Local
                },
            ]
        );
        assert_eq!(
            outcome.resolution,
            Resolution::Merged(
                rec(json!({"a": 3, "b": {"c": 2, "d": 2}, "e": 2})).unwrap_or_default()
            )
        );
    }

    #[test]
    fn very_deep_objects_are_compared_as_values_without_overflowing() {
        fn nest(depth: usize, leaf: Value) -> Value {
            (0..depth).fold(leaf, |inner, _| json!({ "n": inner }))
        }
        let depth = MAX_DEPTH + 50;
        let c = conflict(
            json!({"x": nest(depth, json!(0))}),
            json!({"x": nest(depth, json!(1))}),
            json!({"x": nest(depth, json!(2))}),
        );
        let outcome = FieldMerge::with_default(MergePolicy::PreferLocal).merge(&c);
        assert_eq!(outcome.resolution, Resolution::KeepLocal);
        assert_eq!(outcome.conflicts.len(), 1);
        let segments = outcome.conflicts[0].path.split('.').count();
        assert_eq!(segments, MAX_DEPTH + 1, "x plus MAX_DEPTH levels of n");
    }
}
