//! How many records a collection holds per timestamp, with counts over a timestamp range in
//! O(log n): a feed's `total` without walking every row it counts.
//!
//! A treap keyed by timestamp whose nodes carry their subtree's sum. Priorities are a hash of
//! the key, so the shape depends only on the keys (deterministic, expected depth O(log n)).

type Link = Option<Box<Node>>;

#[derive(Debug)]
struct Node {
    ts: i64,
    /// Records at exactly `ts`.
    here: usize,
    /// Records in this subtree.
    sum: usize,
    prio: u64,
    left: Link,
    right: Link,
}

fn sum(t: &Link) -> usize {
    t.as_ref().map_or(0, |n| n.sum)
}

fn fix(node: &mut Node) {
    node.sum = node.here + sum(&node.left) + sum(&node.right);
}

/// SplitMix64 of the key: a well-spread priority without a random source.
fn prio(ts: i64) -> u64 {
    let mut z = (ts as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Splits into keys `< ts` and keys `>= ts`.
fn split(t: Link, ts: i64) -> (Link, Link) {
    match t {
        None => (None, None),
        Some(mut node) => {
            if node.ts < ts {
                let (mid, right) = split(node.right.take(), ts);
                node.right = mid;
                fix(&mut node);
                (Some(node), right)
            } else {
                let (left, mid) = split(node.left.take(), ts);
                node.left = mid;
                fix(&mut node);
                (left, Some(node))
            }
        }
    }
}

/// Joins two treaps where every key of `a` is below every key of `b`.
fn merge(a: Link, b: Link) -> Link {
    match (a, b) {
        (None, t) | (t, None) => t,
        (Some(mut a), Some(mut b)) => {
            if a.prio >= b.prio {
                a.right = merge(a.right.take(), Some(b));
                fix(&mut a);
                Some(a)
            } else {
                b.left = merge(Some(a), b.left.take());
                fix(&mut b);
                Some(b)
            }
        }
    }
}

/// Record counts by timestamp.
#[derive(Debug, Default)]
pub(crate) struct TsCounts {
    root: Link,
}

impl TsCounts {
    /// Counts one more record at `ts`.
    pub(crate) fn add(&mut self, ts: i64) {
        self.change(ts, true);
    }

    /// Counts one record fewer at `ts` (no-op if none is counted there).
    pub(crate) fn remove(&mut self, ts: i64) {
        self.change(ts, false);
    }

    fn change(&mut self, ts: i64, add: bool) {
        if self.adjust_in_place(ts, add) {
            return;
        }
        // A new timestamp, or one whose last record leaves: restructure.
        let (below, rest) = split(self.root.take(), ts);
        let (mut at, above) = match ts.checked_add(1) {
            Some(next) => split(rest, next),
            None => (rest, None),
        };
        match (&mut at, add) {
            (Some(node), true) => {
                node.here += 1;
                fix(node);
            }
            (None, true) => {
                at = Some(Box::new(Node {
                    ts,
                    here: 1,
                    sum: 1,
                    prio: prio(ts),
                    left: None,
                    right: None,
                }));
            }
            (Some(node), false) if node.here > 1 => {
                node.here -= 1;
                fix(node);
            }
            (_, false) => at = None,
        }
        self.root = merge(merge(below, at), above);
    }

    /// Adjusts the count of an existing timestamp along its path, when it stays above zero
    /// (the common case: no restructuring).
    fn adjust_in_place(&mut self, ts: i64, add: bool) -> bool {
        // Look first, so that sums are only touched when the change applies.
        let mut cur = &self.root;
        loop {
            match cur {
                None => return false,
                Some(node) if node.ts == ts => {
                    if !add && node.here <= 1 {
                        return false;
                    }
                    break;
                }
                Some(node) => {
                    cur = if ts < node.ts {
                        &node.left
                    } else {
                        &node.right
                    }
                }
            }
        }
        let mut cur = &mut self.root;
        while let Some(node) = cur {
            if add {
                node.sum += 1;
            } else {
                node.sum -= 1;
            }
            if node.ts == ts {
                if add {
                    node.here += 1;
                } else {
                    node.here -= 1;
                }
                return true;
            }
            cur = if ts < node.ts {
                &mut node.left
            } else {
                &mut node.right
            };
        }
        false
    }

    /// Records with a timestamp below `ts`.
    fn below(&self, ts: i64) -> usize {
        let mut count = 0;
        let mut cur = &self.root;
        while let Some(node) = cur {
            if node.ts < ts {
                count += sum(&node.left) + node.here;
                cur = &node.right;
            } else {
                cur = &node.left;
            }
        }
        count
    }

    /// Records with a timestamp within `lo..=hi`.
    pub(crate) fn within(&self, lo: i64, hi: i64) -> usize {
        if lo > hi {
            return 0;
        }
        let upto = match hi.checked_add(1) {
            Some(next) => self.below(next),
            None => sum(&self.root),
        };
        upto - self.below(lo)
    }

    /// Forgets every count.
    pub(crate) fn clear(&mut self) {
        self.root = None;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn counts_agree_with_a_map() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = TsCounts::default();
        let mut model: BTreeMap<i64, usize> = BTreeMap::new();
        let edge = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        for step in 0..20_000 {
            let ts = if rng.random_bool(0.05) {
                edge[rng.random_range(0..edge.len())]
            } else {
                rng.random_range(-50..50)
            };
            if rng.random_bool(0.6) {
                counts.add(ts);
                *model.entry(ts).or_default() += 1;
            } else {
                counts.remove(ts);
                if let Some(n) = model.get_mut(&ts) {
                    *n -= 1;
                    if *n == 0 {
                        model.remove(&ts);
                    }
                }
            }
            if step % 7 == 0 {
                let mut lo = edge[rng.random_range(0..edge.len())];
                let mut hi = rng.random_range(-60..60);
                if rng.random_bool(0.5) {
                    std::mem::swap(&mut lo, &mut hi);
                }
                let want: usize = if lo <= hi {
                    model.range(lo..=hi).map(|(_, n)| n).sum()
                } else {
                    0
                };
                assert_eq!(counts.within(lo, hi), want, "{lo}..={hi} at step {step}");
            }
        }
        assert_eq!(
            counts.within(i64::MIN, i64::MAX),
            model.values().sum::<usize>()
        );
    }

    #[test]
    fn a_long_ascending_run_stays_shallow() {
        fn depth(t: &Link) -> usize {
            t.as_ref()
                .map_or(0, |n| 1 + depth(&n.left).max(depth(&n.right)))
        }
        let mut counts = TsCounts::default();
        for ts in 0..100_000 {
            counts.add(ts);
        }
        assert_eq!(counts.within(10, 19), 10);
        assert!(depth(&counts.root) < 80, "depth {}", depth(&counts.root));
    }
}
