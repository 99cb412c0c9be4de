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

use indexmap::IndexMap;
use serde::ser::{Serialize, SerializeMap, Serializer};

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

/// An ordered map with JavaScript's own-property key order (see the module docs).
///
/// Keys and values are held behind `Arc`s, so that many maps can hold one entry: the
/// simulated browsers of one topic each keep a list of thousands of presences that are mostly
/// the same, and [`JsMap::insert_shared`] lets them share each key and presence instead of
/// copying them (a value is copied only when one map changes it, [`JsMap::get_mut`]).
#[derive(Clone, Debug)]
pub struct JsMap<V> {
    indices: BTreeMap<u32, (Arc<str>, Arc<V>)>,
    named: IndexMap<Arc<str>, Arc<V>, KeyHash>,
}

impl<V> Default for JsMap<V> {
    fn default() -> Self {
        JsMap {
            indices: BTreeMap::new(),
            named: IndexMap::default(),
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
            named: IndexMap::with_capacity_and_hasher(n, KeyHash::default()),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.indices.len() + self.named.len()
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
        match array_index(key) {
            Some(index) => self.indices.get(&index).map(|(_, v)| v),
            None => self.named.get(key),
        }
    }

    /// The slot of `key`: replacing the `Arc` changes this map only.
    pub fn get_shared_mut(&mut self, key: &str) -> Option<&mut Arc<V>> {
        match array_index(key) {
            Some(index) => self.indices.get_mut(&index).map(|(_, v)| v),
            None => self.named.get_mut(key),
        }
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

    /// [`JsMap::insert`] of a key and a value that other maps may hold too.
    pub fn insert_shared(&mut self, key: Arc<str>, value: Arc<V>) -> Option<Arc<V>> {
        match array_index(&key) {
            Some(index) => self.indices.insert(index, (key, value)).map(|(_, v)| v),
            None => self.named.insert(key, value),
        }
    }

    /// The slot of `key`, and whether it was empty: then `value()` is put there, as
    /// [`JsMap::insert_shared`] puts it. One lookup, where a `get_shared_mut` that misses and
    /// the `insert_shared` after it hash and probe twice (a simulated client does this for
    /// every key a diff joins).
    pub fn slot_or_insert_shared(
        &mut self,
        key: &Arc<str>,
        value: impl FnOnce() -> Arc<V>,
    ) -> (&mut Arc<V>, bool) {
        match array_index(key) {
            Some(index) => match self.indices.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => (&mut e.into_mut().1, false),
                std::collections::btree_map::Entry::Vacant(e) => {
                    (&mut e.insert((key.clone(), value())).1, true)
                }
            },
            None => match self.named.entry(key.clone()) {
                indexmap::map::Entry::Occupied(e) => (e.into_mut(), false),
                indexmap::map::Entry::Vacant(e) => (e.insert(value()), true),
            },
        }
    }

    /// `delete obj[key]`: the remaining keys keep their order.
    pub fn remove(&mut self, key: &str) -> Option<Arc<V>> {
        match array_index(key) {
            Some(index) => self.indices.remove(&index).map(|(_, v)| v),
            None => self.named.shift_remove(key),
        }
    }

    /// Keys and values in property order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.iter_shared().map(|(k, v)| (&**k, &**v))
    }

    /// Keys and values in property order, as the map holds them.
    pub fn iter_shared(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<V>)> {
        let indices = self.indices.values().map(|(k, v)| (k, v));
        indices.chain(self.named.iter())
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
        let owned = |(k, v): (Arc<str>, Arc<V>)| (k.to_string(), Arc::unwrap_or_clone(v));
        let indices = self.indices.into_values().map(owned);
        let named = self.named.into_iter().map(owned);
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
