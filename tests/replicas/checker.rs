//! The history checker. Input: every replica's acknowledged local writes and the conflicts
//! their strategies decided (`H` lines, see `child.rs`), the server's change history
//! (`ServerHandle::changes`: every applied change with its cause) and the final server state.
//! After the replicas converged it proves, record by record:
//!
//! - **no lost write**: every field an acknowledged write set holds its token on the server at
//!   the end; or the token reached the server and a later change replaced it (superseded in the
//!   server's order); or a later write of the same replica set that field again, or deleted or
//!   re-created the record, before it was pushed (superseded in the replica's order); or a
//!   conflict on that replica dropped it, and the table's rule held for that decision. A delete:
//!   the record is gone at the end, or a tombstone was applied after the delete was made and a
//!   later write re-created it, or the replica re-created it itself, or lost it in a conflict;
//! - **the decision's inputs**: the local stamp a conflict carries is at least that of every
//!   write of its replica the local record holds (`Conflict::local_hlc` is the stamp of the
//!   latest local write to the record);
//! - **the strategies' rules**, for every recorded conflict: server wins always takes the
//!   remote; client wins keeps local unless both sides are equal; last write wins keeps the
//!   local version exactly when its HLC stamp is later than the remote write's true time (the
//!   server's `updatedAt` minus the known server clock skew; within ±1.5 s either is accepted,
//!   the engine's skew estimate has HTTP `Date`'s one-second resolution), and the engine's
//!   skew-corrected remote time is within that bound; field merge keeps each side's disjoint
//!   changes and settles fields both changed by the same latest-write rule;
//! - **no resurrection**: a tombstone comes back to life only through a fresh create (a token
//!   never seen on that record), a direct server insert, or a conflict a replica decided with
//!   the remote deleted; a field value once replaced on the server comes back only through a
//!   conflict outcome that kept it;
//! - **no duplicate, no phantom**: one server record per logical create (`cid` of a
//!   server-assigned-key table; `create_count` 1 for every id), no idempotency key applied
//!   twice, every step references a server task id, and every token on the server comes from
//!   an acknowledged write, a direct server edit, or the single write a SIGKILL cut off
//!   before its acknowledgement line.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};
use tidesync::core::Stamp;
use tidesync_testkit::server::{ServerChange, ServerHandle};

use crate::model::{FIELDS, Strategy, table};
use crate::verify::{id_text, user_fields};

/// How far the engine's view of a server time may be off: HTTP `Date` has one-second
/// resolution, and the engine takes the middle of that second.
pub const MARGIN_MS: i64 = 1_500;

type Rec = Map<String, Value>;

fn rec(v: &Value) -> Option<Rec> {
    v.as_object().cloned()
}

/// An acknowledged local write.
#[derive(Clone, Debug)]
pub struct WriteEv {
    pub replica: usize,
    /// Position in the replica's history (over all its incarnations).
    pub ord: usize,
    pub src: String,
    pub n: u64,
    pub tok: String,
    pub table: String,
    /// The logical key: the record key, or the `cid` for server-assigned keys.
    pub key: String,
    pub op: String,
    pub fields: Vec<String>,
    pub idem: Option<String>,
    pub hlc: Option<u64>,
    pub at: i64,
}

impl WriteEv {
    pub fn parse(v: &Value, ord: usize) -> Option<WriteEv> {
        Some(WriteEv {
            replica: v["replica"].as_u64()? as usize,
            ord,
            src: v["src"].as_str()?.to_owned(),
            n: v["n"].as_u64()?,
            tok: v["tok"].as_str()?.to_owned(),
            table: v["table"].as_str()?.to_owned(),
            key: v["key"].as_str()?.to_owned(),
            op: v["op"].as_str()?.to_owned(),
            fields: v["fields"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect(),
            idem: v["idem"].as_str().map(str::to_owned),
            hlc: v["hlc"].as_u64(),
            at: v["at"].as_i64()?,
        })
    }
}

/// A conflict a replica's strategy decided.
#[derive(Clone, Debug)]
pub struct ConflictEv {
    pub replica: usize,
    pub ord: usize,
    pub table: String,
    /// The logical key (see [`WriteEv::key`]).
    pub key: String,
    pub detected_by: String,
    pub base: Option<Rec>,
    pub local: Option<Rec>,
    pub remote: Option<Rec>,
    pub local_hlc: u64,
    pub remote_time_ms: Option<i64>,
    pub outcome: String,
    pub merged: Option<Rec>,
    /// When the strategy decided (wall clock); the outcome is applied right after.
    pub at: i64,
}

impl ConflictEv {
    pub fn parse(v: &Value, ord: usize) -> Option<ConflictEv> {
        let table = v["table"].as_str()?.to_owned();
        let (base, local, remote) = (rec(&v["base"]), rec(&v["local"]), rec(&v["remote"]));
        let key = if table.as_str() == "tasks" {
            [&local, &remote, &base]
                .iter()
                .find_map(|r| r.as_ref().and_then(|r| r.get("cid")).map(id_text))
                .unwrap_or_else(|| id_text(&v["key"]))
        } else {
            id_text(&v["key"])
        };
        Some(ConflictEv {
            replica: v["replica"].as_u64()? as usize,
            ord,
            table,
            key,
            detected_by: v["detected_by"].as_str()?.to_owned(),
            base,
            local,
            remote,
            local_hlc: v["local_hlc"].as_u64()?,
            remote_time_ms: v["remote_time_ms"].as_i64(),
            outcome: v["outcome"].as_str()?.to_owned(),
            merged: rec(&v["merged"]),
            at: v["at"].as_i64()?,
        })
    }

    /// The record the outcome leaves locally (and pushes, unless it is the remote one).
    pub fn effective(&self) -> Option<&Rec> {
        match self.outcome.as_str() {
            "keep_local" => self.local.as_ref(),
            "merged" => self.merged.as_ref(),
            _ => self.remote.as_ref(),
        }
    }

    /// The outcome keeps something the remote side did not have.
    fn pushes_local(&self) -> bool {
        matches!(self.outcome.as_str(), "keep_local" | "merged")
    }
}

/// One violation, with the record it concerns.
#[derive(Clone, Debug)]
pub struct Violation {
    pub table: String,
    pub key: String,
    pub what: String,
}

/// What the checker counted.
#[derive(Clone, Debug, Default)]
pub struct CheckStats {
    pub field_writes: usize,
    pub reflected: usize,
    pub superseded_on_server: usize,
    pub superseded_locally: usize,
    pub lost_conflicts: usize,
    pub deletes: usize,
    pub deletes_reflected: usize,
    pub deletes_superseded: usize,
    pub revivals: usize,
    pub resurfaced_values: usize,
    pub rules_checked: usize,
    pub within_margin: usize,
    /// `(strategy, outcome)` → count.
    pub conflicts: BTreeMap<(String, String), usize>,
    pub unacked_tokens: usize,
    /// Last-write-wins (or field merge's `latest`) decisions over a remote delete that came
    /// without a remote time (a push conflict: the 409's tombstone is no record) and went to
    /// the server although the local write was later than the delete by more than the margin.
    pub delete_wins_without_time: usize,
    /// Known bugs hit (tolerated unless strict): how often, and the first occurrence.
    pub known: BTreeMap<&'static str, (usize, String)>,
}

/// Everything the checker looks at.
pub struct Input<'a> {
    pub skew_ms: i64,
    pub writes: &'a [WriteEv],
    pub conflicts: &'a [ConflictEv],
    /// Incarnations that were SIGKILLed (`src` values).
    pub killed: &'a BTreeSet<String>,
    pub changes: &'a [ServerChange],
    pub server: &'a ServerHandle,
    /// Known bugs (known_bugs.rs) count as violations too.
    pub strict: bool,
    /// Tokens of writes `Table::update` reported as failed ("vanished after update") after
    /// committing them (BUG-13).
    pub uncertain: &'a BTreeSet<String>,
    /// Writes a SIGKILL cut off before their acknowledgement (announced, `op` "cut-off"): a
    /// later write of their replica that may or may not have been made.
    pub cutoff: &'a [WriteEv],
}

/// The logical key of a server record.
fn logical(table: &str, record: &Value, key: &str) -> String {
    if table == "tasks" {
        record.get("cid").map_or(key.to_owned(), id_text)
    } else {
        key.to_owned()
    }
}

fn field<'r>(r: Option<&'r Rec>, f: &str) -> Option<&'r Value> {
    r.and_then(|r| r.get(f))
}

fn user(r: &Option<Rec>) -> Option<Rec> {
    r.as_ref().map(user_fields)
}

/// Who should win by time (last write wins, and field merge's `latest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Local,
    Remote,
    Either,
}

/// The latest-write decision for a conflict, and a complaint if the engine's skew-corrected
/// remote time is off the true one.
fn latest(c: &ConflictEv, skew_ms: i64) -> (Expect, Option<RuleError>) {
    let Some(rt) = c.remote_time_ms else {
        return (Expect::Remote, None);
    };
    if c.local_hlc == 0 {
        return (Expect::Remote, None);
    }
    let local_ms = i64::try_from(Stamp(c.local_hlc).millis()).unwrap_or(i64::MAX);
    let truth = field(c.remote.as_ref(), "updatedAt")
        .and_then(Value::as_i64)
        .map(|t| t - skew_ms);
    let mut problem = None;
    if let Some(truth) = truth
        && (rt - truth).abs() > MARGIN_MS
    {
        let text = format!(
            "the engine put the remote write at {rt} ms, but it happened at {truth} ms (server \
             clock skew {skew_ms} ms): skew correction off by {} ms",
            rt - truth
        );
        // Uncorrected: the engine had not learnt the offset yet (BUG-11).
        problem = Some(if (rt - truth - skew_ms).abs() <= MARGIN_MS {
            RuleError::Known("BUG-11", text)
        } else {
            RuleError::Broken(text)
        });
    }
    let t = truth.unwrap_or(rt);
    let expect = if local_ms > t + MARGIN_MS {
        Expect::Local
    } else if local_ms < t - MARGIN_MS {
        Expect::Remote
    } else {
        Expect::Either
    };
    (expect, problem)
}

fn outcome_matches(outcome: &str, expect: Expect) -> bool {
    match expect {
        Expect::Local => outcome == "keep_local",
        Expect::Remote => outcome == "take_remote",
        Expect::Either => matches!(outcome, "keep_local" | "take_remote"),
    }
}

/// How a decision broke its rule.
enum RuleError {
    /// A bug with a reproduction in known_bugs.rs (its name), tolerated unless strict.
    Known(&'static str, String),
    Broken(String),
}

impl From<String> for RuleError {
    fn from(text: String) -> RuleError {
        RuleError::Broken(text)
    }
}

/// Whether the decision followed the table's rule; `Err` says how it did not.
fn check_rule(c: &ConflictEv, skew_ms: i64, stats: &mut CheckStats) -> Result<(), RuleError> {
    let Some(t) = table(&c.table) else {
        return Err(format!("conflict on unknown table {}", c.table).into());
    };
    stats.rules_checked += 1;
    let equal_data = user(&c.local) == user(&c.remote);
    let identical = c.local == c.remote;
    let outcome = c.outcome.as_str();
    match t.strategy {
        Strategy::ServerWins if outcome != "take_remote" => {
            Err(format!("server wins decided `{outcome}`").into())
        }
        Strategy::ServerWins => Ok(()),
        Strategy::ClientWins if equal_data => Ok(()),
        Strategy::ClientWins if outcome != "keep_local" => {
            Err(format!("client wins decided `{outcome}` although the sides differ").into())
        }
        Strategy::ClientWins => Ok(()),
        Strategy::LastWriteWins | Strategy::FieldMerge if identical => {
            if outcome == "take_remote" {
                Ok(())
            } else {
                Err(format!("`{outcome}` for identical sides").into())
            }
        }
        Strategy::LastWriteWins => {
            let (expect, problem) = latest(c, skew_ms);
            if let Some(p) = problem {
                return Err(p);
            }
            if expect == Expect::Either {
                stats.within_margin += 1;
            }
            if outcome_matches(outcome, expect) || (equal_data && outcome == "take_remote") {
                Ok(())
            } else {
                Err(format!(
                    "last write wins decided `{outcome}`, the times say {expect:?} (local stamp \
                     {} ms, remote time {:?})",
                    Stamp(c.local_hlc).millis(),
                    c.remote_time_ms
                )
                .into())
            }
        }
        Strategy::FieldMerge => {
            let (expect, problem) = latest(c, skew_ms);
            if let Some(p) = problem {
                return Err(p);
            }
            if c.local.is_none() || c.remote.is_none() {
                if expect == Expect::Either {
                    stats.within_margin += 1;
                }
                return if outcome_matches(outcome, expect) {
                    Ok(())
                } else {
                    Err(format!(
                        "field merge (latest) decided `{outcome}` for a delete, the times say \
                         {expect:?}"
                    )
                    .into())
                };
            }
            let effective = c.effective();
            for f in FIELDS {
                let (l, r) = (field(c.local.as_ref(), f), field(c.remote.as_ref(), f));
                let b = c.base.as_ref().map(|b| b.get(f));
                let allowed: Vec<Option<&Value>> = if l == r {
                    vec![l]
                } else if b == Some(l) {
                    vec![r]
                } else if b == Some(r) {
                    vec![l]
                } else {
                    match expect {
                        Expect::Local => vec![l],
                        Expect::Remote => vec![r],
                        Expect::Either => {
                            stats.within_margin += 1;
                            vec![l, r]
                        }
                    }
                };
                let got = field(effective, f);
                if !allowed.contains(&got) {
                    return Err(format!(
                        "field merge gave `{f}` = {got:?}; base {b:?}, local {l:?}, remote {r:?} \
                         allow only {allowed:?}"
                    )
                    .into());
                }
            }
            Ok(())
        }
    }
}

/// `src.n` of a token, if it is a replica's.
fn token_src(tok: &str) -> Option<(&str, u64)> {
    let (src, n) = tok.rsplit_once('.')?;
    if src == "s" {
        return None;
    }
    Some((src, n.parse().ok()?))
}

/// `(replica, (incarnation, n))` of a replica's token (`r1k3.17`).
fn token_order(tok: &str) -> Option<(u64, (u64, u64))> {
    let (src, n) = token_src(tok)?;
    let (replica, incarnation) = src.strip_prefix('r')?.split_once('k')?;
    Some((replica.parse().ok()?, (incarnation.parse().ok()?, n)))
}

/// The known bugs still open: the only ones the default run tolerates (attributes and
/// counts). A fixed bug that shows up again is a violation. None is open: BUG-10 to BUG-15
/// are fixed.
const OPEN_BUGS: &[&str] = &[];

/// Whether a hit of `bug` is counted instead of failing the run.
pub fn tolerated(bug: &str, strict: bool) -> bool {
    !strict && OPEN_BUGS.contains(&bug)
}

/// How long after a decision its outcome may still be applied (BUG-12's window).
const RESOLUTION_WINDOW_MS: i64 = 2_000;

/// Whether a lost write fits BUG-12: its replica decided a conflict on the record shortly
/// before the write, with an outcome that overwrites the record (the resolution, applied
/// after the write, removed it).
fn fits_bug12(w: &WriteEv, conflicts: &[&ConflictEv]) -> bool {
    conflicts.iter().any(|c| {
        c.replica == w.replica
            && c.ord < w.ord
            && c.outcome != "keep_local"
            && w.at - c.at <= RESOLUTION_WINDOW_MS
    })
}

fn note_known(stats: &mut CheckStats, bug: &'static str, text: String) {
    let seen = stats.known.entry(bug).or_default();
    seen.0 += 1;
    if seen.1.is_empty() {
        seen.1 = text;
    }
}

/// Runs every check; returns the violations and the figures.
pub fn check(input: &Input<'_>) -> (Vec<Violation>, CheckStats) {
    let mut stats = CheckStats::default();
    let mut bad: Vec<Violation> = Vec::new();
    let mut violation = |table: &str, key: &str, what: String| {
        bad.push(Violation {
            table: table.to_owned(),
            key: key.to_owned(),
            what,
        });
    };

    // The server's history per logical record.
    let mut history: BTreeMap<(String, String), Vec<&ServerChange>> = BTreeMap::new();
    for c in input.changes {
        let key = logical(&c.collection, &c.record, &c.key);
        history
            .entry((c.collection.clone(), key))
            .or_default()
            .push(c);
    }
    let mut by_record_writes: HashMap<(&str, &str), Vec<&WriteEv>> = HashMap::new();
    for w in input.writes {
        by_record_writes
            .entry((w.table.as_str(), w.key.as_str()))
            .or_default()
            .push(w);
    }
    let mut by_record_conflicts: HashMap<(&str, &str), Vec<&ConflictEv>> = HashMap::new();
    for c in input.conflicts {
        by_record_conflicts
            .entry((c.table.as_str(), c.key.as_str()))
            .or_default()
            .push(c);
    }
    let acked: HashMap<&str, &WriteEv> = input.writes.iter().map(|w| (w.tok.as_str(), w)).collect();
    let mut max_acked: HashMap<&str, u64> = HashMap::new();
    for w in input.writes {
        let m = max_acked.entry(w.src.as_str()).or_default();
        *m = (*m).max(w.n);
    }

    // The local stamp a decision saw is at least that of every write of this replica the
    // local record carries (`Conflict::local_hlc`: the latest local write to the record).
    for c in input.conflicts {
        let newest = FIELDS
            .iter()
            .filter_map(|f| field(c.local.as_ref(), f).and_then(Value::as_str))
            .filter_map(|tok| acked.get(tok))
            .filter(|w| w.replica == c.replica)
            .filter_map(|w| w.hlc.map(|h| (h, w.tok.as_str())))
            .max();
        let Some((h, tok)) = newest else { continue };
        if c.local_hlc >= h {
            continue;
        }
        let text = format!(
            "replica {} decided with local stamp {} ms, but the local record carries its write \
             {tok} stamped {} ms ({})",
            c.replica,
            Stamp(c.local_hlc).millis(),
            Stamp(h).millis(),
            c.detected_by
        );
        if c.detected_by == "push_rejected" && tolerated("BUG-14", input.strict) {
            note_known(
                &mut stats,
                "BUG-14",
                format!("{}/{}: {text}", c.table, c.key),
            );
        } else {
            violation(&c.table, &c.key, text);
        }
    }

    // Strategy rules, for every decision.
    for c in input.conflicts {
        let strategy = table(&c.table).map_or("?", |t| t.strategy.label());
        *stats
            .conflicts
            .entry((strategy.to_owned(), c.outcome.clone()))
            .or_default() += 1;
        let broken = match check_rule(c, input.skew_ms, &mut stats) {
            Ok(()) => None,
            Err(RuleError::Known(bug, text)) => {
                let first = format!("{}/{} replica {}: {text}", c.table, c.key, c.replica);
                note_known(&mut stats, bug, first);
                (!tolerated(bug, input.strict)).then_some(format!("{bug}: {text}"))
            }
            Err(RuleError::Broken(text)) => Some(text),
        };
        if let Some(e) = broken {
            violation(
                &c.table,
                &c.key,
                format!(
                    "replica {} broke its table's rule ({}, detected by {}): {e}",
                    c.replica, strategy, c.detected_by
                ),
            );
        }
    }

    // An observation, not a violation (documented: without a remote time the server wins).
    for c in input.conflicts {
        let latest_rule = matches!(
            table(&c.table).map(|t| t.strategy),
            Some(Strategy::LastWriteWins | Strategy::FieldMerge)
        );
        if !latest_rule || c.remote.is_some() || c.remote_time_ms.is_some() || c.local.is_none() {
            continue;
        }
        let deleted_at = history
            .get(&(c.table.clone(), c.key.clone()))
            .and_then(|h| {
                h.iter()
                    .rfind(|x| x.deleted() && server_time(x, input.skew_ms) <= c.at)
            })
            .map(|x| server_time(x, input.skew_ms));
        let local_ms = i64::try_from(Stamp(c.local_hlc).millis()).unwrap_or(0);
        if c.outcome == "take_remote" && deleted_at.is_some_and(|d| local_ms > d + MARGIN_MS) {
            stats.delete_wins_without_time += 1;
        }
    }

    // Phantoms: tokens nobody acknowledged, on the server or in a replica's records.
    let mut unacked: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut bug13_seen: BTreeSet<String> = BTreeSet::new();
    let mut sightings: Vec<(&str, String, String, Option<&Rec>)> = input
        .changes
        .iter()
        .map(|c| {
            (
                c.collection.as_str(),
                logical(&c.collection, &c.record, &c.key),
                format!("server change #{}", c.seq),
                c.record.as_object(),
            )
        })
        .collect();
    for c in input.conflicts {
        for (side, r) in [
            ("local", &c.local),
            ("remote", &c.remote),
            ("base", &c.base),
        ] {
            sightings.push((
                c.table.as_str(),
                c.key.clone(),
                format!("the {side} record of a conflict on replica {}", c.replica),
                r.as_ref(),
            ));
        }
    }
    for (table_name, key, place, record) in &sightings {
        for f in FIELDS.iter().copied().chain(["cid"]) {
            let Some(tok) = record.and_then(|r| r.get(f)).and_then(Value::as_str) else {
                continue;
            };
            if acked.contains_key(tok) || tok.starts_with("s.") {
                continue;
            }
            if input.uncertain.contains(tok) {
                if !tolerated("BUG-13", input.strict) {
                    violation(
                        table_name,
                        key,
                        format!("BUG-13: {place} holds `{tok}`, a write reported as failed"),
                    );
                } else if bug13_seen.insert(tok.to_owned()) {
                    note_known(
                        &mut stats,
                        "BUG-13",
                        format!("{table_name}/{key}: `{tok}` reported failed, found in {place}"),
                    );
                }
                continue;
            }
            match token_src(tok) {
                Some((src, n))
                    if input.killed.contains(src)
                        && n > max_acked.get(src).copied().unwrap_or(0) =>
                {
                    unacked.entry(src.to_owned()).or_default().insert(n);
                }
                _ => violation(
                    table_name,
                    key,
                    format!("{place} holds `{tok}` in `{f}`, which no write made"),
                ),
            }
        }
    }
    for (src, ns) in &unacked {
        stats.unacked_tokens += ns.len();
        if ns.len() > 1 {
            violation(
                "*",
                src,
                format!(
                    "incarnation {src} has {} unacknowledged writes on the server ({ns:?}); a \
                     kill can cut off at most one acknowledgement",
                    ns.len()
                ),
            );
        }
    }
    let unacked_ok = |tok: &str| {
        token_src(tok).is_some_and(|(src, n)| unacked.get(src).is_some_and(|ns| ns.contains(&n)))
    };

    // No lost write.
    let empty: Vec<&ServerChange> = Vec::new();
    for w in input.writes {
        let h = history
            .get(&(w.table.clone(), w.key.clone()))
            .unwrap_or(&empty);
        let last = h.last();
        let final_live = last.filter(|c| !c.deleted());
        let conflicts = by_record_conflicts
            .get(&(w.table.as_str(), w.key.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let later_own: Vec<&WriteEv> = by_record_writes
            .get(&(w.table.as_str(), w.key.as_str()))
            .into_iter()
            .flatten()
            .copied()
            .chain(
                input
                    .cutoff
                    .iter()
                    .filter(|o| o.table == w.table && o.key == w.key),
            )
            .filter(|o| o.replica == w.replica && o.ord > w.ord)
            .collect();
        if w.op == "delete" {
            stats.deletes += 1;
            if final_live.is_none() {
                stats.deletes_reflected += 1;
                continue;
            }
            // The record was deleted at the time of the delete (a concurrent delete got
            // there first) or a tombstone was applied after it: the delete took effect, and a
            // later change in the server's order re-created the record.
            let current_then = h
                .iter()
                .rfind(|c| server_time(c, input.skew_ms) <= w.at)
                .is_some_and(|c| c.deleted());
            let tombstone_after = current_then
                || h.iter()
                    .any(|c| c.deleted() && server_time(c, input.skew_ms) >= w.at - 2);
            let recreated = later_own.iter().any(|o| o.op != "patch");
            let lost = conflicts.iter().any(|c| {
                c.replica == w.replica
                    && c.ord > w.ord
                    && c.local.is_none()
                    && c.effective().is_some()
            });
            // The delete met the replica's own create, still unsent: both vanish together
            // (create + delete coalesce to nothing); the record the server has is another one.
            let own_before: Vec<&WriteEv> = by_record_writes
                .get(&(w.table.as_str(), w.key.as_str()))
                .map(|ws| {
                    ws.iter()
                        .copied()
                        .filter(|o| o.replica == w.replica && o.ord < w.ord)
                        .collect()
                })
                .unwrap_or_default();
            let annihilated = w.idem.is_none()
                && own_before
                    .iter()
                    .rev()
                    .take_while(|o| o.op != "delete")
                    .find(|o| o.op == "create")
                    .is_some_and(|create| {
                        !h.iter().any(|c| {
                            FIELDS.iter().any(|f| {
                                c.record.get(*f).and_then(Value::as_str)
                                    == Some(create.tok.as_str())
                            })
                        })
                    });
            // …or met the re-create its replica queued when a conflict over a remote delete
            // kept the local record (an unsent create too).
            let own_conflict_before = conflicts
                .iter()
                .filter(|c| c.replica == w.replica && c.ord < w.ord)
                .max_by_key(|c| c.ord);
            let recreate_annihilated = w.idem.is_none()
                && own_conflict_before.is_some_and(|c| {
                    c.remote.is_none()
                        && c.pushes_local()
                        && !own_before.iter().any(|o| o.op == "delete" && o.ord > c.ord)
                });
            if annihilated || recreate_annihilated {
                stats.deletes_reflected += 1;
            } else if tombstone_after || recreated {
                stats.deletes_superseded += 1;
            } else if lost {
                stats.lost_conflicts += 1;
            } else if fits_bug12(w, conflicts) && tolerated("BUG-12", input.strict) {
                note_known(
                    &mut stats,
                    "BUG-12",
                    format!(
                        "{}/{}: delete {} (replica {})",
                        w.table, w.key, w.tok, w.replica
                    ),
                );
            } else {
                violation(
                    &w.table,
                    &w.key,
                    format!(
                        "acknowledged delete {} (replica {}) lost: the record is live at the end, \
                         no tombstone was applied after it, and no conflict or later write of \
                         that replica explains it",
                        w.tok, w.replica
                    ),
                );
            }
            continue;
        }
        for f in &w.fields {
            stats.field_writes += 1;
            let tok = Value::from(w.tok.as_str());
            if final_live.and_then(|c| c.record.get(f)) == Some(&tok) {
                stats.reflected += 1;
                continue;
            }
            if h.iter().any(|c| c.record.get(f) == Some(&tok)) {
                stats.superseded_on_server += 1;
                continue;
            }
            // A later write of the same replica set the field again: acknowledged, or the
            // one a kill cut off before its acknowledgement (found on the server).
            let own_records = conflicts
                .iter()
                .filter(|c| c.replica == w.replica)
                .filter_map(|c| c.local.as_ref());
            let later_unacked = h
                .iter()
                .filter_map(|c| c.record.as_object())
                .chain(own_records)
                .any(|r| {
                    r.get(f)
                        .and_then(Value::as_str)
                        .filter(|t| unacked_ok(t))
                        .and_then(token_order)
                        .is_some_and(|(replica, order)| {
                            Some((replica, order)) > token_order(&w.tok)
                                && Some(replica) == token_order(&w.tok).map(|o| o.0)
                        })
                });
            if later_unacked
                || later_own
                    .iter()
                    .any(|o| o.op != "patch" || o.fields.iter().any(|g| g == f))
            {
                stats.superseded_locally += 1;
                continue;
            }
            let lost = conflicts.iter().any(|c| {
                c.replica == w.replica
                    && field(c.local.as_ref(), f) == Some(&tok)
                    && field(c.effective(), f) != Some(&tok)
            });
            if lost {
                stats.lost_conflicts += 1;
                continue;
            }
            if fits_bug12(w, conflicts) && tolerated("BUG-12", input.strict) {
                note_known(
                    &mut stats,
                    "BUG-12",
                    format!(
                        "{}/{}: {} of `{f}` by {} (replica {})",
                        w.table, w.key, w.op, w.tok, w.replica
                    ),
                );
                continue;
            }
            violation(
                &w.table,
                &w.key,
                format!(
                    "acknowledged write {} ({} of `{f}`, replica {}) lost: never on the server, \
                     not superseded by a later write of that replica, not dropped by a conflict",
                    w.tok, w.op, w.replica
                ),
            );
        }
    }

    // No resurrection.
    let create_entries: BTreeSet<&String> = input
        .writes
        .iter()
        .filter(|w| w.op == "create" || w.op == "put")
        .filter_map(|w| w.idem.as_ref())
        .collect();
    for ((table_name, key), h) in &history {
        let conflicts = by_record_conflicts
            .get(&(table_name.as_str(), key.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for i in 1..h.len() {
            let (prev, cur) = (h[i - 1], h[i]);
            if !prev.deleted() || cur.deleted() {
                continue;
            }
            stats.revivals += 1;
            let fresh = FIELDS.iter().any(|f| {
                let Some(tok) = cur.record.get(*f).and_then(Value::as_str) else {
                    return false;
                };
                // A create or put, or a later edit folded into the same (create) entry.
                let creates = acked.get(tok).is_some_and(|w| {
                    w.op == "create"
                        || w.op == "put"
                        || w.idem.as_ref().is_some_and(|i| create_entries.contains(i))
                }) || unacked_ok(tok);
                creates
                    && !h[..i]
                        .iter()
                        .any(|c| c.record.get(*f).and_then(Value::as_str) == Some(tok))
            });
            let decided = conflicts
                .iter()
                .any(|c| c.remote.is_none() && c.pushes_local());
            if !(cur.direct || fresh || decided) {
                violation(
                    table_name,
                    key,
                    format!(
                        "resurrected: change #{} brought the tombstone (version {:?}) back to \
                         life with no fresh create and no conflict decided over the delete",
                        cur.seq,
                        prev.version()
                    ),
                );
            }
        }
        for f in FIELDS {
            let mut replaced: BTreeSet<String> = BTreeSet::new();
            let mut current: Option<String> = None;
            for c in h {
                let value = c.record.get(f).and_then(Value::as_str).map(str::to_owned);
                if value == current {
                    continue;
                }
                if let Some(v) = &value
                    && replaced.contains(v)
                {
                    stats.resurfaced_values += 1;
                    let tok = Value::from(v.as_str());
                    let kept = conflicts.iter().any(|k| {
                        k.pushes_local()
                            && field(k.effective(), f) == Some(&tok)
                            && field(k.remote.as_ref(), f) != Some(&tok)
                    });
                    if !kept {
                        violation(
                            table_name,
                            key,
                            format!(
                                "`{f}` = {v} came back in change #{} after it had been \
                                 replaced, and no conflict outcome kept it",
                                c.seq
                            ),
                        );
                    }
                }
                if let Some(old) = current.take() {
                    replaced.insert(old);
                }
                current = value;
            }
        }
    }

    // No duplicate; references hold.
    for t in crate::model::TABLES {
        let all: Vec<Value> = input
            .server
            .records(t.name)
            .into_iter()
            .chain(input.server.tombstones(t.name))
            .collect();
        for r in &all {
            let created = input.server.create_count(t.name, &r["id"]);
            if created != 1 {
                violation(
                    t.name,
                    &id_text(&r["id"]),
                    format!("created {created} times on the server"),
                );
            }
        }
        if t.server_ids {
            let mut by_cid: HashMap<String, usize> = HashMap::new();
            for r in &all {
                *by_cid
                    .entry(r.get("cid").map_or_else(String::new, id_text))
                    .or_default() += 1;
            }
            for (cid, n) in by_cid.into_iter().filter(|(_, n)| *n > 1) {
                violation(
                    t.name,
                    &cid,
                    format!("DUPLICATE: {n} server records for one create"),
                );
            }
        }
        if let Some(target) = t.references {
            for r in input.server.records(t.name) {
                let task = r.get("task").map(id_text).unwrap_or_default();
                if input.server.record_any(target, task.as_str()).is_none() {
                    violation(
                        t.name,
                        &id_text(&r["id"]),
                        format!("references {target} `{task}`, which the server does not have"),
                    );
                }
            }
        }
    }
    let mut applied: HashMap<String, usize> = HashMap::new();
    for r in input.server.request_log() {
        if let (true, Some(key)) = (r.applied_fresh(), r.idempotency_key()) {
            *applied.entry(key.to_owned()).or_default() += 1;
        }
    }
    for (key, n) in applied.into_iter().filter(|(_, n)| *n > 1) {
        violation("*", &key, format!("idempotency key applied {n} times"));
    }
    if input.server.idempotency_mismatches() > 0 {
        violation(
            "*",
            "*",
            format!(
                "{} requests reused an idempotency key for another operation",
                input.server.idempotency_mismatches()
            ),
        );
    }
    (bad, stats)
}

/// When a change was applied, on the machine's clock.
fn server_time(c: &ServerChange, skew_ms: i64) -> i64 {
    c.record
        .get("updatedAt")
        .and_then(Value::as_i64)
        .map_or(i64::MIN, |t| t - skew_ms)
}

fn short_rec(r: Option<&Rec>) -> String {
    match r {
        None => "∅".to_owned(),
        Some(r) => {
            let parts: Vec<String> = FIELDS
                .iter()
                .map(|f| format!("{f}={}", r.get(*f).map_or("-".to_owned(), id_text)))
                .collect();
            let extra: String = ["task", "cid"]
                .iter()
                .filter_map(|f| r.get(*f).map(|v| format!(" {f}={}", id_text(v))))
                .collect();
            format!(
                "{{{}{extra} v{}}}",
                parts.join(" "),
                r.get("version").map_or("-".to_owned(), id_text)
            )
        }
    }
}

/// The history of one record: its writes, conflicts and server changes (the last 30 of each).
pub fn excerpt(input: &Input<'_>, table_name: &str, key: &str) -> String {
    let mut out = format!("history of {table_name}/{key}:\n");
    let writes: Vec<&WriteEv> = input
        .writes
        .iter()
        .filter(|w| w.table == table_name && w.key == key)
        .collect();
    out.push_str(&format!("  local writes ({}):\n", writes.len()));
    for w in writes.iter().rev().take(30).rev() {
        out.push_str(&format!(
            "    t={} replica {} #{} {} {} {:?} hlc={:?} idem={}\n",
            w.at,
            w.replica,
            w.ord,
            w.tok,
            w.op,
            w.fields,
            w.hlc.map(|h| Stamp(h).millis()),
            w.idem.as_deref().unwrap_or("-")
        ));
    }
    let conflicts: Vec<&ConflictEv> = input
        .conflicts
        .iter()
        .filter(|c| c.table == table_name && c.key == key)
        .collect();
    out.push_str(&format!("  conflicts ({}):\n", conflicts.len()));
    for c in conflicts.iter().rev().take(30).rev() {
        out.push_str(&format!(
            "    replica {} #{} {} -> {}: base {} local {} remote {} => {} (local stamp {} ms, \
             remote time {:?})\n",
            c.replica,
            c.ord,
            c.detected_by,
            c.outcome,
            short_rec(c.base.as_ref()),
            short_rec(c.local.as_ref()),
            short_rec(c.remote.as_ref()),
            short_rec(c.effective()),
            Stamp(c.local_hlc).millis(),
            c.remote_time_ms
        ));
    }
    let changes: Vec<&ServerChange> = input
        .changes
        .iter()
        .filter(|c| c.collection == table_name && logical(table_name, &c.record, &c.key) == key)
        .collect();
    out.push_str(&format!("  server changes ({}):\n", changes.len()));
    for c in changes.iter().rev().take(30).rev() {
        let r = c.record.as_object();
        out.push_str(&format!(
            "    #{} t={} {}{} by {}\n",
            c.seq,
            server_time(c, input.skew_ms),
            short_rec(r),
            if c.deleted() { " DELETED" } else { "" },
            if c.direct {
                "direct edit".to_owned()
            } else {
                c.idempotency_key.clone().unwrap_or_else(|| "-".to_owned())
            }
        ));
    }
    out
}
