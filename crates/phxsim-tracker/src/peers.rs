//! The shard's table of peer replicas (`Phoenix.Tracker.Replica`): who sent the last direct
//! heartbeat when, and whether that makes them up, down or permanently down. Time is a number of
//! milliseconds passed in by the caller.

use crate::types::ReplicaRef;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerStatus {
    Up,
    Down,
    Permdown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub replica: ReplicaRef,
    pub last_heartbeat_at: u64,
    pub status: PeerStatus,
}

/// Peers keyed by *name*: a new vsn under a known name replaces the old incarnation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    by_name: BTreeMap<String, Peer>,
}

impl Peers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Option<&Peer> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.by_name.values()
    }

    pub fn remove(&mut self, name: &str) -> Option<Peer> {
        self.by_name.remove(name)
    }

    /// Records a direct heartbeat from `replica` at `now`: the entry becomes up with the new
    /// vsn. Returns the previous entry, from which the caller decides up/down/permdown.
    pub fn put_heartbeat(&mut self, replica: &ReplicaRef, now: u64) -> Option<Peer> {
        self.by_name.insert(
            replica.name.to_string(),
            Peer {
                replica: replica.clone(),
                last_heartbeat_at: now,
                status: PeerStatus::Up,
            },
        )
    }

    /// Re-evaluates one peer at `now`: down after `down_period` of silence, permdown (and
    /// removed from the table) after `permdown_period`. Returns `(previous, updated)` when
    /// the peer is known.
    pub fn detect_down(
        &mut self,
        name: &str,
        now: u64,
        down_period: u64,
        permdown_period: u64,
    ) -> Option<(Peer, Peer)> {
        let prev = self.by_name.get(name)?.clone();
        let downtime = now.saturating_sub(prev.last_heartbeat_at);
        let mut updated = prev.clone();
        if downtime > permdown_period {
            updated.status = PeerStatus::Permdown;
            self.by_name.remove(name);
        } else if downtime > down_period {
            updated.status = PeerStatus::Down;
            self.by_name.insert(name.to_owned(), updated.clone());
        }
        Some((prev, updated))
    }

    /// Names of every known peer, in order.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}
