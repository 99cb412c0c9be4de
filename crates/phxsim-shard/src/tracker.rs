//! One node's tracker: the shard pool (`Phoenix.Tracker`) and the Presence API on top of it
//! (`Phoenix.Presence`), still sans-IO. Local calls return at once; peer messages and ticks go
//! in with `now`; messages to send and events for local subscribers come out of
//! [`Tracker::poll_transmit`] and [`Tracker::poll_event`].
//!
//! Owners (Phoenix's tracked pids: a channel process, a socket) are strings chosen by the
//! caller. They are qualified with the node name before they enter the CRDT, because the CRDT
//! keeps one row per `{topic, pid, key}` across the whole cluster: two nodes using the same owner
//! id must not collide, as two Erlang pids on different nodes never do.

use crate::config::{ConfigError, TickModel, TrackerConfig};
use crate::message::NodeMessage;
use crate::pool::shard_for_topic;
use crate::presence::{RefSource, SeededRefs, TrackerDiff, TrackerList, meta_with_refs};
use crate::shard::{Destination, PeerView, Shard, ShardError, ShardEvent};
use phxsim_tracker::{Diff, ReplicaRef, TrackerError, Value, ValueKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, VecDeque};

/// A message for the caller to send: to every connected node, or to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTransmit {
    pub to: Destination,
    pub msg: NodeMessage,
}

/// What local subscribers and observers see, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackerEvent {
    /// A `presence_diff` for every local subscriber of `topic`.
    PresenceDiff {
        topic: String,
        diff: TrackerDiff,
    },
    ReplicaUp {
        shard: u32,
        replica: ReplicaRef,
    },
    ReplicaDown {
        shard: u32,
        replica: ReplicaRef,
    },
    ReplicaPermdown {
        shard: u32,
        replica: ReplicaRef,
    },
}

/// Refusals of the Presence API, as Phoenix answers them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// `{:error, {:already_tracked, pid, topic, key}}`.
    #[error("already tracked: owner {owner:?}, topic {topic:?}, key {key:?}")]
    AlreadyTracked {
        owner: String,
        topic: String,
        key: String,
    },
    /// `{:error, :nopresence}`.
    #[error("no presence: owner {owner:?}, topic {topic:?}, key {key:?}")]
    NoPresence {
        owner: String,
        topic: String,
        key: String,
    },
    /// The tracker was stopped with `graceful_permdown`.
    #[error("tracker stopped")]
    Stopped,
}

/// Why a peer's message was refused. The link it came on should be dropped; the tracker is
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// Shard `n` only talks to shard `n`; this pool has fewer.
    #[error("message for shard {shard}, pool size is {pool_size}")]
    UnknownShard { shard: u32, pool_size: u32 },
    /// The replica in the message is not the node the link was opened with.
    #[error("message from replica {replica} on the link of node {link:?}")]
    SenderMismatch { replica: ReplicaRef, link: String },
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// One node's tracker.
pub struct Tracker {
    node: String,
    vsn: u64,
    cfg: TrackerConfig,
    shards: Vec<Shard>,
    refs: Box<dyn RefSource>,
    transmits: VecDeque<NodeTransmit>,
    events: VecDeque<TrackerEvent>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("node", &self.node)
            .field("vsn", &self.vsn)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker for node `name`, incarnation `vsn` (a restart must use a new one), started at
    /// `now`. `seed` draws the shards' first-tick delays and the `phx_ref`s (and, with
    /// [`TickModel::Drift`], a start offset and each shard's tick overruns).
    pub fn new(
        cfg: TrackerConfig,
        name: impl Into<String>,
        vsn: u64,
        now: u64,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let jitter = cfg.first_tick_jitter();
        let mut delays: Vec<u64> = (0..cfg.pool_size)
            .map(|_| rng.gen_range(0..=jitter))
            .collect();
        let refs = Box::new(SeededRefs::new(rng.r#gen()));
        // drawn after everything the exact model draws, so that its runs stay as they were
        let drift = match &cfg.tick_model {
            TickModel::Drift(d) => Some(d.start_offset_ms),
            TickModel::Exact => None,
        };
        if let Some(max_offset) = drift {
            let offset = rng.gen_range(0..=max_offset);
            for d in &mut delays {
                *d += offset;
            }
        }
        let mut tracker = Self::with_parts(cfg, name, vsn, now, delays, refs)?;
        if drift.is_some() {
            for shard in &mut tracker.shards {
                shard.seed_ticks(rng.r#gen());
            }
        }
        Ok(tracker)
    }

    /// Everything explicit: one first-tick delay per shard, and the `phx_ref` source.
    pub fn with_parts(
        cfg: TrackerConfig,
        name: impl Into<String>,
        vsn: u64,
        now: u64,
        first_tick_delays: Vec<u64>,
        refs: Box<dyn RefSource>,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let node = name.into();
        let replica = ReplicaRef::new(node.clone(), vsn);
        let shards = (0..cfg.pool_size as usize)
            .map(|i| {
                let delay = first_tick_delays.get(i).copied().unwrap_or(0);
                Shard::new(cfg.clone(), replica.clone(), now, delay)
            })
            .collect();
        Ok(Self {
            node,
            vsn,
            cfg,
            shards,
            refs,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// A copy of this tracker drawing `phx_ref`s from `refs` (a ref source is not cloneable):
    /// for benchmarks, and for a simulator exploring two futures from one state.
    pub fn fork(&self, refs: Box<dyn RefSource>) -> Tracker {
        Tracker {
            node: self.node.clone(),
            vsn: self.vsn,
            cfg: self.cfg.clone(),
            shards: self.shards.clone(),
            refs,
            transmits: self.transmits.clone(),
            events: self.events.clone(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn vsn(&self) -> u64 {
        self.vsn
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard a topic lives on.
    pub fn shard_index(&self, topic: &str) -> usize {
        shard_for_topic(topic, self.cfg.pool_size) as usize
    }

    /// The replicas table of shard 0 (with `pool_size` 1, the only one).
    pub fn peers(&self) -> Vec<PeerView> {
        self.shards.first().map(Shard::peers).unwrap_or_default()
    }

    /// The CRDT's pid for a local owner.
    pub fn pid_of(&self, owner: &str) -> String {
        format!("{owner}@{}", self.node)
    }

    fn key(&self, owner: &str, topic: &str, key: &str) -> ValueKey {
        ValueKey::new(topic, self.pid_of(owner), key)
    }

    // ---- the Presence API ---------------------------------------------------------------------

    /// `track`: a new presence of `owner` under `key` in `topic`. Returns its `phx_ref`.
    pub fn track(
        &mut self,
        owner: &str,
        topic: &str,
        key: &str,
        meta: &Map<String, Json>,
    ) -> Result<String, PresenceError> {
        let vk = self.key(owner, topic, key);
        let i = self.shard_index(topic);
        if self.shards[i].state().get(&vk).is_some() {
            return Err(PresenceError::AlreadyTracked {
                owner: owner.into(),
                topic: topic.into(),
                key: key.into(),
            });
        }
        if self.shards[i].is_stopped() {
            return Err(PresenceError::Stopped);
        }
        let phx_ref = self.refs.next_ref();
        let meta = meta_with_refs(&phx_ref, None, meta);
        let res = self.shards[i].track(vk, meta);
        self.drain(i);
        match res {
            Ok(_) => Ok(phx_ref),
            Err(e) => Err(self.refusal(e, owner, topic, key)),
        }
    }

    /// `untrack/4`: always succeeds, whether or not the presence existed.
    pub fn untrack(&mut self, owner: &str, topic: &str, key: &str) -> Result<(), PresenceError> {
        let vk = self.key(owner, topic, key);
        let i = self.shard_index(topic);
        let res = self.shards[i].untrack(&vk);
        self.drain(i);
        res.map(|_| ())
            .map_err(|e| self.refusal(e, owner, topic, key))
    }

    /// `untrack/2`, or the owner going away (a channel process exiting): every presence of the
    /// owner, in every shard, leaves.
    pub fn untrack_owner(&mut self, owner: &str) -> Result<(), PresenceError> {
        let pid = self.pid_of(owner);
        for i in 0..self.shards.len() {
            let res = self.shards[i].untrack_pid(&pid);
            self.drain(i);
            res.map_err(|e| self.refusal(e, owner, "", ""))?;
        }
        Ok(())
    }

    /// `update` with a map: the new meta replaces the old one entirely and gets a new `phx_ref`
    /// and `phx_ref_prev`. Returns the new `phx_ref`.
    pub fn update(
        &mut self,
        owner: &str,
        topic: &str,
        key: &str,
        meta: &Map<String, Json>,
    ) -> Result<String, PresenceError> {
        self.update_with(owner, topic, key, |_| meta.clone())
    }

    /// `update` with a function of the old meta (which includes `phx_ref` and any
    /// `phx_ref_prev`).
    pub fn update_with(
        &mut self,
        owner: &str,
        topic: &str,
        key: &str,
        f: impl FnOnce(&Map<String, Json>) -> Map<String, Json>,
    ) -> Result<String, PresenceError> {
        let vk = self.key(owner, topic, key);
        let i = self.shard_index(topic);
        if self.shards[i].is_stopped() {
            return Err(PresenceError::Stopped);
        }
        let Some(old) = self.shards[i].state().get(&vk) else {
            return Err(PresenceError::NoPresence {
                owner: owner.into(),
                topic: topic.into(),
                key: key.into(),
            });
        };
        let empty = Map::new();
        let old_json = old.meta.to_json();
        let old_meta = old_json.as_object().unwrap_or(&empty);
        let user = f(old_meta);
        let prev = crate::presence::phx_ref_of(&old_json).map(str::to_owned);
        let phx_ref = self.refs.next_ref();
        let meta = meta_with_refs(&phx_ref, prev.as_deref(), &user);
        let res = self.shards[i].update(&vk, meta);
        self.drain(i);
        match res {
            Ok(_) => Ok(phx_ref),
            Err(e) => Err(self.refusal(e, owner, topic, key)),
        }
    }

    fn refusal(&self, e: ShardError, owner: &str, topic: &str, key: &str) -> PresenceError {
        let (owner, topic, key) = (owner.into(), topic.into(), key.into());
        match e {
            ShardError::Tracker(TrackerError::AlreadyTracked(_)) => {
                PresenceError::AlreadyTracked { owner, topic, key }
            }
            ShardError::Tracker(TrackerError::NoPresence(_)) => {
                PresenceError::NoPresence { owner, topic, key }
            }
            _ => PresenceError::Stopped,
        }
    }

    /// Changes whenever what [`Tracker::list`], [`Tracker::local_list`] or [`Tracker::topics`]
    /// could answer changes (the sum of every shard's [`phxsim_tracker::State::revision`]): a
    /// reader that samples often keeps its last answer while this stays the same.
    pub fn revision(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.state().revision()))
    }

    /// `list` and `local_list` of one topic, read in one pass over its values, each meta
    /// parsed once and copied once per list it is in.
    pub fn list_and_local(&self, topic: &str) -> (TrackerList, TrackerList) {
        fn push(to: &mut BTreeMap<String, Vec<Json>>, key: &str, meta: &Json) {
            match to.get_mut(key) {
                Some(metas) => metas.push(meta.clone()),
                None => {
                    to.insert(key.to_owned(), vec![meta.clone()]);
                }
            }
        }
        let state = self.shards[self.shard_index(topic)].state();
        let (mut list, mut local) = (BTreeMap::new(), BTreeMap::new());
        for (k, meta, tag) in state.visible_in_topic(topic) {
            let meta = meta.to_json();
            push(&mut list, k, &meta);
            if &tag.replica == state.replica() {
                push(&mut local, k, &meta);
            }
        }
        (TrackerList(list), TrackerList(local))
    }

    /// `list`: the topic's presences, hiding replicas currently marked down.
    pub fn list(&self, topic: &str) -> TrackerList {
        let i = self.shard_index(topic);
        group(self.shards[i].state().get_by_topic(topic))
    }

    /// Every topic with a presence on this node (down replicas included), in order.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| s.state().topics())
            .map(String::from)
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The presences this node tracks itself (its own replica's values) for `topic`: what
    /// its sockets hold, the ground truth a simulator compares every node's list with.
    pub fn local_list(&self, topic: &str) -> TrackerList {
        let i = self.shard_index(topic);
        let state = self.shards[i].state();
        group(
            state
                .get_by_topic(topic)
                .into_iter()
                .filter(|v| &v.tag.replica == state.replica())
                .collect(),
        )
    }

    /// `dirty_list`: like `list`, down replicas included.
    pub fn dirty_list(&self, topic: &str) -> TrackerList {
        let i = self.shard_index(topic);
        group(
            self.shards[i]
                .state()
                .all_values()
                .into_iter()
                .filter(|v| v.key.topic == topic)
                .collect(),
        )
    }

    /// `get_by_key`: the metas of one key (empty when absent).
    pub fn get_by_key(&self, topic: &str, key: &str) -> Vec<Json> {
        let i = self.shard_index(topic);
        self.shards[i]
            .state()
            .get_by_key(topic, key)
            .into_iter()
            .map(|v| v.meta.into_json())
            .collect()
    }

    /// Stops every shard; peers drop this node's presences at once.
    pub fn graceful_permdown(&mut self) {
        for i in 0..self.shards.len() {
            self.shards[i].graceful_permdown();
            self.drain(i);
        }
    }

    // ---- time and peers -----------------------------------------------------------------------

    /// The earliest time a shard wants to tick; `None` when every shard is stopped.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.shards.iter().filter_map(Shard::next_timeout).min()
    }

    /// Ticks every shard that is due at `now` (or sends its eager delta).
    pub fn handle_timeout(&mut self, now: u64) {
        for i in 0..self.shards.len() {
            if self.shards[i].next_timeout().is_some_and(|t| t <= now) {
                self.shards[i].handle_timeout(now);
                self.drain(i);
            }
        }
    }

    /// After local changes at `now`: lets shards in the eager profile schedule their delta.
    /// A no-op in the faithful profile.
    pub fn schedule_eager(&mut self, now: u64) {
        for shard in &mut self.shards {
            shard.schedule_eager(now);
        }
    }

    /// A message that arrived at `now` on the link to node `link`.
    pub fn handle_message(
        &mut self,
        now: u64,
        link: &str,
        msg: NodeMessage,
    ) -> Result<(), InboundError> {
        let pool_size = self.cfg.pool_size;
        let Some(shard) = self.shards.get_mut(msg.shard as usize) else {
            return Err(InboundError::UnknownShard {
                shard: msg.shard,
                pool_size,
            });
        };
        if msg.body.from().name != link {
            return Err(InboundError::SenderMismatch {
                replica: msg.body.from().clone(),
                link: link.to_owned(),
            });
        }
        let res = shard.handle_message(now, msg.body);
        self.drain(msg.shard as usize);
        res.map_err(InboundError::from)
    }

    pub fn poll_transmit(&mut self) -> Option<NodeTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TrackerEvent> {
        self.events.pop_front()
    }

    /// Moves shard `i`'s output into the node's queues, turning each `handle_diff` into one
    /// `presence_diff` per topic, as Phoenix.Presence does.
    fn drain(&mut self, i: usize) {
        let shard = u32::try_from(i).unwrap_or(u32::MAX);
        while let Some(t) = self.shards[i].poll_transmit() {
            self.transmits.push_back(NodeTransmit {
                to: t.to,
                msg: NodeMessage { shard, body: t.msg },
            });
        }
        while let Some(e) = self.shards[i].poll_event() {
            match e {
                ShardEvent::Diff(diff) => {
                    for (topic, diff) in presence_diffs(diff) {
                        self.events
                            .push_back(TrackerEvent::PresenceDiff { topic, diff });
                    }
                }
                ShardEvent::ReplicaUp(replica) => self
                    .events
                    .push_back(TrackerEvent::ReplicaUp { shard, replica }),
                ShardEvent::ReplicaDown(replica) => self
                    .events
                    .push_back(TrackerEvent::ReplicaDown { shard, replica }),
                ShardEvent::ReplicaPermdown(replica) => self
                    .events
                    .push_back(TrackerEvent::ReplicaPermdown { shard, replica }),
            }
        }
    }
}

/// Values grouped by key, metas in the order given.
fn group(values: Vec<Value>) -> TrackerList {
    let mut out: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for v in values {
        out.entry(v.key.key.into())
            .or_default()
            .push(v.meta.into_json());
    }
    TrackerList(out)
}

/// One `handle_diff` split per topic, joins and leaves grouped by key.
pub fn presence_diffs(diff: Diff) -> BTreeMap<String, TrackerDiff> {
    let mut out: BTreeMap<String, TrackerDiff> = BTreeMap::new();
    for v in diff.joins {
        out.entry(v.key.topic.into())
            .or_default()
            .joins
            .entry(v.key.key.into())
            .or_default()
            .push(v.meta.into_json());
    }
    for v in diff.leaves {
        out.entry(v.key.topic.into())
            .or_default()
            .leaves
            .entry(v.key.key.into())
            .or_default()
            .push(v.meta.into_json());
    }
    out
}
