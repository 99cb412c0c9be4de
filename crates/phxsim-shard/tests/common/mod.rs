//! Helpers for the scripted-network tests: nodes named like the reference cluster, metas
//! written as JSON literals, and the list predicates the reference controller waited on.

#![allow(dead_code)]

use phxsim_shard::{Profile, SeededRefs, SimNet, Tracker, TrackerConfig, TrackerEvent};
use phxsim_tracker::ReplicaRef;
use serde_json::{Map, Value as Json};

pub fn meta(v: Json) -> Map<String, Json> {
    v.as_object().cloned().expect("meta literal is an object")
}

/// The reference cluster's options: broadcast_period 100, permdown 5 000, everything else
/// default (down_period 2 000).
pub fn reference_config() -> TrackerConfig {
    TrackerConfig {
        permdown_period: 5_000,
        ..TrackerConfig::with_broadcast_period(100)
    }
}

/// phoenix_pubsub's own test settings (node_case.ex): period 100, 2 silent periods,
/// permdown 1 500, so down is 400 ms and an idle heartbeat comes every 300 ms.
pub fn upstream_test_config(pool_size: u32, profile: Profile) -> TrackerConfig {
    TrackerConfig {
        max_silent_periods: 2,
        permdown_period: 1_500,
        pool_size,
        profile,
        ..TrackerConfig::with_broadcast_period(100)
    }
}

/// A tracker whose shards first tick `first_tick_delay` ms after `now`.
pub fn tracker(
    cfg: &TrackerConfig,
    name: &str,
    vsn: u64,
    now: u64,
    first_tick_delay: u64,
) -> Tracker {
    let delays = vec![first_tick_delay; cfg.pool_size as usize];
    Tracker::with_parts(
        cfg.clone(),
        name,
        vsn,
        now,
        delays,
        // Distinct per node and incarnation: phx_refs are identities and must not repeat
        // across the cluster.
        Box::new(SeededRefs::new(
            phxsim_shard::pool::fnv1a(name.as_bytes()) ^ vsn,
        )),
    )
    .expect("valid config")
}

/// The keys `node` lists in `topic`.
pub fn keys(net: &SimNet, node: &str, topic: &str) -> Vec<String> {
    net.node(node)
        .list(topic)
        .keys()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

pub fn lists_all(net: &SimNet, node: &str, topic: &str, want: &[&str]) -> bool {
    let have = keys(net, node, topic);
    want.iter().all(|k| have.iter().any(|h| h == k))
}

pub fn lists_none(net: &SimNet, node: &str, topic: &str, gone: &[&str]) -> bool {
    let have = keys(net, node, topic);
    gone.iter().all(|k| !have.iter().any(|h| h == k))
}

/// The value of `field` in the first meta of `key`.
pub fn field(net: &SimNet, node: &str, topic: &str, key: &str, field: &str) -> Option<Json> {
    net.node(node)
        .get_by_key(topic, key)
        .first()
        .and_then(|m| m.get(field).cloned())
}

/// Replica events of `node` since `since`: `("up" | "down" | "permdown", remote name)`.
pub fn replica_events(net: &SimNet, node: &str, since: u64) -> Vec<(u64, &'static str, String)> {
    net.events_of(node, since)
        .into_iter()
        .filter_map(|(at, e)| match e {
            TrackerEvent::ReplicaUp { replica, .. } => Some((at, "up", replica.name.into())),
            TrackerEvent::ReplicaDown { replica, .. } => Some((at, "down", replica.name.into())),
            TrackerEvent::ReplicaPermdown { replica, .. } => {
                Some((at, "permdown", replica.name.into()))
            }
            TrackerEvent::PresenceDiff { .. } => None,
        })
        .collect()
}

/// `presence_diff`s of `node` for `topic` since `since`: `(at, joined keys, left keys)`.
pub fn diffs(
    net: &SimNet,
    node: &str,
    topic: &str,
    since: u64,
) -> Vec<(u64, Vec<String>, Vec<String>)> {
    net.events_of(node, since)
        .into_iter()
        .filter_map(|(at, e)| match e {
            TrackerEvent::PresenceDiff { topic: t, diff } if t == topic => Some((
                at,
                diff.joins.keys().cloned().collect(),
                diff.leaves.keys().cloned().collect(),
            )),
            _ => None,
        })
        .collect()
}

/// `presence_diff`s of `node` since `since` as `(at, joined phx_refs, left phx_refs)`.
pub fn diff_refs(net: &SimNet, node: &str, since: u64) -> Vec<(u64, Vec<String>, Vec<String>)> {
    net.events_of(node, since)
        .into_iter()
        .filter_map(|(at, e)| match e {
            TrackerEvent::PresenceDiff { diff, .. } => Some((
                at,
                diff.join_refs().into_iter().map(str::to_owned).collect(),
                diff.leave_refs().into_iter().map(str::to_owned).collect(),
            )),
            _ => None,
        })
        .collect()
}

/// Is every other node in `others` up in `node`'s table?
pub fn sees_up(net: &SimNet, node: &str, others: &[&str]) -> bool {
    let peers = net.node(node).peers();
    others.iter().all(|o| {
        peers
            .iter()
            .any(|p| p.replica.name == *o && p.status == phxsim_tracker::PeerStatus::Up)
    })
}

pub fn peer_status(
    net: &SimNet,
    node: &str,
    other: &str,
) -> Option<(ReplicaRef, phxsim_tracker::PeerStatus)> {
    net.node(node)
        .peers()
        .into_iter()
        .find(|p| p.replica.name == other)
        .map(|p| (p.replica, p.status))
}
pub mod replay;
