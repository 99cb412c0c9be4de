//! The end of a run: what differs between each node's list and the truth is classified as
//! `lost` (a live presence missing), `stale_meta` (an older meta listed where the owner holds a
//! newer one) or `ghost` (a presence whose owner is gone), and every joined client's list must
//! equal its node's (`client_view`).

use super::truth::{nonempty, short, truth};
use super::{Finding, FindingKind, NodeList, PresenceList, Snapshot, finding};
use crate::snapshot::{Name, Topic};
use std::collections::{BTreeMap, BTreeSet};

/// Each node's list against the truth at the end. A ghost already reported while the run went
/// is not reported again.
pub(super) fn nodes(last: &Snapshot, out: &mut Vec<Finding>) {
    let end = last.at_ms;
    // classify what differs at the end: lost, stale, ghost
    let truth = truth(last);
    let mut end_findings = Vec::new();
    for (node, ns) in &last.nodes {
        let lists = nonempty(&ns.lists);
        let topics: BTreeSet<&Topic> = lists.keys().chain(truth.keys()).collect();
        for topic in topics {
            let have = lists.get(topic).cloned().unwrap_or_default();
            let want = truth.get(topic).cloned().unwrap_or_default();
            let keys: BTreeSet<&Name> = have.keys().chain(want.keys()).collect();
            for key in keys {
                let h: BTreeSet<&Name> = have
                    .get(key)
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                let w: BTreeSet<&Name> = want
                    .get(key)
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                if h == w {
                    continue;
                }
                let missing: Vec<_> = w.difference(&h).collect();
                let extra: Vec<_> = h.difference(&w).collect();
                let (kind, what) = if !missing.is_empty() && !extra.is_empty() {
                    (
                        FindingKind::StaleMeta,
                        format!("lists {extra:?} where the owner holds {missing:?}"),
                    )
                } else if !missing.is_empty() {
                    (FindingKind::Lost, format!("misses live {missing:?}"))
                } else {
                    (
                        FindingKind::Ghost,
                        format!("lists {extra:?}, whose owner is gone"),
                    )
                };
                end_findings.push((kind, node.clone(), format!("{topic} {key}: {what}")));
            }
        }
    }
    for (kind, node, detail) in end_findings {
        let dup = kind == FindingKind::Ghost
            && out
                .iter()
                .any(|f| f.kind == kind && f.subject == node && detail.contains(&f.detail));
        if !dup {
            out.push(finding(end, kind, &node, detail));
        }
    }
}

/// Each joined client's list against its node's at the end.
pub(super) fn client_views(
    last: &Snapshot,
    final_views: &BTreeMap<String, PresenceList>,
    out: &mut Vec<Finding>,
) {
    for (name, view) in final_views {
        client_view(last, name, view, out);
    }
}

/// One joined client's list against its node's at the end.
pub(super) fn client_view(
    last: &Snapshot,
    name: &str,
    view: &PresenceList,
    out: &mut Vec<Finding>,
) {
    shared_client_view(last, &[name], view, out);
}

/// Joined clients that all hold `view`, each against its node's list at the end. Each
/// (node, topic) list is compared with `view` once, whatever the number of clients on it.
pub(super) fn shared_client_view(
    last: &Snapshot,
    names: &[&str],
    view: &PresenceList,
    out: &mut Vec<Finding>,
) {
    let empty = NodeList::default();
    // per (node, topic): the node's list if it differs from `view`, `None` if they agree
    let mut compared: BTreeMap<(&str, &str), Option<&NodeList>> = BTreeMap::new();
    for name in names {
        let Some(c) = last.clients.get(*name).filter(|c| c.joined) else {
            continue;
        };
        let Some(ns) = last.nodes.get(c.node.as_str()) else {
            continue;
        };
        let differs = *compared
            .entry((c.node.as_str(), c.topic.as_str()))
            .or_insert_with(|| {
                let node_list = ns.lists.get(c.topic.as_str()).map_or(&empty, |l| &**l);
                (!node_list.same_as(view)).then_some(node_list)
            });
        if let Some(node_list) = differs {
            out.push(finding(
                last.at_ms,
                FindingKind::ClientView,
                name,
                format!(
                    "shows {} but {} lists {}",
                    short(view),
                    c.node,
                    short(&node_list.to_ref_list())
                ),
            ));
        }
    }
}
