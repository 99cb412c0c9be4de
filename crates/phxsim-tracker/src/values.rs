//! Presences by dot as an extract carries them: one vector sorted by tag, each dot once.
//!
//! An extract is written once (from the dot index, already in tag order), read once in order
//! (by a merge or an encoder) and asked "is this dot in it?" a few times: a sorted vector does
//! all three without the node allocations and pointer chasing of a tree of 100 000 entries.

use crate::types::{Tag, TrackedMeta};
use std::fmt;
use std::ops::{Bound, RangeBounds};

/// `tag → presence`, sorted by tag, each tag once. Reads like a `BTreeMap<Tag, TrackedMeta>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TagValues(Vec<(Tag, TrackedMeta)>);

/// [`TagValues::from_sorted`] was given tags out of order or twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tags not strictly ascending")]
pub struct NotSorted;

impl TagValues {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Pairs already strictly ascending by tag, kept as they are (checked, not sorted).
    pub fn from_sorted(pairs: Vec<(Tag, TrackedMeta)>) -> Result<Self, NotSorted> {
        if pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            Ok(Self(pairs))
        } else {
            Err(NotSorted)
        }
    }

    /// Empty, with room for `n` pairs (to be added by [`TagValues::push_ascending`]).
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Adds a pair after the others, if its tag comes after theirs: a decoder builds the
    /// vector as it reads, comparing each tag with the last one while both are in the cache,
    /// instead of checking the whole vector again afterwards ([`TagValues::from_sorted`]).
    /// A pair refused is handed back, so that a caller can name its tag in an error without
    /// cloning every tag it pushes.
    #[allow(clippy::result_large_err)] // the pair is the caller's own, moved back out
    pub fn push_ascending(&mut self, tag: Tag, p: TrackedMeta) -> Result<(), (Tag, TrackedMeta)> {
        match self.0.last() {
            Some((last, _)) if *last >= tag => Err((tag, p)),
            _ => {
                self.0.push((tag, p));
                Ok(())
            }
        }
    }

    /// Pairs the caller built in strictly ascending tag order (checked in debug builds).
    pub(crate) fn from_sorted_trusted(pairs: Vec<(Tag, TrackedMeta)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        Self(pairs)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In tag order.
    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&Tag, &TrackedMeta)> + ExactSizeIterator {
        self.0.iter().map(|(t, p)| (t, p))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Tag> + ExactSizeIterator {
        self.0.iter().map(|(t, _)| t)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &TrackedMeta> + ExactSizeIterator {
        self.0.iter().map(|(_, p)| p)
    }

    pub fn get(&self, tag: &Tag) -> Option<&TrackedMeta> {
        self.0
            .binary_search_by(|(t, _)| t.cmp(tag))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, tag: &Tag) -> bool {
        self.get(tag).is_some()
    }

    /// The pairs whose tag is in `range`, in tag order.
    pub fn range(
        &self,
        range: impl RangeBounds<Tag>,
    ) -> impl DoubleEndedIterator<Item = (&Tag, &TrackedMeta)> {
        let start = match range.start_bound() {
            Bound::Included(s) => self.0.partition_point(|(t, _)| t < s),
            Bound::Excluded(s) => self.0.partition_point(|(t, _)| t <= s),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => self.0.partition_point(|(t, _)| t <= e),
            Bound::Excluded(e) => self.0.partition_point(|(t, _)| t < e),
            Bound::Unbounded => self.0.len(),
        };
        self.0[start..end.max(start)].iter().map(|(t, p)| (t, p))
    }

    /// Keeps the pairs `keep` answers true for, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Tag, &TrackedMeta) -> bool) {
        self.0.retain(|(t, p)| keep(t, p));
    }

    pub fn as_slice(&self) -> &[(Tag, TrackedMeta)] {
        &self.0
    }
}

/// Collects pairs in any order; as a map, a later pair replaces an earlier one of its tag.
impl FromIterator<(Tag, TrackedMeta)> for TagValues {
    fn from_iter<I: IntoIterator<Item = (Tag, TrackedMeta)>>(iter: I) -> Self {
        let mut pairs: Vec<(Tag, TrackedMeta)> = iter.into_iter().collect();
        if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            // stable: equal tags keep their order, and the last of each run wins
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(Tag, TrackedMeta)> = Vec::with_capacity(pairs.len());
            for p in pairs {
                match out.last_mut() {
                    Some(last) if last.0 == p.0 => *last = p,
                    _ => out.push(p),
                }
            }
            pairs = out;
        }
        Self(pairs)
    }
}

impl<'a> IntoIterator for &'a TagValues {
    type Item = (&'a Tag, &'a TrackedMeta);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Tag, TrackedMeta)>,
        fn(&'a (Tag, TrackedMeta)) -> (&'a Tag, &'a TrackedMeta),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(t, p)| (t, p))
    }
}

impl IntoIterator for TagValues {
    type Item = (Tag, TrackedMeta);
    type IntoIter = std::vec::IntoIter<(Tag, TrackedMeta)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// As a map (`{tag: presence, ...}`), the way extracts printed before they were vectors.
impl fmt::Debug for TagValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ReplicaRef, ValueKey};

    fn pair(r: &str, clock: u64, v: i64) -> (Tag, TrackedMeta) {
        (
            Tag::new(ReplicaRef::new(r, 1), clock),
            TrackedMeta {
                key: ValueKey::new("t", "p", "k"),
                meta: serde_json::json!({ "v": v }).into(),
            },
        )
    }

    #[test]
    fn collecting_sorts_and_keeps_the_last_of_a_tag_as_a_map_does() {
        let v: TagValues = [
            pair("b", 1, 1),
            pair("a", 2, 2),
            pair("a", 2, 3),
            pair("a", 1, 4),
        ]
        .into_iter()
        .collect();
        let got: Vec<(String, u64, serde_json::Value)> = v
            .iter()
            .map(|(t, p)| (t.replica.name.to_string(), t.clock, p.meta.to_json()))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), 1, serde_json::json!({"v": 4})),
                ("a".into(), 2, serde_json::json!({"v": 3})),
                ("b".into(), 1, serde_json::json!({"v": 1})),
            ]
        );
        assert!(v.contains_key(&pair("a", 2, 0).0));
        let tags = |it: &mut dyn Iterator<Item = (&Tag, &TrackedMeta)>| -> Vec<u64> {
            it.map(|(t, _)| t.clock).collect()
        };
        assert_eq!(tags(&mut v.range(pair("a", 2, 0).0..)), [2, 1]);
        assert_eq!(
            tags(&mut v.range(pair("a", 1, 0).0..pair("a", 2, 0).0)),
            [1]
        );
        assert_eq!(
            tags(&mut v.range(pair("b", 2, 0).0..=pair("b", 9, 0).0)),
            [0u64; 0]
        );
        let mut w = v.clone();
        w.retain(|t, _| t.replica.name != "a");
        assert_eq!(w.len(), 1);
        assert!(!v.contains_key(&pair("a", 3, 0).0));
        assert_eq!(
            TagValues::from_sorted(vec![pair("a", 2, 0), pair("a", 2, 0)]),
            Err(NotSorted)
        );
        assert_eq!(
            TagValues::from_sorted(vec![pair("a", 1, 0), pair("a", 2, 0)]).map(|v| v.len()),
            Ok(2)
        );
        let mut pushed = TagValues::with_capacity(2);
        let (t1, p1) = pair("a", 1, 0);
        let (t2, p2) = pair("b", 1, 0);
        assert_eq!(pushed.push_ascending(t2.clone(), p2.clone()), Ok(()));
        assert_eq!(pushed.push_ascending(t1.clone(), p1.clone()), Err((t1, p1)));
        assert_eq!(pushed.push_ascending(t2.clone(), p2.clone()), Err((t2, p2)));
        assert_eq!(pushed.len(), 1);
    }
}
