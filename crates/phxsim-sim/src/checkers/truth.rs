//! The ground truth of a snapshot: the union of every live node's own presences, which every
//! node's list must equal once the cluster has converged.

use super::{PresenceList, Snapshot};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// [`truth`] borrowed from the snapshot: `topic → key → phx_ref → meta`.
type TruthRef<'a> = BTreeMap<&'a str, BTreeMap<&'a str, BTreeMap<&'a str, &'a Json>>>;

/// The union of every live node's local presences, per topic, without cloning: what
/// [`truth`] gives, borrowed.
pub(super) fn truth_ref(s: &Snapshot) -> TruthRef<'_> {
    let mut out: TruthRef<'_> = BTreeMap::new();
    for n in s.nodes.values() {
        for (topic, list) in &n.local {
            let t = out.entry(topic.as_str()).or_default();
            for (k, refs) in list.iter() {
                t.entry(k.as_str())
                    .or_default()
                    .extend(refs.iter().map(|(r, m)| (r.as_str(), m)));
            }
        }
    }
    out.retain(|_, l| !l.is_empty());
    out
}

/// `lists` (empty topics ignored) equals the borrowed `truth` (which has none).
pub(super) fn same_lists_ref(
    lists: &BTreeMap<String, Arc<PresenceList>>,
    truth: &TruthRef<'_>,
) -> bool {
    fn same_list(l: &PresenceList, t: &BTreeMap<&str, BTreeMap<&str, &Json>>) -> bool {
        l.len() == t.len()
            && l.iter().zip(t).all(|((k1, r1), (k2, r2))| {
                k1 == k2
                    && r1.len() == r2.len()
                    && r1
                        .iter()
                        .zip(r2)
                        .all(|((f1, m1), (f2, m2))| f1 == f2 && m1 == *m2)
            })
    }
    let mut mine = lists.iter().filter(|(_, l)| !l.is_empty());
    let mut theirs = truth.iter();
    loop {
        match (mine.next(), theirs.next()) {
            (None, None) => return true,
            (Some((t1, l1)), Some((t2, l2))) if t1 == t2 && same_list(l1, l2) => {}
            _ => return false,
        }
    }
}

/// The union of every live node's local presences, per topic.
pub(super) fn truth(s: &Snapshot) -> BTreeMap<String, PresenceList> {
    let mut out: BTreeMap<String, PresenceList> = BTreeMap::new();
    for n in s.nodes.values() {
        for (topic, list) in &n.local {
            let t = out.entry(topic.clone()).or_default();
            for (k, refs) in list.iter() {
                t.entry(k.clone()).or_default().extend(refs.clone());
            }
        }
    }
    out.retain(|_, l| !l.is_empty());
    out
}

pub(super) fn nonempty(
    lists: &BTreeMap<String, Arc<PresenceList>>,
) -> BTreeMap<String, PresenceList> {
    lists
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(t, l)| (t.clone(), PresenceList::clone(l)))
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
