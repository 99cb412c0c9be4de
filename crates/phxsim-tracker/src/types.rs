//! The identities the CRDT is made of: replicas, dots (tags) and presences.

use crate::shared::{Meta, Name};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A replica's identity: the node (or shard) name plus the version stamp chosen when it started.
/// A restarted shard keeps its name and gets a new `vsn`, so it is a different replica.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaRef {
    pub name: Name,
    pub vsn: u64,
}

impl ReplicaRef {
    pub fn new(name: impl Into<Name>, vsn: u64) -> Self {
        Self {
            name: name.into(),
            vsn,
        }
    }
}

impl fmt::Display for ReplicaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.vsn)
    }
}

/// A dot: the event `clock` of `replica`. Every value carries the dot that added it, and every
/// remove is recorded as the dot it killed. Ordered by replica then clock, which is the order
/// every report of the crate uses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tag {
    pub replica: ReplicaRef,
    pub clock: u64,
}

impl Tag {
    pub fn new(replica: ReplicaRef, clock: u64) -> Self {
        Self { replica, clock }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.replica, self.clock)
    }
}

/// What identifies one presence in the state: Phoenix keeps exactly one live value per
/// `{topic, pid, key}`. Ordered topic first so that a topic's presences form one range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValueKey {
    pub topic: Name,
    pub pid: Name,
    pub key: Name,
}

impl ValueKey {
    pub fn new(topic: impl Into<Name>, pid: impl Into<Name>, key: impl Into<Name>) -> Self {
        Self {
            topic: topic.into(),
            pid: pid.into(),
            key: key.into(),
        }
    }
}

/// A meta tracked under a (topic, pid, key), as it travels in a delta or an extract
/// (`tag => {pid, topic, key, meta}`). Not a wire `Presence` (`{"metas": [...]}` of one key,
/// in `phxsim-wire`): this is one entry of the tracker's values, without its dot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedMeta {
    pub key: ValueKey,
    pub meta: Meta,
}

/// A presence with the dot that added it: a row of the values table, and the unit of every
/// join and leave report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub key: ValueKey,
    pub meta: Meta,
    pub tag: Tag,
}

/// What a merge, `replica_up` or `replica_down` changed, both lists sorted by tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub joins: Vec<Value>,
    pub leaves: Vec<Value>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}
