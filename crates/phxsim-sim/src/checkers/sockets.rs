//! `ghost` by socket truth: a node must track exactly one presence per joined socket of its
//! own. More, for longer than the ghost bound, is a presence whose socket is gone: a server
//! that forgot to untrack. The node-level truth cannot see it, since the node itself still
//! holds it.

use super::{Finding, FindingKind, GhostBound, Snapshot, finding};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub(super) struct SocketTruth {
    /// (node, topic, key) → since when the node tracks more presences for that user than the
    /// user has joined sockets on it (a socket gone, its presence kept).
    orphans_since: BTreeMap<(String, String, String), u64>,
    reported: BTreeSet<(String, String, String)>,
}

impl SocketTruth {
    pub(super) fn observe(&mut self, s: &Snapshot, bound: GhostBound, out: &mut Vec<Finding>) {
        let mut joined: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
        for c in s.clients.values().filter(|c| c.joined) {
            *joined
                .entry((c.node.as_str(), c.topic.as_str(), c.user.as_str()))
                .or_default() += 1;
        }
        let mut excess = BTreeMap::new();
        for (node, ns) in &s.nodes {
            for (topic, list) in &ns.local {
                for (key, refs) in list.iter() {
                    let sockets = joined
                        .get(&(node.as_str(), topic.as_str(), key.as_str()))
                        .copied()
                        .unwrap_or(0);
                    if refs.len() > sockets {
                        excess.insert(
                            (node.clone(), topic.clone(), key.clone()),
                            (refs.len(), sockets),
                        );
                    }
                }
            }
        }
        self.orphans_since.retain(|id, _| excess.contains_key(id));
        for (id, (tracked, sockets)) in excess {
            let since = *self.orphans_since.entry(id.clone()).or_insert(s.at_ms);
            if bound.passed(since, s.at_ms) && self.reported.insert(id.clone()) {
                let (node, topic, key) = id;
                out.push(finding(
                    s.at_ms,
                    FindingKind::Ghost,
                    &node,
                    format!(
                        "{topic} {key}: {tracked} presence(s) tracked for {sockets} joined socket(s) since {since} ms"
                    ),
                ));
            }
        }
    }
}
