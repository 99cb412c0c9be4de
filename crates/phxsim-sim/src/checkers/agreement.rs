//! Whether every node lists the truth, judged topic by topic and remembered: a topic whose
//! lists are the same allocations as at the last sample (the sampler shares the lists of a
//! topic that did not change) keeps its verdict and its live refs. At a thousand topics, a
//! sample then costs what changed, not every presence of every node.

use super::PresenceList;
use super::Snapshot;
use super::ghost::Ghosts;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One node's two lists of a topic (`None`: the node has no entry for it).
type Inputs = Vec<(String, Option<Arc<PresenceList>>, Option<Arc<PresenceList>>)>;

/// One topic's verdict, and what it was reached from.
struct Judged {
    /// Every node, in order, with its lists of the topic.
    inputs: Inputs,
    /// Every node lists exactly the union of the nodes' own presences.
    agree: bool,
    /// The refs of that union: presences whose owner is live.
    live: BTreeSet<String>,
}

#[derive(Default)]
pub(super) struct Agreement {
    topics: BTreeMap<String, Judged>,
}

impl Agreement {
    /// Whether every node of `s` lists the truth of every topic; tells `ghosts` the live refs
    /// of each topic whose truth may have moved.
    pub(super) fn observe(&mut self, s: &Snapshot, ghosts: &mut Ghosts) -> bool {
        let topics: BTreeSet<&String> = s
            .nodes
            .values()
            .flat_map(|n| n.lists.keys().chain(n.local.keys()))
            .collect();
        let mut next = BTreeMap::new();
        for topic in topics {
            let inputs: Inputs = s
                .nodes
                .iter()
                .map(|(name, n)| {
                    (
                        name.clone(),
                        n.lists.get(topic).cloned(),
                        n.local.get(topic).cloned(),
                    )
                })
                .collect();
            let judged = match self.topics.remove(topic.as_str()) {
                Some(j) if same_inputs(&j.inputs, &inputs) => j,
                _ => {
                    let j = judge(inputs);
                    ghosts.track_topic(topic, &j.live, s.at_ms);
                    j
                }
            };
            next.insert(topic.clone(), judged);
        }
        // a topic no node holds any more: every ref it had is gone
        for topic in self.topics.keys() {
            ghosts.track_topic(topic, &BTreeSet::new(), s.at_ms);
        }
        self.topics = next;
        self.topics.values().all(|j| j.agree)
    }
}

fn same_inputs(a: &Inputs, b: &Inputs) -> bool {
    fn same(a: &Option<Arc<PresenceList>>, b: &Option<Arc<PresenceList>>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((n1, l1, o1), (n2, l2, o2))| n1 == n2 && same(l1, l2) && same(o1, o2))
}

/// The truth of one topic (the union of every node's own presences, a later node's meta
/// winning for a ref two nodes hold), and whether every node lists exactly it.
fn judge(inputs: Inputs) -> Judged {
    let mut truth: BTreeMap<&str, BTreeMap<&str, &Json>> = BTreeMap::new();
    for (k, refs) in inputs
        .iter()
        .filter_map(|(_, _, local)| local.as_deref())
        .flatten()
    {
        truth
            .entry(k.as_str())
            .or_default()
            .extend(refs.iter().map(|(r, m)| (r.as_str(), m)));
    }
    let agree = inputs.iter().all(|(_, list, _)| {
        let list = list.as_deref().filter(|l| !l.is_empty());
        match list {
            None => truth.is_empty(),
            Some(l) => same_list(l, &truth),
        }
    });
    let live = truth
        .values()
        .flat_map(|refs| refs.keys().map(|r| (*r).to_owned()))
        .collect();
    Judged {
        inputs,
        agree,
        live,
    }
}

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
