//! Whether every node lists the truth, judged topic by topic and remembered: a topic whose
//! lists are the same allocations as at the last sample (the sampler shares the lists of a
//! topic that did not change) keeps its verdict and its live refs. At a thousand topics, a
//! sample then costs what changed, not every presence of every node.

use super::ghost::Ghosts;
use super::{NodeList, NodeSnapshot, Snapshot};
use crate::snapshot::{Meta, Name, Topic};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Every node's two lists of one topic, in node order (`None`: the node has no entry).
type Inputs = Vec<(Option<Arc<NodeList>>, Option<Arc<NodeList>>)>;

/// One topic's verdict.
struct Judged {
    /// Every node lists exactly the union of the nodes' own presences.
    agree: bool,
    /// The refs of that union: presences whose owner is live.
    live: BTreeSet<Name>,
}

/// One entry of a topic's truth: a key and one of its presences (ref and meta), or the key
/// alone when no node holds a presence with a ref under it (a list keeps such a key).
type TruthEntry<'a> = (&'a Name, Option<(&'a Name, &'a Meta)>);

#[derive(Default)]
pub(super) struct Agreement {
    /// The nodes the verdicts were reached from.
    nodes: BTreeMap<String, Arc<NodeSnapshot>>,
    /// Per topic some node holds, whether every node lists its truth.
    topics: BTreeMap<Topic, bool>,
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
                    ghosts.track_topic(&topic, BTreeSet::new(), s.at_ms);
                }
                continue;
            }
            let j = judge(&inputs);
            ghosts.track_topic(&topic, j.live, s.at_ms);
            self.topics.insert(topic, j.agree);
        }
        self.nodes = s.nodes.clone();
        self.topics.values().all(|agree| *agree)
    }
}

/// Adds to `out` every topic held in only one of `old` and `new`, or in both as different
/// allocations. Both are in topic order: one walk.
fn changed_topics(
    old: &BTreeMap<Topic, Arc<NodeList>>,
    new: &BTreeMap<Topic, Arc<NodeList>>,
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
/// winning for a ref two nodes hold), and whether every node lists exactly it. The truth is
/// one sorted vector, not a map per key: a topic is judged at every sample it moves in.
fn judge(inputs: &Inputs) -> Judged {
    let mut all: Vec<TruthEntry> = Vec::new();
    for local in inputs.iter().filter_map(|(_, local)| local.as_deref()) {
        for (k, refs) in local.iter() {
            if refs.is_empty() {
                all.push((k, None));
            }
            all.extend(refs.iter().map(|(r, m)| (k, Some((r, m)))));
        }
    }
    // stable: for one (key, ref), the nodes stay in order and the last one's meta wins; a
    // key alone sorts before its refs and goes when one follows
    all.sort_by(|(k1, e1), (k2, e2)| {
        k1.cmp(k2)
            .then_with(|| e1.map(|e| e.0).cmp(&e2.map(|e| e.0)))
    });
    let mut truth: Vec<TruthEntry> = Vec::with_capacity(all.len());
    for entry in all {
        match truth.last_mut() {
            Some(last) if last.0 == entry.0 && (last.1.is_none() || same_ref(last.1, entry.1)) => {
                if entry.1.is_some() || last.1.is_none() {
                    *last = entry;
                }
            }
            _ => truth.push(entry),
        }
    }
    let agree = inputs.iter().all(|(list, _)| {
        let list = list.as_deref().filter(|l| !l.is_empty());
        match list {
            None => truth.is_empty(),
            Some(l) => same_list(l, &truth),
        }
    });
    let live = truth
        .iter()
        .filter_map(|(_, e)| e.map(|(r, _)| r.clone()))
        .collect();
    Judged { agree, live }
}

/// Two entries of one key hold the same ref.
fn same_ref(a: Option<(&Name, &Meta)>, b: Option<(&Name, &Meta)>) -> bool {
    matches!((a, b), (Some((r1, _)), Some((r2, _))) if r1 == r2)
}

/// Whether `l` lists exactly the entries of `truth`, in order. Metas compare by pointer
/// first: a node's list and the owner's local list hold the same block until a merge brings
/// a copy from another replica.
fn same_list(l: &NodeList, truth: &[TruthEntry]) -> bool {
    let mut t = truth.iter();
    for (k, refs) in l.iter() {
        if refs.is_empty() {
            if t.next() != Some(&(k, None)) {
                return false;
            }
            continue;
        }
        for (r, m) in refs.iter() {
            match t.next() {
                Some((tk, Some((tr, tm)))) if *tk == k && *tr == r && *tm == m => {}
                _ => return false,
            }
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::PresenceList;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The verdict as the checker reached it before the truth was a vector: one map per key.
    fn judge_by_maps(inputs: &Inputs) -> (bool, BTreeSet<Name>) {
        let mut truth: BTreeMap<Name, BTreeMap<Name, Meta>> = BTreeMap::new();
        for (k, refs) in inputs
            .iter()
            .filter_map(|(_, local)| local.as_deref())
            .flat_map(|l| l.to_ref_list())
        {
            truth.entry(k).or_default().extend(refs);
        }
        let agree = inputs.iter().all(|(list, _)| {
            let list = list.as_deref().filter(|l| !l.is_empty());
            match list {
                None => truth.is_empty(),
                Some(l) => {
                    let l = l.to_ref_list();
                    l.len() == truth.len()
                        && l.iter().zip(&truth).all(|((k1, r1), (k2, r2))| {
                            k1 == k2
                                && r1.len() == r2.len()
                                && r1
                                    .iter()
                                    .zip(r2)
                                    .all(|((f1, m1), (f2, m2))| f1 == f2 && m1 == m2)
                        })
                }
            }
        });
        let live = truth
            .values()
            .flat_map(|refs| refs.keys().cloned())
            .collect();
        (agree, live)
    }

    fn list(rng: &mut ChaCha8Rng) -> Option<Arc<NodeList>> {
        if rng.gen_bool(0.1) {
            return None;
        }
        let mut l = PresenceList::new();
        for k in 0..rng.gen_range(0..3) {
            // a key with no ref at all is kept, as a node's list keeps it
            let refs = l.entry(format!("k{k}").into()).or_default();
            for _ in 0..rng.gen_range(0..3) {
                let r = rng.gen_range(0..3);
                let meta =
                    serde_json::json!({"phx_ref": format!("r{r}"), "v": rng.gen_range(0..2)});
                refs.insert(format!("r{r}").into(), meta.into());
            }
        }
        Some(Arc::new(NodeList::from(l)))
    }

    /// Random topics over three nodes, lists often copied from the truth so that nodes agree
    /// as often as not: the vector verdict is always the maps' one.
    #[test]
    fn the_sorted_truth_judges_as_the_maps_did() {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        let mut agreed = 0;
        for case in 0..2000 {
            let locals: Vec<Option<Arc<NodeList>>> = (0..3).map(|_| list(&mut rng)).collect();
            let union = {
                let mut u = PresenceList::new();
                for l in locals.iter().flatten() {
                    for (k, refs) in l.iter() {
                        u.entry(k.clone())
                            .or_default()
                            .extend(refs.iter().map(|(r, m)| (r.clone(), m.clone())));
                    }
                }
                Arc::new(NodeList::from(u))
            };
            let inputs: Inputs = locals
                .into_iter()
                .map(|local| {
                    let listed = if rng.gen_bool(0.7) {
                        Some(union.clone())
                    } else {
                        list(&mut rng)
                    };
                    (listed, local)
                })
                .collect();
            let (agree, live) = judge_by_maps(&inputs);
            let j = judge(&inputs);
            assert_eq!((j.agree, &j.live), (agree, &live), "case {case}");
            agreed += usize::from(agree);
        }
        assert!(
            agreed > 300 && agreed < 1700,
            "both verdicts exercised: {agreed}"
        );
    }
}
