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

/// A client's presences: phoenix.js's `state` object.
pub type SyncState = JsMap<Presence>;

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

/// [`sync_state`] of a state already in JavaScript order, whose entries other lists may share
/// (what a client does with a state decoded once for many clients).
pub fn sync_state_shared(
    state: &mut SyncState,
    new_state: JsMap<Presence>,
    callbacks: &mut impl Callbacks,
) {
    if state.is_empty() {
        // Nothing leaves and every key joins whole, in `newState`'s order: the state becomes
        // `newState` itself, which is what the general path below builds one key at a time.
        *state = new_state;
        for (key, joined) in state.iter() {
            callbacks.on_join(key, None, joined);
        }
        return;
    }
    let mut joins = JsMap::new();
    let mut leaves = JsMap::new();
    for entry in state.entries() {
        if !new_state.contains_key(&entry.0) {
            leaves.insert_entry(entry.clone());
        }
    }
    for new_entry in new_state.entries() {
        let (key, new_presence) = &**new_entry;
        let Some(current) = state.get(key) else {
            joins.insert_entry(new_entry.clone());
            continue;
        };
        let left_metas: Vec<Meta> = current
            .metas
            .iter()
            .filter(|m| !ref_in(&new_presence.metas, m))
            .cloned()
            .collect();
        let joined_metas: Vec<Meta> = new_presence
            .metas
            .iter()
            .filter(|m| !ref_in(&current.metas, m))
            .cloned()
            .collect();
        if !left_metas.is_empty() {
            leaves.insert_shared(key.clone(), Arc::new(current.with_metas(left_metas)));
        }
        if !joined_metas.is_empty() {
            joins.insert_shared(key.clone(), Arc::new(new_presence.with_metas(joined_metas)));
        }
    }
    apply(state, joins.entries(), leaves.iter(), callbacks);
}

/// `Presence.syncDiff(state, diff, onJoin, onLeave)`: applies one `presence_diff`.
///
/// Joins first, then leaves, each in JavaScript key order. A join replaces the key's top-level
/// fields and puts the current metas whose ref is not re-joined before the joined ones; a leave
/// removes every meta whose ref it names, fires `onLeave` on any known key, and deletes the key
/// once its metas are empty. A leave for an unknown key is ignored without a callback.
pub fn sync_diff(state: &mut SyncState, diff: PresenceDiff, callbacks: &mut impl Callbacks) {
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
        let joins = diff
            .joins
            .iter()
            .map(|(key, p)| (key.clone(), p.clone()))
            .collect();
        SharedDiff { diff, joins }
    }

    /// The diff as decoded.
    pub fn diff(&self) -> &PresenceDiff {
        &self.diff
    }
}

/// [`sync_diff`] of a [`SharedDiff`]: the same changes and callbacks, the joined presences
/// shared with the diff.
pub fn sync_shared_diff(state: &mut SyncState, diff: &SharedDiff, callbacks: &mut impl Callbacks) {
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
/// when no current meta is kept). A leave copies the entry it changes only if it stays.
fn apply<'a>(
    state: &mut SyncState,
    joins: impl Iterator<Item = &'a Entry<Presence>>,
    leaves: impl Iterator<Item = (&'a str, &'a Presence)>,
    callbacks: &mut impl Callbacks,
) {
    for joined_entry in joins {
        let (key, joined) = &**joined_entry;
        match state.entry_or_insert(key, || joined_entry.clone()) {
            (_, true) => callbacks.on_join(key, None, joined),
            (slot, false) => {
                // the current metas whose ref is not re-joined, then the joined ones
                let kept: Vec<Meta> = slot
                    .1
                    .metas
                    .iter()
                    .filter(|m| !ref_in(&joined.metas, m))
                    .cloned()
                    .collect();
                let stored = if kept.is_empty() {
                    joined_entry.clone()
                } else {
                    let mut metas = kept;
                    metas.extend(joined.metas.iter().cloned());
                    Arc::new((slot.0.clone(), Arc::new(joined.with_metas(metas))))
                };
                let current = std::mem::replace(slot, stored);
                callbacks.on_join(key, Some(&current.1), joined);
            }
        }
    }
    for (key, left) in leaves {
        let Some(slot) = state.entry_mut(key) else {
            continue;
        };
        let current = &slot.1;
        if !current.metas.iter().any(|m| ref_in(&left.metas, m)) {
            callbacks.on_leave(key, current, left);
            if current.metas.is_empty() {
                state.remove(key);
            }
            continue;
        }
        if current.metas.iter().all(|m| ref_in(&left.metas, m)) {
            // every meta leaves: the key goes, and nothing is copied for it
            callbacks.on_leave(key, &current.with_metas(Vec::new()), left);
            state.remove(key);
            continue;
        }
        Arc::make_mut(&mut Arc::make_mut(slot).1)
            .metas
            .retain(|m| !ref_in(&left.metas, m));
        callbacks.on_leave(key, &slot.1, left);
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
#[derive(Clone, Debug, Default)]
pub struct PresenceInstance {
    state: SyncState,
    pending_diffs: Vec<PresenceDiff>,
    /// Diffs accepted (not pending) but not yet applied to `state`, in arrival order: see
    /// [`PresenceInstance::queue_shared_diff`]. Every method that changes the instance
    /// applies them first, so only the readers can see a list that lacks them.
    queued: Vec<Arc<SharedDiff>>,
    join_ref: Option<String>,
    events: PresenceEvents,
}

/// How many accepted diffs [`PresenceInstance::queue_shared_diff`] holds before it applies
/// them: enough that a list gone cold in cache is walked for many diffs at once, few enough
/// that a queue costs a browser at most a few hundred bytes (and the shared diffs it pins
/// are freed soon after every other list applied them).
pub const QUEUED_DIFFS_MAX: usize = 32;

/// A diff of more keys than this is applied at once (after the queue), not queued: it is a
/// batch already, and queued it would keep its decoded presences alive until every browser
/// of the topic applied its queue (a heal's diffs of hundreds of keys, held to the end of a
/// 16 000-browser run, cost 12 MiB).
pub const QUEUED_DIFF_MAX_KEYS: usize = 8;

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

    /// Handles a `presence_state`: records the channel's join_ref, syncs the state, replays
    /// every buffered diff in arrival order, then fires `onSync` once.
    pub fn handle_state(
        &mut self,
        channel_join_ref: Option<&str>,
        new_state: PresenceState,
        callbacks: &mut impl Callbacks,
    ) {
        self.apply_queued();
        self.join_ref = channel_join_ref.map(str::to_owned);
        sync_state(&mut self.state, new_state, callbacks);
        self.replay_pending(callbacks);
    }

    /// After a state: every diff buffered before it, in arrival order, then `onSync` once.
    fn replay_pending(&mut self, callbacks: &mut impl Callbacks) {
        for diff in std::mem::take(&mut self.pending_diffs) {
            sync_diff(&mut self.state, diff, callbacks);
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
        self.apply_queued();
        if self.in_pending_sync_state(channel_join_ref) {
            self.pending_diffs.push(diff);
            return false;
        }
        sync_diff(&mut self.state, diff, callbacks);
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
        self.apply_queued();
        self.join_ref = channel_join_ref.map(str::to_owned);
        sync_state_shared(&mut self.state, new_state, callbacks);
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
        self.apply_queued();
        if self.in_pending_sync_state(channel_join_ref) {
            self.pending_diffs.push(diff.diff.clone());
            return false;
        }
        sync_shared_diff(&mut self.state, diff, callbacks);
        callbacks.on_sync();
        true
    }

    /// [`handle_shared_diff`](Self::handle_shared_diff) without callbacks, for an instance
    /// whose list nobody reads between messages: a diff that would be applied now is queued
    /// instead (unless it has more than [`QUEUED_DIFF_MAX_KEYS`] keys: then the queue and the
    /// diff are applied), and the queue is applied in one go when it holds [`QUEUED_DIFFS_MAX`] diffs,
    /// when any other method changes the instance, or at [`apply_queued`](Self::apply_queued).
    /// Applying a run of diffs to one list back to back walks its table while it is in cache;
    /// applied one at a time, between which a simulated host handles the same diff for
    /// thousands of other lists, every diff finds the list cold.
    ///
    /// Returns what `handle_shared_diff` returns. The result is the same list: a queued diff
    /// was accepted when it arrived (the join_ref it was checked against does not matter once
    /// it is accepted), and nothing but these diffs changes the list before the queue is
    /// applied. Until then [`state`](Self::state), [`list`](Self::list) and
    /// [`list_by`](Self::list_by) do not show the queued diffs: call `apply_queued` first.
    pub fn queue_shared_diff(
        &mut self,
        channel_join_ref: Option<&str>,
        diff: &Arc<SharedDiff>,
    ) -> bool {
        if self.in_pending_sync_state(channel_join_ref) {
            self.apply_queued();
            self.pending_diffs.push(diff.diff.clone());
            return false;
        }
        if diff.diff.joins.len() + diff.diff.leaves.len() > QUEUED_DIFF_MAX_KEYS {
            self.apply_queued();
            sync_shared_diff(&mut self.state, diff, &mut ());
            return true;
        }
        self.queued.push(Arc::clone(diff));
        if self.queued.len() >= QUEUED_DIFFS_MAX {
            self.apply_queued();
        }
        true
    }

    /// Applies every diff [`queue_shared_diff`](Self::queue_shared_diff) queued, in arrival
    /// order (no callbacks: a queue is for an instance without them).
    pub fn apply_queued(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        for diff in self.queued.drain(..) {
            sync_shared_diff(&mut self.state, &diff, &mut ());
        }
    }

    /// How many diffs are queued, not yet applied.
    pub fn queued_diffs(&self) -> usize {
        self.queued.len()
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

    /// The presences (without any diff still queued: see
    /// [`queue_shared_diff`](Self::queue_shared_diff)).
    pub fn state(&self) -> &SyncState {
        &self.state
    }

    /// Diffs waiting for the next state, in arrival order.
    pub fn pending_diffs(&self) -> &[PresenceDiff] {
        &self.pending_diffs
    }

    /// The join_ref recorded with the last state.
    pub fn join_ref(&self) -> Option<&str> {
        self.join_ref.as_deref()
    }

    /// `presence.list()`.
    pub fn list(&self) -> Vec<&Presence> {
        list(&self.state)
    }

    /// `presence.list(chooser)`.
    pub fn list_by<'a, T>(&'a self, chooser: impl FnMut(&'a str, &'a Presence) -> T) -> Vec<T> {
        list_by(&self.state, chooser)
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
    /// repeated, leaves of unknown keys and refs), applied owned, shared, and queued to lists
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
                    instance.queue_shared_diff(Some("1"), &shared);
                }
                instance.apply_queued();
                let listed = |l: &SyncState| -> Vec<(String, Presence)> {
                    l.iter().map(|(k, p)| (k.to_owned(), p.clone())).collect()
                };
                for (list, events) in lists.iter().zip(&got) {
                    prop_assert_eq!(&listed(list), &model, "message {}", n);
                    prop_assert_eq!(events, &want, "message {}", n);
                }
                prop_assert_eq!(&listed(instance.state()), &model, "message {}", n);
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
