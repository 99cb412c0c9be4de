//! Whether every node lists the truth, judged topic by topic and remembered: a topic whose
//! lists are the same allocations as at the last sample (the sampler shares the lists of a
//! topic that did not change) keeps its verdict and its live refs. At a thousand topics, a
//! sample then costs what changed, not every presence of every node.

use super::ghost::Ghosts;
use super::{NodeSnapshot, PresenceList, Snapshot};
use crate::snapshot::{Meta, Name, Topic};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Every node's two lists of one topic, in node order (`None`: the node has no entry).
type Inputs = Vec<(Option<Arc<PresenceList>>, Option<Arc<PresenceList>>)>;

/// One topic's verdict.
struct Judged {
    /// Every node lists exactly the union of the nodes' own presences.
    agree: bool,
    /// The refs of that union: presences whose owner is live.
    live: BTreeSet<Name>,
}

#[derive(Default)]
pub(super) struct Agreement {
    /// The nodes the verdicts were reached from.
    nodes: BTreeMap<String, Arc<NodeSnapshot>>,
    /// Per topic some node holds, its verdict.
    topics: BTreeMap<Topic, Judged>,
}

impl Agreement {
    /// Whether every node of `s` lists the truth of every topic; tells `ghosts` the live refs
    /// of each topic whose truth may have moved.
    pub(super) fn observe(&mut self, s: &Snapshot, ghosts: &mut Ghosts) -> bool {
        let same_nodes = self.nodes.len() == s.nodes.len()
            && self.nodes.keys().zip(s.nodes.keys()).all(|(a, b)| a == b);
        // the topics whose lists may differ from the last judged ones
        let mut moved: BTreeSet<Topic> = BTreeSet::new();
        if same_nodes {
            for (old, new) in self.nodes.values().zip(s.nodes.values()) {
                if !Arc::ptr_eq(old, new) {
                    changed_topics(&old.lists, &new.lists, &mut moved);
                    changed_topics(&old.local, &new.local, &mut moved);
                }
            }
        } else {
            moved.extend(self.topics.keys().cloned());
            for n in s.nodes.values() {
                moved.extend(n.lists.keys().chain(n.local.keys()).cloned());
            }
        }
        for topic in moved {
            let inputs: Inputs = s
                .nodes
                .values()
                .map(|n| (n.lists.get(&topic).cloned(), n.local.get(&topic).cloned()))
                .collect();
            if inputs.iter().all(|(l, o)| l.is_none() && o.is_none()) {
                // no node holds the topic any more: every ref it had is gone
                if self.topics.remove(&topic).is_some() {
                    ghosts.track_topic(&topic, &BTreeSet::new(), s.at_ms);
                }
                continue;
            }
            let j = judge(&inputs);
            ghosts.track_topic(&topic, &j.live, s.at_ms);
            self.topics.insert(topic, j);
        }
        self.nodes = s.nodes.clone();
        self.topics.values().all(|j| j.agree)
    }
}

/// Adds to `out` every topic held in only one of `old` and `new`, or in both as different
/// allocations. Both are in topic order: one walk.
fn changed_topics(
    old: &BTreeMap<Topic, Arc<PresenceList>>,
    new: &BTreeMap<Topic, Arc<PresenceList>>,
    out: &mut BTreeSet<Topic>,
) {
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        // which side steps, and the topic if it changed
        let (step, changed) = match (o.peek(), n.peek()) {
            (None, None) => return,
            (Some((t, _)), None) => (Ordering::Less, Some(*t)),
            (None, Some((t, _))) => (Ordering::Greater, Some(*t)),
            (Some((to, lo)), Some((tn, ln))) => match to.cmp(tn) {
                Ordering::Equal => (Ordering::Equal, (!Arc::ptr_eq(lo, ln)).then_some(*tn)),
                Ordering::Less => (Ordering::Less, Some(*to)),
                Ordering::Greater => (Ordering::Greater, Some(*tn)),
            },
        };
        if let Some(topic) = changed
            && !out.contains(topic)
        {
            out.insert(topic.clone());
        }
        if step != Ordering::Greater {
            o.next();
        }
        if step != Ordering::Less {
            n.next();
        }
    }
}

/// The truth of one topic (the union of every node's own presences, a later node's meta
/// winning for a ref two nodes hold), and whether every node lists exactly it.
fn judge(inputs: &Inputs) -> Judged {
    let mut truth: BTreeMap<&str, BTreeMap<&str, &Meta>> = BTreeMap::new();
    for (k, refs) in inputs
        .iter()
        .filter_map(|(_, local)| local.as_deref())
        .flatten()
    {
        truth
            .entry(k.as_str())
            .or_default()
            .extend(refs.iter().map(|(r, m)| (r.as_str(), m)));
    }
    let agree = inputs.iter().all(|(list, _)| {
        let list = list.as_deref().filter(|l| !l.is_empty());
        match list {
            None => truth.is_empty(),
            Some(l) => same_list(l, &truth),
        }
    });
    let live = truth
        .values()
        .flat_map(|refs| refs.keys().map(|r| Name::from(*r)))
        .collect();
    Judged { agree, live }
}

/// Metas compare by pointer first: a node's list and the owner's local list hold the same
/// block until a merge brings a copy from another replica.
fn same_list(l: &PresenceList, t: &BTreeMap<&str, BTreeMap<&str, &Meta>>) -> bool {
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
