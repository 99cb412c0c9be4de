//! Vector clocks (`Phoenix.Tracker.Clock`): a replica's view of how many events of every other
//! replica it has seen. A missing entry counts as 0.

use crate::types::ReplicaRef;
use std::collections::BTreeMap;

/// `replica => clock`: every dot `(r, 1..=clock)` is known.
pub type Context = BTreeMap<ReplicaRef, u64>;

/// True when `a` has seen at least everything `b` has. Phoenix answers `false` outright when
/// `a` has fewer entries than `b`, even if the extra entries of `b` are 0; that shortcut is
/// part of the reference's behaviour (it decides transfers), so it is kept.
pub fn dominates(a: &Context, b: &Context) -> bool {
    if a.len() < b.len() {
        return false;
    }
    b.iter()
        .all(|(r, &cb)| a.get(r).copied().unwrap_or(0) >= cb)
}

/// Phoenix's `dominates_or_equal?`: `a` is at least `b` on every replica *of `a`* (entries only
/// in `b` are not looked at). Two empty clocks are equal; an empty `a` dominates nothing else.
/// Used for delta ranges, where only the replicas a range mentions matter.
pub fn dominates_or_equal(a: &Context, b: &Context) -> bool {
    if a.is_empty() {
        return b.is_empty();
    }
    a.iter()
        .all(|(r, &ca)| ca >= b.get(r).copied().unwrap_or(0))
}

/// Pointwise maximum; keys of either side are kept.
pub fn upperbound(a: &Context, b: &Context) -> Context {
    let mut out = a.clone();
    for (r, &c) in b {
        let e = out.entry(r.clone()).or_insert(c);
        *e = (*e).max(c);
    }
    out
}

/// Pointwise minimum over shared keys; keys present on one side only are kept as they are
/// (Phoenix's `lowerbound`, which is what delta ranges rely on).
pub fn lowerbound(a: &Context, b: &Context) -> Context {
    let mut out = a.clone();
    for (r, &c) in b {
        let e = out.entry(r.clone()).or_insert(c);
        *e = (*e).min(c);
    }
    out
}

/// Only the entries of `keep`.
pub fn filter_replicas<'a>(c: &Context, keep: impl IntoIterator<Item = &'a ReplicaRef>) -> Context {
    keep.into_iter()
        .filter_map(|r| c.get(r).map(|&v| (r.clone(), v)))
        .collect()
}

/// A set of clocks sampled from peers, kept free of members dominated by the others' upper
/// bound. The shard uses it to pick which peers to ask for a transfer: only the ones that know
/// something nobody else in the sample knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockSet<N> {
    members: Vec<(N, Context)>,
}

impl<N: Clone + PartialEq> ClockSet<N> {
    pub fn new() -> Self {
        Self {
            members: Vec::new(),
        }
    }

    pub fn from_members(members: Vec<(N, Context)>) -> Self {
        Self { members }
    }

    /// Adds `clock` sampled from `node`, unless the set already knows all of it. Members the
    /// new clock dominates are dropped; the order of the result follows Phoenix's
    /// `append_clock` (the newcomer first, then the kept members reversed), since the shard
    /// asks for transfers in that order.
    pub fn append(&mut self, node: N, clock: Context) {
        if clock.is_empty() {
            return;
        }
        let big = self
            .members
            .iter()
            .fold(Context::new(), |acc, (_, c)| upperbound(&acc, c));
        if dominates(&clock, &big) {
            self.members = vec![(node, clock)];
        } else if dominates(&big, &clock) {
            // nothing new in it
        } else {
            let mut kept = Vec::with_capacity(self.members.len() + 1);
            let mut insert = false;
            for (n, c) in self.members.drain(..) {
                if dominates(&clock, &c) {
                    insert = true;
                } else {
                    insert = insert || !dominates(&c, &clock);
                    kept.push((n, c));
                }
            }
            kept.reverse();
            if insert {
                kept.insert(0, (node, clock));
            }
            self.members = kept;
        }
    }

    /// The nodes whose clocks remain, in the order they were added.
    pub fn replicas(&self) -> Vec<N> {
        self.members.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn members(&self) -> &[(N, Context)] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn clear(&mut self) {
        self.members.clear();
    }
}
