//! Decoded `presence_diff` frames shared by many clients of one process.
//!
//! A server frames a broadcast once and writes the same bytes to every socket of the topic,
//! so a thousand simulated browsers of one topic receive a thousand copies of one diff.
//! Decoding is a pure function of the bytes and the serializer: the first client to receive
//! a frame decodes it and keeps the result here (a [`SharedDiff`]), the others find it by its
//! bytes and apply it; every list then holds the diff's joined keys and presences themselves
//! (`Arc`), not copies. What a client does with the diff is unchanged.
//!
//! A `presence_state` is different for every socket (it carries the join_ref), so each
//! client's payload is read here entry by entry: an entry whose JSON text a client of this
//! cache listed before is that entry again (its key and presence shared), and the metas of a
//! new one are swapped for equal ones already held ([`FrameCache::share_metas`]), so a
//! thousand clients listing one presence hold it once.

use indexmap::IndexMap;
use phxsim_wire::{JsMap, Meta, Presence, Presences, Serializer, SharedDiff};
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

/// How many frames are kept (oldest forgotten first): the copies of one broadcast reach their
/// sockets within a few simulation steps, so a few hundred cover every topic in flight.
const MAX_FRAMES: usize = 256;
/// And at most this many bytes of frame text.
const MAX_BYTES: usize = 4 << 20;

/// What the envelope of a cached frame says.
#[derive(Debug)]
pub(crate) struct CachedDiff {
    pub(crate) join_ref: Option<String>,
    pub(crate) ref_: Option<String>,
    pub(crate) topic: String,
    pub(crate) diff: SharedDiff,
}

/// The hash of the cache's maps: foldhash with its fixed seed (fast; their order does not
/// depend on it).
type TextHash = foldhash::fast::FixedState;

/// Metas held by some client, by presence key and `phx_ref`. Hashed: these maps are only
/// looked up and pruned, never iterated into anything a run shows, so their order is no
/// matter (and an `IndexMap`'s is the insertion order anyway); a hash finds a long key with
/// one comparison where a tree of thousands of keys sharing a prefix makes a dozen.
#[derive(Default)]
struct Metas {
    by_ref: IndexMap<String, IndexMap<String, Meta, TextHash>, TextHash>,
    len: usize,
    /// Unused metas are dropped when `len` reaches this.
    prune_at: usize,
}

/// Pruning starts at this many metas, and happens again each time their number doubles.
const PRUNE_MIN: usize = 1024;

impl Metas {
    /// Swaps every meta of `presence` (under `key`) that equals one held for that one, and
    /// keeps the others.
    fn share(&mut self, key: &str, presence: &mut Presence) {
        for meta in &mut presence.metas {
            let Some(phx_ref) = meta.phx_ref_str() else {
                continue;
            };
            match self.by_ref.get(key).and_then(|m| m.get(phx_ref)) {
                Some(held) if held == meta => *meta = held.clone(),
                Some(_) => {}
                None => {
                    let phx_ref = phx_ref.to_owned();
                    self.by_ref
                        .entry(key.to_owned())
                        .or_default()
                        .insert(phx_ref, meta.clone());
                    self.len += 1;
                }
            }
        }
    }

    /// Forgets the metas no client holds any more, once there are many.
    fn prune(&mut self) {
        if self.len >= self.prune_at.max(PRUNE_MIN) {
            // a meta only this cache holds (here, and maybe in `PresenceTexts`, which drops
            // it at its own next pruning) is no client's any more
            self.by_ref.retain(|_, by_ref| {
                by_ref.retain(|_, m| m.copies() > 1);
                !by_ref.is_empty()
            });
            self.len = self.by_ref.values().map(IndexMap::len).sum();
            self.prune_at = 2 * self.len;
        }
    }
}

/// Decoded presences by their JSON text (a `presence_state` entry's value), with the key they
/// were listed under: the clients' lists share both.
#[derive(Default)]
struct PresenceTexts {
    by_text: IndexMap<Box<str>, (Arc<str>, Arc<Presence>), TextHash>,
    /// Unused presences are dropped when there are this many.
    prune_at: usize,
}

impl PresenceTexts {
    /// Forgets the presences no client holds any more, once there are many.
    fn prune(&mut self) {
        if self.by_text.len() >= self.prune_at.max(PRUNE_MIN) {
            self.by_text.retain(|_, (_, p)| Arc::strong_count(p) > 1);
            self.prune_at = 2 * self.by_text.len();
        }
    }
}

/// The entries of a JSON object in wire order, each value left as JSON text.
struct Entries<'a>(Vec<(EntryKey<'a>, &'a RawValue)>);

/// An entry's key, borrowed from the payload when it has no escapes (nearly always): a state
/// of a thousand entries then costs no allocation per key that is shared.
struct EntryKey<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for EntryKey<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = EntryKey<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<EntryKey<'a>, E> {
                Ok(EntryKey(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<EntryKey<'a>, E> {
                Ok(EntryKey(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<EntryKey<'a>, E> {
                Ok(EntryKey(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Entries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries<'a>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<EntryKey<'de>, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The last state decoded: its payload text and, per entry in order, where the entry's value
/// text lies in it, its key and its presence.
///
/// Why: a topic's states differ little from one join to the next (a node lists a topic in one
/// order, by key), so the entries of a new state mostly are those of the last one, in the
/// same order. Comparing an entry with the last state's entry at the same place reads both
/// texts in order from two contiguous buffers; finding it in [`PresenceTexts`] instead costs
/// a hash over the text and three scattered reads (the table, its entry, the held text),
/// which a join storm of thousands of states of thousands of entries pays millions of times.
#[derive(Default)]
struct LastState {
    text: String,
    entries: Vec<(std::ops::Range<usize>, Arc<str>, Arc<Presence>)>,
}

impl LastState {
    /// The key and presence of the last state's entry `i`, if it has `key` and the value
    /// text `text`.
    fn same(&self, i: usize, key: &str, text: &str) -> Option<(Arc<str>, Arc<Presence>)> {
        let (range, held_key, held) = self.entries.get(i)?;
        (self.text.get(range.clone()) == Some(text) && **held_key == *key)
            .then(|| (held_key.clone(), held.clone()))
    }

    /// Where `key` is (or would be) among the last state's entries, if they are sorted by key
    /// (as a node lists them); if not, some place, where [`LastState::same`] then finds
    /// nothing more than elsewhere.
    fn place_of(&self, key: &str) -> usize {
        self.entries.partition_point(|(_, k, _)| **k < *key)
    }
}

#[derive(Default)]
struct Frames {
    metas: Metas,
    presences: PresenceTexts,
    last_state: LastState,
    /// Per serializer (V1, V2), the frames by their text (hashed, as `Metas`: the frames of
    /// one topic share a long prefix).
    by_text: [IndexMap<Arc<str>, Arc<CachedDiff>, TextHash>; 2],
    /// Oldest first.
    order: VecDeque<(usize, Arc<str>)>,
    bytes: usize,
}

/// A cache of decoded `presence_diff` text frames; cloning gives another handle to the same
/// cache. Give one to every client of a host ([`super::ClientConfig::frame_cache`]).
#[derive(Clone, Default)]
pub struct FrameCache(Arc<Mutex<Frames>>);

impl fmt::Debug for FrameCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCache")
            .field("frames", &self.frames())
            .finish()
    }
}

fn index(serializer: Serializer) -> usize {
    match serializer {
        Serializer::V1 => 0,
        Serializer::V2 => 1,
    }
}

impl FrameCache {
    /// An empty cache.
    pub fn new() -> Self {
        FrameCache::default()
    }

    /// How many frames are kept.
    pub fn frames(&self) -> usize {
        self.0.lock().map(|f| f.order.len()).unwrap_or_default()
    }

    /// Swaps every meta of `presences` that equals one already held by a client of this cache
    /// for that one (they then share their fields), and keeps the others for the next
    /// clients. Metas are compared whole: a `phx_ref` only finds the candidate.
    pub(crate) fn share_metas(&self, presences: &mut Presences) {
        let Ok(mut frames) = self.0.lock() else {
            return;
        };
        for (key, presence) in presences.iter_mut() {
            frames.metas.share(key, presence);
        }
        frames.metas.prune();
    }

    /// A `presence_state` payload given as JSON text, decoded as
    /// [`PresenceState::from_payload`](phxsim_wire::PresenceState::from_payload) decodes it
    /// and put in JavaScript order (what `syncState` walks), each key and presence shared with
    /// the clients of this cache that listed the same entry text before; the others are
    /// decoded, their metas shared as [`FrameCache::share_metas`] shares them, and kept. The
    /// presences of a topic's state are mostly the same from one join to the next, so a
    /// thousand joiners decode each about once and hold one copy. `None` if the payload is
    /// not a valid state (or repeats a key): the caller decodes it the ordinary way, which
    /// says what is wrong.
    pub(crate) fn decode_state(&self, payload: &RawValue) -> Option<JsMap<Presence>> {
        let all = payload.get();
        let Entries(entries) = serde_json::from_str(all).ok()?;
        let mut frames = self.0.lock().ok()?;
        let Frames {
            metas,
            presences,
            last_state,
            ..
        } = &mut *frames;
        let mut state = JsMap::with_capacity(entries.len());
        let mut next = Vec::with_capacity(entries.len());
        // the last state's entry expected next
        let mut at = 0;
        for (EntryKey(key), text) in entries {
            let text = text.get();
            let found = last_state.same(at, &key, text).or_else(|| {
                // not the expected entry: a key joined or left between the two states
                at = last_state.place_of(&key);
                last_state.same(at, &key, text)
            });
            let (key, presence) = match found {
                Some(entry) => {
                    at += 1;
                    entry
                }
                None => match presences.by_text.get(text) {
                    Some((held_key, held)) if **held_key == *key => {
                        (held_key.clone(), held.clone())
                    }
                    held => {
                        let value = serde_json::from_str(text).ok()?;
                        let mut presence = Presence::from_value(&key, value).ok()?;
                        metas.share(&key, &mut presence);
                        let entry: (Arc<str>, Arc<Presence>) = (key.into(), Arc::new(presence));
                        if held.is_none() {
                            presences.by_text.insert(text.into(), entry.clone());
                        }
                        entry
                    }
                },
            };
            // `text` is a slice of `all` (were it not, the range would only never match)
            let start = (text.as_ptr() as usize).wrapping_sub(all.as_ptr() as usize);
            next.push((start..start + text.len(), key.clone(), presence.clone()));
            // a repeated key: JSON.parse (and `from_payload`) keeps its first place and its
            // last value; rare enough to leave to the ordinary way
            if state.insert_shared(key, presence).is_some() {
                return None;
            }
        }
        let mut text = std::mem::take(&mut last_state.text);
        text.clear();
        text.push_str(all);
        *last_state = LastState {
            text,
            entries: next,
        };
        metas.prune();
        presences.prune();
        Some(state)
    }

    pub(crate) fn get(&self, serializer: Serializer, text: &str) -> Option<Arc<CachedDiff>> {
        let frames = self.0.lock().ok()?;
        frames.by_text[index(serializer)].get(text).cloned()
    }

    pub(crate) fn insert(&self, serializer: Serializer, text: &str, diff: Arc<CachedDiff>) {
        let Ok(mut frames) = self.0.lock() else {
            return;
        };
        let i = index(serializer);
        if frames.by_text[i].contains_key(text) || text.len() > MAX_BYTES {
            return;
        }
        let key: Arc<str> = text.into();
        frames.bytes += text.len();
        frames.order.push_back((i, key.clone()));
        frames.by_text[i].insert(key, diff);
        while frames.order.len() > MAX_FRAMES || frames.bytes > MAX_BYTES {
            let Some((i, old)) = frames.order.pop_front() else {
                break;
            };
            frames.bytes -= old.len();
            // `by_text` is never iterated: its order may change
            frames.by_text[i].swap_remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phxsim_wire::PresenceState;
    use serde_json::Value;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// What the ordinary way makes of a state payload: decoded, then put in JavaScript order.
    fn ordinary(text: &str) -> Option<JsMap<Presence>> {
        let state = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| PresenceState::from_payload(v).ok())?;
        Some(state.presences.into_iter().collect())
    }

    #[test]
    fn a_state_decodes_as_the_ordinary_way_does_and_shares_what_it_decoded_before() {
        let cache = FrameCache::new();
        let texts = [
            r#"{"u1":{"metas":[{"phx_ref":"A","n":1}]},"10":{"metas":[]},"u\u0032":{"x":1,"metas":[{"phx_ref":"B"}]}}"#,
            r#"{}"#,
            r#"{"u1":{"metas":[{"phx_ref":"A","n":1}]},"u3":{"metas":[{"phx_ref":"C","n":[1,2.5]}]}}"#,
            // the same presence text under another key is that key's
            r#"{"u4":{"metas":[{"phx_ref":"A","n":1}]}}"#,
        ];
        for text in texts {
            let cached = cache.decode_state(&raw(text));
            assert_eq!(cached, ordinary(text), "{text}");
            // key order and field order are kept too
            assert_eq!(
                serde_json::to_string(&cached).ok(),
                serde_json::to_string(&ordinary(text)).ok()
            );
        }
        // "u1" was decoded once and is shared by both states, key and presence
        let a = cache.decode_state(&raw(texts[0])).unwrap_or_default();
        let b = cache.decode_state(&raw(texts[2])).unwrap_or_default();
        let (Some((ka, a)), Some((kb, b))) = (
            a.iter_shared().find(|(k, _)| &***k == "u1"),
            b.iter_shared().find(|(k, _)| &***k == "u1"),
        ) else {
            panic!("u1 missing");
        };
        assert!(Arc::ptr_eq(a, b), "shared, not decoded twice");
        assert!(Arc::ptr_eq(ka, kb));
    }

    #[test]
    fn states_that_differ_from_the_last_by_some_entries_decode_as_the_ordinary_way_does() {
        let cache = FrameCache::new();
        let entry = |k: &str, r: &str| format!(r#""{k}":{{"metas":[{{"phx_ref":"{r}"}}]}}"#);
        let state = |entries: &[(&str, &str)]| {
            let entries: Vec<String> = entries.iter().map(|(k, r)| entry(k, r)).collect();
            format!("{{{}}}", entries.join(","))
        };
        let texts = [
            state(&[("a", "1"), ("c", "3"), ("e", "5")]),
            // one joined in the middle, one at each end
            state(&[
                ("0", "0"),
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("e", "5"),
                ("f", "6"),
            ]),
            // one left, one changed its meta
            state(&[("0", "0"), ("a", "1"), ("c", "4"), ("e", "5"), ("f", "6")]),
            // the text of the last state's entry at that place, under another key
            state(&[("0", "0"), ("b", "1"), ("c", "4"), ("e", "5"), ("f", "6")]),
            // the same presence text under the key of the entry before it
            state(&[("0", "0"), ("a", "0"), ("c", "4"), ("e", "5"), ("f", "6")]),
            // not sorted by key
            state(&[("f", "6"), ("e", "5"), ("0", "0"), ("c", "4")]),
            state(&[("f", "6"), ("e", "5"), ("0", "0"), ("c", "4")]),
            state(&[]),
            state(&[("c", "4"), ("e", "5")]),
            // a repeated key is left to the ordinary way, and the next state is still right
            state(&[("c", "4"), ("c", "4")]),
            state(&[("c", "4"), ("e", "5")]),
        ];
        let mut last: Option<JsMap<Presence>> = None;
        for text in &texts {
            let cached = cache.decode_state(&raw(text));
            let repeated = text.matches(r#""c":"#).count() > 1;
            let wanted = if repeated { None } else { ordinary(text) };
            assert_eq!(cached, wanted, "{text}");
            assert_eq!(
                serde_json::to_string(&cached).ok(),
                serde_json::to_string(&wanted).ok()
            );
            // an entry listed by the state before, with the same key and text, is shared
            if let (Some(now), Some(before)) = (&cached, &last) {
                for (key, p) in now.iter_shared() {
                    if let Some(q) = before.get_shared(key).filter(|q| ***q == **p) {
                        assert!(Arc::ptr_eq(p, q), "{key} in {text}");
                    }
                }
            }
            if cached.is_some() {
                last = cached;
            }
        }
    }

    #[test]
    fn what_the_ordinary_way_refuses_or_reads_differently_is_left_to_it() {
        let cache = FrameCache::new();
        for text in [
            // a repeated key: JSON.parse keeps the first place and the last value
            r#"{"u1":{"metas":[]},"u2":{"metas":[]},"u1":{"metas":[{"phx_ref":"A"}]}}"#,
            r#"[]"#,
            r#"{"u1":{}}"#,
            r#"{"u1":{"metas":[1]}}"#,
            r#"{"u1":{"metas":[{"n":1e400}]}}"#,
        ] {
            assert_eq!(cache.decode_state(&raw(text)), None, "{text}");
        }
    }
}
