//! What each simulated node's tracker did, as typed events with their simulated time: every
//! `handle_diff` split into one join or leave per presence, and every replica up, down and
//! permdown. It is the simulator's side of `phxsim crosscheck`, which compares it with the
//! same events logged by a real Phoenix.Tracker cluster; the transcript keeps replica events
//! only, and as text.

use crate::checkers::NodeList;
use phxsim_shard::TrackerEvent;
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// What happened on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceKind {
    ReplicaUp,
    ReplicaDown,
    ReplicaPermdown,
    /// A presence reported joined by `handle_diff`.
    Join,
    /// A presence reported left by `handle_diff`.
    Leave,
}

impl TraceKind {
    pub fn name(self) -> &'static str {
        match self {
            TraceKind::ReplicaUp => "replica_up",
            TraceKind::ReplicaDown => "replica_down",
            TraceKind::ReplicaPermdown => "replica_permdown",
            TraceKind::Join => "join",
            TraceKind::Leave => "leave",
        }
    }
}

/// One event of one node's tracker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceEvent {
    pub t_ms: u64,
    pub node: String,
    pub kind: TraceKind,
    /// The remote node (replica events) or `topic/key` (joins and leaves).
    pub subject: String,
    /// Joins and leaves: the presence's meta without `phx_ref`/`phx_ref_prev`, as compact JSON
    /// with sorted keys, so that the same meta compares equal whatever produced it.
    pub meta: Option<String>,
}

/// A meta in comparable form: the fields Phoenix adds are left out, keys sorted.
pub fn canonical_meta(meta: &Json) -> String {
    fn sorted(v: &Json) -> Json {
        match v {
            Json::Object(m) => {
                let by_key: BTreeMap<&String, Json> =
                    m.iter().map(|(k, v)| (k, sorted(v))).collect();
                Json::Object(by_key.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut m = meta.clone();
    if let Json::Object(o) = &mut m {
        o.shift_remove("phx_ref");
        o.shift_remove("phx_ref_prev");
    }
    sorted(&m).to_string()
}

/// The events of one tracker event on `node` at `t_ms` (none for an empty diff).
pub fn trace_events(t_ms: u64, node: &str, e: &TrackerEvent) -> Vec<TraceEvent> {
    let one = |kind, subject: &str| TraceEvent {
        t_ms,
        node: node.to_owned(),
        kind,
        subject: subject.to_owned(),
        meta: None,
    };
    match e {
        TrackerEvent::ReplicaUp { replica, .. } => vec![one(TraceKind::ReplicaUp, &replica.name)],
        TrackerEvent::ReplicaDown { replica, .. } => {
            vec![one(TraceKind::ReplicaDown, &replica.name)]
        }
        TrackerEvent::ReplicaPermdown { replica, .. } => {
            vec![one(TraceKind::ReplicaPermdown, &replica.name)]
        }
        TrackerEvent::PresenceDiff { topic, diff } => {
            let mut out = Vec::new();
            for (kind, by_key) in [
                (TraceKind::Join, &diff.joins),
                (TraceKind::Leave, &diff.leaves),
            ] {
                for (key, metas) in by_key {
                    for meta in metas {
                        out.push(TraceEvent {
                            meta: Some(canonical_meta(meta)),
                            ..one(kind, &format!("{topic}/{key}"))
                        });
                    }
                }
            }
            out
        }
    }
}

/// A node's lists in comparable form: `topic/key` → the canonical metas, sorted.
pub fn comparable_lists(
    lists: &BTreeMap<crate::snapshot::Topic, std::sync::Arc<NodeList>>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (topic, list) in lists {
        for (key, by_ref) in list.iter() {
            let mut metas: Vec<String> = by_ref
                .values()
                .map(|m| canonical_meta(&m.to_json()))
                .collect();
            metas.sort();
            if !metas.is_empty() {
                out.insert(format!("{topic}/{key}"), metas);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_meta_drops_phoenix_refs_and_sorts_keys() {
        let m = json!({"z": 1, "phx_ref": "X", "a": {"y": 2, "b": 3}, "phx_ref_prev": "Y"});
        assert_eq!(canonical_meta(&m), r#"{"a":{"b":3,"y":2},"z":1}"#);
    }
}
