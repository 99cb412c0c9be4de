//! A string-keyed map that iterates in JavaScript's own-property order.
//!
//! phoenix.js keeps presences in a plain object and walks it with
//! `Object.getOwnPropertyNames`, so the order of `list()`, of callbacks and of the diff
//! application itself is the engine's property order: every canonical array index
//! (`"0"` ..= `"4294967294"`, no sign, no leading zero) first in ascending numeric order, then
//! every other key in insertion order. Re-assigning a key keeps its place; deleting and
//! re-adding moves a non-index key to the end. A Rust client that wants the same callbacks and
//! lists in the same order has to reproduce exactly that.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashTable;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::hash::BuildHasher;

/// The array index a key names, if it is one: the canonical decimal form of an integer in
/// `0..=4294967294` (2^32 - 2; 2^32 - 1 is the one integer that is not an array index).
pub fn array_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    let value: u64 = key.parse().ok()?;
    if value > 4_294_967_294 {
        return None;
    }
    u32::try_from(value).ok()
}

/// How `named` keys are hashed: foldhash with its fixed seed. The map's order is its
/// insertion order whatever the hash, so the hash only has to be fast: a simulated client
/// looks up and inserts a key of its list for every presence message.
type KeyHash = foldhash::fast::FixedState;

fn hash_key(key: &str) -> u64 {
    KeyHash::default().hash_one(key)
}

/// How many named keys a list finds by scanning [`Named::tags`]; a longer list builds a hash
/// table of places. A simulated browser's list of a topic of a few hundred presences is the
/// common case, and a table costs it about 40 bytes a key (the table's buckets, and entries
/// reserved to match its room) where the scan costs one: one byte a key read eight at a time
/// is about as fast as a hash probe up to a few hundred keys.
const SCAN_MAX: usize = 256;

/// The tag of a key for [`Named::tags`]: the top byte of its hash.
fn tag_of(hash: u64) -> u8 {
    (hash >> 56) as u8
}

/// The first place `i` at or after which `tags[i] == tag` and `is_key(i)`.
///
/// Eight tags at a time: the bytes of a word that equal `tag` become zero, and the classic
/// zero-byte test marks them (and, after a zero byte, maybe a byte that is not: those are
/// looked at again).
fn scan_tags(tags: &[u8], tag: u8, mut is_key: impl FnMut(usize) -> bool) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let pattern = LOW * u64::from(tag);
    let mut words = tags.chunks_exact(8);
    let mut base = 0;
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes) ^ pattern;
        let mut marks = x.wrapping_sub(LOW) & !x & HIGH;
        while marks != 0 {
            let i = base + (marks.trailing_zeros() / 8) as usize;
            if tags[i] == tag && is_key(i) {
                return Some(i);
            }
            marks &= marks - 1;
        }
        base += 8;
    }
    let rest = words.remainder();
    (0..rest.len())
        .find(|&j| rest[j] == tag && is_key(base + j))
        .map(|j| base + j)
}

/// One key and its value, as maps hold them: many maps can hold one entry (see [`JsMap`]).
pub type Entry<V> = Arc<(Arc<str>, Arc<V>)>;

/// The table of the places of `entries`, with room for one more.
fn index<V>(entries: &[Entry<V>]) -> HashTable<u32> {
    let mut places = HashTable::with_capacity(entries.len() + 1);
    for (i, entry) in entries.iter().enumerate() {
        places.insert_unique(hash_key(&entry.0), i as u32, |&i| {
            hash_key(&entries[i as usize].0)
        });
    }
    places
}

/// The place of `key` in `places`, or the place it is given: the next entry's.
fn place_or_add<V>(
    places: &mut HashTable<u32>,
    entries: &[Entry<V>],
    key: &str,
    hash: u64,
) -> Result<usize, usize> {
    places.reserve(1, |&i| hash_key(&entries[i as usize].0));
    let found = places.entry(
        hash,
        |&i| *entries[i as usize].0 == *key,
        |&i| hash_key(&entries[i as usize].0),
    );
    match found {
        hashbrown::hash_table::Entry::Occupied(e) => Ok(*e.get() as usize),
        hashbrown::hash_table::Entry::Vacant(e) => {
            let i = entries.len();
            e.insert(i as u32);
            Err(i)
        }
    }
}

/// The keys that are not array indices, in insertion order: the entries in a `Vec`, found by
/// scanning one byte of each key's hash while there are at most [`SCAN_MAX`] of them, then
/// through their places in a hash table. An `IndexMap` would do, but it keeps each key's hash
/// beside it and a `usize` per slot of its table: about 42 bytes a key where this takes 25
/// (plus the room left at the end of the vectors), and a simulation holds one list per
/// browser, hundreds of thousands of lists.
#[derive(Clone)]
struct Named<V> {
    entries: Vec<Entry<V>>,
    /// The tag of each entry's key ([`tag_of`]), in entry order; empty once `places` is made.
    tags: Vec<u8>,
    /// Each entry's place in `entries` (a list of more than 2^32 keys does not fit in
    /// memory), once there have been more than [`SCAN_MAX`] keys; then kept for good.
    places: Option<HashTable<u32>>,
}

impl<V> Named<V> {
    fn with_capacity(n: usize) -> Self {
        let mut named = Named {
            entries: Vec::with_capacity(n),
            tags: Vec::new(),
            places: None,
        };
        if n > SCAN_MAX {
            named.places = Some(HashTable::with_capacity(n));
        } else {
            named.tags.reserve_exact(n);
        }
        named
    }

    fn place(&self, key: &str) -> Option<usize> {
        self.place_hashed(key, hash_key(key))
    }

    fn place_hashed(&self, key: &str, hash: u64) -> Option<usize> {
        let entries = &self.entries;
        match &self.places {
            Some(places) => places
                .find(hash, |&i| *entries[i as usize].0 == *key)
                .map(|&i| i as usize),
            None => scan_tags(&self.tags, tag_of(hash), |i| *entries[i].0 == *key),
        }
    }

    /// Makes room for one more entry: a full list grows by an eighth (at least 4), so a list
    /// built a key at a time holds little room it does not use.
    fn room_for_one(&mut self) {
        let len = self.entries.len();
        if len == self.entries.capacity() {
            self.entries.reserve_exact((len / 8).max(4));
        }
        if self.places.is_none() && self.tags.len() == self.tags.capacity() {
            self.tags
                .reserve_exact(self.entries.capacity() - self.tags.len());
        }
    }

    /// The place of `key`, or where it goes (last) with room made for it (and, without a
    /// table of places, its tag put there).
    fn place_or_room(&mut self, key: &str) -> Result<usize, usize> {
        let hash = hash_key(key);
        if self.places.is_none() {
            if let Some(i) = self.place_hashed(key, hash) {
                return Ok(i);
            }
            if self.entries.len() < SCAN_MAX {
                self.room_for_one();
                self.tags.push(tag_of(hash));
                return Err(self.entries.len());
            }
            // past `SCAN_MAX` keys: a table of places from now on
            self.tags = Vec::new();
        }
        let entries = &self.entries;
        let places = self.places.get_or_insert_with(|| index(entries));
        let found = place_or_add(places, entries, key, hash);
        if found.is_err() {
            self.room_for_one();
        }
        found
    }

    fn insert(&mut self, entry: Entry<V>) -> Option<Arc<V>> {
        match self.place_or_room(&entry.0) {
            Ok(i) => Some(Arc::clone(
                &std::mem::replace(&mut self.entries[i], entry).1,
            )),
            Err(_) => {
                self.entries.push(entry);
                None
            }
        }
    }

    fn entry_or_insert(
        &mut self,
        key: &str,
        entry: impl FnOnce() -> Entry<V>,
    ) -> (&mut Entry<V>, bool) {
        match self.place_or_room(key) {
            Ok(i) => (&mut self.entries[i], false),
            Err(i) => {
                self.entries.push(entry());
                (&mut self.entries[i], true)
            }
        }
    }

    /// Removes `key`; the keys after it move up one place.
    fn remove(&mut self, key: &str) -> Option<Arc<V>> {
        let entries = &self.entries;
        let i = match &mut self.places {
            Some(places) => {
                let found = places
                    .find_entry(hash_key(key), |&i| *entries[i as usize].0 == *key)
                    .ok()?;
                let (i, _) = found.remove();
                for place in places.iter_mut() {
                    if *place > i {
                        *place -= 1;
                    }
                }
                i as usize
            }
            None => {
                let i = self.place(key)?;
                self.tags.remove(i);
                i
            }
        };
        Some(Arc::clone(&self.entries.remove(i).1))
    }
}

/// An ordered map with JavaScript's own-property key order (see the module docs).
///
/// Keys and values are held behind `Arc`s, and each pair of them behind one more ([`Entry`]),
/// so that many maps can hold one entry: the simulated browsers of one topic each keep a list
/// of thousands of presences that are mostly the same, and [`JsMap::insert_entry`] and
/// [`JsMap::entry_or_insert`] let them share each entry (a pointer a key) instead of a key
/// and a presence (two pointers and a length); an entry, and its value, is copied only when
/// one map changes it ([`JsMap::get_mut`], [`JsMap::get_shared_mut`]).
#[derive(Clone)]
pub struct JsMap<V> {
    indices: BTreeMap<u32, Entry<V>>,
    named: Named<V>,
}

impl<V: std::fmt::Debug> std::fmt::Debug for JsMap<V> {
    /// As a derived `Debug` over an `IndexMap` of the named keys wrote it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Named<'a, V>(&'a [Entry<V>]);
        impl<V: std::fmt::Debug> std::fmt::Debug for Named<'_, V> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|e| (&e.0, &e.1)))
                    .finish()
            }
        }
        f.debug_struct("JsMap")
            .field("indices", &self.indices)
            .field("named", &Named(&self.named.entries))
            .finish()
    }
}

impl<V> Default for JsMap<V> {
    fn default() -> Self {
        JsMap {
            indices: BTreeMap::new(),
            named: Named::with_capacity(0),
        }
    }
}

impl<V: PartialEq> PartialEq for JsMap<V> {
    /// Equal when the same keys, in the same order, hold equal values.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl<V> JsMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        JsMap::default()
    }

    /// An empty map with room for `n` keys that are not array indices.
    pub fn with_capacity(n: usize) -> Self {
        JsMap {
            indices: BTreeMap::new(),
            named: Named::with_capacity(n),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.indices.len() + self.named.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.get_shared(key).map(|v| &**v)
    }

    /// The value under `key` as the map holds it (maybe shared with other maps).
    pub fn get_shared(&self, key: &str) -> Option<&Arc<V>> {
        self.entry(key).map(|e| &e.1)
    }

    /// The entry of `key` (maybe shared with other maps).
    pub fn entry(&self, key: &str) -> Option<&Entry<V>> {
        match array_index(key) {
            Some(index) => self.indices.get(&index),
            None => self.named.place(key).map(|i| &self.named.entries[i]),
        }
    }

    /// The entry of `key`, to replace: replacing it (or changing it through `Arc::make_mut`)
    /// changes this map only.
    pub fn entry_mut(&mut self, key: &str) -> Option<&mut Entry<V>> {
        match array_index(key) {
            Some(index) => self.indices.get_mut(&index),
            None => self.named.place(key).map(|i| &mut self.named.entries[i]),
        }
    }

    /// The slot of `key`: replacing the `Arc` changes this map only (the entry is copied
    /// first if another map holds it too).
    pub fn get_shared_mut(&mut self, key: &str) -> Option<&mut Arc<V>> {
        self.entry_mut(key).map(|e| &mut Arc::make_mut(e).1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get_shared(key).is_some()
    }

    /// `obj[key] = value`: a present key keeps its place, a new one takes its JavaScript place.
    /// Returns the value it replaced.
    pub fn insert(&mut self, key: String, value: V) -> Option<Arc<V>> {
        self.insert_shared(key.into(), Arc::new(value))
    }

    /// [`JsMap::insert`] of a key and a value that other maps may hold too (as a new entry).
    pub fn insert_shared(&mut self, key: Arc<str>, value: Arc<V>) -> Option<Arc<V>> {
        self.insert_entry(Arc::new((key, value)))
    }

    /// [`JsMap::insert`] of an entry that other maps may hold too.
    pub fn insert_entry(&mut self, entry: Entry<V>) -> Option<Arc<V>> {
        match array_index(&entry.0) {
            Some(index) => self
                .indices
                .insert(index, entry)
                .map(|old| Arc::clone(&old.1)),
            None => self.named.insert(entry),
        }
    }

    /// The entry of `key`, and whether it was missing: then `entry()` (whose key must be
    /// `key`) is put there, as [`JsMap::insert_entry`] puts it. One lookup, where an
    /// `entry_mut` that misses and the `insert_entry` after it hash and probe twice (a
    /// simulated client does this for every key a diff joins).
    pub fn entry_or_insert(
        &mut self,
        key: &str,
        entry: impl FnOnce() -> Entry<V>,
    ) -> (&mut Entry<V>, bool) {
        match array_index(key) {
            Some(index) => match self.indices.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => (e.into_mut(), false),
                std::collections::btree_map::Entry::Vacant(e) => (e.insert(entry()), true),
            },
            None => self.named.entry_or_insert(key, entry),
        }
    }

    /// The slot of `key`, and whether it was empty: then `value()` is put there, as
    /// [`JsMap::insert_shared`] puts it ([`JsMap::entry_or_insert`] with a new entry; a
    /// present one is copied first if another map holds it too).
    pub fn slot_or_insert_shared(
        &mut self,
        key: &Arc<str>,
        value: impl FnOnce() -> Arc<V>,
    ) -> (&mut Arc<V>, bool) {
        let (entry, new) = self.entry_or_insert(key, || Arc::new((key.clone(), value())));
        (&mut Arc::make_mut(entry).1, new)
    }

    /// `delete obj[key]`: the remaining keys keep their order.
    pub fn remove(&mut self, key: &str) -> Option<Arc<V>> {
        match array_index(key) {
            Some(index) => self.indices.remove(&index).map(|old| Arc::clone(&old.1)),
            None => self.named.remove(key),
        }
    }

    /// Keys and values in property order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.iter_shared().map(|(k, v)| (&**k, &**v))
    }

    /// Keys and values in property order, as the map holds them.
    pub fn iter_shared(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<V>)> {
        self.entries().map(|e| (&e.0, &e.1))
    }

    /// The entries in property order, as the map holds them.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<V>> {
        self.indices.values().chain(self.named.entries.iter())
    }

    /// Keys in property order (`Object.getOwnPropertyNames`).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// Values in property order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<V: PartialEq> JsMap<V> {
    /// Whether both maps hold the same keys, in any order, each with an equal value (a value
    /// both hold by one `Arc` is not compared).
    ///
    /// Two lists of browsers that took the same keys in the same order (most browsers of one
    /// node) are compared entry by entry down both vectors, a key and a value by pointer
    /// where they share them; only from the first entry that differs on is each key looked up
    /// in the other map. A simulation compares thousands of such lists at its end, and a
    /// lookup per key (a hash, a probe, a string compare) cost each comparison about ten
    /// times the walk.
    pub fn same_entries_any_order(&self, other: &JsMap<V>) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let same_value = |a: &Arc<V>, b: &Arc<V>| Arc::ptr_eq(a, b) || **a == **b;
        // the entries both hold at the same place: their keys are unique in each map, so
        // none of the remaining keys is among them
        let alike = self
            .entries()
            .zip(other.entries())
            .take_while(|(a, b)| {
                Arc::ptr_eq(a, b)
                    || ((Arc::ptr_eq(&a.0, &b.0) || *a.0 == *b.0) && same_value(&a.1, &b.1))
            })
            .count();
        self.iter_shared()
            .skip(alike)
            .all(|(key, a)| other.get_shared(key).is_some_and(|b| same_value(a, b)))
    }
}

impl<V: Clone> JsMap<V> {
    /// The value under `key`, mutably (copied first if another map holds it too).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.get_shared_mut(key).map(Arc::make_mut)
    }
}

impl<V: Clone> IntoIterator for JsMap<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;

    /// Entries in property order (a value another map holds too is copied).
    fn into_iter(self) -> Self::IntoIter {
        let owned = |e: Entry<V>| {
            let (k, v) = Arc::unwrap_or_clone(e);
            (k.to_string(), Arc::unwrap_or_clone(v))
        };
        let indices = self.indices.into_values().map(owned);
        let named = self.named.entries.into_iter().map(owned);
        indices.chain(named).collect::<Vec<_>>().into_iter()
    }
}

impl<V> FromIterator<(String, V)> for JsMap<V> {
    /// Inserts in iteration order, which is what `JSON.parse` does with an object's members
    /// (a repeated key keeps its first place and its last value).
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut map = JsMap::new();
        for (key, value) in iter {
            map.insert(key, value);
        }
        map
    }
}

impl<V: Serialize> Serialize for JsMap<V> {
    /// A JSON object with keys in property order (what `JSON.stringify` writes).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_array_indices_only() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("10"), Some(10));
        assert_eq!(array_index("4294967294"), Some(4_294_967_294));
        for not_index in [
            "",
            "01",
            "007",
            "-1",
            "+1",
            "1.0",
            " 1",
            "4294967295",
            "99999999999",
            "1e3",
            "١",
        ] {
            assert_eq!(array_index(not_index), None, "{not_index:?}");
        }
    }

    #[test]
    fn property_order_is_indices_ascending_then_insertion() {
        let mut map: JsMap<u8> = ["b", "10", "a", "2", "007", "4294967295", "4294967294", "0"]
            .into_iter()
            .map(|k| (k.to_owned(), 0))
            .collect();
        let keys: Vec<&str> = map.keys().collect();
        assert_eq!(
            keys,
            ["0", "2", "10", "4294967294", "b", "a", "007", "4294967295"]
        );
        // Re-assigning keeps the place; delete + add moves a named key to the end.
        map.insert("b".to_owned(), 1);
        assert_eq!(map.keys().nth(4), Some("b"));
        map.remove("b");
        map.insert("b".to_owned(), 2);
        assert_eq!(map.keys().last(), Some("b"));
        map.remove("2");
        map.insert("2".to_owned(), 3);
        assert_eq!(map.keys().nth(1), Some("2"));
        let owned: Vec<String> = map.clone().into_iter().map(|(k, _)| k).collect();
        assert_eq!(owned, map.keys().collect::<Vec<_>>());
    }

    /// Inserts, slots and deletes drawn from a fixed sequence, checked after each against
    /// the plainest model of a JavaScript object's named keys: a list in insertion order.
    #[test]
    fn named_keys_keep_insertion_order_through_many_deletes() {
        let mut map: JsMap<u64> = JsMap::new();
        let mut model: Vec<(String, u64)> = Vec::new();
        let mut x: u64 = 18;
        for step in 0..20_000u64 {
            // a linear congruential sequence is enough to mix the operations
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let key = format!("k{}", (x >> 33) % 300);
            let held = model.iter().position(|(k, _)| *k == key);
            match (x >> 20) % 3 {
                0 => {
                    let removed = map.remove(&key).map(|v| *v);
                    assert_eq!(removed, held.map(|i| model.remove(i).1), "{step}");
                }
                1 => {
                    let before = map.insert(key.clone(), step).map(|v| *v);
                    assert_eq!(before, held.map(|i| model[i].1), "{step}");
                    match held {
                        Some(i) => model[i].1 = step,
                        None => model.push((key, step)),
                    }
                }
                _ => {
                    let shared: Arc<str> = key.as_str().into();
                    let (slot, new) = map.slot_or_insert_shared(&shared, || Arc::new(step));
                    assert_eq!(
                        (**slot, new),
                        (held.map_or(step, |i| model[i].1), held.is_none())
                    );
                    if held.is_none() {
                        model.push((key, step));
                    }
                }
            }
            assert_eq!(map.len(), model.len());
            if step % 97 == 0 {
                let listed: Vec<(&str, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
                let wanted: Vec<(&str, u64)> =
                    model.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                assert_eq!(listed, wanted, "{step}");
                for (k, v) in &model {
                    assert_eq!(map.get(k), Some(v), "{step} {k}");
                }
            }
        }
    }

    /// The word-at-a-time scan against the plain one, over tags of few values (many matches,
    /// zero bytes beside matches, which the zero-byte test may mark falsely) and lengths
    /// that end inside a word.
    #[test]
    fn tag_scan_is_the_first_match_in_order() {
        use proptest::prelude::*;
        let tags = prop::collection::vec(
            prop::sample::select(vec![0u8, 1, 0x7f, 0x80, 0x81, 0xfe, 0xff]),
            0..40,
        );
        let cases = (
            tags,
            prop::collection::vec(any::<bool>(), 40),
            any::<u8>(),
            0u8..7,
        );
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(4096));
        let result = runner.run(&cases, |(tags, is_key, any_tag, pick)| {
            // a tag that is there most of the time
            let tag = tags.get(usize::from(pick)).copied().unwrap_or(any_tag);
            let plain = (0..tags.len()).find(|&i| tags[i] == tag && is_key[i]);
            let mut asked = Vec::new();
            let found = scan_tags(&tags, tag, |i| {
                asked.push(i);
                is_key[i]
            });
            prop_assert_eq!(found, plain);
            // only places holding the tag are looked at, in order
            prop_assert!(asked.iter().all(|&i| tags[i] == tag));
            prop_assert!(asked.windows(2).all(|w| w[0] < w[1]));
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// Lists that grow past [`SCAN_MAX`] keys (from the scan to the table of places) and
    /// shrink again, made empty or with room for some keys, against a list of keys in
    /// insertion order; every key looked up after every step near the crossing.
    #[test]
    fn named_keys_across_the_scan_and_the_table() {
        for (start, capacity) in [(0u64, 0usize), (1, 100), (2, SCAN_MAX), (3, SCAN_MAX + 1)] {
            let mut map: JsMap<u64> = JsMap::with_capacity(capacity);
            let mut model: Vec<(String, u64)> = Vec::new();
            let mut x: u64 = start;
            for step in 0..6_000u64 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let key = format!("user:{}", (x >> 33) % 700);
                let held = model.iter().position(|(k, _)| *k == key);
                // mostly adds for the first half, mostly removes for the second
                let remove_below = if step < 3_000 { 1 } else { 7 };
                if (x >> 20) % 8 < remove_below {
                    let removed = map.remove(&key).map(|v| *v);
                    assert_eq!(removed, held.map(|i| model.remove(i).1), "{start} {step}");
                } else {
                    let shared: Arc<str> = key.as_str().into();
                    let (slot, new) = map.slot_or_insert_shared(&shared, || Arc::new(step));
                    assert_eq!(new, held.is_none(), "{start} {step} {key}");
                    match held {
                        Some(i) => {
                            *slot = Arc::new(step);
                            model[i].1 = step;
                        }
                        None => model.push((key, step)),
                    }
                }
                assert_eq!(map.len(), model.len());
                let near = model.len().abs_diff(SCAN_MAX) < 8;
                if near || step % 61 == 0 {
                    let listed: Vec<(&str, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
                    let wanted: Vec<(&str, u64)> =
                        model.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                    assert_eq!(listed, wanted, "{start} {step}");
                    for n in 0..700 {
                        let k = format!("user:{n}");
                        let v = model.iter().find(|(m, _)| *m == k).map(|(_, v)| v);
                        assert_eq!(map.get(&k), v, "{start} {step} {k}");
                    }
                }
            }
            assert!(model.len() < SCAN_MAX / 2, "the list shrank again");
        }
    }

    /// [`JsMap::same_entries_any_order`] against the plain comparison (sorted entries),
    /// over maps that share a prefix of entries (by pointer, as browsers' lists share them)
    /// and then differ in order, keys or values.
    #[test]
    fn same_entries_any_order_is_sorted_equality() {
        use proptest::prelude::*;
        let entry = (0u8..12, 0u8..3);
        let maps = (
            prop::collection::vec(entry.clone(), 0..10),
            prop::collection::vec(entry.clone(), 0..8),
            prop::collection::vec(entry, 0..8),
            any::<bool>(),
        );
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2048));
        let result = runner.run(&maps, |(common, a_rest, b_rest, shuffle)| {
            let key = |k: u8| -> Arc<str> {
                // named keys and array indices both
                if k.is_multiple_of(3) {
                    format!("{k}").into()
                } else {
                    format!("k{k}").into()
                }
            };
            let mut a: JsMap<u8> = JsMap::new();
            let mut b: JsMap<u8> = JsMap::new();
            for &(k, v) in &common {
                let (k, v) = (key(k), Arc::new(v));
                a.insert_shared(k.clone(), v.clone());
                b.insert_shared(k, v);
            }
            for &(k, v) in &a_rest {
                a.insert_shared(key(k), Arc::new(v));
            }
            for &(k, v) in &b_rest {
                b.insert_shared(key(k), Arc::new(v));
            }
            if shuffle {
                // the same entries, b's named keys in reverse order
                let entries: Vec<(String, u8)> =
                    a.iter().map(|(k, v)| (k.to_owned(), *v)).collect();
                b = entries.into_iter().rev().collect();
            }
            let sorted = |m: &JsMap<u8>| {
                let mut e: Vec<(String, u8)> = m.iter().map(|(k, v)| (k.to_owned(), *v)).collect();
                e.sort();
                e
            };
            let plain = sorted(&a) == sorted(&b);
            prop_assert_eq!(a.same_entries_any_order(&b), plain);
            prop_assert_eq!(b.same_entries_any_order(&a), plain);
            prop_assert!(a.same_entries_any_order(&a.clone()));
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    #[test]
    fn a_slot_is_the_present_value_or_a_new_key_in_its_javascript_place() {
        let keys = ["b", "10", "a", "2", "007", "4294967295", "0"];
        let mut by_slot: JsMap<u8> = JsMap::new();
        let mut by_insert: JsMap<u8> = JsMap::new();
        for (n, key) in keys.into_iter().chain(["a", "10", "c"]).enumerate() {
            let value = u8::try_from(n).unwrap_or(u8::MAX);
            let key: Arc<str> = key.into();
            let present = by_insert.get(&key).copied();
            let (slot, new) = by_slot.slot_or_insert_shared(&key, || Arc::new(value));
            assert_eq!(new, present.is_none(), "{key}");
            assert_eq!(**slot, present.unwrap_or(value), "{key}");
            *slot = Arc::new(value);
            by_insert.insert(key.to_string(), value);
        }
        assert_eq!(by_slot, by_insert);
        assert_eq!(
            by_slot.keys().collect::<Vec<_>>(),
            ["0", "2", "10", "b", "a", "007", "4294967295", "c"]
        );
    }
}
