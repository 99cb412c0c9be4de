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
//!
//! The clients of a cache hold their lists through it too ([`FrameCache::lists`]): the
//! clients that hold the same presences hold one list, and a diff applied to it is applied
//! once for all of them ([`SharedLists`]).

use indexmap::IndexMap;
use phxsim_wire::jsmap::Entry;
use phxsim_wire::{
    Meta, Presence, PresenceDiff, Presences, Serializer, SharedDiff, SharedList, SharedLists,
};
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
    /// Behind its own `Arc`: the cache's lists remember what applying it to a list gave
    /// ([`SharedLists::apply`]) by its pointer.
    pub(crate) diff: Arc<SharedDiff>,
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
    /// [`Metas::share`] for every presence of `presences`, then a prune.
    fn share_all(&mut self, presences: &mut Presences) {
        for (key, presence) in presences.iter_mut() {
            self.share(key, presence);
        }
        self.prune();
    }

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
    by_text: IndexMap<Box<str>, Entry<Presence>, TextHash>,
    /// Unused presences are dropped when there are this many.
    prune_at: usize,
}

impl PresenceTexts {
    /// Forgets the presences no client holds any more, once there are many.
    fn prune(&mut self) {
        if self.by_text.len() >= self.prune_at.max(PRUNE_MIN) {
            // a list holds the entry, or (having changed it) the presence
            self.by_text
                .retain(|_, e| Arc::strong_count(e) > 1 || Arc::strong_count(&e.1) > 1);
            self.prune_at = 2 * self.by_text.len();
        }
    }
}

/// The entry (key and presence) last decoded for each key, from a state or a diff's joins:
/// a state's new entry that equals the one a diff joined (or the reverse) is taken from here,
/// so that the lists built from states and those built from diffs hold one entry per presence.
/// Why: a joiner's list is interned ([`SharedLists::intern`]) by comparing it with the list
/// its neighbours built from diffs, entry by entry, and entries that are one allocation compare
/// by pointer (about a tenth of a 3 000-browser join storm went to comparing equal presences).
#[derive(Default)]
struct Entries {
    by_key: IndexMap<Arc<str>, Entry<Presence>, TextHash>,
    /// Entries no list holds are dropped when there are this many.
    prune_at: usize,
}

impl Entries {
    /// The entry held for `key` if its presence equals `presence`.
    fn equal(&self, key: &str, presence: &Presence) -> Option<Entry<Presence>> {
        self.by_key.get(key).filter(|e| *e.1 == *presence).cloned()
    }

    /// `presence` under `key` as an entry: the one held if equal, else a new one, held from
    /// now on.
    fn share(&mut self, key: &str, presence: Presence) -> Entry<Presence> {
        if let Some(held) = self.equal(key, &presence) {
            return held;
        }
        let entry: Entry<Presence> = Arc::new((key.into(), Arc::new(presence)));
        self.hold(&entry);
        entry
    }

    /// Holds `entry` as its key's latest.
    fn hold(&mut self, entry: &Entry<Presence>) {
        match self.by_key.get_mut(&*entry.0) {
            Some(held) => *held = entry.clone(),
            None => {
                self.by_key.insert(entry.0.clone(), entry.clone());
            }
        }
    }

    /// Forgets the entries no list holds any more, once there are many.
    fn prune(&mut self) {
        if self.by_key.len() >= self.prune_at.max(PRUNE_MIN) {
            self.by_key.retain(|_, e| Arc::strong_count(e) > 1);
            self.prune_at = 2 * self.by_key.len();
        }
    }
}

/// The last state decoded: its payload text and, per entry in order, where the entry lies in
/// it, its key and its presence.
///
/// Why: a topic's states differ little from one join to the next (a node lists a topic in one
/// order, by key), so the entries of a new state mostly are those of the last one, in the
/// same order. A run of them is found by comparing the new payload with the last one a word
/// at a time from where they line up: every entry of the last state that ends within the
/// equal run is that entry again, and is taken without reading its text any further. Only
/// where the two differ is the new payload split into entries; finding one of those in
/// [`PresenceTexts`] costs a hash over the text and three scattered reads, which a join storm
/// of thousands of states of thousands of entries would otherwise pay millions of times.
///
/// The entries themselves are those of the list the state became (`list`, when its text
/// listed them in key order, as a node does), read by place: holding each again beside it
/// cost two reference counts moved per entry and state, scattered atomic operations that a
/// join storm paid millions of times.
#[derive(Default)]
struct LastState {
    text: String,
    /// Per entry in order, where it lies in `text` (empty if the entries were not in key
    /// order: the next state is then split whole).
    places: Vec<Place>,
    /// The state's list: entry `i` is the one at `places[i]`.
    list: SharedList,
}

/// Where an entry of [`LastState`] lies in its text.
struct Place {
    /// Where the entry starts: its key's opening quote.
    member: usize,
    /// Where its value's text ends.
    end: usize,
    /// Where its value's text starts.
    value: usize,
}

impl LastState {
    /// The key and presence of the last state's entry `i`.
    fn entry(&self, i: usize) -> Option<&Entry<Presence>> {
        self.list.get_index(i)
    }

    /// The key and presence of the last state's entry `i`, if it has `key` and the value
    /// text `text`.
    fn same(&self, i: usize, key: &str, text: &str) -> Option<Entry<Presence>> {
        let place = self.places.get(i)?;
        let entry = self.entry(i)?;
        (self.text.get(place.value..place.end) == Some(text) && *entry.0 == *key)
            .then(|| entry.clone())
    }

    /// Where `key` is (or would be) among the last state's entries, if they are sorted by key
    /// (as a node lists them); if not, some place, where [`LastState::same`] then finds
    /// nothing more than elsewhere.
    fn place_of(&self, key: &str) -> usize {
        let (mut low, mut high) = (0, self.places.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if self.entry(mid).is_some_and(|e| *e.0 < *key) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }
}

/// How many bytes `a` and `b` have in common from their starts, compared a word at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut done = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) else {
            break;
        };
        let differ = u64::from_le_bytes(x) ^ u64::from_le_bytes(y);
        if differ != 0 {
            return done + (differ.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + a[done..]
        .iter()
        .zip(&b[done..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// A reader of a JSON object's members, left as text. The text was not checked before
/// ([`phxsim_wire::v2::RawFrame::payload`]), and nothing it accepts may be what JSON does not
/// allow: it checks the object's own syntax (braces, colons, commas, whitespace), takes a key
/// as it is only if it is plain (no escape, no control character; any other is read by
/// serde_json), and only finds where a value ends, which [`FrameCache::decode_state`] then
/// checks: a value's text is one that was read before, or it is read by serde_json. Anything
/// unexpected gives `None`, and the caller then leaves the payload to the ordinary way, which
/// says what is wrong.
struct Members<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Members<'a> {
    fn byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.byte(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips the string that starts here; whether it is not plain (it holds an escape, or a
    /// control character, which JSON does not allow raw): such a string must be read by a
    /// JSON parser, which also says whether it is valid.
    fn skip_string(&mut self) -> Option<bool> {
        let bytes = self.text.as_bytes();
        if self.byte()? != b'"' {
            return None;
        }
        let mut escaped = false;
        let mut i = self.at + 1;
        loop {
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                b if b < 0x20 => {
                    escaped = true;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        self.at = i + 1;
        Some(escaped)
    }

    /// Skips the value that starts here.
    fn skip_value(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        let mut depth = 0usize;
        loop {
            match self.byte()? {
                b'"' => {
                    self.skip_string()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.at += 1;
                }
                _ if depth == 0 => {
                    // a number or a literal: up to the next delimiter
                    let len = bytes[self.at..]
                        .iter()
                        .take_while(|b| {
                            !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                        })
                        .count();
                    self.at += len;
                    return (len > 0).then_some(());
                }
                _ => self.at += 1,
            }
            if depth == 0 {
                return Some(());
            }
        }
    }

    /// The member that starts here: its key, and where its value's text starts and ends.
    fn member(&mut self) -> Option<(std::borrow::Cow<'a, str>, usize, usize)> {
        let start = self.at;
        let escaped = self.skip_string()?;
        let quoted = self.text.get(start..self.at)?;
        let key = if escaped {
            std::borrow::Cow::Owned(serde_json::from_str::<String>(quoted).ok()?)
        } else {
            std::borrow::Cow::Borrowed(quoted.get(1..quoted.len() - 1)?)
        };
        self.skip_whitespace();
        if self.byte()? != b':' {
            return None;
        }
        self.at += 1;
        self.skip_whitespace();
        let value = self.at;
        self.skip_value()?;
        Some((key, value, self.at))
    }
}

#[derive(Default)]
struct Frames {
    metas: Metas,
    presences: PresenceTexts,
    entries: Entries,
    last_state: LastState,
    lists: SharedLists,
    /// Per serializer (V1, V2), the frames by their text (hashed, as `Metas`: the frames of
    /// one topic share a long prefix).
    /// Keyed by the text's bytes, so that a frame can be looked up before its UTF-8 is
    /// checked (a frame equal to a key is text).
    by_text: [IndexMap<Arc<[u8]>, Arc<CachedDiff>, TextHash>; 2],
    /// Oldest first.
    order: VecDeque<(usize, Arc<[u8]>)>,
    bytes: usize,
    /// The last frame found, per serializer: the browsers of a host take one broadcast after
    /// another, so comparing with it spares hashing the text for all but the first of them.
    /// (Kept when the frame leaves `by_text`: a text always decodes to the same diff.)
    last_hit: [Option<Hit>; 2],
}

/// A frame's text and what it decoded to.
type Hit = (Arc<[u8]>, Arc<CachedDiff>);

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

    /// `diff` prepared for the clients of this cache: its joined metas shared as
    /// [`FrameCache::share_metas`] shares them, and each joined entry that equals the one last
    /// decoded for its key (from a state or a diff) taken from there.
    pub(crate) fn shared_diff(&self, mut diff: PresenceDiff) -> SharedDiff {
        let Ok(mut frames) = self.0.lock() else {
            return SharedDiff::new(diff);
        };
        let Frames { metas, entries, .. } = &mut *frames;
        metas.share_all(&mut diff.joins);
        // (`new_sharing` compares the presences)
        let diff = SharedDiff::new_sharing(diff, |key, _| entries.by_key.get(key).cloned());
        diff.joined().for_each(|entry| entries.hold(entry));
        entries.prune();
        diff
    }

    /// Swaps every meta of `presences` that equals one already held by a client of this cache
    /// for that one (they then share their fields), and keeps the others for the next
    /// clients. Metas are compared whole: a `phx_ref` only finds the candidate.
    pub(crate) fn share_metas(&self, presences: &mut Presences) {
        if let Ok(mut frames) = self.0.lock() {
            frames.metas.share_all(presences);
        }
    }

    /// A `presence_state` payload given as JSON text, decoded as
    /// [`PresenceState::from_payload`](phxsim_wire::PresenceState::from_payload) decodes it,
    /// as a list in key order (what a client of [`FrameCache::lists`] holds), each key and presence shared with
    /// the clients of this cache that listed the same entry text before; the others are
    /// decoded, their metas shared as [`FrameCache::share_metas`] shares them, and kept. The
    /// presences of a topic's state are mostly the same from one join to the next, so a
    /// thousand joiners decode each about once and hold one copy. `None` if the payload is
    /// not a valid state (or repeats a key): the caller decodes it the ordinary way, which
    /// says what is wrong.
    ///
    /// The payload's text need not have been checked as JSON: only a payload that is one JSON
    /// object gives a list. Its parts equal to the last state's were checked with it, and
    /// the rest is checked here (see [`Members`]); a topic's states repeat one another, and
    /// checking each whole (a thousand joiners each reading a list of a thousand) was a
    /// twentieth of a join storm.
    pub(crate) fn decode_state(&self, all: &str) -> Option<SharedList> {
        let mut frames = self.0.lock().ok()?;
        let Frames {
            metas,
            presences,
            entries,
            last_state,
            ..
        } = &mut *frames;
        let last = &*last_state;
        // a state is mostly as long as the last one
        let mut state: Vec<Entry<Presence>> = Vec::with_capacity(last.places.len());
        let mut next: Vec<Place> = Vec::with_capacity(last.places.len());
        let mut members = Members { text: all, at: 0 };
        members.skip_whitespace();
        if members.byte()? != b'{' {
            return None;
        }
        members.at += 1;
        // the last state's entry expected next
        let mut at = 0;
        loop {
            members.skip_whitespace();
            match members.byte()? {
                b'}' => {
                    // the object is the whole payload
                    members.at += 1;
                    members.skip_whitespace();
                    if members.at != all.len() {
                        return None;
                    }
                    break;
                }
                b',' if !next.is_empty() => {
                    members.at += 1;
                    members.skip_whitespace();
                }
                _ if next.is_empty() => {}
                _ => return None,
            }
            let member = members.at;
            // a run of the last state's entries, from the one expected
            if let Some(first) = last.places.get(at) {
                let run = common_prefix(
                    &all.as_bytes()[member..],
                    &last.text.as_bytes()[first.member..],
                );
                // an entry ends with its object's `}`; the byte after it is compared too, so a value
                // that only begins like the last one's is not taken for it
                let ran = last.places[at..].partition_point(|e| e.end - first.member < run);
                if ran > 0 {
                    for (i, held) in (at..at + ran).zip(&last.places[at..at + ran]) {
                        let moved = |i: usize| i - first.member + member;
                        next.push(Place {
                            member: moved(held.member),
                            end: moved(held.end),
                            value: moved(held.value),
                        });
                        state.push(last.entry(i)?.clone());
                    }
                    at += ran;
                    members.at = next.last().map_or(member, |e| e.end);
                    continue;
                }
            }
            let (key, value, end) = members.member()?;
            let text = &all[value..end];
            let found = last.same(at, &key, text).or_else(|| {
                // not the expected entry: a key joined or left between the two states
                at = last.place_of(&key);
                last.same(at, &key, text)
            });
            let entry = match found {
                Some(entry) => {
                    at += 1;
                    entry
                }
                None => {
                    // the same key with another value: the entry after it is expected next
                    if last.entry(at).is_some_and(|e| *e.0 == *key) {
                        at += 1;
                    }
                    match presences.by_text.get(text) {
                        Some(held) if *held.0 == *key => held.clone(),
                        held => {
                            let json = serde_json::from_str(text).ok()?;
                            let mut presence = Presence::from_value(&key, json).ok()?;
                            metas.share(&key, &mut presence);
                            let entry = entries.share(&key, presence);
                            if held.is_none() {
                                presences.by_text.insert(text.into(), entry.clone());
                            }
                            entry
                        }
                    }
                }
            };
            next.push(Place { member, end, value });
            state.push(entry);
        }
        // the next state finds this one's entries by place only if the list holds them in
        // the text's order
        let in_key_order = state.is_sorted_by(|a, b| a.0 < b.0);
        // a repeated key: JSON.parse (and `from_payload`) keeps its first place and its last
        // value; rare enough to leave to the ordinary way
        let state = SharedList::from_entries(state)?;
        let mut text = std::mem::take(&mut last_state.text);
        text.clear();
        text.push_str(all);
        *last_state = if in_key_order {
            LastState {
                text,
                places: next,
                list: state.clone(),
            }
        } else {
            LastState {
                text,
                places: Vec::new(),
                list: SharedList::new(),
            }
        };
        metas.prune();
        presences.prune();
        entries.prune();
        Some(state)
    }

    /// Runs `f` on the lists of this cache's clients ([`SharedLists`]): every client of a
    /// cache that nobody observes holds one of them.
    pub(crate) fn lists<T>(&self, f: impl FnOnce(&mut SharedLists) -> T) -> T {
        // the lists are consistent between calls (a panic inside one would fail the run
        // anyway), and a client has no other list to fall back on
        let mut frames = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut frames.lists)
    }

    /// The frame whose text is `text`, if cached (`text` need not be checked as UTF-8: a key
    /// is a frame's text).
    pub(crate) fn get(&self, serializer: Serializer, text: &[u8]) -> Option<Arc<CachedDiff>> {
        let mut frames = self.0.lock().ok()?;
        let i = index(serializer);
        if let Some((key, hit)) = &frames.last_hit[i]
            && **key == *text
        {
            return Some(Arc::clone(hit));
        }
        let (key, hit) = frames.by_text[i].get_key_value(text)?;
        let found = (Arc::clone(key), Arc::clone(hit));
        frames.last_hit[i] = Some(found.clone());
        Some(found.1)
    }

    pub(crate) fn insert(&self, serializer: Serializer, text: &str, diff: Arc<CachedDiff>) {
        let Ok(mut frames) = self.0.lock() else {
            return;
        };
        let i = index(serializer);
        if frames.by_text[i].contains_key(text.as_bytes()) || text.len() > MAX_BYTES {
            return;
        }
        let key: Arc<[u8]> = text.as_bytes().into();
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

    /// What the ordinary way makes of a state payload: decoded (in key order here, as a
    /// shared list holds it).
    fn ordinary(text: &str) -> Option<Vec<(String, Presence)>> {
        let state = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| PresenceState::from_payload(v).ok())?;
        let mut all: Vec<(String, Presence)> = state.presences.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Some(all)
    }

    /// What the cache made of a state payload, in key order.
    fn decoded(cache: &FrameCache, text: &str) -> Option<Vec<(String, Presence)>> {
        let list = cache.decode_state(text)?;
        Some(
            list.iter()
                .map(|(k, p)| (k.to_owned(), p.clone()))
                .collect(),
        )
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
            let cached = decoded(&cache, text);
            assert_eq!(cached, ordinary(text), "{text}");
            // field order is kept too
            assert_eq!(
                serde_json::to_string(&cached).ok(),
                serde_json::to_string(&ordinary(text)).ok()
            );
        }
        // "u1" was decoded once and is shared by both states, key and presence
        let a = cache.decode_state(texts[0]).unwrap_or_default();
        let b = cache.decode_state(texts[2]).unwrap_or_default();
        let (Some(a), Some(b)) = (a.get("u1"), b.get("u1")) else {
            panic!("u1 missing");
        };
        assert!(Arc::ptr_eq(&a.1, &b.1), "shared, not decoded twice");
        assert!(Arc::ptr_eq(&a.0, &b.0));
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
        let mut last: Option<SharedList> = None;
        for text in &texts {
            let cached = cache.decode_state(text);
            let listed = cached.as_ref().map(|l| {
                l.iter()
                    .map(|(k, p)| (k.to_owned(), p.clone()))
                    .collect::<Vec<_>>()
            });
            let repeated = text.matches(r#""c":"#).count() > 1;
            let wanted = if repeated { None } else { ordinary(text) };
            assert_eq!(listed, wanted, "{text}");
            assert_eq!(
                serde_json::to_string(&listed).ok(),
                serde_json::to_string(&wanted).ok()
            );
            // an entry listed by the state before, with the same key and text, is shared
            if let (Some(now), Some(before)) = (&cached, &last) {
                for entry in now.entries() {
                    if let Some(q) = before.get(&entry.0).filter(|q| *q.1 == *entry.1) {
                        assert!(Arc::ptr_eq(&entry.1, &q.1), "{} in {text}", entry.0);
                    }
                }
            }
            if cached.is_some() {
                last = cached;
            }
        }
    }

    /// States drawn from a seed, each a change of the one before (keys joining, leaving,
    /// changing their value to one that begins like the old one, keys repeated, spaces
    /// anywhere JSON allows them), decode as the ordinary way decodes them: listed in any
    /// order, and in key order as a node lists them (where the next state reads the last
    /// one's entries by place).
    #[test]
    fn drawn_states_decode_as_the_ordinary_way_does() {
        drawn_states(false);
        drawn_states(true);
    }

    fn drawn_states(in_key_order: bool) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
        let keys = [
            "a", "b", "c", "d", "e", "f", "0", "10", "2", r"k\u0041", "é",
        ];
        let values = [
            r#"{"metas":[{"phx_ref":"A","n":1}]}"#,
            r#"{"metas":[{"phx_ref":"A","n":12}]}"#,
            r#"{"metas":[{"phx_ref":"A","n":1},{"phx_ref":"B"}]}"#,
            r#"{ "metas" : [ { "phx_ref" : "C" , "s" : "}\"]" } ] }"#,
            r#"{"metas":[]}"#,
            r#"{"x":[1,{"y":null}],"metas":[{"phx_ref":"D","t":true}]}"#,
        ];
        let spaces = ["", " ", "\n  "];
        let cache = FrameCache::new();
        let mut entries: Vec<(usize, usize)> = vec![];
        let mut checked = 0;
        let (mut broken_read, mut broken_refused) = (0, 0);
        for _ in 0..3000 {
            match rng.gen_range(0..6) {
                0 if !entries.is_empty() => {
                    let i = rng.gen_range(0..entries.len());
                    entries.remove(i);
                }
                1 if !entries.is_empty() => {
                    let i = rng.gen_range(0..entries.len());
                    entries[i].1 = rng.gen_range(0..values.len());
                }
                2 => entries.clear(),
                _ => {
                    let at = rng.gen_range(0..=entries.len());
                    let entry = (rng.gen_range(0..keys.len()), rng.gen_range(0..values.len()));
                    entries.insert(at, entry);
                }
            }
            if in_key_order {
                let decoded = |k: usize| {
                    serde_json::from_str::<String>(&format!("\"{}\"", keys[k])).expect("a key")
                };
                entries.sort_by_key(|&(k, _)| decoded(k));
            }
            let space = |rng: &mut rand_chacha::ChaCha8Rng| spaces[rng.gen_range(0..spaces.len())];
            let mut text = format!("{}{{", space(&mut rng));
            for (n, &(k, v)) in entries.iter().enumerate() {
                if n > 0 {
                    text.push_str(&format!("{},", space(&mut rng)));
                }
                let (a, b, c) = (space(&mut rng), space(&mut rng), space(&mut rng));
                text.push_str(&format!("{a}\"{}\"{b}:{c}{}", keys[k], values[v]));
            }
            text.push_str(&format!("{}}}{}", space(&mut rng), space(&mut rng)));
            let mut seen: Vec<usize> = entries.iter().map(|&(k, _)| k).collect();
            seen.sort_unstable();
            seen.dedup();
            let wanted = if seen.len() < entries.len() {
                None
            } else {
                ordinary(&text)
            };
            // first a copy broken at one byte: read only if it still is a JSON object, and
            // then as the ordinary way reads it; the state after it is still read right
            let mut broken = text.clone().into_bytes();
            let at = rng.gen_range(0..broken.len());
            let byte = b"\"{}[],:\\ \x01a0e-."[rng.gen_range(0..15)];
            match rng.gen_range(0..3) {
                0 => broken[at] = byte,
                1 => broken.insert(at, byte),
                _ => {
                    broken.remove(at);
                }
            }
            if let Ok(broken) = String::from_utf8(broken) {
                if let Some(got) = decoded(&cache, &broken) {
                    assert!(
                        serde_json::from_str::<Value>(&broken).is_ok(),
                        "read a payload that is not JSON: {broken:?}"
                    );
                    assert_eq!(Some(got), ordinary(&broken), "{broken:?}");
                    broken_read += 1;
                } else {
                    broken_refused += 1;
                }
            }
            let cached = decoded(&cache, &text);
            assert_eq!(cached, wanted, "{text}");
            assert_eq!(
                serde_json::to_string(&cached).ok(),
                serde_json::to_string(&wanted).ok(),
                "{text}"
            );
            checked += usize::from(wanted.is_some());
        }
        assert!(checked > 1000, "{checked} states decoded");
        // most broken copies are not JSON; some still are (a space, a digit in a value)
        assert!(
            broken_refused > 1000 && broken_read > 50,
            "{broken_refused} {broken_read}"
        );
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
            assert!(cache.decode_state(text).is_none(), "{text}");
        }
    }
}
