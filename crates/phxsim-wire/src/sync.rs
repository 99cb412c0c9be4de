//! phoenix.js `Presence` (npm `phoenix` 1.8.16), reproduced step for step
//! (phoenix-protocol.md §3, presence-sync.md).
//!
//! Everything observable is kept: the order of callbacks and of `list()` (JavaScript property
//! order, see [`JsMap`]), `===` on `phx_ref` values (`1` is not `"1"`, two missing refs are
//! equal), joins before leaves, `onLeave` on a known key even when nothing was removed, silence on
//! an unknown key, keys kept with empty metas until a leave empties them, and the instance's
//! buffering of diffs while its join_ref is unknown or stale. Where phoenix.js mutates objects in
//! place, this module mutates the state in place and hands callbacks borrowed snapshots taken at
//! the moment of the call.

use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

use crate::error::PayloadError;
use crate::jsmap::{Entry, JsMap};
use crate::message::{PRESENCE_DIFF, PRESENCE_STATE};
use crate::presence::{Meta, Presence, PresenceDiff, PresenceState, Presences};
use crate::shared_list::{SharedList, SharedLists};

/// A client's presences: phoenix.js's `state` object.
pub type SyncState = JsMap<Presence>;

/// What `syncState` and `syncDiff` ask of a list of presences: phoenix.js's object
/// ([`SyncState`], in JavaScript order) and a list many clients share ([`SharedList`], in key
/// order) both answer, so the one implementation below changes both alike. The order in which
/// a list walks its entries is the order of the callbacks its changes fire.
pub trait SyncList {
    /// The entry of `key`.
    fn entry_of(&self, key: &str) -> Option<&Entry<Presence>>;
    /// Puts `entry` under its key: in place of the key's entry if there is one, else where
    /// the list puts a new key.
    fn put_entry(&mut self, entry: Entry<Presence>);
    /// Removes `key`.
    fn remove_key(&mut self, key: &str);
    /// Whether the list holds no key.
    fn has_no_keys(&self) -> bool;
    /// Every entry, in the list's order.
    fn each_entry(&self, f: &mut dyn FnMut(&Entry<Presence>));
}

impl SyncList for SyncState {
    fn entry_of(&self, key: &str) -> Option<&Entry<Presence>> {
        self.entry(key)
    }

    fn put_entry(&mut self, entry: Entry<Presence>) {
        self.insert_entry(entry);
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

/// A `phx_ref` as JavaScript sees it, for `===`.
#[derive(Clone, Copy, Debug)]
enum JsRef<'a> {
    Undefined,
    Null,
    Bool(bool),
    /// Every JSON number is an IEEE double in JavaScript, so `1`, `1.0` and `1e0` are one value.
    Number(f64),
    String(&'a str),
    /// Objects and arrays: after phoenix.js's JSON clones two of them are never the same object.
    Object,
}

impl<'a> JsRef<'a> {
    fn of(meta: &'a Meta) -> JsRef<'a> {
        match meta.phx_ref() {
            None => JsRef::Undefined,
            Some(Value::Null) => JsRef::Null,
            Some(Value::Bool(b)) => JsRef::Bool(*b),
            Some(Value::Number(n)) => JsRef::Number(n.as_f64().unwrap_or(f64::NAN)),
            Some(Value::String(s)) => JsRef::String(s),
            Some(Value::Array(_) | Value::Object(_)) => JsRef::Object,
        }
    }

    /// JavaScript `===`.
    fn strict_eq(self, other: JsRef<'_>) -> bool {
        match (self, other) {
            (JsRef::Undefined, JsRef::Undefined) | (JsRef::Null, JsRef::Null) => true,
            (JsRef::Bool(a), JsRef::Bool(b)) => a == b,
            (JsRef::Number(a), JsRef::Number(b)) => a == b,
            (JsRef::String(a), JsRef::String(b)) => a == b,
            _ => false,
        }
    }
}

/// `refs.indexOf(meta.phx_ref) >= 0` where `refs` are the refs of `metas`. A linear scan, as in
/// phoenix.js: a key rarely has more than a handful of metas, and no allocation beats a set here.
fn ref_in(metas: &[Meta], meta: &Meta) -> bool {
    let wanted = JsRef::of(meta);
    metas.iter().any(|m| JsRef::of(m).strict_eq(wanted))
}

/// The metas of `metas` whose ref is not among `others`' refs, in order (what phoenix.js
/// keeps of a presence when another one joins or leaves over it).
fn not_in(metas: &[Meta], others: &[Meta]) -> Vec<Meta> {
    metas
        .iter()
        .filter(|m| !ref_in(others, m))
        .cloned()
        .collect()
}

/// The `onJoin` / `onLeave` / `onSync` callbacks. Each argument is the object as it is at the
/// moment of the call; copy what you keep. The default methods do nothing, like phoenix.js's.
pub trait Callbacks {
    /// A key gained metas (or was joined with none). `current` is the presence before the join
    /// (`None` for a new key); `joined` holds only the joined metas.
    fn on_join(&mut self, key: &str, current: Option<&Presence>, joined: &Presence) {
        let _ = (key, current, joined);
    }

    /// A leave for a known key was applied. `current` is the presence after removal (its metas
    /// may be empty, in which case the key is deleted right after); `left` is the diff's entry.
    fn on_leave(&mut self, key: &str, current: &Presence, left: &Presence) {
        let _ = (key, current, left);
    }

    /// An instance finished applying a state (with its buffered diffs) or a live diff.
    fn on_sync(&mut self) {}
}

/// No callbacks.
impl Callbacks for () {}

/// One callback call, recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "cb", rename_all = "lowercase")]
pub enum Event {
    /// `onJoin(key, current, newPres)`.
    Join {
        /// The key.
        key: String,
        /// The presence before the join.
        current: Option<Presence>,
        /// The joined metas.
        #[serde(rename = "new")]
        joined: Presence,
    },
    /// `onLeave(key, current, leftPres)`.
    Leave {
        /// The key.
        key: String,
        /// The presence after removal.
        current: Presence,
        /// The diff's leave entry.
        left: Presence,
    },
    /// `onSync()`.
    Sync,
}

/// Records every call, cloning its arguments (what the conformance driver prints).
impl Callbacks for Vec<Event> {
    fn on_join(&mut self, key: &str, current: Option<&Presence>, joined: &Presence) {
        self.push(Event::Join {
            key: key.to_owned(),
            current: current.cloned(),
            joined: joined.clone(),
        });
    }

    fn on_leave(&mut self, key: &str, current: &Presence, left: &Presence) {
        self.push(Event::Leave {
            key: key.to_owned(),
            current: current.clone(),
            left: left.clone(),
        });
    }

    fn on_sync(&mut self) {
        self.push(Event::Sync);
    }
}

/// `Presence.syncState(state, newState, onJoin, onLeave)`: reconciles the state with a full
/// `presence_state`, comparing metas by `phx_ref` only.
///
/// Keys missing from the new state leave whole; on a key in both, new refs join (with the new
/// presence's other fields) and vanished refs leave (with the current presence's other fields).
/// A meta whose ref is unchanged is kept as it was even if its content changed. The result is
/// then applied like a diff, so callbacks come in the same order as phoenix.js's.
pub fn sync_state(state: &mut SyncState, new_state: PresenceState, callbacks: &mut impl Callbacks) {
    // phoenix.js walks `newState` as an object: JavaScript order, not wire order.
    let mut ordered = JsMap::with_capacity(new_state.presences.len());
    for (key, presence) in new_state.presences {
        ordered.insert(key, presence);
    }
    sync_state_shared(state, ordered, callbacks);
}

/// [`sync_state`] of a state already in the list's order (JavaScript order for a
/// [`SyncState`]), whose entries other lists may share (what a client does with a state
/// decoded once for many clients).
pub fn sync_state_shared<L: SyncList>(state: &mut L, new_state: L, callbacks: &mut impl Callbacks) {
    if state.has_no_keys() {
        // Nothing leaves and every key joins whole, in `newState`'s order: the state becomes
        // `newState` itself, which is what the general path below builds one key at a time.
        *state = new_state;
        state.each_entry(&mut |entry| callbacks.on_join(&entry.0, None, &entry.1));
        return;
    }
    let mut joins = JsMap::new();
    let mut leaves = JsMap::new();
    state.each_entry(&mut |entry| {
        if new_state.entry_of(&entry.0).is_none() {
            leaves.insert_entry(entry.clone());
        }
    });
    new_state.each_entry(&mut |new_entry| {
        let (key, new_presence) = &**new_entry;
        let Some(current) = state.entry_of(key).map(|e| &e.1) else {
            joins.insert_entry(new_entry.clone());
            return;
        };
        let left_metas = not_in(&current.metas, &new_presence.metas);
        let joined_metas = not_in(&new_presence.metas, &current.metas);
        if !left_metas.is_empty() {
            leaves.insert_shared(key.clone(), Arc::new(current.with_metas(left_metas)));
        }
        if !joined_metas.is_empty() {
            joins.insert_shared(key.clone(), Arc::new(new_presence.with_metas(joined_metas)));
        }
    });
    apply(state, joins.entries(), leaves.iter(), callbacks);
}

/// `Presence.syncDiff(state, diff, onJoin, onLeave)`: applies one `presence_diff`.
///
/// Joins first, then leaves, each in JavaScript key order. A join replaces the key's top-level
/// fields and puts the current metas whose ref is not re-joined before the joined ones; a leave
/// removes every meta whose ref it names, fires `onLeave` on any known key, and deletes the key
/// once its metas are empty. A leave for an unknown key is ignored without a callback.
pub fn sync_diff<L: SyncList>(state: &mut L, diff: PresenceDiff, callbacks: &mut impl Callbacks) {
    let joins: JsMap<Presence> = diff.joins.into_iter().collect();
    apply(state, joins.entries(), js_order(&diff.leaves), callbacks);
}

/// A `presence_diff` prepared once for many clients: its joined keys and presences, in
/// JavaScript order, are shared by every list it is applied to ([`sync_shared_diff`]), so a
/// thousand clients of a topic hold one copy of each joined presence.
#[derive(Clone, Debug)]
pub struct SharedDiff {
    diff: PresenceDiff,
    joins: JsMap<Presence>,
}

impl SharedDiff {
    /// Prepares `diff`.
    pub fn new(diff: PresenceDiff) -> SharedDiff {
        SharedDiff::new_sharing(diff, |_, _| None)
    }

    /// Prepares `diff`, taking each joined entry from `held` where it gives one of the same
    /// key and an equal presence (what another list already holds; compared here, so `held`
    /// need only look up the key): lists built from states and lists built from diffs then
    /// hold one entry per presence, and compare by pointer.
    pub fn new_sharing(
        diff: PresenceDiff,
        mut held: impl FnMut(&str, &Presence) -> Option<Entry<Presence>>,
    ) -> SharedDiff {
        let mut joins = JsMap::with_capacity(diff.joins.len());
        for (key, presence) in &diff.joins {
            match held(key, presence) {
                Some(entry) if *entry.0 == **key && *entry.1 == *presence => {
                    joins.insert_entry(entry);
                }
                _ => {
                    joins.insert(key.clone(), presence.clone());
                }
            }
        }
        SharedDiff { diff, joins }
    }

    /// The joined entries, as the lists it is applied to share them.
    pub fn joined(&self) -> impl Iterator<Item = &Entry<Presence>> {
        self.joins.entries()
    }

    /// The diff as decoded.
    pub fn diff(&self) -> &PresenceDiff {
        &self.diff
    }
}

/// [`sync_diff`] of a [`SharedDiff`]: the same changes and callbacks, the joined presences
/// shared with the diff.
pub fn sync_shared_diff<L: SyncList>(
    state: &mut L,
    diff: &SharedDiff,
    callbacks: &mut impl Callbacks,
) {
    apply(
        state,
        diff.joins.entries(),
        js_order(&diff.diff.leaves),
        callbacks,
    );
}

/// The entries of a decoded object in JavaScript property order (see [`JsMap`]): its array
/// index keys ascending, then the others in wire order. Without an array index key (what
/// Phoenix's keys almost always are), that is the wire order itself and nothing is built.
fn js_order(presences: &Presences) -> impl Iterator<Item = (&str, &Presence)> {
    use crate::jsmap::array_index;
    // empty (and unallocated) unless some key is an array index
    let mut indexed: Vec<(u32, &str, &Presence)> = presences
        .iter()
        .filter_map(|(key, p)| array_index(key).map(|index| (index, key.as_str(), p)))
        .collect();
    // keys are unique, so their array indices are too
    indexed.sort_unstable_by_key(|&(index, _, _)| index);
    let named = presences
        .iter()
        .filter(|(key, _)| array_index(key).is_none())
        .map(|(key, p)| (key.as_str(), p));
    indexed.into_iter().map(|(_, key, p)| (key, p)).chain(named)
}

/// Joins, then leaves, as `syncDiff` applies them. A joined entry a list did not hold is
/// shared with it whole; one whose key it held replaces its entry (the joined entry itself
/// when no current meta is kept). A leave makes a new entry only for a key that stays.
fn apply<'a, L: SyncList>(
    state: &mut L,
    joins: impl Iterator<Item = &'a Entry<Presence>>,
    leaves: impl Iterator<Item = (&'a str, &'a Presence)>,
    callbacks: &mut impl Callbacks,
) {
    for joined_entry in joins {
        let (key, joined) = &**joined_entry;
        let Some(current) = state.entry_of(key).cloned() else {
            state.put_entry(joined_entry.clone());
            callbacks.on_join(key, None, joined);
            continue;
        };
        // the current metas whose ref is not re-joined, then the joined ones
        let kept = not_in(&current.1.metas, &joined.metas);
        let stored = if kept.is_empty() {
            joined_entry.clone()
        } else {
            let mut metas = kept;
            metas.extend(joined.metas.iter().cloned());
            Arc::new((current.0.clone(), Arc::new(joined.with_metas(metas))))
        };
        state.put_entry(stored);
        callbacks.on_join(key, Some(&current.1), joined);
    }
    for (key, left) in leaves {
        let Some(current) = state.entry_of(key).cloned() else {
            continue;
        };
        let (held_key, current) = &*current;
        if !current.metas.iter().any(|m| ref_in(&left.metas, m)) {
            callbacks.on_leave(key, current, left);
            if current.metas.is_empty() {
                state.remove_key(key);
            }
            continue;
        }
        if current.metas.iter().all(|m| ref_in(&left.metas, m)) {
            // every meta leaves: the key goes, and nothing is copied for it
            callbacks.on_leave(key, &current.with_metas(Vec::new()), left);
            state.remove_key(key);
            continue;
        }
        let stays = current.with_metas(not_in(&current.metas, &left.metas));
        let stored: Entry<Presence> = Arc::new((held_key.clone(), Arc::new(stays)));
        callbacks.on_leave(key, &stored.1, left);
        state.put_entry(stored);
    }
}

/// `Presence.list(state)`: every presence, in key order.
pub fn list(state: &SyncState) -> Vec<&Presence> {
    state.values().collect()
}

/// `Presence.list(state, chooser)`: `chooser(key, presence)` for every key, in key order.
pub fn list_by<'a, T>(
    state: &'a SyncState,
    mut chooser: impl FnMut(&'a str, &'a Presence) -> T,
) -> Vec<T> {
    state
        .iter()
        .map(|(key, presence)| chooser(key, presence))
        .collect()
}

/// The event names an instance listens to (`opts.events` in phoenix.js).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEvents {
    /// The full-state event, `"presence_state"` by default.
    pub state: String,
    /// The diff event, `"presence_diff"` by default.
    pub diff: String,
}

impl Default for PresenceEvents {
    fn default() -> Self {
        PresenceEvents {
            state: PRESENCE_STATE.to_owned(),
            diff: PRESENCE_DIFF.to_owned(),
        }
    }
}

/// `new Presence(channel)`: a client's presences for one channel, with the buffering that keeps
/// diffs from being applied to a state they do not belong to.
///
/// phoenix.js asks `channel.joinRef()` on every message; here the caller passes the channel's
/// current join_ref with each message instead, which keeps this type free of any channel.
///
/// The list is phoenix.js's object, in JavaScript order, unless the instance takes its
/// messages through [`SharedLists`] ([`handle_interned_state`](Self::handle_interned_state),
/// [`handle_interned_diff`](Self::handle_interned_diff)): then it holds a list shared with
/// every client of those lists that holds the same presences, in key order. The presences are
/// the same either way.
#[derive(Clone, Debug, Default)]
pub struct PresenceInstance {
    /// The list in JavaScript order, unless `shared` holds it.
    state: SyncState,
    /// The list, when it is shared ([`SharedLists`]); `state` is then empty.
    shared: Option<Arc<SharedList>>,
    pending_diffs: Vec<PresenceDiff>,
    join_ref: Option<String>,
    events: PresenceEvents,
}

/// A list as an instance holds it ([`PresenceInstance::state`]).
#[derive(Clone, Copy, Debug)]
pub enum Listed<'a> {
    /// phoenix.js's object, in JavaScript order.
    Ordered(&'a SyncState),
    /// A list shared by clients that hold the same presences, in key order.
    Shared(&'a SharedList),
}

impl<'a> Listed<'a> {
    /// Keys and presences, in the list's order.
    pub fn iter(self) -> Box<dyn Iterator<Item = (&'a str, &'a Presence)> + 'a> {
        match self {
            Listed::Ordered(state) => Box::new(state.iter()),
            Listed::Shared(list) => Box::new(list.iter()),
        }
    }

    /// Number of keys.
    pub fn len(self) -> usize {
        match self {
            Listed::Ordered(state) => state.len(),
            Listed::Shared(list) => list.len(),
        }
    }

    /// Whether there are no keys.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The entry of `key` (maybe shared with other lists).
    pub fn entry(self, key: &str) -> Option<&'a Entry<Presence>> {
        match self {
            Listed::Ordered(state) => state.entry(key),
            Listed::Shared(list) => list.get(key),
        }
    }

    /// The list in JavaScript order, if that is how it is held.
    pub fn ordered(self) -> Option<&'a SyncState> {
        match self {
            Listed::Ordered(state) => Some(state),
            Listed::Shared(_) => None,
        }
    }

    /// Whether both lists hold the same keys, in any order, each with an equal presence. Two
    /// shared lists of one [`SharedLists`] that hold the same presences are one list.
    pub fn same_presences(self, other: Listed<'_>) -> bool {
        match (self, other) {
            (Listed::Shared(a), Listed::Shared(b)) => std::ptr::eq(a, b) || a.same_content(b),
            (Listed::Ordered(a), Listed::Ordered(b)) => a.same_entries_any_order(b),
            (a, b) => {
                a.len() == b.len()
                    && a.iter().all(|(key, p)| {
                        b.entry(key)
                            .is_some_and(|e| std::ptr::eq(&*e.1, p) || *e.1 == *p)
                    })
            }
        }
    }
}

/// What [`PresenceInstance::handle_message`] did with a channel message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// A state was applied (with any buffered diffs) and `onSync` fired.
    State,
    /// A diff was applied and `onSync` fired.
    Diff,
    /// A diff was buffered until the next state.
    Buffered,
    /// Not a presence event; nothing happened.
    Ignored,
}

impl PresenceInstance {
    /// An empty instance listening to `presence_state` / `presence_diff`.
    pub fn new() -> Self {
        PresenceInstance::default()
    }

    /// An empty instance listening to other event names.
    pub fn with_events(events: PresenceEvents) -> Self {
        PresenceInstance {
            events,
            ..PresenceInstance::default()
        }
    }

    /// The list in JavaScript order, to change. A shared list becomes the instance's own, in
    /// its key order: an instance is meant to take its messages one way for its whole life.
    fn ordered_mut(&mut self) -> &mut SyncState {
        if let Some(list) = self.shared.take() {
            for entry in list.entries() {
                self.state.insert_entry(entry.clone());
            }
        }
        &mut self.state
    }

    /// The list, made a shared one if it was ordered (the ordered one is given up for it).
    fn make_shared(&mut self) -> Arc<SharedList> {
        let state = &mut self.state;
        Arc::clone(self.shared.get_or_insert_with(|| {
            let entries = std::mem::take(state).entries().cloned().collect();
            // the keys of a JsMap are unique
            Arc::new(SharedList::from_entries(entries).unwrap_or_default())
        }))
    }

    /// Handles a `presence_state`: records the channel's join_ref, syncs the state, replays
    /// every buffered diff in arrival order, then fires `onSync` once.
    pub fn handle_state(
        &mut self,
        channel_join_ref: Option<&str>,
        new_state: PresenceState,
        callbacks: &mut impl Callbacks,
    ) {
        self.join_ref = channel_join_ref.map(str::to_owned);
        sync_state(self.ordered_mut(), new_state, callbacks);
        self.replay_pending(callbacks);
    }

    /// After a state: every diff buffered before it, in arrival order, then `onSync` once.
    fn replay_pending(&mut self, callbacks: &mut impl Callbacks) {
        for diff in std::mem::take(&mut self.pending_diffs) {
            sync_diff(self.ordered_mut(), diff, callbacks);
        }
        callbacks.on_sync();
    }

    /// Handles a `presence_diff`: buffered (no callbacks) while
    /// [`in_pending_sync_state`](Self::in_pending_sync_state), else applied, then `onSync`.
    ///
    /// Returns whether it was applied.
    pub fn handle_diff(
        &mut self,
        channel_join_ref: Option<&str>,
        diff: PresenceDiff,
        callbacks: &mut impl Callbacks,
    ) -> bool {
        if self.in_pending_sync_state(channel_join_ref) {
            self.pending_diffs.push(diff);
            return false;
        }
        sync_diff(self.ordered_mut(), diff, callbacks);
        callbacks.on_sync();
        true
    }

    /// [`handle_state`](Self::handle_state) of a state in JavaScript order whose entries
    /// other lists may share ([`sync_state_shared`]).
    pub fn handle_shared_state(
        &mut self,
        channel_join_ref: Option<&str>,
        new_state: JsMap<Presence>,
        callbacks: &mut impl Callbacks,
    ) {
        self.join_ref = channel_join_ref.map(str::to_owned);
        sync_state_shared(self.ordered_mut(), new_state, callbacks);
        self.replay_pending(callbacks);
    }

    /// [`handle_diff`](Self::handle_diff) of a diff shared by many clients: its joined
    /// presences are shared with the list, and it is copied only if it has to be buffered.
    pub fn handle_shared_diff(
        &mut self,
        channel_join_ref: Option<&str>,
        diff: &SharedDiff,
        callbacks: &mut impl Callbacks,
    ) -> bool {
        if self.in_pending_sync_state(channel_join_ref) {
            self.pending_diffs.push(diff.diff.clone());
            return false;
        }
        sync_shared_diff(self.ordered_mut(), diff, callbacks);
        callbacks.on_sync();
        true
    }

    /// [`handle_shared_state`](Self::handle_shared_state) without callbacks, for an instance
    /// whose list nobody reads in JavaScript order: the list becomes the one `lists` hands out
    /// for its presences (see [`SharedLists`]).
    pub fn handle_interned_state(
        &mut self,
        channel_join_ref: Option<&str>,
        new_state: SharedList,
        lists: &mut SharedLists,
    ) {
        self.join_ref = channel_join_ref.map(str::to_owned);
        let current = self.make_shared();
        let mut next = if current.is_empty() {
            new_state
        } else {
            let mut next = SharedList::clone(&current);
            sync_state_shared(&mut next, new_state, &mut ());
            next
        };
        for diff in std::mem::take(&mut self.pending_diffs) {
            sync_diff(&mut next, diff, &mut ());
        }
        self.shared = Some(lists.intern(next));
    }

    /// [`handle_shared_diff`](Self::handle_shared_diff) without callbacks, for an instance
    /// whose list nobody reads in JavaScript order: the list becomes the one `lists` hands out
    /// for its presences after the diff, which the first client to apply `diff` to this list
    /// computed for every other. Returns whether it was applied (not buffered).
    pub fn handle_interned_diff(
        &mut self,
        channel_join_ref: Option<&str>,
        diff: &Arc<SharedDiff>,
        lists: &mut SharedLists,
    ) -> bool {
        if self.in_pending_sync_state(channel_join_ref) {
            self.pending_diffs.push(diff.diff.clone());
            return false;
        }
        let current = self.make_shared();
        self.shared = Some(lists.apply(&current, diff));
        true
    }

    /// Dispatches a channel message by event name, reading its payload; a malformed payload is
    /// an error and changes nothing.
    pub fn handle_message(
        &mut self,
        channel_join_ref: Option<&str>,
        event: &str,
        payload: Value,
        callbacks: &mut impl Callbacks,
    ) -> Result<Handled, PayloadError> {
        if event == self.events.state {
            let new_state = PresenceState::from_payload(payload)?;
            self.handle_state(channel_join_ref, new_state, callbacks);
            Ok(Handled::State)
        } else if event == self.events.diff {
            let diff = PresenceDiff::from_payload(payload)?;
            let applied = self.handle_diff(channel_join_ref, diff, callbacks);
            Ok(if applied {
                Handled::Diff
            } else {
                Handled::Buffered
            })
        } else {
            Ok(Handled::Ignored)
        }
    }

    /// `!this.joinRef || this.joinRef !== channel.joinRef()`: no state seen yet, or the channel
    /// rejoined since. An empty join_ref counts as none, as it is falsy in JavaScript.
    pub fn in_pending_sync_state(&self, channel_join_ref: Option<&str>) -> bool {
        match self.join_ref.as_deref() {
            None | Some("") => true,
            Some(mine) => Some(mine) != channel_join_ref,
        }
    }

    /// The presences.
    pub fn state(&self) -> Listed<'_> {
        match &self.shared {
            Some(list) => Listed::Shared(list),
            None => Listed::Ordered(&self.state),
        }
    }

    /// Diffs waiting for the next state, in arrival order.
    pub fn pending_diffs(&self) -> &[PresenceDiff] {
        &self.pending_diffs
    }

    /// The join_ref recorded with the last state.
    pub fn join_ref(&self) -> Option<&str> {
        self.join_ref.as_deref()
    }

    /// `presence.list()` (in key order for a shared list).
    pub fn list(&self) -> Vec<&Presence> {
        self.state().iter().map(|(_, p)| p).collect()
    }

    /// `presence.list(chooser)` (in key order for a shared list).
    pub fn list_by<'a, T>(&'a self, mut chooser: impl FnMut(&'a str, &'a Presence) -> T) -> Vec<T> {
        self.state().iter().map(|(k, p)| chooser(k, p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(joins: Value, leaves: Value) -> PresenceDiff {
        PresenceDiff::from_payload(json!({"joins": joins, "leaves": leaves})).unwrap_or_default()
    }

    fn joined_keys(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Join { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_shared_diff_is_applied_in_javascript_key_order() {
        let meta = |r: &str| json!({"metas": [{"phx_ref": r}]});
        let keys = ["b", "10", "a", "2", "007", "4294967295", "0"];
        let joins: serde_json::Map<String, Value> =
            keys.iter().map(|k| ((*k).to_owned(), meta(k))).collect();
        let leaves = json!({"a": meta("a"), "3": meta("3"), "1": meta("x")});
        let d = diff(Value::Object(joins), leaves);
        // what JSON.parse makes of the diff's objects: JsMap's order
        let js: JsMap<Presence> = d.joins.clone().into_iter().collect();
        let mut state: SyncState = [("1".to_owned(), Presence::new(Vec::new()))]
            .into_iter()
            .collect();
        let mut events = Vec::new();
        sync_shared_diff(&mut state, &SharedDiff::new(d.clone()), &mut events);
        assert_eq!(joined_keys(&events), js.keys().collect::<Vec<_>>());
        assert_eq!(
            joined_keys(&events),
            ["0", "2", "10", "b", "a", "007", "4294967295"]
        );
        // leaves after joins, in their own JavaScript order: "1" (known, nothing removed,
        // still reported) then "a"; "3" is unknown and silent
        let left: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Leave { key, .. } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(left, ["1", "a"]);
        // the owned diff gives the same state
        let mut owned: SyncState = [("1".to_owned(), Presence::new(Vec::new()))]
            .into_iter()
            .collect();
        sync_diff(&mut owned, d, &mut ());
        assert_eq!(owned, state);
    }

    #[test]
    fn a_shared_diff_changes_a_list_as_the_owned_one_does_and_shares_its_joins() {
        let m = |r: &str| json!({"phx_ref": r});
        let start = || {
            let mut state = SyncState::new();
            let payload = json!({"a": {"metas": [m("1"), m("2")]}, "b": {"metas": [m("3")]}});
            sync_state(
                &mut state,
                PresenceState::from_payload(payload).unwrap_or_default(),
                &mut (),
            );
            state
        };
        let diffs = [
            // a new key, a re-joined ref on a known key, a leave emptying a key
            diff(
                json!({"c": {"metas": [m("4")]}, "a": {"metas": [m("2"), m("5")], "x": 1}}),
                json!({"b": {"metas": [m("3")]}, "z": {"metas": [m("9")]}}),
            ),
            // a leave of one ref of a key that a shared diff joined
            diff(
                json!({}),
                json!({"a": {"metas": [m("1")]}, "c": {"metas": [m("7")]}}),
            ),
        ];
        let (mut owned, mut shared) = (start(), start());
        let (mut owned_events, mut shared_events) = (Vec::new(), Vec::new());
        for d in &diffs {
            sync_diff(&mut owned, d.clone(), &mut owned_events);
            sync_shared_diff(&mut shared, &SharedDiff::new(d.clone()), &mut shared_events);
            assert_eq!(shared, owned);
            assert_eq!(
                shared.keys().collect::<Vec<_>>(),
                owned.keys().collect::<Vec<_>>()
            );
        }
        assert_eq!(shared_events, owned_events);
        // a joined presence is the diff's own, not a copy
        let d = SharedDiff::new(diffs[0].clone());
        let mut fresh = SyncState::new();
        sync_shared_diff(&mut fresh, &d, &mut ());
        let (Some(held), Some(joined)) = (fresh.get_shared("c"), d.joins.get_shared("c")) else {
            panic!("c missing");
        };
        assert!(Arc::ptr_eq(held, joined));
    }

    /// phoenix.js's `syncDiff` on a plain list of keys in insertion order (named keys only),
    /// with every presence its own copy: what [`apply`] must do to lists that share entries.
    fn model_diff(
        state: &mut Vec<(String, Presence)>,
        joins: &[(String, Presence)],
        leaves: &[(String, Presence)],
        events: &mut Vec<Event>,
    ) {
        for (key, joined) in joins {
            let at = state.iter().position(|(k, _)| k == key);
            let current = at.map(|i| state[i].1.clone());
            let mut stored = joined.clone();
            if let Some(current) = &current {
                let mut metas: Vec<Meta> = current
                    .metas
                    .iter()
                    .filter(|m| !ref_in(&joined.metas, m))
                    .cloned()
                    .collect();
                metas.extend(joined.metas.iter().cloned());
                stored.metas = metas;
            }
            match at {
                Some(i) => state[i].1 = stored,
                None => state.push((key.clone(), stored)),
            }
            events.push(Event::Join {
                key: key.clone(),
                current,
                joined: joined.clone(),
            });
        }
        for (key, left) in leaves {
            let Some(i) = state.iter().position(|(k, _)| k == key) else {
                continue;
            };
            state[i].1.metas.retain(|m| !ref_in(&left.metas, m));
            events.push(Event::Leave {
                key: key.clone(),
                current: state[i].1.clone(),
                left: left.clone(),
            });
            if state[i].1.metas.is_empty() {
                state.remove(i);
            }
        }
    }

    /// phoenix.js's `syncState` on the plain list, through [`model_diff`].
    fn model_state(
        state: &mut Vec<(String, Presence)>,
        new_state: &[(String, Presence)],
        events: &mut Vec<Event>,
    ) {
        let mut joins = Vec::new();
        let mut leaves: Vec<(String, Presence)> = state
            .iter()
            .filter(|(k, _)| !new_state.iter().any(|(n, _)| n == k))
            .cloned()
            .collect();
        for (key, new) in new_state {
            let Some((_, current)) = state.iter().find(|(k, _)| k == key) else {
                joins.push((key.clone(), new.clone()));
                continue;
            };
            let joined: Vec<Meta> = new
                .metas
                .iter()
                .filter(|m| !ref_in(&current.metas, m))
                .cloned()
                .collect();
            let left: Vec<Meta> = current
                .metas
                .iter()
                .filter(|m| !ref_in(&new.metas, m))
                .cloned()
                .collect();
            if !joined.is_empty() {
                joins.push((key.clone(), new.with_metas(joined)));
            }
            if !left.is_empty() {
                leaves.push((key.clone(), current.with_metas(left)));
            }
        }
        model_diff(state, &joins, &leaves, events);
    }

    /// States and diffs drawn over a few keys and refs (a key joined with no metas, refs
    /// repeated, leaves of unknown keys and refs), applied owned and shared to lists
    /// that share entries with each other and with a snapshot: each list, its callbacks and
    /// the snapshot match the model after every message.
    #[test]
    fn lists_sharing_entries_change_as_phoenix_js_lists() {
        use proptest::prelude::*;
        let presence = (0u8..2, prop::collection::vec(0u8..5, 0..3));
        let object = prop::collection::btree_map(0u8..4, presence, 0..4);
        let message = (any::<bool>(), object.clone(), object);
        let cases = (prop::collection::vec(message, 1..8), 0usize..8);
        let to_json = |o: &std::collections::BTreeMap<u8, (u8, Vec<u8>)>| {
            let members: serde_json::Map<String, Value> = o
                .iter()
                .map(|(k, (x, refs))| {
                    let metas: Vec<Value> = refs
                        .iter()
                        .map(|r| json!({"phx_ref": format!("r{r}"), "x": *x}))
                        .collect();
                    (format!("k{k}"), json!({"metas": metas}))
                })
                .collect();
            Value::Object(members)
        };
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(1024));
        let result = runner.run(&cases, |(messages, snap_at)| {
            let mut model: Vec<(String, Presence)> = Vec::new();
            let mut lists = [SyncState::new(), SyncState::new(), SyncState::new()];
            let mut instance = PresenceInstance::new();
            // joined, as a client's instance is after the join's state
            instance.handle_state(Some("1"), PresenceState::default(), &mut ());
            let mut snapshot: Option<(SyncState, Vec<(String, Presence)>)> = None;
            for (n, (is_state, a, b)) in messages.iter().enumerate() {
                let mut want = Vec::new();
                let mut got: [Vec<Event>; 3] = Default::default();
                if *is_state {
                    let payload = to_json(a);
                    let new = PresenceState::from_payload(payload.clone()).unwrap_or_default();
                    let entries: Vec<(String, Presence)> =
                        new.presences.clone().into_iter().collect();
                    model_state(&mut model, &entries, &mut want);
                    for (list, events) in lists.iter_mut().zip(got.iter_mut()) {
                        let new = PresenceState::from_payload(payload.clone()).unwrap_or_default();
                        sync_state(list, new, events);
                    }
                    instance.handle_state(Some("1"), new, &mut ());
                } else {
                    let d = diff(to_json(a), to_json(b));
                    let joins: Vec<(String, Presence)> = d.joins.clone().into_iter().collect();
                    let leaves: Vec<(String, Presence)> = d.leaves.clone().into_iter().collect();
                    model_diff(&mut model, &joins, &leaves, &mut want);
                    let shared = Arc::new(SharedDiff::new(d.clone()));
                    sync_diff(&mut lists[0], d, &mut got[0]);
                    sync_shared_diff(&mut lists[1], &shared, &mut got[1]);
                    sync_shared_diff(&mut lists[2], &shared, &mut got[2]);
                    instance.handle_shared_diff(Some("1"), &shared, &mut ());
                }
                let listed = |l: &SyncState| -> Vec<(String, Presence)> {
                    l.iter().map(|(k, p)| (k.to_owned(), p.clone())).collect()
                };
                for (list, events) in lists.iter().zip(&got) {
                    prop_assert_eq!(&listed(list), &model, "message {}", n);
                    prop_assert_eq!(events, &want, "message {}", n);
                }
                let instance_list: Vec<(String, Presence)> = instance
                    .state()
                    .iter()
                    .map(|(k, p)| (k.to_owned(), p.clone()))
                    .collect();
                prop_assert_eq!(&instance_list, &model, "message {}", n);
                if n == snap_at {
                    snapshot = Some((lists[2].clone(), model.clone()));
                    // the third list now shares every entry with the snapshot
                }
                if n % 3 == 2 {
                    // the second list and the third share every entry from here
                    lists[1] = lists[2].clone();
                }
            }
            if let Some((list, model)) = snapshot {
                prop_assert_eq!(
                    list.iter()
                        .map(|(k, p)| (k.to_owned(), p.clone()))
                        .collect::<Vec<_>>(),
                    model,
                    "the snapshot did not change with the lists it shared entries with"
                );
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    #[test]
    fn a_state_into_an_empty_list_joins_every_key_in_javascript_order() {
        let payload = json!({
            "b": {"metas": [{"phx_ref": "1"}]},
            "10": {"metas": [{"phx_ref": "2"}], "user": 1},
            "a": {"metas": []},
            "2": {"metas": [{"phx_ref": "3"}, {"phx_ref": "4"}]}
        });
        let new_state = || PresenceState::from_payload(payload.clone()).unwrap_or_default();
        let mut state = SyncState::new();
        let mut events = Vec::new();
        sync_state(&mut state, new_state(), &mut events);
        assert_eq!(joined_keys(&events), ["2", "10", "b", "a"]);
        assert!(events.iter().all(|e| match e {
            Event::Join { current, .. } => current.is_none(),
            _ => false,
        }));
        let expected: JsMap<Presence> = new_state().presences.into_iter().collect();
        assert_eq!(state, expected);
        // the general path (a list that is not empty) ends in the same list
        let mut other: SyncState = [("z".to_owned(), Presence::new(Vec::new()))]
            .into_iter()
            .collect();
        sync_state(&mut other, new_state(), &mut ());
        assert_eq!(other, expected);
    }
}
