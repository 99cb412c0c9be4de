//! A cluster node: the shard pool and Presence layer of `phxsim-shard`, run by one tokio task,
//! connected to other nodes by links over any `AsyncRead + AsyncWrite` stream.
//!
//! - Many nodes live in one process: a node is a task and a handle, with no global state.
//! - Time comes only from `tokio::time`, so the same node runs on a real clock, on a paused
//!   tokio clock and under turmoil's simulated time.
//! - Links are just streams: tokio TCP ([`Node::listen`], [`Node::connect_tcp`]), turmoil TCP,
//!   or an in-memory duplex all go through [`Node::connect`]. A fault injector partitions by
//!   closing ([`LinkHandle::close`]) or stalling the stream, crashes with [`Node::crash`], and
//!   restarts by starting a node with the same name and a new `vsn`.
//!
//! A Channels server uses a node like this: on a socket's join it calls
//! [`Node::subscribe`] for the topic (presence_state and then every presence_diff, with nothing
//! lost in between), [`Node::track`] with the socket's owner id, and [`Node::untrack_owner`]
//! when the socket goes away.

mod coalesce;
mod driver;
mod feed;
mod kept_lists;
mod link;
#[cfg(test)]
mod random_history;
mod sampled;
mod sampled_list;
mod tcp;
mod topic_list;

pub use feed::Diffs;
pub use link::LinkError;
pub use sampled_list::{Refs, SampledEntry, SampledList};

use driver::{Command, Driver};
use link::LinkParams;
use phxsim_shard::codec::DEFAULT_MAX_FRAME_LEN;
use phxsim_shard::{
    ConfigError, Hello, PeerView, PresenceError, RefSource, SeededRefs, Tracker, TrackerConfig,
    TrackerDiff, TrackerEvent, TrackerList,
};
use phxsim_tracker::{Meta, MetaInterner, Name};
use rand::RngCore;
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node name: the replica name peers know it by.
    pub name: String,
    /// This incarnation's version stamp. A restarted node must use a new one (Phoenix uses
    /// the start time in µs); peers then retire the old incarnation.
    pub vsn: u64,
    pub tracker: TrackerConfig,
    /// Seeds the first-tick jitter and the `phx_ref`s. `None` draws from the OS: production
    /// only, never in a simulation.
    pub seed: Option<u64>,
    /// The largest frame accepted from a peer.
    pub max_frame_len: usize,
    /// A peer that sends no greeting within this time is dropped.
    pub handshake_timeout: Duration,
    /// Frames queued per link before further ones are dropped (best-effort, as in Phoenix).
    pub link_queue: usize,
    /// Bound of the command queue between handles/links and the node task.
    pub command_queue: usize,
    /// A link with nothing to send writes a keepalive after this long.
    pub link_keepalive: Duration,
    /// A link on which nothing arrived for this long is closed, so that the dialling side
    /// reconnects (Erlang distribution: net_ticktime 60 s, a tick every 15 s). Must exceed
    /// `link_keepalive` comfortably.
    pub link_idle_timeout: Duration,
    /// Batch a big topic's diffs (see [`Coalesce`]); `None` (the default, and the simulator's)
    /// sends every diff at once, one per change, as Phoenix does.
    pub coalesce: Option<Coalesce>,
    /// Where this node's links find the presence blocks the process's nodes already hold
    /// (see [`MetaInterner`]): give every node of a simulation the same one, and each
    /// presence is one block on every node that learnt it from the wire. `None` (the default,
    /// and a server's) keeps one copy per node.
    pub meta_interner: Option<SharedInterner>,
}

/// A [`MetaInterner`] that nodes share.
pub type SharedInterner = Arc<std::sync::Mutex<MetaInterner>>;

/// How a node batches the `presence_diff`s of a topic with many subscribers: after a diff went
/// out, the topic's next changes wait for `per_subscriber × subscribers` (at most
/// `max_window`) and go out merged into one diff. A change after a quiet window goes out at
/// once, so a small topic (a few subscribers: microseconds) sees every diff as before.
///
/// Phoenix sends one diff per change; with N sockets joining one topic that is N² frames. A
/// phoenix.js client reaches the same state from the merged diffs, with fewer
/// `onJoin`/`onLeave` calls (see `coalesce.rs` for exactly what differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coalesce {
    /// Window per subscriber of the topic.
    pub per_subscriber: Duration,
    /// The longest window, whatever the subscriber count: the most a change waits.
    pub max_window: Duration,
}

impl Default for Coalesce {
    /// 20 µs per subscriber, at most 250 ms: writing one frame to one socket and reading it
    /// costs a server and its clients about 10 µs on loopback, so a topic in a join storm
    /// spends at most about half a core on its diffs. A topic of 5 subscribers waits 100 µs,
    /// one of 1 000 waits 20 ms, and 10 000 wait 200 ms.
    fn default() -> Self {
        Coalesce {
            per_subscriber: Duration::from_micros(20),
            max_window: Duration::from_millis(250),
        }
    }
}

impl NodeConfig {
    pub fn new(name: impl Into<String>, vsn: u64) -> Self {
        Self {
            name: name.into(),
            vsn,
            tracker: TrackerConfig::default(),
            seed: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(5),
            link_queue: 1024,
            command_queue: 1024,
            link_keepalive: Duration::from_secs(15),
            link_idle_timeout: Duration::from_secs(60),
            coalesce: None,
            meta_interner: None,
        }
    }
}

/// Why a call on a node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The Presence API refused (already tracked, no presence, stopped).
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// The node's task is gone (crashed, stopped or all its handles dropped).
    #[error("node is not running")]
    NotRunning,
    /// The node's command queue is full: it runs, but is behind; ask again later.
    #[error("node is busy (its command queue is full)")]
    Busy,
}

/// What a node reports to observers (checkers, logs), in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// presence diffs and replica up/down/permdown, as the tracker emitted them.
    Tracker(TrackerEvent),
    LinkUp {
        peer: String,
        vsn: u64,
    },
    LinkDown {
        peer: String,
        reason: LinkError,
    },
    /// A node-to-node message handed to a link (`outbound`) or received from one, by kind
    /// (`heartbeat`, `transfer_req`, ...): the node-message part of a simulator transcript.
    Message {
        outbound: bool,
        peer: String,
        kind: &'static str,
    },
}

/// One `presence_diff` for a subscribed topic, shared by every subscriber: one allocation
/// per diff, however many sockets follow the topic, and one reference count to move when a
/// subscriber takes its copy and lets it go (a thousand subscribers take every diff of a
/// join storm).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceUpdate(Arc<Update>);

/// What a [`PresenceUpdate`] shares.
#[derive(Debug, PartialEq, Eq)]
pub struct Update {
    pub topic: Arc<str>,
    pub diff: Arc<TrackerDiff>,
    /// The diff's frames, encoded once by the first socket of each serializer (the server's
    /// fastlane); shared by every subscriber's copy.
    pub frames: crate::encoded::EncodedFrames,
}

impl PresenceUpdate {
    pub fn new(topic: Arc<str>, diff: Arc<TrackerDiff>) -> PresenceUpdate {
        PresenceUpdate(Arc::new(Update {
            topic,
            diff,
            frames: crate::encoded::EncodedFrames::default(),
        }))
    }
}

impl std::ops::Deref for PresenceUpdate {
    type Target = Update;
    fn deref(&self) -> &Update {
        &self.0
    }
}

/// A topic's list as subscribers get it, shared by every subscriber while the list does not
/// change: its `presence_state` payload, encoded once by the node from the metas' JSON texts.
#[derive(Debug)]
pub struct TopicState {
    pub(crate) payload: Arc<crate::state_frame::StatePayload>,
    /// The presences as JSON, parsed from the payload the first time someone asks.
    list: std::sync::OnceLock<TrackerList>,
}

impl TopicState {
    pub(crate) fn new(payload: Arc<crate::state_frame::StatePayload>) -> TopicState {
        TopicState {
            payload,
            list: std::sync::OnceLock::new(),
        }
    }

    /// The presences.
    pub fn list(&self) -> &TrackerList {
        self.list.get_or_init(|| self.payload.to_list())
    }
}

impl std::ops::Deref for TopicState {
    type Target = TrackerList;
    fn deref(&self) -> &TrackerList {
        self.list()
    }
}

impl PartialEq for TopicState {
    fn eq(&self, other: &Self) -> bool {
        self.payload == other.payload
    }
}

impl Eq for TopicState {}

/// A topic subscription: the state when it started, then every diff after it.
#[derive(Debug)]
pub struct Subscription {
    /// `presence_state` at the instant of subscribing. With [`NodeConfig::coalesce`], possibly
    /// a list taken earlier in the topic's current window: the pending diff, which the
    /// subscriber gets, holds every change since.
    pub state: Arc<TopicState>,
    /// Every `presence_diff` of the topic on this node after that instant. Dropping the
    /// receiver unsubscribes.
    pub diffs: Diffs,
}

/// One topic as a node holds it at one instant: what it lists, and what it tracks itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSnapshot {
    pub topic: String,
    /// `list(topic)`: down replicas hidden.
    pub list: TrackerList,
    /// The presences of this node's own sockets: the ground truth for checkers.
    pub local: TrackerList,
}

/// `key → phx_ref → meta`: one topic's presences indexed by `phx_ref` (a meta without one is
/// left out, a later meta with the same ref under the same key replaces an earlier one), the
/// form a simulator's checkers compare lists in. A sampler gets it built by the node in one
/// pass over the topic's values, not as a [`TrackerList`] it would then take apart.
///
/// The metas are the tracker's own shared blocks ([`Meta`]): a list holds a reference count
/// per presence, not a JSON tree, and two lists of one node compare their metas by pointer
/// first. A reader that needs the fields parses them ([`Meta::to_json`]). Keys and refs are
/// [`Name`]s, held inline when short (a `phx_ref` is 16 characters): building and dropping a
/// list allocates no string per presence.
pub type RefList = std::collections::BTreeMap<Name, std::collections::BTreeMap<Name, Meta>>;

/// One topic as a sampler gets it: [`TopicSnapshot`]'s two lists in [`RefList`]'s shape,
/// held flat ([`SampledList`]: a simulator keeps one per node and topic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampledTopic {
    /// Held inline when short: an answer allocates no string per topic.
    pub topic: Name,
    /// `list(topic)`: down replicas hidden.
    pub list: SampledList,
    /// The presences of this node's own sockets.
    pub local: SampledList,
}

/// What [`Node::request_lists`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLists {
    /// Changes whenever what the node lists changes (one incarnation's counter: a restarted
    /// node counts again from zero).
    pub revision: u64,
    /// What the node lists now, against what the caller had at `since`.
    pub change: ListsChange,
}

/// A node's lists against the answer a sampler already holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListsChange {
    /// `revision` is the one the caller already had: nothing changed.
    Same,
    /// Every topic, in order.
    All(Vec<SampledTopic>),
    /// Since the caller's answer: the topics whose lists changed or that appeared (in order),
    /// and the topics that are gone. Every other topic lists what it listed then.
    Some {
        changed: Vec<SampledTopic>,
        removed: Vec<Name>,
    },
}

/// Ties an owner's presences to the lifetime of a value, as Phoenix's tracker monitors the
/// channel process that tracked them: when the lease is dropped, by whatever path, the node
/// untracks every presence of the owner. An owner that untracks itself first makes that a
/// no-op. Made by [`Node::lease`], armed by [`Node::track_leased`].
#[derive(Debug)]
pub struct OwnerLease {
    owner: String,
    /// Never sent on: dropping it is the signal.
    _alive: oneshot::Sender<()>,
    /// The node's end, until the first leased track hands it over.
    gone: Option<oneshot::Receiver<()>>,
}

impl OwnerLease {
    /// The owner id the lease's presences are tracked under.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

/// A link added with [`Node::connect`].
#[derive(Debug)]
pub struct LinkHandle {
    task: tokio::task::JoinHandle<LinkError>,
}

impl LinkHandle {
    /// Drops the link at once (both directions), as a partition or a broken connection does.
    pub fn close(&self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the link to end and says why.
    pub async fn closed(self) -> LinkError {
        self.task
            .await
            .unwrap_or(LinkError::Io("link task aborted".into()))
    }
}

struct Shared {
    name: String,
    vsn: u64,
    params: LinkParams,
    next_link: AtomicU64,
    driver: AbortHandle,
}

/// A handle to a running node. Cheap to clone; the node runs until [`Node::crash`],
/// [`Node::graceful_permdown`], or until every handle and link is dropped.
#[derive(Clone)]
pub struct Node {
    cmds: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.shared.name)
            .field("vsn", &self.shared.vsn)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node on the current tokio runtime (or turmoil host).
    pub fn start(cfg: NodeConfig) -> Result<Node, ConfigError> {
        let seed = match cfg.seed {
            Some(s) => s,
            // Production only: documented on `NodeConfig::seed`.
            None => rand::rngs::OsRng.next_u64(),
        };
        let tracker = Tracker::new(cfg.tracker.clone(), cfg.name.clone(), cfg.vsn, 0, seed)?;
        Ok(Self::start_with(cfg, tracker))
    }

    /// Starts a node with a ready tracker (for example one with a custom [`RefSource`]).
    /// The tracker's time 0 is now.
    pub fn start_with(cfg: NodeConfig, tracker: Tracker) -> Node {
        let (tx, rx) = mpsc::channel(cfg.command_queue.max(1));
        let driver = Driver::new(tracker, tokio::time::Instant::now(), rx, cfg.coalesce);
        let task = tokio::spawn(driver.run());
        let params = LinkParams {
            hello: Hello {
                node: cfg.name.clone(),
                vsn: cfg.vsn,
                pool_size: cfg.tracker.pool_size,
            },
            max_frame_len: cfg.max_frame_len,
            handshake_timeout: cfg.handshake_timeout,
            queue: cfg.link_queue.max(1),
            keepalive: cfg.link_keepalive,
            idle_timeout: cfg.link_idle_timeout,
            interner: cfg.meta_interner.clone(),
        };
        Node {
            cmds: tx,
            shared: Arc::new(Shared {
                name: cfg.name,
                vsn: cfg.vsn,
                params,
                next_link: AtomicU64::new(1),
                driver: task.abort_handle(),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn vsn(&self) -> u64 {
        self.shared.vsn
    }

    /// Whether the node's task still runs.
    pub fn is_running(&self) -> bool {
        !self.cmds.is_closed()
    }

    /// Adds a link to another node over `stream` (either end may call this; both sides
    /// greet). Runs until the stream fails, the peer misbehaves or the node stops.
    pub fn connect<S>(&self, stream: S) -> LinkHandle
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let id = self.shared.next_link.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(link::run(
            stream,
            id,
            self.shared.params.clone(),
            self.cmds.clone(),
        ));
        LinkHandle { task }
    }

    /// Stops the node abruptly: no message to peers, links dropped, as a crash or a halted
    /// machine. Peers notice after `down_period`.
    pub fn crash(&self) {
        self.shared.driver.abort();
    }

    async fn call<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(cmd(tx))
            .await
            .map_err(|_| NodeError::NotRunning)?;
        rx.await.map_err(|_| NodeError::NotRunning)
    }

    /// `track`: returns the new presence's `phx_ref`.
    pub async fn track(
        &self,
        owner: &str,
        topic: &str,
        key: &str,
        meta: Map<String, Json>,
    ) -> Result<String, NodeError> {
        self.track_as(owner.to_owned(), topic, key, meta, None)
            .await
    }

    /// A lease for `owner`'s presences: see [`OwnerLease`]. Take it before tracking, so that
    /// nothing the owner does afterwards (a failed write, an early return, a panic, an aborted
    /// task) can leave a presence behind.
    pub fn lease(&self, owner: &str) -> OwnerLease {
        let (alive, gone) = oneshot::channel();
        OwnerLease {
            owner: owner.to_owned(),
            _alive: alive,
            gone: Some(gone),
        }
    }

    /// `track` for the lease's owner; from this call on, dropping the lease untracks every
    /// presence of the owner on this node. The watch travels inside the track command, so it
    /// is in place even if the caller is cancelled while waiting for the reply.
    pub async fn track_leased(
        &self,
        lease: &mut OwnerLease,
        topic: &str,
        key: &str,
        meta: Map<String, Json>,
    ) -> Result<String, NodeError> {
        let monitor = lease.gone.take().map(|gone| driver::Monitor {
            owner: lease.owner.clone(),
            gone,
        });
        self.track_as(lease.owner.clone(), topic, key, meta, monitor)
            .await
    }

    /// The one `Track` command behind [`Node::track`] and [`Node::track_leased`].
    async fn track_as(
        &self,
        owner: String,
        topic: &str,
        key: &str,
        meta: Map<String, Json>,
        monitor: Option<driver::Monitor>,
    ) -> Result<String, NodeError> {
        let (topic, key) = (topic.to_owned(), key.to_owned());
        Ok(self
            .call(|reply| Command::Track {
                owner,
                topic,
                key,
                meta,
                monitor,
                reply,
            })
            .await??)
    }

    /// `untrack/4`: succeeds whether or not the presence existed.
    pub async fn untrack(&self, owner: &str, topic: &str, key: &str) -> Result<(), NodeError> {
        let (owner, topic, key) = (owner.to_owned(), topic.to_owned(), key.to_owned());
        Ok(self
            .call(|reply| Command::Untrack {
                owner,
                topic,
                key,
                reply,
            })
            .await??)
    }

    /// Every presence of `owner` leaves (`untrack/2`, or the owner's socket closing).
    pub async fn untrack_owner(&self, owner: &str) -> Result<(), NodeError> {
        let owner = owner.to_owned();
        Ok(self
            .call(|reply| Command::UntrackOwner { owner, reply })
            .await??)
    }

    /// `update` with a map: returns the new `phx_ref`.
    pub async fn update(
        &self,
        owner: &str,
        topic: &str,
        key: &str,
        meta: Map<String, Json>,
    ) -> Result<String, NodeError> {
        self.update_with(owner, topic, key, move |_| meta).await
    }

    /// `update` with a function of the old meta.
    pub async fn update_with(
        &self,
        owner: &str,
        topic: &str,
        key: &str,
        f: impl FnOnce(&Map<String, Json>) -> Map<String, Json> + Send + 'static,
    ) -> Result<String, NodeError> {
        let (owner, topic, key) = (owner.to_owned(), topic.to_owned(), key.to_owned());
        Ok(self
            .call(|reply| Command::Update {
                owner,
                topic,
                key,
                f: Box::new(f),
                reply,
            })
            .await??)
    }

    /// `list`: the topic's presences, hiding replicas currently down.
    pub async fn list(&self, topic: &str) -> Result<TrackerList, NodeError> {
        let topic = topic.to_owned();
        self.call(|reply| Command::List { topic, reply }).await
    }

    /// Every topic this node holds, with its list and its own presences, taken in one step of
    /// the node task (a consistent instant, for checkers).
    pub async fn snapshot(&self) -> Result<Vec<TopicSnapshot>, NodeError> {
        self.call(|reply| Command::Snapshot { reply }).await
    }

    /// [`Node::snapshot`] for a sampler outside the node's runtime that cannot wait (a
    /// simulator between two steps) and asks often: the request is queued now, the answer
    /// arrives on the receiver once the node task has run, and it carries no lists if the
    /// node's revision is still `since` (nothing it lists changed since that answer), and only
    /// the topics that changed if `since` is the revision of the node's last answer. A
    /// receiver that closes unanswered means the node stopped.
    pub fn request_lists(
        &self,
        since: Option<u64>,
    ) -> Result<oneshot::Receiver<NodeLists>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .try_send(Command::SampleLists { since, reply: tx })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => NodeError::Busy,
                mpsc::error::TrySendError::Closed(_) => NodeError::NotRunning,
            })?;
        Ok(rx)
    }

    /// `get_by_key`: one key's metas (empty when absent).
    pub async fn get_by_key(&self, topic: &str, key: &str) -> Result<Vec<Json>, NodeError> {
        let (topic, key) = (topic.to_owned(), key.to_owned());
        self.call(|reply| Command::GetByKey { topic, key, reply })
            .await
    }

    /// Subscribes to a topic's presence diffs on this node, starting from its current state.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, NodeError> {
        let topic = topic.to_owned();
        let (state, diffs) = self
            .call(|reply| Command::Subscribe { topic, reply })
            .await?;
        Ok(Subscription { state, diffs })
    }

    /// Every event of this node from now on (tracker events and link changes), unbounded so
    /// that an observer never misses one.
    pub async fn observe(&self) -> Result<mpsc::UnboundedReceiver<NodeEvent>, NodeError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.cmds
            .send(Command::Observe { tx })
            .await
            .map_err(|_| NodeError::NotRunning)?;
        Ok(rx)
    }

    /// The replicas table of shard 0.
    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// Tells every peer to drop this node's presences now, then stops the node.
    pub async fn graceful_permdown(&self) -> Result<(), NodeError> {
        self.call(|reply| Command::GracefulPermdown { reply }).await
    }
}

/// A [`RefSource`] handle for callers building their own tracker for [`Node::start_with`].
pub fn seeded_refs(seed: u64) -> Box<dyn RefSource> {
    Box::new(SeededRefs::new(seed))
}
