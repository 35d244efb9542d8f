//! The conflict strategy conformance suite: what every [`ConflictStrategy`] must do, checked
//! with generated conflicts.
//!
//! A strategy crate runs it from an integration test, declaring the rules its documentation
//! promises in [`Rules`]; the suite checks those promises and the rules every strategy shares:
//!
//! ```no_run
//! use tidesync_core::{Resolution, ServerWins};
//! use tidesync_testkit::conflict_suite::{self, Rules, TimeRule};
//!
//! conflict_suite::run_all(
//!     &ServerWins,
//!     &Rules {
//!         always: Some(Resolution::TakeRemote),
//!         converged: Some(Resolution::TakeRemote),
//!         ignores_detected_by: true,
//!         time: TimeRule::Ignored,
//!     },
//! );
//! ```
//!
//! Every strategy must:
//! - resolve every input without panicking: arbitrary JSON records (nested objects, arrays,
//!   numbers at the edges, odd strings), a missing base, local or remote version (a delete on
//!   either side), tombstones (`"deleted": true`), any HLC stamp and any remote time; an error
//!   it returns names the conflict's table and key ([`resolves_every_input`]);
//! - be deterministic: the same conflict resolves the same way every time
//!   ([`deterministic`]).
//!
//! What a strategy declares in [`Rules`] is checked too: a fixed outcome, the outcome for
//! sides that already agree, independence from how the conflict was detected, and how the two
//! write times decide (ties and unknown times included).
//!
//! The checks are plain functions: call them from an ordinary `#[test]`, not from inside an
//! async runtime (each check drives the strategy's futures on a runtime of its own). Inputs
//! come from a deterministic seed, so a failure reproduces; a check panics with a message
//! naming the strategy, the check and the smallest conflict proptest found that breaks it.

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Map, Number, Value};
use tidesync_core::{Conflict, ConflictStrategy, DetectedBy, Key, Record, Resolution, Stamp};

/// How the two write times (the local HLC stamp and the remote time) take part in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeRule {
    /// The strategy documents nothing about times; nothing is checked.
    #[default]
    Undeclared,
    /// The outcome never depends on [`Conflict::local_hlc`] or [`Conflict::remote_time_ms`].
    Ignored,
    /// Times decide by last write wins on the HLC's milliseconds against the remote time.
    LastWriteWins {
        /// Who wins when both writes have the same millisecond: the conflict resolves exactly
        /// as if that side's write were one millisecond later.
        tie: Side,
        /// Who wins when a time is unknown (`remote_time_ms` is `None`, or `local_hlc` is 0),
        /// if the strategy documents it.
        unknown: Option<Side>,
    },
}

/// One side of a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The local write.
    Local,
    /// The remote write.
    Remote,
}

/// What a strategy's documentation promises beyond the rules every strategy shares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// The outcome of every conflict, when the strategy always decides the same way.
    pub always: Option<Resolution>,
    /// The outcome when both sides already hold the same thing (the same record, or both
    /// deleted), if documented.
    pub converged: Option<Resolution>,
    /// The outcome never depends on [`Conflict::detected_by`].
    pub ignores_detected_by: bool,
    /// How the write times decide.
    pub time: TimeRule,
}

/// One check of the suite.
pub type CheckFn = fn(&dyn ConflictStrategy, &Rules);

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, CheckFn)] = &[
    ("resolves_every_input", resolves_every_input),
    ("deterministic", deterministic),
    ("always", always),
    ("converged_sides", converged_sides),
    ("detected_by_is_ignored", detected_by_is_ignored),
    ("time_rule", time_rule),
];

/// Runs every check in [`CHECKS`]; panics at the first violation.
pub fn run_all(strategy: &dyn ConflictStrategy, rules: &Rules) {
    for (_, check) in CHECKS {
        check(strategy, rules);
    }
}

/// Generated conflicts per check.
const CASES: u32 = 256;

/// A resolution, or the error's kind, message, table and key (errors are not `PartialEq`).
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Resolved(Resolution),
    Failed {
        kind: String,
        message: String,
        table: Option<String>,
        key: Option<String>,
    },
}

/// Drives a strategy's futures on a runtime of the check's own.
struct Driver<'a> {
    strategy: &'a dyn ConflictStrategy,
    runtime: tokio::runtime::Runtime,
}

impl<'a> Driver<'a> {
    fn new(strategy: &'a dyn ConflictStrategy, check: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("[{check}] cannot build a runtime: {e}"));
        Driver { strategy, runtime }
    }

    fn resolve(&self, conflict: &Conflict) -> Outcome {
        match self.runtime.block_on(self.strategy.resolve(conflict)) {
            Ok(resolution) => Outcome::Resolved(resolution),
            Err(e) => Outcome::Failed {
                kind: format!("{:?}", e.kind()),
                message: e.to_string(),
                table: e.table_name().map(str::to_owned),
                key: e.record_key().map(str::to_owned),
            },
        }
    }

    /// Runs `test` over generated values; panics with the smallest failing input.
    fn check<S>(&self, check: &str, values: S, test: impl Fn(S::Value) -> Result<(), String>)
    where
        S: Strategy,
        S::Value: Debug,
    {
        let config = Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        if let Err(e) = runner.run(&values, |value| test(value).map_err(TestCaseError::fail)) {
            panic!("[{}] {check}: {e}", self.strategy.name());
        }
    }
}

/// A field name: mostly names real records use (so sides overlap), sometimes anything.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "id", "title", "n", "tags", "meta", "deleted", "updatedAt", "version", "meta.updatedAt",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON value, nested a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("a finite number", |f| Number::from_f64(f)
            .map(Value::Number)),
        "[a-z]{0,6}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        // Timestamps as a `timestamp_field` may hold them: RFC 3339, seconds, milliseconds.
        Just(Value::from("2026-03-01T12:00:00.250Z")),
        Just(Value::from("not a time")),
        (0i64..4_000_000_000_000).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A record; sometimes a tombstone (`"deleted": true`).
fn record() -> impl Strategy<Value = Record> {
    (
        prop::collection::btree_map(field_name(), json_value(), 0..6),
        any::<bool>(),
        prop::option::of("[a-z0-9]{1,8}"),
    )
        .prop_map(|(fields, tombstone, id)| {
            let mut record: Map<String, Value> = fields.into_iter().collect();
            if let Some(id) = id {
                record.insert("id".to_owned(), Value::from(id));
            }
            if tombstone {
                record.insert("deleted".to_owned(), Value::Bool(true));
            }
            record
        })
}

fn detected_by() -> impl Strategy<Value = DetectedBy> {
    prop::sample::select(vec![
        DetectedBy::Pull,
        DetectedBy::PushRejected,
        DetectedBy::RemoteDelete,
        DetectedBy::LocalDelete,
    ])
}

/// An HLC stamp: unknown (0), realistic, or any `u64`.
fn local_hlc() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        (1u64..4_000_000_000_000, 0u64..4).prop_map(|(ms, c)| Stamp::from_millis(ms).0 + c),
        any::<u64>(),
    ]
}

/// A remote time: unknown, realistic, or any `i64` (negative and extreme included).
fn remote_time() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        (0i64..4_000_000_000_000).prop_map(Some),
        any::<i64>().prop_map(Some),
    ]
}

/// Any conflict: each side independent, or a copy of another side, or missing.
pub fn any_conflict() -> impl Strategy<Value = Conflict> {
    let key = prop_oneof![
        any::<i64>().prop_map(Key::Int),
        "[a-z0-9-]{1,12}".prop_map(Key::Str)
    ];
    (
        prop::sample::select(vec!["todos", "notes", "t"]),
        key,
        prop::option::of(record()),
        prop::option::of(record()),
        prop::option::of(record()),
        0u8..4,
        detected_by(),
        local_hlc(),
        remote_time(),
    )
        .prop_map(
            |(table, key, base, local, remote, share, detected_by, local_hlc, remote_time_ms)| {
                let (local, remote) = match share {
                    // Local edited nothing since the base; remote edited it.
                    1 => (base.clone(), remote),
                    // Remote unchanged since the base.
                    2 => (local, base.clone()),
                    _ => (local, remote),
                };
                Conflict {
                    table: table.to_owned(),
                    key,
                    base,
                    local,
                    remote,
                    detected_by,
                    local_hlc,
                    remote_time_ms,
                }
            },
        )
}

/// Every conflict resolves without a panic; an error names the conflict's table and key.
pub fn resolves_every_input(strategy: &dyn ConflictStrategy, _rules: &Rules) {
    let driver = Driver::new(strategy, "resolves_every_input");
    driver.check(
        "resolves_every_input",
        any_conflict(),
        |conflict| match driver.resolve(&conflict) {
            Outcome::Resolved(_) => Ok(()),
            Outcome::Failed {
                message,
                table,
                key,
                ..
            } => {
                let want_key = conflict.key.to_string();
                if table.as_deref() == Some(conflict.table.as_str())
                    && key.as_deref() == Some(want_key.as_str())
                {
                    Ok(())
                } else {
                    Err(format!(
                        "the error names table {table:?} and key {key:?}, not {:?} and \
                         {want_key:?}: {message}",
                        conflict.table
                    ))
                }
            }
        },
    );
}

/// The same conflict (and a copy of it) resolves the same way every time.
pub fn deterministic(strategy: &dyn ConflictStrategy, _rules: &Rules) {
    let driver = Driver::new(strategy, "deterministic");
    driver.check("deterministic", any_conflict(), |conflict| {
        let first = driver.resolve(&conflict);
        let copy = conflict.clone();
        for _ in 0..3 {
            let again = driver.resolve(&copy);
            if again != first {
                return Err(format!("resolved as {first:?}, then as {again:?}"));
            }
        }
        Ok(())
    });
}

/// With [`Rules::always`], every conflict resolves to that outcome.
pub fn always(strategy: &dyn ConflictStrategy, rules: &Rules) {
    let Some(want) = rules.always.clone() else {
        return;
    };
    let driver = Driver::new(strategy, "always");
    driver.check("always", any_conflict(), |conflict| {
        let got = driver.resolve(&conflict);
        if got == Outcome::Resolved(want.clone()) {
            Ok(())
        } else {
            Err(format!("documented to always give {want:?}, gave {got:?}"))
        }
    });
}

/// With [`Rules::converged`], sides that already agree (the same record, or both deleted)
/// resolve to that outcome.
pub fn converged_sides(strategy: &dyn ConflictStrategy, rules: &Rules) {
    let Some(want) = rules.converged.clone() else {
        return;
    };
    let driver = Driver::new(strategy, "converged_sides");
    let same = (any_conflict(), prop::option::of(record()));
    driver.check("converged_sides", same, |(mut conflict, side)| {
        conflict.local = side.clone();
        conflict.remote = side;
        let got = driver.resolve(&conflict);
        if got == Outcome::Resolved(want.clone()) {
            Ok(())
        } else {
            Err(format!(
                "both sides hold {:?}: documented as {want:?}, gave {got:?}",
                conflict.local
            ))
        }
    });
}

/// With [`Rules::ignores_detected_by`], a conflict resolves alike however it was detected.
pub fn detected_by_is_ignored(strategy: &dyn ConflictStrategy, rules: &Rules) {
    if !rules.ignores_detected_by {
        return;
    }
    let driver = Driver::new(strategy, "detected_by_is_ignored");
    driver.check("detected_by_is_ignored", any_conflict(), |mut conflict| {
        let first = driver.resolve(&conflict);
        for by in [
            DetectedBy::Pull,
            DetectedBy::PushRejected,
            DetectedBy::RemoteDelete,
            DetectedBy::LocalDelete,
        ] {
            conflict.detected_by = by;
            let got = driver.resolve(&conflict);
            if got != first {
                return Err(format!("detected by {by:?}: {got:?} instead of {first:?}"));
            }
        }
        Ok(())
    });
}

/// The conflict with its write times set: the local write at `local_ms` (counter `counter`),
/// the remote one at `remote_ms`.
fn at(conflict: &Conflict, local_ms: u64, counter: u64, remote_ms: Option<i64>) -> Conflict {
    Conflict {
        local_hlc: Stamp::from_millis(local_ms).0 + counter,
        remote_time_ms: remote_ms,
        ..conflict.clone()
    }
}

/// [`Rules::time`]: with [`TimeRule::Ignored`], other times give the same outcome; with
/// [`TimeRule::LastWriteWins`], a tie resolves as if the declared side were one millisecond
/// later, and so does an unknown time when declared.
pub fn time_rule(strategy: &dyn ConflictStrategy, rules: &Rules) {
    match rules.time {
        TimeRule::Undeclared => {}
        TimeRule::Ignored => {
            let driver = Driver::new(strategy, "time_rule");
            let values = (any_conflict(), local_hlc(), remote_time());
            driver.check("time_rule", values, |(conflict, hlc, remote)| {
                let first = driver.resolve(&conflict);
                let other = Conflict {
                    local_hlc: hlc,
                    remote_time_ms: remote,
                    ..conflict.clone()
                };
                let got = driver.resolve(&other);
                if got == first {
                    Ok(())
                } else {
                    Err(format!(
                        "documented to ignore times, but local_hlc {hlc} and remote time \
                         {remote:?} gave {got:?} instead of {first:?}"
                    ))
                }
            });
        }
        TimeRule::LastWriteWins { tie, unknown } => {
            let driver = Driver::new(strategy, "time_rule");
            let values = (any_conflict(), 2u64..4_000_000_000_000, 0u64..100);
            driver.check("time_rule", values, |(conflict, ms, counter)| {
                let remote_ms = i64::try_from(ms).map_err(|e| e.to_string())?;
                let local_later = driver.resolve(&at(&conflict, ms, counter, Some(remote_ms - 1)));
                let remote_later = driver.resolve(&at(&conflict, ms, counter, Some(remote_ms + 1)));
                let winner = |side: Side| match side {
                    Side::Local => &local_later,
                    Side::Remote => &remote_later,
                };
                let tied = driver.resolve(&at(&conflict, ms, counter, Some(remote_ms)));
                if &tied != winner(tie) {
                    return Err(format!(
                        "a tie at {ms} ms gave {tied:?}; documented to go to {tie:?}, which \
                         gives {:?}",
                        winner(tie)
                    ));
                }
                let Some(unknown) = unknown else {
                    return Ok(());
                };
                let no_remote_time = driver.resolve(&at(&conflict, ms, counter, None));
                let mut no_local_time = at(&conflict, ms, counter, Some(remote_ms));
                no_local_time.local_hlc = 0;
                let no_local_time = driver.resolve(&no_local_time);
                for (what, got) in [
                    ("an unknown remote time", no_remote_time),
                    ("an unknown local time", no_local_time),
                ] {
                    if &got != winner(unknown) {
                        return Err(format!(
                            "{what} gave {got:?}; documented to go to {unknown:?}, which gives \
                             {:?}",
                            winner(unknown)
                        ));
                    }
                }
                Ok(())
            });
        }
    }
}
