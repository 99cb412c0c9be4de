//! The pending delta (a `State` in `:delta` mode in Phoenix): what a replica added and removed
//! since its last heartbeat, plus the clock range it covers. Also `merge_deltas`, which the
//! shard's delta generations are built from.

use crate::clock::{self, Context};
use crate::types::{ReplicaRef, Tag, TrackedMeta};
use std::collections::{BTreeMap, BTreeSet};

/// `replica => dots known but not (yet) contiguous with the context`.
pub type Clouds = BTreeMap<ReplicaRef, BTreeSet<u64>>;

/// Is `tag` in `clouds`?
pub(crate) fn cloud_contains(clouds: &Clouds, tag: &Tag) -> bool {
    clouds
        .get(&tag.replica)
        .is_some_and(|c| c.contains(&tag.clock))
}

pub(crate) fn cloud_insert(clouds: &mut Clouds, tag: &Tag) {
    clouds
        .entry(tag.replica.clone())
        .or_default()
        .insert(tag.clock);
}

pub(crate) fn cloud_remove(clouds: &mut Clouds, tag: &Tag) {
    if let Some(c) = clouds.get_mut(&tag.replica) {
        c.remove(&tag.clock);
    }
}

/// A delta-state: values added in the window, and every dot created *or removed* in it (a dot in
/// `clouds` with no value is a tombstone). Its context is always empty; `range` says which own
/// (and, after merging generations, which remote) clocks it spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    pub values: BTreeMap<Tag, TrackedMeta>,
    pub clouds: Clouds,
    /// `(start, end)`: the sender had seen `start` before the first event of the delta and
    /// `end` after the last.
    pub range: (Context, Context),
}

/// `merge_deltas` refuses two deltas with a gap between them: merging them would claim a range
/// whose middle neither covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deltas are not contiguous")]
pub struct NotContiguous;

impl Delta {
    /// An empty delta starting (and ending) at `ctx`.
    pub fn empty_at(ctx: Context) -> Self {
        Self {
            values: BTreeMap::new(),
            clouds: Clouds::new(),
            range: (ctx.clone(), ctx),
        }
    }

    /// Phoenix's `has_delta?`: anything to broadcast, i.e. any dot in the clouds (tombstones of
    /// other replicas' values count).
    pub fn has_changes(&self) -> bool {
        self.clouds.values().any(|c| !c.is_empty())
    }

    /// `delta_size`: values plus dots, the measure the generation limits apply to.
    pub fn size(&self) -> usize {
        self.values.len() + self.clouds.values().map(BTreeSet::len).sum::<usize>()
    }

    /// Has this delta observed `tag` (created or removed it)? A delta's context is empty, so
    /// only its clouds count.
    pub fn observed(&self, tag: &Tag) -> bool {
        cloud_contains(&self.clouds, tag)
    }

    /// Adds a tombstone: `tag` existed and is gone.
    pub(crate) fn tombstone(&mut self, tag: &Tag) {
        self.values.remove(tag);
        cloud_insert(&mut self.clouds, tag);
    }

    /// Combines two deltas into one covering both ranges, or refuses if there is a gap.
    /// Values: ours that the other holds too or never observed, plus the other's that we do not
    /// hold and never observed, so that a remove in either wins over an older add.
    pub fn merge(&self, other: &Delta) -> Result<Delta, NotContiguous> {
        let (ls, le) = &self.range;
        let (rs, re) = &other.range;
        if !(clock::dominates_or_equal(re, ls) && clock::dominates_or_equal(le, rs)) {
            return Err(NotContiguous);
        }
        let mut clouds = self.clouds.clone();
        for (r, dots) in &other.clouds {
            clouds
                .entry(r.clone())
                .or_default()
                .extend(dots.iter().copied());
        }
        let mut values: BTreeMap<Tag, TrackedMeta> = self
            .values
            .iter()
            .filter(|(t, _)| other.values.contains_key(t) || !other.observed(t))
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect();
        for (t, v) in &other.values {
            if !self.values.contains_key(t) && !self.observed(t) {
                values.insert(t.clone(), v.clone());
            }
        }
        Ok(Delta {
            values,
            clouds,
            range: (clock::lowerbound(ls, rs), clock::upperbound(le, re)),
        })
    }

    /// [`Delta::merge`] that consumes `self` and reuses its maps instead of copying them: what
    /// the delta generations do on every push. On a gap the delta comes back unchanged.
    pub fn merge_owned(mut self, other: &Delta) -> Result<Delta, Delta> {
        if !(clock::dominates_or_equal(&other.range.1, &self.range.0)
            && clock::dominates_or_equal(&self.range.1, &other.range.0))
        {
            return Err(self);
        }
        // ours that the other holds too or never observed (judged before the clouds grow)
        self.drop_removed_by(other);
        for (t, v) in &other.values {
            // "not held by us and not observed by us", as of before this merge: a dot we
            // observed is in our clouds, which have not been extended yet
            if !self.values.contains_key(t) && !cloud_contains(&self.clouds, t) {
                self.values.insert(t.clone(), v.clone());
            }
        }
        for (r, dots) in &other.clouds {
            self.clouds
                .entry(r.clone())
                .or_default()
                .extend(dots.iter().copied());
        }
        self.range = (
            clock::lowerbound(&self.range.0, &other.range.0),
            clock::upperbound(&self.range.1, &other.range.1),
        );
        Ok(self)
    }

    /// Drops our values that `other` observed and does not hold (it removed them). A value
    /// goes only if `other` observed its dot, so when `other` has fewer dots than we have
    /// values, walking its dots and looking ours up costs what `other` changed; a generation
    /// holds thousands of values and is pushed a few dots at a time. Otherwise every value of
    /// ours is checked against `other`.
    fn drop_removed_by(&mut self, other: &Delta) {
        let other_dots: usize = other.clouds.values().map(BTreeSet::len).sum();
        if other_dots < self.values.len() {
            for (replica, dots) in &other.clouds {
                let mut tag = Tag::new(replica.clone(), 0);
                for &clock in dots {
                    tag.clock = clock;
                    if !other.values.contains_key(&tag) {
                        self.values.remove(&tag);
                    }
                }
            }
        } else {
            self.values
                .retain(|t, _| other.values.contains_key(t) || !other.observed(t));
        }
    }

    /// The part of the delta a remote can use: values, clouds and range restricted to the
    /// replicas of `remote_context`, and never the remote's own values.
    pub fn extract(&self, remote: &ReplicaRef, remote_context: &Context) -> Delta {
        let keys = || remote_context.keys();
        Delta {
            values: self
                .values
                .iter()
                .filter(|(t, _)| &t.replica != remote && remote_context.contains_key(&t.replica))
                .map(|(t, v)| (t.clone(), v.clone()))
                .collect(),
            clouds: self
                .clouds
                .iter()
                .filter(|(r, _)| remote_context.contains_key(*r))
                .map(|(r, c)| (r.clone(), c.clone()))
                .collect(),
            range: (
                clock::filter_replicas(&self.range.0, keys()),
                clock::filter_replicas(&self.range.1, keys()),
            ),
        }
    }

    /// Forgets everything of a permdowned replica, so that it cannot come back as a zombie
    /// through a stored delta (phoenix_pubsub #55).
    pub fn remove_replica(&mut self, replica: &ReplicaRef) {
        self.range.0.remove(replica);
        self.range.1.remove(replica);
        self.clouds.remove(replica);
        self.values.retain(|t, _| &t.replica != replica);
    }
}
