//! The node's task: owns the [`Tracker`], feeds it commands, peer messages and ticks, and
//! routes what comes out to links, subscribers and observers. Time comes only from
//! `tokio::time`, so under turmoil (or a paused tokio clock) the node runs on simulated time.

use super::feed::{Diffs, Feed};
use super::link::LinkError;
use super::topic_list::{self, TopicList};
use super::{Coalesce, NodeEvent, PresenceUpdate, TopicState, coalesce};
use crate::state_frame::StatePayload;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use phxsim_shard::codec::encode_frame;
use phxsim_shard::{
    Destination, Frame, Hello, NodeMessage, PeerView, PresenceError, Tracker, TrackerDiff,
    TrackerEvent, TrackerList,
};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(crate) type Reply<T> = oneshot::Sender<T>;
pub(crate) type UpdateFn = Box<dyn FnOnce(&Map<String, Json>) -> Map<String, Json> + Send>;

/// Everything the driver reacts to, from the API handles and from the links.
pub(crate) enum Command {
    Track {
        owner: String,
        topic: String,
        key: String,
        meta: Map<String, Json>,
        /// Set by [`super::Node::track_leased`]: the owner's lease, watched from now on.
        monitor: Option<Monitor>,
        reply: Reply<Result<String, PresenceError>>,
    },
    Untrack {
        owner: String,
        topic: String,
        key: String,
        reply: Reply<Result<(), PresenceError>>,
    },
    UntrackOwner {
        owner: String,
        reply: Reply<Result<(), PresenceError>>,
    },
    Update {
        owner: String,
        topic: String,
        key: String,
        f: UpdateFn,
        reply: Reply<Result<String, PresenceError>>,
    },
    List {
        topic: String,
        reply: Reply<TrackerList>,
    },
    Snapshot {
        reply: Reply<Vec<super::TopicSnapshot>>,
    },
    SampleLists {
        since: Option<u64>,
        reply: Reply<super::NodeLists>,
    },
    GetByKey {
        topic: String,
        key: String,
        reply: Reply<Vec<Json>>,
    },
    Subscribe {
        topic: String,
        reply: Reply<(Arc<TopicState>, Diffs)>,
    },
    Observe {
        tx: mpsc::UnboundedSender<NodeEvent>,
    },
    Peers {
        reply: Reply<Vec<PeerView>>,
    },
    GracefulPermdown {
        reply: Reply<()>,
    },
    LinkUp {
        id: u64,
        peer: Hello,
        tx: mpsc::Sender<Arc<Vec<u8>>>,
    },
    LinkDown {
        id: u64,
        reason: LinkError,
    },
    Inbound {
        id: u64,
        peer: String,
        msg: NodeMessage,
    },
}

/// The node's side of an [`super::OwnerLease`]: resolves to the owner once the lease is
/// dropped, as a Phoenix tracker's monitor gets `:DOWN` when the channel process exits.
pub(crate) struct Monitor {
    pub owner: String,
    pub gone: oneshot::Receiver<()>,
}

impl Future for Monitor {
    type Output = String;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<String> {
        // The lease never sends: the receiver completes (with an error) when it is dropped.
        match Pin::new(&mut self.gone).poll(cx) {
            Poll::Ready(_) => Poll::Ready(std::mem::take(&mut self.owner)),
            Poll::Pending => Poll::Pending,
        }
    }
}

struct Link {
    id: u64,
    tx: mpsc::Sender<Arc<Vec<u8>>>,
}

pub(crate) struct Driver {
    pub tracker: Tracker,
    pub start: Instant,
    pub cmds: mpsc::Receiver<Command>,
    links: BTreeMap<String, Link>,
    subscribers: BTreeMap<String, Topic>,
    coalesce: Option<Coalesce>,
    /// Topics with a merged diff waiting for the end of their window.
    pending: BTreeMap<String, Instant>,
    observers: Vec<mpsc::UnboundedSender<NodeEvent>>,
    /// Leased owners being watched: when a lease drops, every presence of its owner leaves.
    monitors: FuturesUnordered<Monitor>,
    /// What the last answer to a sampler held (see [`super::sampled`]).
    sampled: Option<super::sampled::Sampled>,
    stopping: bool,
}

/// The subscribers of one topic, the list they start from, and (with coalescing) the diff
/// waiting for the end of the topic's window.
#[derive(Default)]
struct Topic {
    /// Its subscribers, reading the topic's diffs from one log.
    subs: Feed,
    /// The list handed to subscribers, and the tracker revision it was taken at.
    state: Option<(u64, Arc<TopicState>)>,
    /// Changes since the last diff went out, merged.
    merged: Option<TrackerDiff>,
    /// When the last diff went out.
    last_sent: Option<Instant>,
    /// A big topic's payload as last rendered, kept to be patched at the next join (see
    /// `topic_list`).
    list: Option<TopicList>,
}

impl Topic {
    /// The topic's `presence_state` payload now (a big topic's kept one patched with what
    /// changed).
    fn render(&mut self, tracker: &Tracker, topic: &str) -> Arc<StatePayload> {
        let state = tracker.shards()[tracker.shard_index(topic)].state();
        let payload = topic_list::render(&mut self.list, state, topic);
        // (a topic without a kept list was rendered in full)
        debug_assert!(
            self.list.is_none() || *payload == topic_list::full(state, topic),
            "{topic}: the patched payload differs from the full rendering"
        );
        payload
    }

    /// Sends a diff to every subscriber; false when none is left.
    fn send(&mut self, topic: &str, diff: TrackerDiff, now: Instant) -> bool {
        let update = PresenceUpdate::new(Arc::from(topic), Arc::new(diff));
        let left = self.subs.send(update);
        self.last_sent = Some(now);
        // A list taken before this diff misses its changes: with coalescing, later
        // subscribers must not get it; without, its revision is already past and it would
        // never be handed out again, but it would stay in memory (a whole topic's payload per
        // node and topic) until the topic's next subscriber.
        self.state = None;
        left
    }
}

impl Driver {
    pub fn new(
        tracker: Tracker,
        start: Instant,
        cmds: mpsc::Receiver<Command>,
        coalesce: Option<Coalesce>,
    ) -> Self {
        Self {
            tracker,
            start,
            cmds,
            links: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            coalesce,
            pending: BTreeMap::new(),
            observers: Vec::new(),
            monitors: FuturesUnordered::new(),
            sampled: None,
            stopping: false,
        }
    }

    /// Milliseconds since the node started, on tokio's clock.
    fn now(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    pub async fn run(mut self) {
        loop {
            let deadline = self
                .tracker
                .poll_timeout()
                .map(|ms| self.start + std::time::Duration::from_millis(ms));
            // The tick goes first: under a flood of peer messages a late tick would delay our
            // heartbeats and make peers declare us down.
            tokio::select! {
                biased;
                () = sleep_until(deadline) => {
                    let now = self.now();
                    self.tracker.handle_timeout(now);
                }
                () = sleep_until(self.pending.values().min().copied()) => {
                    self.send_due(Instant::now());
                }
                cmd = self.cmds.recv() => match cmd {
                    // Every handle and every link is gone: nobody can observe this node.
                    None => return,
                    Some(cmd) => {
                        self.command(cmd);
                        let now = self.now();
                        self.tracker.schedule_eager(now);
                    }
                },
                // After the commands: a monitor only exists once its track was handled, so
                // the owner's untrack can never overtake the track it undoes.
                Some(owner) = self.monitors.next(), if !self.monitors.is_empty() => {
                    // Nothing to do when the owner already untracked itself on a clean exit.
                    let _ = self.tracker.untrack_owner(&owner);
                    let now = self.now();
                    self.tracker.schedule_eager(now);
                }
            }
            self.flush();
            if self.stopping {
                // Dropping the link senders lets each writer finish what is queued (the
                // graceful_permdown broadcast) and close its stream.
                return;
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Track {
                owner,
                topic,
                key,
                meta,
                monitor,
                reply,
            } => {
                if let Some(m) = monitor {
                    self.monitors.push(m);
                }
                let _ = reply.send(self.tracker.track(&owner, &topic, &key, &meta));
            }
            Command::Untrack {
                owner,
                topic,
                key,
                reply,
            } => {
                let _ = reply.send(self.tracker.untrack(&owner, &topic, &key));
            }
            Command::UntrackOwner { owner, reply } => {
                let _ = reply.send(self.tracker.untrack_owner(&owner));
            }
            Command::Update {
                owner,
                topic,
                key,
                f,
                reply,
            } => {
                let _ = reply.send(self.tracker.update_with(&owner, &topic, &key, f));
            }
            Command::List { topic, reply } => {
                let _ = reply.send(self.tracker.list(&topic));
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(super::sampled::snapshot(&self.tracker));
            }
            Command::SampleLists { since, reply } => {
                let (revision, change) =
                    super::sampled::answer(&self.tracker, &mut self.sampled, since);
                let _ = reply.send(super::NodeLists { revision, change });
            }
            Command::GetByKey { topic, key, reply } => {
                let _ = reply.send(self.tracker.get_by_key(&topic, &key));
            }
            Command::Subscribe { topic, reply } => {
                // State and subscription in one step of the driver: no diff can fall between
                // the state the subscriber starts from and the first diff it receives.
                let revision = self.tracker.revision();
                let coalescing = self.coalesce.is_some();
                let entry = self.subscribers.entry(topic.clone()).or_default();
                // One list per version of the topic, shared by its subscribers. With
                // coalescing, a list taken since the last diff went out stays good until the
                // next one goes (the pending diff holds every change after it).
                let state = match &entry.state {
                    Some((rev, s)) if coalescing || *rev == revision => Arc::clone(s),
                    _ => {
                        let fresh = Arc::new(TopicState::new(entry.render(&self.tracker, &topic)));
                        entry.state = Some((revision, Arc::clone(&fresh)));
                        fresh
                    }
                };
                let diffs = entry.subs.subscribe();
                let _ = reply.send((state, diffs));
            }
            Command::Observe { tx } => self.observers.push(tx),
            Command::Peers { reply } => {
                let _ = reply.send(self.tracker.peers());
            }
            Command::GracefulPermdown { reply } => {
                self.tracker.graceful_permdown();
                self.stopping = true;
                let _ = reply.send(());
            }
            Command::LinkUp { id, peer, tx } => {
                if let Some(old) = self.links.insert(peer.node.clone(), Link { id, tx }) {
                    // Dropping the old sender ends the old link.
                    drop(old);
                    self.observe(NodeEvent::LinkDown {
                        peer: peer.node.clone(),
                        reason: LinkError::Replaced,
                    });
                }
                self.observe(NodeEvent::LinkUp {
                    peer: peer.node,
                    vsn: peer.vsn,
                });
            }
            Command::LinkDown { id, reason } => {
                let name = self
                    .links
                    .iter()
                    .find(|(_, l)| l.id == id)
                    .map(|(n, _)| n.clone());
                if let Some(name) = name {
                    self.links.remove(&name);
                    self.observe(NodeEvent::LinkDown { peer: name, reason });
                }
            }
            Command::Inbound { id, peer, msg } => {
                // A message from a link that was replaced meanwhile is stale: drop it.
                if self.links.get(&peer).is_none_or(|l| l.id != id) {
                    return;
                }
                let now = self.now();
                if !self.observers.is_empty() {
                    self.observe(NodeEvent::Message {
                        outbound: false,
                        peer: peer.clone(),
                        kind: msg.body.kind(),
                    });
                }
                if let Err(e) = self.tracker.handle_message(now, &peer, msg) {
                    // Never trust that peer's stream again; everything else goes on.
                    self.links.remove(&peer);
                    self.observe(NodeEvent::LinkDown {
                        peer,
                        reason: LinkError::Refused(e.to_string()),
                    });
                }
            }
        }
    }

    fn observe(&mut self, e: NodeEvent) {
        log(&e);
        self.observers.retain(|tx| tx.send(e.clone()).is_ok());
    }

    /// Routes the tracker's output: frames to links, diffs to subscribers, events to observers.
    fn flush(&mut self) {
        while let Some(t) = self.tracker.poll_transmit() {
            let kind = t.msg.body.kind();
            let bytes = Arc::new(encode_frame(&Frame::Shard(t.msg)));
            let mut sent_to = Vec::new();
            match t.to {
                Destination::Broadcast => {
                    for (name, l) in &self.links {
                        send_best_effort(l, &bytes);
                        sent_to.push(name.clone());
                    }
                }
                Destination::Node(n) => {
                    if let Some(l) = self.links.get(&n) {
                        send_best_effort(l, &bytes);
                        sent_to.push(n);
                    }
                }
            }
            if !self.observers.is_empty() {
                for peer in sent_to {
                    self.observe(NodeEvent::Message {
                        outbound: true,
                        peer,
                        kind,
                    });
                }
            }
        }
        while let Some(e) = self.tracker.poll_event() {
            if let TrackerEvent::PresenceDiff { topic, diff } = &e {
                self.route_diff(topic, diff);
            }
            self.observe(NodeEvent::Tracker(e));
        }
    }

    /// A topic's diff goes to its subscribers now, or (coalescing, within the topic's window)
    /// into the diff that goes out when the window ends.
    fn route_diff(&mut self, topic: &str, diff: &TrackerDiff) {
        let Some(entry) = self.subscribers.get_mut(topic) else {
            return;
        };
        let now = Instant::now();
        let Some(c) = self.coalesce else {
            if !entry.send(topic, diff.clone(), now) {
                self.subscribers.remove(topic);
            }
            return;
        };
        if let Some(merged) = &mut entry.merged {
            coalesce::merge(merged, diff);
            return;
        }
        let due = entry
            .last_sent
            .map(|t| t + coalesce::window(entry.subs.len(), c.per_subscriber, c.max_window));
        match due {
            Some(due) if due > now => {
                entry.merged = Some(diff.clone());
                self.pending.insert(topic.to_owned(), due);
            }
            _ => {
                if !entry.send(topic, diff.clone(), now) {
                    self.subscribers.remove(topic);
                }
            }
        }
    }

    /// Sends the merged diffs whose window has ended.
    fn send_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in due {
            self.pending.remove(&topic);
            let Some(entry) = self.subscribers.get_mut(&topic) else {
                continue;
            };
            if let Some(merged) = entry.merged.take()
                && !entry.send(&topic, merged, now)
            {
                self.subscribers.remove(&topic);
            }
        }
    }
}

/// Phoenix's node messages are best-effort (no ack, no retransmission); a link whose queue is
/// full loses the message, and clock sampling plus transfer repair the gap later.
fn send_best_effort(l: &Link, bytes: &Arc<Vec<u8>>) {
    let _ = l.tx.try_send(Arc::clone(bytes));
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The human log of a node event: links and replicas coming and going (messages are too many).
fn log(e: &NodeEvent) {
    match e {
        NodeEvent::LinkUp { peer, vsn } => tracing::debug!(peer = %peer, vsn, "link up"),
        NodeEvent::LinkDown { peer, reason } => {
            tracing::debug!(peer = %peer, reason = %reason, "link down")
        }
        NodeEvent::Tracker(TrackerEvent::ReplicaDown { replica: r, .. }) => {
            tracing::info!(replica = %r.name, vsn = r.vsn, "replica down")
        }
        NodeEvent::Tracker(TrackerEvent::ReplicaPermdown { replica: r, .. }) => {
            tracing::info!(replica = %r.name, vsn = r.vsn, "replica permanently down")
        }
        NodeEvent::Tracker(TrackerEvent::ReplicaUp { replica: r, .. }) => {
            tracing::info!(replica = %r.name, vsn = r.vsn, "replica up")
        }
        _ => {}
    }
}
