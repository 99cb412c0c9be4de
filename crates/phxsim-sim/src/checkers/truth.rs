//! The ground truth of a snapshot: the union of every live node's own presences, which every
//! node's list must equal once the cluster has converged.

use super::{NodeList, PresenceList, Snapshot};
use crate::snapshot::Topic;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The union of every live node's local presences, per topic.
pub(super) fn truth(s: &Snapshot) -> BTreeMap<Topic, PresenceList> {
    let mut out: BTreeMap<Topic, PresenceList> = BTreeMap::new();
    for n in s.nodes.values() {
        for (topic, list) in &n.local {
            let t = out.entry(topic.clone()).or_default();
            for (k, refs) in list.iter() {
                t.entry(k.clone())
                    .or_default()
                    .extend(refs.iter().map(|(r, m)| (r.clone(), m.clone())));
            }
        }
    }
    out.retain(|_, l| !l.is_empty());
    out
}

pub(super) fn nonempty(lists: &BTreeMap<Topic, Arc<NodeList>>) -> BTreeMap<Topic, PresenceList> {
    lists
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(t, l)| (t.clone(), l.to_ref_list()))
        .collect()
}

pub(super) fn short(list: &PresenceList) -> String {
    let parts: Vec<String> = list
        .iter()
        .map(|(k, refs)| {
            format!(
                "{k}[{}]",
                refs.keys().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    format!("{{{}}}", parts.join(" "))
}
