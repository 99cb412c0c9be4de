//! Presence lists that many clients hold as one: for clients whose list nobody reads in
//! JavaScript order.
//!
//! phoenix.js's list order is the order in which a client met its keys, so two browsers that
//! joined a topic at different times hold the same presences in different orders, and a
//! simulation that keeps every browser's list exact keeps thousands of copies of one list and
//! applies every diff to each of them (the larger part of a join storm's cost: each browser's
//! list is cold in cache by the time the next diff reaches it). A browser that nobody observes
//! is only ever asked what its list holds, never in which order; such a browser holds a
//! [`SharedList`] instead, which forgets the order, and gets it from [`SharedLists`], which
//! makes sure that the browsers of one host holding the same presences hold one list:
//! - every list it hands out is interned by content, so a browser that joins late and reads a
//!   `presence_state` takes the very list its neighbours reached by applying diffs;
//! - applying a diff to a list is remembered by the pair (list, diff), so the next browser
//!   that applies that diff to that list takes the result without touching a key.
//!
//! The content of a list after a state or a diff does not depend on its key order (phoenix.js
//! treats every key on its own; only the callbacks' order and `list()`'s follow the key
//! order), so a shared list holds exactly the presences the exact list would hold.

use crate::jsmap::Entry;
use crate::presence::Presence;
use crate::sync::{SharedDiff, SyncList, sync_shared_diff};
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};

/// How many entries a chunk holds when a list is built; a chunk that grows to twice this is
/// split. A change copies one chunk (the other lists keep the old one), so a chunk is small;
/// a list of many chunks costs a pointer per chunk to copy, so it is not tiny either.
const CHUNK: usize = 64;

/// A chunk that shrinks below this is merged with a neighbour when the two fit in one.
const CHUNK_MIN: usize = CHUNK / 4;

/// How keys and pairs of pointers are hashed: foldhash with its fixed seed. Nothing here is
/// iterated in hash order into anything a run shows; the hash only finds things.
type Hasher = foldhash::fast::FixedState;

fn key_hash(key: &str) -> u64 {
    Hasher::default().hash_one(key)
}

/// Presences by key, in key order, held in chunks that lists share: a copy of a list copies a
/// pointer per chunk, and a change copies the one chunk it changes.
///
/// Its `hash` is the wrapping sum of its keys' hashes: equal lists have equal hashes (it is
/// what [`SharedLists`] finds equal lists by; lists that differ only in metas share it, and are
/// told apart by comparing them).
#[derive(Clone, Debug, Default)]
pub struct SharedList {
    /// Each chunk non-empty and sorted by key; every key of a chunk below every key of the next.
    chunks: Vec<Arc<Vec<Entry<Presence>>>>,
    len: usize,
    hash: u64,
    /// Made whole by [`SharedList::from_entries`] and not changed since: every chunk but the
    /// last holds `CHUNK` entries, so [`SharedList::get_index`] finds an entry at once.
    uniform: bool,
}

impl SharedList {
    /// An empty list.
    pub fn new() -> SharedList {
        SharedList::default()
    }

    /// The list of `entries`, in any order; `None` if a key is there twice.
    pub fn from_entries(mut entries: Vec<Entry<Presence>>) -> Option<SharedList> {
        // a node lists a topic by key, so the entries of a state are mostly in order already
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if entries.windows(2).any(|w| w[0].0 == w[1].0) {
                return None;
            }
        }
        let hash = entries
            .iter()
            .fold(0u64, |h, e| h.wrapping_add(key_hash(&e.0)));
        let len = entries.len();
        // the entries move into the chunks: a copy would add to every entry's reference
        // count, and dropping `entries` would take it away again (thousands of scattered atomic
        // operations for each state a browser receives)
        let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK));
        let mut rest = entries.into_iter();
        while rest.len() > 0 {
            chunks.push(Arc::new(rest.by_ref().take(CHUNK).collect::<Vec<_>>()));
        }
        Some(SharedList {
            chunks,
            len,
            hash,
            uniform: true,
        })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, in key order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<Presence>> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Keys and presences, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Presence)> {
        self.entries().map(|e| (&*e.0, &*e.1))
    }

    /// The chunk that holds `key` or would take it (the last one for a key above them all);
    /// `None` for an empty list.
    fn chunk_of(&self, key: &str) -> Option<usize> {
        let last = self.chunks.len().checked_sub(1)?;
        let i = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|e| *e.0 < *key));
        Some(i.min(last))
    }

    /// The entry at place `i` in key order: at once in a list made whole and not changed
    /// since, else by a walk of the chunks.
    pub fn get_index(&self, i: usize) -> Option<&Entry<Presence>> {
        if self.uniform {
            return self.chunks.get(i / CHUNK)?.get(i % CHUNK);
        }
        let mut i = i;
        for chunk in &self.chunks {
            match chunk.get(i) {
                Some(e) => return Some(e),
                None => i -= chunk.len(),
            }
        }
        None
    }

    /// The entry of `key`.
    pub fn get(&self, key: &str) -> Option<&Entry<Presence>> {
        let chunk = &self.chunks[self.chunk_of(key)?];
        let at = chunk.binary_search_by(|e| (*e.0).cmp(key)).ok()?;
        Some(&chunk[at])
    }

    /// Puts `entry` under its key, in place of the entry there if any (returned).
    pub fn put(&mut self, entry: Entry<Presence>) -> Option<Entry<Presence>> {
        self.uniform = false;
        let Some(c) = self.chunk_of(&entry.0) else {
            self.hash = key_hash(&entry.0);
            self.len = 1;
            self.chunks.push(Arc::new(vec![entry]));
            return None;
        };
        let chunk = Arc::make_mut(&mut self.chunks[c]);
        match chunk.binary_search_by(|e| e.0.cmp(&entry.0)) {
            Ok(at) => Some(std::mem::replace(&mut chunk[at], entry)),
            Err(at) => {
                self.hash = self.hash.wrapping_add(key_hash(&entry.0));
                self.len += 1;
                chunk.insert(at, entry);
                if chunk.len() >= 2 * CHUNK {
                    let upper = chunk.split_off(CHUNK);
                    self.chunks.insert(c + 1, Arc::new(upper));
                }
                None
            }
        }
    }

    /// Removes `key`'s entry (returned).
    pub fn remove(&mut self, key: &str) -> Option<Entry<Presence>> {
        let c = self.chunk_of(key)?;
        self.uniform = false;
        let at = self.chunks[c].binary_search_by(|e| (*e.0).cmp(key)).ok()?;
        let chunk = Arc::make_mut(&mut self.chunks[c]);
        let removed = chunk.remove(at);
        self.hash = self.hash.wrapping_sub(key_hash(&removed.0));
        self.len -= 1;
        if chunk.is_empty() {
            self.chunks.remove(c);
        } else if chunk.len() < CHUNK_MIN {
            self.merge_around(c);
        }
        Some(removed)
    }

    /// Merges the small chunk `c` into a neighbour it fits in with.
    fn merge_around(&mut self, c: usize) {
        let fits = |a: usize, b: usize| self.chunks[a].len() + self.chunks[b].len() <= CHUNK;
        let pair = if c > 0 && fits(c - 1, c) {
            c - 1
        } else if c + 1 < self.chunks.len() && fits(c, c + 1) {
            c
        } else {
            return;
        };
        let upper = self.chunks.remove(pair + 1);
        Arc::make_mut(&mut self.chunks[pair]).extend(upper.iter().cloned());
    }

    /// Whether both lists hold the same keys with equal presences (a presence both hold by one
    /// `Arc` is not compared).
    pub fn same_content(&self, other: &SharedList) -> bool {
        self.len == other.len
            && self.hash == other.hash
            && self.entries().zip(other.entries()).all(|(a, b)| {
                Arc::ptr_eq(a, b)
                    || ((Arc::ptr_eq(&a.0, &b.0) || a.0 == b.0)
                        && (Arc::ptr_eq(&a.1, &b.1) || a.1 == b.1))
            })
    }
}

impl SyncList for SharedList {
    fn entry_of(&self, key: &str) -> Option<&Entry<Presence>> {
        self.get(key)
    }

    fn put_entry(&mut self, entry: Entry<Presence>) {
        self.put(entry);
    }

    fn remove_key(&mut self, key: &str) {
        self.remove(key);
    }

    fn has_no_keys(&self) -> bool {
        self.is_empty()
    }

    fn each_entry(&self, f: &mut dyn FnMut(&Entry<Presence>)) {
        self.entries().for_each(f);
    }
}

/// A diff applied to a list, remembered: the list, the diff and the result, held weakly (an
/// allocation a `Weak` points to is not reused, so the pointers stay theirs while the entry
/// lives; a result nobody holds any more is computed again).
struct Applied {
    list: Weak<SharedList>,
    diff: Weak<SharedDiff>,
    result: Weak<SharedList>,
}

/// The lists of one host's clients, interned by content, and the diffs applied to them (see
/// the module docs). Give one to every client of a host; the lists it hands out are the only
/// ones such clients hold.
#[derive(Default)]
pub struct SharedLists {
    /// Every list handed out and still held by some client, with its [`SharedList::hash`].
    lists: HashTable<(u64, Weak<SharedList>)>,
    /// By the pair of pointers (list, diff).
    applied: HashTable<Applied>,
    /// Lists and results nobody holds are forgotten when the tables reach this many entries.
    sweep_at: usize,
}

/// Sweeping starts at this many entries, and happens again each time they double.
const SWEEP_MIN: usize = 1024;

fn pair_hash(list: *const SharedList, diff: *const SharedDiff) -> u64 {
    Hasher::default().hash_one((list as usize, diff as usize))
}

impl SharedLists {
    /// No lists yet.
    pub fn new() -> SharedLists {
        SharedLists::default()
    }

    /// The list held by some client with the same content as `list`, or `list` itself, from
    /// now on the one handed out for that content.
    pub fn intern(&mut self, list: SharedList) -> Arc<SharedList> {
        let found = self
            .lists
            .find(list.hash, |(hash, held)| {
                *hash == list.hash && held.upgrade().is_some_and(|h| h.same_content(&list))
            })
            .and_then(|(_, held)| held.upgrade());
        if let Some(held) = found {
            return held;
        }
        let hash = list.hash;
        let list = Arc::new(list);
        self.lists
            .insert_unique(hash, (hash, Arc::downgrade(&list)), |(hash, _)| *hash);
        self.sweep();
        list
    }

    /// `list` after `diff` ([`sync_shared_diff`], without callbacks): the list that applying
    /// it to `list` gave before, if a client still holds that; else computed and interned.
    pub fn apply(&mut self, list: &Arc<SharedList>, diff: &Arc<SharedDiff>) -> Arc<SharedList> {
        let hash = pair_hash(Arc::as_ptr(list), Arc::as_ptr(diff));
        let is_pair = |a: &Applied| {
            std::ptr::eq(a.list.as_ptr(), Arc::as_ptr(list))
                && std::ptr::eq(a.diff.as_ptr(), Arc::as_ptr(diff))
        };
        if let Some(result) = self
            .applied
            .find(hash, is_pair)
            .and_then(|a| a.result.upgrade())
        {
            return result;
        }
        let mut next = SharedList::clone(list);
        sync_shared_diff(&mut next, diff, &mut ());
        let result = self.intern(next);
        let applied = Applied {
            list: Arc::downgrade(list),
            diff: Arc::downgrade(diff),
            result: Arc::downgrade(&result),
        };
        let rehash = |a: &Applied| pair_hash(a.list.as_ptr(), a.diff.as_ptr());
        match self.applied.find_mut(hash, is_pair) {
            Some(old) => *old = applied,
            None => {
                self.applied.insert_unique(hash, applied, rehash);
            }
        }
        result
    }

    /// How many lists are interned (some maybe no longer held, until the next sweep).
    pub fn lists(&self) -> usize {
        self.lists.len()
    }

    /// Forgets the lists and applications that no client can ask for again, once the tables
    /// are large.
    fn sweep(&mut self) {
        if self.lists.len() + self.applied.len() < self.sweep_at.max(SWEEP_MIN) {
            return;
        }
        self.lists.retain(|(_, held)| held.strong_count() > 0);
        self.applied.retain(|a| {
            a.list.strong_count() > 0 && a.diff.strong_count() > 0 && a.result.strong_count() > 0
        });
        self.sweep_at = 2 * (self.lists.len() + self.applied.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn entry(key: u16, v: u8) -> Entry<Presence> {
        let presence: Presence = Presence::from_value(
            "k",
            serde_json::json!({"metas": [{"phx_ref": v.to_string()}]}),
        )
        .unwrap_or_default();
        Arc::new((format!("k{key:03}").into(), Arc::new(presence)))
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(u16, u8),
        Remove(u16),
    }

    /// Keys over several chunks, so that chunks split, empty and merge.
    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u16..400, 0u8..3).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0u16..400).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// A list changed a key at a time holds what a sorted map holds, keeps its chunks within
        /// their bounds, and leaves the copy it was made from as it was.
        #[test]
        fn a_shared_list_is_a_sorted_map_and_its_copies_stay(
            start in prop::collection::vec((0u16..400, 0u8..3), 0..300),
            ops in prop::collection::vec(arb_op(), 0..600),
        ) {
            let mut model: BTreeMap<String, Entry<Presence>> = BTreeMap::new();
            for (k, v) in &start {
                let e = entry(*k, *v);
                model.insert(e.0.to_string(), e);
            }
            let mut list = SharedList::from_entries(model.values().rev().cloned().collect())
                .expect("unique keys");
            let before = list.clone();
            let before_model = model.clone();
            for op in &ops {
                match op {
                    Op::Put(k, v) => {
                        let e = entry(*k, *v);
                        let old = model.insert(e.0.to_string(), e.clone());
                        prop_assert_eq!(list.put(e).is_some(), old.is_some());
                    }
                    Op::Remove(k) => {
                        let key = format!("k{k:03}");
                        prop_assert_eq!(list.remove(&key).is_some(), model.remove(&key).is_some());
                    }
                }
                prop_assert_eq!(list.len(), model.len());
                prop_assert!(list.chunks.iter().all(|c| !c.is_empty() && c.len() < 2 * CHUNK));
            }
            let held: Vec<&str> = list.iter().map(|(k, _)| k).collect();
            let want: Vec<&str> = model.keys().map(String::as_str).collect();
            prop_assert_eq!(held, want);
            for (key, e) in &model {
                prop_assert!(list.get(key).is_some_and(|got| Arc::ptr_eq(got, e)));
            }
            let rebuilt = SharedList::from_entries(model.values().cloned().collect()).expect("unique");
            prop_assert!(rebuilt.same_content(&list));
            // by place, changed or made whole, and the copy taken before the changes
            for l in [&list, &rebuilt, &before] {
                for (i, e) in l.entries().enumerate() {
                    prop_assert!(l.get_index(i).is_some_and(|got| Arc::ptr_eq(got, e)));
                }
                prop_assert!(l.get_index(l.len()).is_none());
            }
            prop_assert_eq!(rebuilt.hash, list.hash);
            let old: Vec<&str> = before.iter().map(|(k, _)| k).collect();
            let old_want: Vec<&str> = before_model.keys().map(String::as_str).collect();
            prop_assert_eq!(old, old_want);
        }
    }

    #[test]
    fn a_state_with_a_key_twice_is_refused() {
        assert!(SharedList::from_entries(vec![entry(2, 0), entry(1, 0), entry(2, 1)]).is_none());
        assert!(SharedList::from_entries(vec![entry(1, 0), entry(2, 0)]).is_some());
    }

    #[test]
    fn lists_nobody_holds_are_swept() {
        let mut lists = SharedLists::new();
        for k in 0..3 * SWEEP_MIN as u16 {
            let list = SharedList::from_entries(vec![entry(k, 0)]).expect("one key");
            drop(lists.intern(list));
        }
        assert!(
            lists.lists() < 2 * SWEEP_MIN,
            "{} lists kept",
            lists.lists()
        );
    }
}
