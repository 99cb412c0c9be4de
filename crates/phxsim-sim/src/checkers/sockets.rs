//! `ghost` by socket truth: a node must track exactly one presence per joined socket of its
//! own. More, for longer than the ghost bound, is a presence whose socket is gone: a server
//! that forgot to untrack. The node-level truth cannot see it, since the node itself still
//! holds it.
//!
//! Kept incrementally: a sample mostly hands in the same client map and the same per-topic
//! lists (`Arc`-shared) as the one before, so only the (node, topic) pairs whose local list or
//! whose joined sockets changed are compared again. The excess found is the same as comparing
//! every pair at every sample; the cost per sample follows what changed, not the population.

use super::{Finding, FindingKind, GhostBound, Snapshot, finding};
use crate::snapshot::{ClientSnapshot, Clients, NodeList, NodeSnapshot, Topic};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// (node, topic, key): one user on one topic of one node.
type Id = (String, String, String);

/// node → the topics whose joined counts moved.
type Dirty = BTreeMap<String, BTreeSet<String>>;

#[derive(Default)]
pub(super) struct SocketTruth {
    /// (node, topic, key) → since when the node tracks more presences for that user than the
    /// user has joined sockets on it (a socket gone, its presence kept).
    orphans_since: BTreeMap<Id, u64>,
    reported: BTreeSet<Id>,
    /// The client map of the last sample, to find the clients that changed since.
    last_clients: Option<Arc<Clients>>,
    /// node → topic → user → joined sockets, from `last_clients`.
    joined: BTreeMap<String, BTreeMap<String, BTreeMap<String, usize>>>,
    /// node → its snapshot at the last sample (a crashed node is absent).
    last_nodes: BTreeMap<String, Arc<NodeSnapshot>>,
    /// node → topic → the local list last compared.
    compared: BTreeMap<String, BTreeMap<Topic, Arc<NodeList>>>,
    /// Every (node, topic, key) tracked more often than it has joined sockets, with
    /// (presences tracked, joined sockets), as of the last sample.
    excess: BTreeMap<Id, (usize, usize)>,
}

impl SocketTruth {
    pub(super) fn observe(&mut self, s: &Snapshot, bound: GhostBound, out: &mut Vec<Finding>) {
        let mut dirty = self.update_joined(&s.clients);
        self.update_excess(s, &mut dirty);
        self.orphans_since
            .retain(|id, _| self.excess.contains_key(id));
        for (id, &(tracked, sockets)) in &self.excess {
            let since = *self.orphans_since.entry(id.clone()).or_insert(s.at_ms);
            if bound.passed(since, s.at_ms) && self.reported.insert(id.clone()) {
                let (node, topic, key) = id;
                out.push(finding(
                    s.at_ms,
                    FindingKind::Ghost,
                    node,
                    format!(
                        "{topic} {key}: {tracked} presence(s) tracked for {sockets} joined socket(s) since {since} ms"
                    ),
                ));
            }
        }
    }

    /// Brings the joined counts up to `clients`; returns the (node, topic) pairs whose counts
    /// may have moved.
    fn update_joined(&mut self, clients: &Arc<Clients>) -> Dirty {
        let mut dirty = Dirty::new();
        let empty = BTreeMap::new();
        let old = match &self.last_clients {
            Some(last) if Arc::ptr_eq(last, clients) => return dirty,
            Some(last) => Arc::clone(last),
            None => Arc::new(empty),
        };
        // both maps are ordered by client name: one merge walk finds every change
        let mut before = old.iter().peekable();
        let mut after = clients.iter().peekable();
        loop {
            let (was, now) = match (before.peek(), after.peek()) {
                (None, None) => break,
                (Some((a, _)), Some((b, _))) if a == b => {
                    (before.next().map(|x| x.1), after.next().map(|x| x.1))
                }
                (Some((a, _)), Some((b, _))) if a < b => (before.next().map(|x| x.1), None),
                (Some(_), None) => (before.next().map(|x| x.1), None),
                _ => (None, after.next().map(|x| x.1)),
            };
            if let (Some(w), Some(n)) = (was, now)
                && w.joined == n.joined
                && w.node == n.node
                && w.topic == n.topic
                && w.user == n.user
            {
                continue;
            }
            for (c, add) in [(was, false), (now, true)] {
                if let Some(c) = c.filter(|c| c.joined) {
                    self.count(c, add);
                    if !dirty
                        .get(c.node.as_str())
                        .is_some_and(|t| t.contains(c.topic.as_str()))
                    {
                        dirty
                            .entry(c.node.to_string())
                            .or_default()
                            .insert(c.topic.to_string());
                    }
                }
            }
        }
        self.last_clients = Some(Arc::clone(clients));
        dirty
    }

    /// Counts a joined client in or out.
    fn count(&mut self, c: &ClientSnapshot, add: bool) {
        let topics = self.joined.entry(c.node.to_string()).or_default();
        let users = topics.entry(c.topic.to_string()).or_default();
        let n = users.entry(c.user.to_string()).or_default();
        if add {
            *n += 1;
        } else {
            *n -= 1;
            if *n == 0 {
                users.remove(c.user.as_str());
                if users.is_empty() {
                    topics.remove(c.topic.as_str());
                    if topics.is_empty() {
                        self.joined.remove(c.node.as_str());
                    }
                }
            }
        }
    }

    /// Compares again every (node, topic) whose local list is new or whose joined counts are
    /// in `dirty`, and forgets the nodes and topics that are gone. A node's topics and the
    /// lists last compared are both in topic order: one walk finds what changed, without a
    /// lookup or an allocation per unchanged topic.
    fn update_excess(&mut self, s: &Snapshot, dirty: &mut Dirty) {
        let gone: Vec<String> = self
            .last_nodes
            .keys()
            .filter(|n| !s.nodes.contains_key(*n))
            .cloned()
            .collect();
        for node in gone {
            self.last_nodes.remove(&node);
            if let Some(topics) = self.compared.remove(&node) {
                for topic in topics.keys() {
                    self.set_excess(&node, topic, None);
                }
            }
        }
        for (node, ns) in &s.nodes {
            let same_node = self
                .last_nodes
                .get(node)
                .is_some_and(|l| Arc::ptr_eq(l, ns));
            let counts_moved = dirty.remove(node).unwrap_or_default();
            if same_node && counts_moved.is_empty() {
                continue;
            }
            self.last_nodes.insert(node.clone(), Arc::clone(ns));
            let compared = self.compared.entry(node.clone()).or_default();
            // (topic, its local list now if any) for every pair to compare again
            let mut redo: Vec<(Topic, Option<Arc<NodeList>>)> = Vec::new();
            let (mut old, mut new) = (compared.iter().peekable(), ns.local.iter().peekable());
            loop {
                let (step, change) = match (old.peek(), new.peek()) {
                    (None, None) => break,
                    (Some((t, _)), None) => (Ordering::Less, Some((*t, None))),
                    (None, Some((t, l))) => (Ordering::Greater, Some((*t, Some(*l)))),
                    (Some((to, lo)), Some((tn, ln))) => match to.cmp(tn) {
                        Ordering::Less => (Ordering::Less, Some((*to, None))),
                        Ordering::Greater => (Ordering::Greater, Some((*tn, Some(*ln)))),
                        Ordering::Equal => {
                            let again = !Arc::ptr_eq(lo, ln) || counts_moved.contains(tn.as_str());
                            (Ordering::Equal, again.then_some((*tn, Some(*ln))))
                        }
                    },
                };
                if let Some((topic, list)) = change {
                    redo.push((topic.clone(), list.cloned()));
                }
                if step != Ordering::Greater {
                    old.next();
                }
                if step != Ordering::Less {
                    new.next();
                }
            }
            // pairs whose counts moved but that the node lists neither now nor before
            for topic in counts_moved {
                if !ns.local.contains_key(topic.as_str()) && !compared.contains_key(topic.as_str())
                {
                    redo.push((Topic::from(topic), None));
                }
            }
            for (topic, list) in &redo {
                match list {
                    Some(l) => compared.insert(topic.clone(), Arc::clone(l)),
                    None => compared.remove(topic),
                };
            }
            for (topic, list) in redo {
                self.set_excess(node, &topic, list.as_ref());
            }
        }
    }

    /// Replaces the excess entries of (node, topic) with those of `list` (none without one).
    fn set_excess(&mut self, node: &str, topic: &str, list: Option<&Arc<NodeList>>) {
        let from = (node.to_owned(), topic.to_owned(), String::new());
        let stale: Vec<Id> = self
            .excess
            .range(from..)
            .take_while(|((n, t, _), _)| n == node && t == topic)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.excess.remove(&id);
        }
        let Some(list) = list else { return };
        let users = self.joined.get(node).and_then(|t| t.get(topic));
        for (key, refs) in list.iter() {
            let sockets = users
                .and_then(|u| u.get(key.as_str()))
                .copied()
                .unwrap_or(0);
            if refs.len() > sockets {
                self.excess.insert(
                    (node.to_owned(), topic.to_owned(), key.to_string()),
                    (refs.len(), sockets),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::PresenceList;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The excess as the checker computed it before it was incremental: every pair, every time.
    fn full_excess(s: &Snapshot) -> BTreeMap<Id, (usize, usize)> {
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
                            (node.clone(), topic.to_string(), key.to_string()),
                            (refs.len(), sockets),
                        );
                    }
                }
            }
        }
        excess
    }

    fn list(rng: &mut ChaCha8Rng) -> Arc<NodeList> {
        let mut l = PresenceList::new();
        for u in 0..3 {
            for r in 0..rng.gen_range(0..3) {
                l.entry(format!("u{u}").into())
                    .or_default()
                    .insert(format!("r{r}").into(), serde_json::json!({}).into());
            }
        }
        Arc::new(NodeList::from(l))
    }

    /// Random changes to clients and lists, some samples sharing the last sample's parts as
    /// the sampler does: the incremental excess is always the full one.
    #[test]
    fn incremental_excess_equals_the_full_comparison() {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        let bound = GhostBound {
            last_step_ms: 0,
            ghost_ms: 1_000_000,
            links_back_ms: 0,
        };
        let mut truth = SocketTruth::default();
        let mut s = Snapshot::default();
        let mut seen_excess = 0;
        for at in 0..400 {
            s.at_ms = at;
            if rng.gen_bool(0.5) {
                let mut clients = (*s.clients).clone();
                for _ in 0..rng.gen_range(1..4) {
                    let name = format!("c{}", rng.gen_range(0..8));
                    if rng.gen_bool(0.2) {
                        clients.remove(name.as_str());
                    } else {
                        clients.insert(
                            name.into(),
                            ClientSnapshot {
                                node: format!("n{}", rng.gen_range(0..3)).into(),
                                topic: format!("t{}", rng.gen_range(0..2)).into(),
                                user: format!("u{}", rng.gen_range(0..3)).into(),
                                joined: rng.gen_bool(0.7),
                                view: PresenceList::new(),
                            },
                        );
                    }
                }
                s.clients = Arc::new(clients);
            }
            for n in 0..3 {
                let node = format!("n{n}");
                match rng.gen_range(0..10) {
                    0 => {
                        s.nodes.remove(&node);
                    }
                    1..=3 => {
                        let mut ns = s
                            .nodes
                            .get(&node)
                            .map(|a| (**a).clone())
                            .unwrap_or_default();
                        let topic = format!("t{}", rng.gen_range(0..2));
                        if rng.gen_bool(0.2) {
                            ns.local.remove(topic.as_str());
                        } else {
                            ns.local.insert(topic.into(), list(&mut rng));
                        }
                        s.nodes.insert(node, Arc::new(ns));
                    }
                    _ => {}
                }
            }
            let mut out = Vec::new();
            truth.observe(&s, bound, &mut out);
            assert_eq!(truth.excess, full_excess(&s), "sample {at}");
            seen_excess += usize::from(!truth.excess.is_empty());
        }
        assert!(
            seen_excess > 50,
            "the sequence must exercise excess: {seen_excess}"
        );
    }
}
