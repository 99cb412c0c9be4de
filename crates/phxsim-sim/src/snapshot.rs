//! What the sampler hands the checkers at one instant: every node's lists and its own
//! presences, and every client's state, as plain data. A module of its own so that the event
//! stream, which carries snapshots, and the checkers, which read the stream, both depend on
//! it and not on each other.

pub use phxsim_tracker::{Meta, Name};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `key → phx_ref → meta`: a presence list as a node or a client holds it for one topic, in
/// the form the checkers compare. It is no payload model (those are `phxsim_wire`'s
/// `PresenceState` and `PresenceDiff`, and the tracker's `TrackerList`): indexed by ref, it
/// makes two lists equal when they hold the same presences whatever their order, which is
/// what "the client shows what its node lists" means.
/// The same type as `phxsim_runtime::RefList`, which a node builds for the sampler: its
/// metas are the tracker's shared [`Meta`] blocks, compared as JSON (pointer first).
pub type PresenceList = phxsim_runtime::RefList;

/// A node's list of one topic as a snapshot holds it: a [`PresenceList`] in one flat sorted
/// slice (about 56 bytes per presence instead of some 450), read through the same shape
/// (`iter()` gives each key with its refs) and compared with a client's [`PresenceList`] by
/// `same_as`. A run holds one per node and topic, and two samples' worth during a heal.
pub type NodeList = phxsim_runtime::SampledList;

/// A list of metas grouped by key (a node's `TrackerList`, a client's view) as a
/// [`PresenceList`]; a meta without a `phx_ref` is no presence and is left out.
pub fn presence_list(by_key: BTreeMap<String, Vec<Json>>) -> PresenceList {
    let mut out = PresenceList::new();
    for (key, metas) in by_key {
        let entry = out.entry(Name::from(key)).or_default();
        for m in metas {
            if let Some(r) = m.get("phx_ref").and_then(Json::as_str) {
                entry.insert(Name::from(r), Meta::new(m));
            }
        }
    }
    out
}

/// A client's meta (its fields, as phoenix.js keeps them) in the form a [`PresenceList`]
/// holds: the fields' JSON text, in their order.
pub fn meta_of_fields(fields: &Map<String, Json>) -> Meta {
    // serialising a JSON map cannot fail and gives one object
    let text = serde_json::to_string(fields).unwrap_or_default();
    Meta::parse(&text).unwrap_or_default()
}

/// A topic's name as a snapshot keys it: held inline when short, so that the sampler's copy
/// of a node's topic maps at every answer, and their drop, allocate no string per topic.
pub type Topic = Name;

/// What a running node shows at one instant. Each topic's lists are shared: a topic that did
/// not change since the last sample hands in the same allocation again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSnapshot {
    /// Per topic, the node's `Presence.list` (down replicas hidden).
    pub lists: BTreeMap<Topic, Arc<NodeList>>,
    /// Per topic, the presences this node tracks for its own sockets: the ground truth.
    pub local: BTreeMap<Topic, Arc<NodeList>>,
}

/// What a client holds at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSnapshot {
    /// Names inline when short: the sampler builds the client map anew whenever a client
    /// joins or leaves, and these then cost no allocation to copy or drop.
    pub node: Name,
    pub topic: Name,
    pub user: Name,
    /// Connected and joined (the join reply arrived and the channel is not closed).
    pub joined: bool,
    /// Its phoenix.js-exact presence list (the harness leaves it empty in samples and passes
    /// the lists read at the end to [`Checkers::finish`]).
    pub view: PresenceList,
}

/// The whole world at `at_ms`. Crashed nodes are absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub at_ms: u64,
    /// Shared: a node that did not change since the last sample hands in the same
    /// allocation, and the checkers skip what only depends on the lists.
    pub nodes: BTreeMap<String, Arc<NodeSnapshot>>,
    /// Shared like the nodes: samples in which no client joined or left reuse one map.
    pub clients: Arc<Clients>,
}

/// Every client by name. Names are [`Name`]s, held inline when short: while clients join, the
/// sampler copies the map at every sample (a checker still holds the last one), and a copy
/// then allocates no string per client.
pub type Clients = BTreeMap<Name, ClientSnapshot>;
