//! [`SampledList`]: one topic's list as a node answers a sampler, in one flat sorted slice.
//!
//! A simulator keeps every node's list of every topic (and the last sample's, while the next
//! one is built): at 16 nodes that is 16 copies of every presence, and twice that while a heal
//! changes every list. As a [`RefList`] (`key → phx_ref → meta`, two levels of `BTreeMap`) a
//! presence cost about 450 bytes per copy, most of it the 11-slot leaf that a one-ref inner
//! map allocates; flat, it costs one 56-byte entry.

use super::RefList;
use phxsim_tracker::{Meta, Name};
use std::sync::Arc;

/// One entry of a [`SampledList`]: a key and one of its presences (its `phx_ref` and meta), or
/// the key alone when none of its metas carries a ref (a list keeps such a key).
pub type SampledEntry = (Name, Option<(Name, Meta)>);

/// `key → phx_ref → meta`, the same list as a [`RefList`] holds (and compared as one), kept as
/// one slice of [`SampledEntry`]s sorted by key and then ref: per key either its refs, each
/// once, or one entry of the key alone. Read through the same shape as a `RefList`:
/// [`SampledList::iter`] gives each key with its [`Refs`].
///
/// The slice is shared: a node keeps the list it answered last (to patch it at the next
/// answer) in the same block as the copy it gave away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampledList {
    entries: Arc<[SampledEntry]>,
}

impl SampledList {
    /// The list of `entries` given in any order, as a `RefList` built by inserting them one
    /// after another would hold it: a later entry of the same key and ref replaces an earlier
    /// one, and a key alone is kept only if no entry gives it a ref.
    pub fn from_entries(entries: Vec<SampledEntry>) -> SampledList {
        SampledList {
            entries: Arc::from(normalized(entries)),
        }
    }

    /// A list of entries already sorted by key and then ref, each key's as
    /// [`SampledList::from_entries`] leaves them (its refs once each, or the key alone).
    pub(crate) fn from_sorted(entries: Vec<SampledEntry>) -> SampledList {
        debug_assert!(
            entries
                .windows(2)
                .all(|w| (&w[0].0, w[0].1.as_ref().map(|e| &e.0))
                    < (&w[1].0, w[1].1.as_ref().map(|e| &e.0))),
            "entries not sorted and unique"
        );
        SampledList {
            entries: Arc::from(entries),
        }
    }

    /// Every entry, sorted by key and then ref.
    pub fn entries(&self) -> &[SampledEntry] {
        &self.entries
    }

    /// No key at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each key, in order, with its presences.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, Refs<'_>)> {
        self.entries
            .chunk_by(|a, b| a.0 == b.0)
            .map(|run| (&run[0].0, Refs(run)))
    }

    /// Each key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Name> {
        self.iter().map(|(k, _)| k)
    }

    /// The same entries with the same meta texts (not only equal as JSON): the one list can
    /// stand for the other in every reading, byte for byte.
    ///
    /// Keys and refs are compared first, over the whole list: they are held in the entries,
    /// while each meta text is a block elsewhere in memory. Two lists of a topic that differ
    /// mostly differ by a presence (a join storm, a split), and then no meta is read at all.
    /// One shared slice, or one meta block, is the same text without reading it.
    pub fn same_text(&self, other: &SampledList) -> bool {
        let pairs = || self.entries.iter().zip(other.entries.iter());
        if Arc::ptr_eq(&self.entries, &other.entries) {
            return true;
        }
        self.entries.len() == other.entries.len()
            && pairs().all(|(a, b)| {
                a.0 == b.0
                    && match (&a.1, &b.1) {
                        (None, None) => true,
                        (Some((r1, _)), Some((r2, _))) => r1 == r2,
                        _ => false,
                    }
            })
            && pairs().all(|(a, b)| match (&a.1, &b.1) {
                // one block is one text, and telling so reads neither
                (Some((_, m1)), Some((_, m2))) => m1.same_block(m2) || m1.as_str() == m2.as_str(),
                _ => true,
            })
    }

    /// The same list as a [`RefList`].
    pub fn to_ref_list(&self) -> RefList {
        let mut out = RefList::new();
        for (key, refs) in self.iter() {
            out.insert(
                key.clone(),
                refs.iter().map(|(r, m)| (r.clone(), m.clone())).collect(),
            );
        }
        out
    }

    /// Whether `list` holds the same keys, refs and metas (metas compared as JSON, pointer
    /// first), without building either list in the other's form.
    pub fn same_as(&self, list: &RefList) -> bool {
        let mut mine = self.iter();
        for (key, refs) in list {
            match mine.next() {
                Some((k, r))
                    if k == key
                        && r.len() == refs.len()
                        && r.iter().zip(refs).all(|(a, b)| a.0 == b.0 && a.1 == b.1) => {}
                _ => return false,
            }
        }
        mine.next().is_none()
    }
}

impl From<&RefList> for SampledList {
    fn from(list: &RefList) -> SampledList {
        let mut entries = Vec::new();
        for (key, refs) in list {
            if refs.is_empty() {
                entries.push((key.clone(), None));
            }
            entries.extend(
                refs.iter()
                    .map(|(r, m)| (key.clone(), Some((r.clone(), m.clone())))),
            );
        }
        // already sorted and unique: a RefList's order is the slice's
        SampledList {
            entries: Arc::from(entries),
        }
    }
}

impl From<RefList> for SampledList {
    fn from(list: RefList) -> SampledList {
        SampledList::from(&list)
    }
}

/// `entries` given in any order as a [`SampledList`] holds them: sorted by key and then ref, a
/// later entry of the same key and ref replacing an earlier one, a key alone kept only if no
/// entry gives it a ref. The entries of one key come out as they would among other keys'.
pub(crate) fn normalized(mut entries: Vec<SampledEntry>) -> Vec<SampledEntry> {
    // stable: of one (key, ref) the later entry stays later; a key alone sorts first
    entries.sort_by(|(k1, e1), (k2, e2)| {
        k1.cmp(k2)
            .then_with(|| e1.as_ref().map(|e| &e.0).cmp(&e2.as_ref().map(|e| &e.0)))
    });
    let mut out: Vec<SampledEntry> = Vec::with_capacity(entries.len());
    for entry in entries {
        match out.last_mut() {
            Some(last)
                if last.0 == entry.0
                    && (last.1.is_none() || same_ref(last.1.as_ref(), entry.1.as_ref())) =>
            {
                if entry.1.is_some() || last.1.is_none() {
                    *last = entry;
                }
            }
            _ => out.push(entry),
        }
    }
    out
}

/// Two entries of one key hold the same ref.
fn same_ref(a: Option<&(Name, Meta)>, b: Option<&(Name, Meta)>) -> bool {
    matches!((a, b), (Some((r1, _)), Some((r2, _))) if r1 == r2)
}

/// One key's presences in a [`SampledList`], by ref (a key alone has none).
#[derive(Clone, Copy, Debug)]
pub struct Refs<'a>(&'a [SampledEntry]);

impl<'a> Refs<'a> {
    /// Each ref with its meta, in ref order.
    pub fn iter(self) -> impl Iterator<Item = (&'a Name, &'a Meta)> {
        self.0
            .iter()
            .filter_map(|(_, e)| e.as_ref().map(|(r, m)| (r, m)))
    }

    /// Each ref, in order.
    pub fn keys(self) -> impl Iterator<Item = &'a Name> {
        self.iter().map(|(r, _)| r)
    }

    /// Each meta, in ref order.
    pub fn values(self) -> impl Iterator<Item = &'a Meta> {
        self.iter().map(|(_, m)| m)
    }

    /// How many refs.
    pub fn len(self) -> usize {
        if self.is_empty() { 0 } else { self.0.len() }
    }

    /// The key alone, with no ref.
    pub fn is_empty(self) -> bool {
        self.0.first().is_none_or(|(_, e)| e.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random entries, keys and refs from small sets so that they repeat, some without a ref.
    fn entries(rng: &mut ChaCha8Rng) -> Vec<SampledEntry> {
        (0..rng.gen_range(0..12))
            .map(|_| {
                let key = Name::from(format!("k{}", rng.gen_range(0..4)));
                let presence = rng.gen_bool(0.8).then(|| {
                    let r = format!("r{}", rng.gen_range(0..3));
                    let meta = serde_json::json!({"phx_ref": r, "v": rng.gen_range(0..100)});
                    (Name::from(r), Meta::new(meta))
                });
                (key, presence)
            })
            .collect()
    }

    /// What a node built before: every entry inserted into nested maps, one after another.
    fn by_maps(entries: &[SampledEntry]) -> RefList {
        let mut out = RefList::new();
        for (key, presence) in entries {
            let refs = out.entry(key.clone()).or_default();
            if let Some((r, m)) = presence {
                refs.insert(r.clone(), m.clone());
            }
        }
        out
    }

    /// Seeded random entries: the flat list reads, compares and converts as the maps do.
    #[test]
    fn the_flat_list_is_the_nested_maps_list() {
        let mut rng = ChaCha8Rng::seed_from_u64(19);
        let mut replaced = 0;
        for case in 0..3000 {
            let e = entries(&mut rng);
            let maps = by_maps(&e);
            let flat = SampledList::from_entries(e.clone());
            assert_eq!(flat.to_ref_list(), maps, "case {case}: {e:?}");
            assert_eq!(flat, SampledList::from(&maps), "case {case}");
            assert!(flat.same_as(&maps), "case {case}");
            assert_eq!(flat.is_empty(), maps.is_empty());
            assert!(flat.keys().eq(maps.keys()), "case {case}");
            for ((k1, r1), (k2, r2)) in flat.iter().zip(&maps) {
                assert_eq!(k1, k2);
                assert_eq!(r1.len(), r2.len());
                assert_eq!(r1.is_empty(), r2.is_empty());
                assert!(r1.keys().eq(r2.keys()));
                assert!(r1.values().eq(r2.values()));
            }
            // another list: same_as agrees with the maps' equality
            let other = by_maps(&entries(&mut rng));
            assert_eq!(flat.same_as(&other), maps == other, "case {case}");
            replaced += usize::from(maps.values().map(|r| r.len()).sum::<usize>() < e.len());
        }
        assert!(replaced > 1000, "repeats exercised: {replaced}");
    }

    /// `same_text` asks for the same texts: metas equal as JSON but written in another field
    /// order are equal lists, not the same text; a list is the same text as its own copy.
    #[test]
    fn same_text_is_byte_for_byte() {
        let a = Meta::parse(r#"{"phx_ref":"r","v":1}"#).unwrap();
        let b = Meta::parse(r#"{"v":1,"phx_ref":"r"}"#).unwrap();
        let list =
            |m: &Meta| SampledList::from_entries(vec![("k".into(), Some(("r".into(), m.clone())))]);
        assert_eq!(list(&a), list(&b));
        assert!(!list(&a).same_text(&list(&b)));
        assert!(list(&a).same_text(&list(&Meta::parse(a.as_str()).unwrap())));
        let key_alone = SampledList::from_entries(vec![("k".into(), None)]);
        assert!(!key_alone.same_text(&list(&a)) && !list(&a).same_text(&key_alone));
        assert!(key_alone.same_text(&key_alone.clone()));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..500 {
            let (x, y) = (
                SampledList::from_entries(entries(&mut rng)),
                SampledList::from_entries(entries(&mut rng)),
            );
            // metas written by one writer: the same text is the same list
            assert_eq!(x.same_text(&y), x == y);
        }
    }

    /// A later meta of one key and ref replaces the earlier one, as a map insert does.
    #[test]
    fn a_later_meta_of_a_ref_wins() {
        let m1 = Meta::new(serde_json::json!({"phx_ref": "r", "v": 1}));
        let m2 = Meta::new(serde_json::json!({"phx_ref": "r", "v": 2}));
        let flat = SampledList::from_entries(vec![
            ("k".into(), Some(("r".into(), m1))),
            ("k".into(), None),
            ("k".into(), Some(("r".into(), m2.clone()))),
        ]);
        assert_eq!(flat.entries(), &[("k".into(), Some(("r".into(), m2)))]);
    }
}
