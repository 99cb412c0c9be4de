//! The sampler: every `sample_ms` of simulated time, what every live node lists and whether
//! every client is joined, for the checkers.
//!
//! It runs in the driver loop between simulation steps, not as a host of its own: before a
//! step it asks every node at once, the nodes answer during that step, and after it the
//! answers make one snapshot. So the lists of all nodes come from the same step, and the run
//! does not pay for one more host that turmoil would poll at every step.

use crate::checkers::{ClientSnapshot, NodeList, NodeSnapshot, PresenceList, Snapshot};
use crate::snapshot::{Clients, Name, Topic};
use crate::world::Shared;
use phxsim_runtime::client::ClientStatus;
use phxsim_runtime::{ListsChange, NodeLists, SampledTopic};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot::{self, error::TryRecvError};
use tokio::sync::watch;

/// One sample in flight: the nodes asked, and the answers so far.
struct Pending {
    at_ms: u64,
    asked: Vec<(Incarnation, oneshot::Receiver<NodeLists>)>,
    answers: BTreeMap<String, Arc<NodeSnapshot>>,
}

/// A node and its incarnation: revisions count from zero again after a restart.
type Incarnation = (String, u64);

pub struct Sampler {
    sample_ms: u64,
    next_at_ms: u64,
    pending: Option<Pending>,
    /// Per node incarnation, the revision of its last lists and what they became: a node
    /// whose revision did not move sends no lists, and the checkers get the same allocation
    /// again and skip what only depends on the lists.
    seen: BTreeMap<Incarnation, (u64, Arc<NodeSnapshot>)>,
    /// The clients as last sampled, kept while no client joins or leaves.
    clients: Arc<Clients>,
    /// Every client's status receiver and its joined state as last read, in name order: a
    /// client whose status did not move since is not read again (subscribing anew at each
    /// sample cost a few percent of a run at 16 000 clients).
    watched: Vec<(watch::Receiver<ClientStatus>, bool)>,
}

impl Sampler {
    /// The first sample is taken at `sample_ms`, then one every `sample_ms`.
    pub fn new(sample_ms: u64) -> Self {
        let sample_ms = sample_ms.max(1);
        Self {
            sample_ms,
            next_at_ms: sample_ms,
            pending: None,
            seen: BTreeMap::new(),
            clients: Arc::default(),
            watched: Vec::new(),
        }
    }

    /// Before the step at `now_ms`: if a sample is due, asks every live node for its lists.
    pub fn before_step(&mut self, now_ms: u64, shared: &Shared) {
        if self.pending.is_some() || now_ms < self.next_at_ms {
            return;
        }
        while self.next_at_ms <= now_ms {
            self.next_at_ms += self.sample_ms;
        }
        // a node that cannot take the request now (stopped, or its queue full) is left out
        // of this instant, as a node that does not answer in time is
        let asked = shared
            .nodes
            .iter()
            .filter_map(|(name, node)| {
                let vsn = shared.incarnations.get(name).copied().unwrap_or_default();
                let id = (name.clone(), vsn);
                let since = self.seen.get(&id).map(|(revision, _)| *revision);
                let rx = node.request_lists(since).ok()?;
                Some((id, rx))
            })
            .collect();
        self.pending = Some(Pending {
            at_ms: now_ms,
            asked,
            answers: BTreeMap::new(),
        });
    }

    /// After the step that ended at `now_ms`: collects the answers, and once every node asked
    /// has answered, stopped, or let a whole `sample_ms` pass, returns the snapshot.
    pub fn after_step(&mut self, now_ms: u64, shared: &Shared) -> Option<Snapshot> {
        let pending = self.pending.as_mut()?;
        let seen = &mut self.seen;
        pending.asked.retain_mut(|(id, rx)| match rx.try_recv() {
            Ok(lists) => {
                if let Some(ns) = convert(seen, &pending.answers, id, lists) {
                    pending.answers.insert(id.0.clone(), ns);
                }
                false
            }
            Err(TryRecvError::Empty) => true,
            Err(TryRecvError::Closed) => false,
        });
        if !pending.asked.is_empty() && now_ms < pending.at_ms + self.sample_ms {
            return None;
        }
        let Pending {
            at_ms, mut answers, ..
        } = self.pending.take()?;
        // a node crashed while we asked is not part of this instant
        answers.retain(|n, _| shared.nodes.contains_key(n));
        Some(Snapshot {
            at_ms,
            nodes: answers,
            clients: self.client_states(shared),
        })
    }

    /// Every client's joined state. Lists of clients are compared once, at the end of the run
    /// (`final_views`): sampling them here would clone every client's whole list every time.
    fn client_states(&mut self, shared: &Shared) -> Arc<Clients> {
        // clients are only ever added (one per scenario client, never replaced): the same
        // count is the same clients, in the same order
        if self.watched.len() != shared.clients.len() {
            self.watched = shared
                .clients
                .values()
                .map(|c| {
                    let mut rx = c.client.watch_lifecycle();
                    let joined = joined(&mut rx);
                    (rx, joined)
                })
                .collect();
            self.clients = Arc::new(self.client_map(shared));
            return self.clients.clone();
        }
        let mut moved: Vec<(&String, bool)> = Vec::new();
        for (name, (rx, was)) in shared.clients.keys().zip(&mut self.watched) {
            // an error is a client whose status can no longer move
            if rx.has_changed().unwrap_or(false) {
                let now = joined(rx);
                if now != *was {
                    *was = now;
                    moved.push((name, now));
                }
            }
        }
        if !moved.is_empty() {
            // only the clients that moved are written; the map is copied first if a checker
            // still holds the last sample's (a copy, not a rebuild: no sorting, no new names)
            let clients = Arc::make_mut(&mut self.clients);
            for (name, now) in moved {
                if let Some(c) = clients.get_mut(name.as_str()) {
                    c.joined = now;
                }
            }
        }
        self.clients.clone()
    }

    /// The clients of `shared` with their joined states as last read.
    fn client_map(&self, shared: &Shared) -> Clients {
        debug_assert_eq!(self.watched.len(), shared.clients.len());
        shared
            .clients
            .iter()
            .zip(&self.watched)
            .map(|((name, c), &(_, joined))| {
                let snap = ClientSnapshot {
                    node: Name::from(c.node.as_str()),
                    topic: Name::from(c.topic.as_str()),
                    user: Name::from(c.user.as_str()),
                    joined,
                    view: PresenceList::new(),
                };
                (Name::from(name.as_str()), snap)
            })
            .collect()
    }
}

/// Whether a client's status says connected and joined, marking it read.
fn joined(rx: &mut watch::Receiver<ClientStatus>) -> bool {
    let v = rx.borrow_and_update();
    v.connected && v.joined()
}

/// A node's answer as the checkers read it: its lists, moved into the checkers' shape, or
/// the last conversion again when the node says nothing changed, or the last conversion with
/// only the changed topics converted anew (the others share their allocations with it).
/// `None` only if the node answers against an answer this sampler no longer has (it cannot
/// happen: the sampler forgets nothing of a live incarnation).
///
/// A topic's new list that is, byte for byte, one already held (the node's own last one, or
/// another node's in this sample or the last) is shared with it: a converged cluster then
/// holds each topic's list once, not once per node.
fn convert(
    seen: &mut BTreeMap<Incarnation, (u64, Arc<NodeSnapshot>)>,
    answers: &BTreeMap<String, Arc<NodeSnapshot>>,
    id: &Incarnation,
    lists: NodeLists,
) -> Option<Arc<NodeSnapshot>> {
    let own = seen.get(id).map(|(_, ns)| ns.clone());
    // the node's own last lists first, then this sample's answers, then the last ones
    let held: Vec<&NodeSnapshot> = own
        .as_deref()
        .into_iter()
        .chain(answers.values().map(|ns| &**ns))
        .chain(seen.values().map(|(_, ns)| &**ns))
        .collect();
    let ns = match lists.change {
        ListsChange::Same => return own,
        ListsChange::All(topics) => {
            let mut ns = NodeSnapshot::default();
            insert_topics(&mut ns, topics, &held);
            ns
        }
        ListsChange::Some { changed, removed } => {
            let mut ns = NodeSnapshot::clone(own.as_deref()?);
            for topic in &removed {
                ns.lists.remove(topic.as_str());
                ns.local.remove(topic.as_str());
            }
            insert_topics(&mut ns, changed, &held);
            ns
        }
    };
    drop(held);
    let ns = Arc::new(ns);
    // an earlier incarnation of the node will not answer again
    seen.retain(|(name, vsn), _| name != &id.0 || *vsn == id.1);
    seen.insert(id.clone(), (lists.revision, ns.clone()));
    Some(ns)
}

/// The node built the lists in the checkers' shape (`SampledList` is `NodeList`).
fn insert_topics(ns: &mut NodeSnapshot, topics: Vec<SampledTopic>, held: &[&NodeSnapshot]) {
    for SampledTopic { topic, list, local } in topics {
        let topic = Topic::from(topic);
        let list = shared(list, &topic, held);
        ns.lists.insert(topic.clone(), list);
        ns.local.insert(topic, Arc::new(local));
    }
}

/// How many different held lists of a topic a new list is compared with: while nodes
/// disagree (a join storm, a partition) each comparison may read half a list, and two cover
/// a converged cluster and the two sides of a split.
const SHARE_CANDIDATES: usize = 2;

/// `list`, or a held list of `topic` with the same entries and meta texts, shared.
fn shared(list: NodeList, topic: &Topic, held: &[&NodeSnapshot]) -> Arc<NodeList> {
    let mut tried: Vec<&Arc<NodeList>> = Vec::with_capacity(SHARE_CANDIDATES);
    for other in held.iter().filter_map(|ns| ns.lists.get(topic)) {
        if tried.iter().any(|t| Arc::ptr_eq(t, other)) {
            continue;
        }
        if other.same_text(&list) {
            return Arc::clone(other);
        }
        if tried.len() + 1 == SHARE_CANDIDATES {
            break;
        }
        tried.push(other);
    }
    Arc::new(list)
}
