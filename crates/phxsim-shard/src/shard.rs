//! `Phoenix.Tracker.Shard` as a sans-IO state machine (§4.9).
//!
//! A shard owns one replica of the CRDT and decides, on each tick, what to broadcast, whom to
//! ask for a transfer and which peers to declare down. It never sends, sleeps or reads a clock:
//! the caller passes `now` (milliseconds on any monotonic scale the caller keeps consistent),
//! calls [`Shard::tick`] when [`Shard::next_tick_at`] is reached, and drains
//! [`Shard::poll_transmit`] and [`Shard::poll_event`]. That is what lets the same code run under
//! a scripted network in tests, under turmoil and on real sockets.

use crate::config::{NodeMutation, TickModel, TrackerConfig};
use crate::message::{ShardMessage, TransferPayload};
use phxsim_tracker::{
    Catchup, ClockSet, Context, Diff, Generations, Meta, PeerStatus, Peers, ReplicaRef, State,
    Status, Tag, TrackerError, Value, ValueKey,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;
use std::collections::VecDeque;

/// Where a shard message goes. Node names, not replica refs: like Phoenix's PubSub, a message
/// reaches whatever incarnation of that node is listening.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    /// Every connected node except this one.
    Broadcast,
    /// One node.
    Node(String),
}

/// A message the caller must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: Destination,
    pub msg: ShardMessage,
}

/// What happened, in the order it happened: Phoenix's `handle_diff` calls and the
/// `report_events_to` replica events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardEvent {
    /// One `handle_diff`: local changes immediately, remote ones when the heartbeat or transfer
    /// carrying them is merged, all of a replica's presences on down and up.
    Diff(Diff),
    ReplicaUp(ReplicaRef),
    ReplicaDown(ReplicaRef),
    ReplicaPermdown(ReplicaRef),
}

/// Why a message from a peer was refused. The state is untouched when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// A message signed with this node's own name: a loop in the transport, or two nodes
    /// configured with one name. Merging it could rewrite our own history.
    #[error("message from this node's own name {0:?}")]
    OwnName(String),
    /// A message that claims events of this replica it has not made yet. An honest peer only
    /// relays what we sent, so this is corruption or an impersonation; merging it would move
    /// our own clock from outside.
    #[error("message claims dot {0} of this replica, beyond its clock")]
    FromTheFuture(Tag),
    /// The shard has stopped (`graceful_permdown`).
    #[error("shard stopped")]
    Stopped,
    /// A local operation refused by the CRDT (already tracked, no presence).
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

/// How the shard sees one peer replica, for observers and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub replica: ReplicaRef,
    pub status: PeerStatus,
    pub last_heartbeat_at: u64,
}

/// One shard: a replica of the CRDT plus the replication bookkeeping around it.
#[derive(Clone, Debug)]
pub struct Shard {
    cfg: TrackerConfig,
    state: State,
    generations: Generations,
    peers: Peers,
    /// Idle ticks since the last broadcast; starts at the maximum so the first tick
    /// broadcasts (which is how a new node announces itself).
    silent_periods: u32,
    /// Ticks until the next transfer decision; a decision happens when it reaches 1.
    sample_countdown: u32,
    /// Clocks heard in heartbeats since the last decision, reduced as `Clock.append_clock`.
    pending_clocks: ClockSet<ReplicaRef>,
    next_tick_at: Option<u64>,
    /// Eager profile: when the pending delta goes out ahead of the tick.
    eager_at: Option<u64>,
    /// Eager profile: when a delta last went out (eagerly or with a tick), to space deltas
    /// at least one window apart.
    last_delta_at: Option<u64>,
    next_transfer_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ShardEvent>,
    /// [`TickModel::Drift`]: the overrun draws and this shard's mean overrun (µs), the µs of
    /// overrun not yet a whole ms, and the presence values sent or merged since the last tick.
    tick_rng: Option<(ChaCha8Rng, u64)>,
    overrun_us: u64,
    work_values: u64,
}

impl Shard {
    /// A shard that started at `now`, first ticking `first_tick_delay` ms later (Phoenix draws
    /// it from `0..=⌊period/4⌋`; the caller draws it from its seeded RNG). `cfg` must be
    /// valid (see [`TrackerConfig::validate`]).
    pub fn new(cfg: TrackerConfig, replica: ReplicaRef, now: u64, first_tick_delay: u64) -> Self {
        let silent = cfg.max_silent_periods;
        let countdown = cfg.clock_sample_periods;
        let mutation = cfg.mutation.and_then(|m| m.tracker());
        let (guard, keep_dots) = (
            cfg.profile.refuse_superseded_values,
            cfg.profile.keep_removed_dots,
        );
        Self {
            cfg,
            state: State::new(replica)
                .with_mutation(mutation)
                .with_superseded_guard(guard)
                .with_removed_dots_kept(keep_dots),
            generations: Generations::new(),
            peers: Peers::new(),
            silent_periods: silent,
            sample_countdown: countdown,
            pending_clocks: ClockSet::new(),
            next_tick_at: Some(now.saturating_add(first_tick_delay)),
            eager_at: None,
            last_delta_at: None,
            next_transfer_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            tick_rng: None,
            overrun_us: 0,
            work_values: 0,
        }
    }

    /// Seeds the tick overruns of [`TickModel::Drift`] (without a seed a drifting shard ticks
    /// exactly, as [`TickModel::Exact`]).
    pub fn seed_ticks(&mut self, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mean = match &self.cfg.tick_model {
            TickModel::Drift(d) => {
                let [lo, hi] = d.overrun_us;
                rng.gen_range(lo.min(hi)..=hi.max(lo))
            }
            TickModel::Exact => 0,
        };
        self.tick_rng = Some((rng, mean));
    }

    /// How many whole ms this tick's work overran the period ([`TickModel::Drift`]): the
    /// shard's mean idle overrun with a drawn jitter, plus the load since the last tick, with
    /// sub-ms remainders carried over.
    fn overrun_ms(&mut self) -> u64 {
        let (TickModel::Drift(d), Some((rng, mean))) =
            (&self.cfg.tick_model, self.tick_rng.as_mut())
        else {
            return 0;
        };
        let j = d.tick_jitter_us.min(*mean);
        let idle = rng.gen_range(*mean - j..=*mean + j);
        let load = self.work_values.saturating_mul(d.load_us_per_value);
        self.work_values = 0;
        self.overrun_us = self.overrun_us.saturating_add(idle).saturating_add(load);
        let ms = self.overrun_us / 1000;
        self.overrun_us %= 1000;
        ms
    }

    pub fn replica(&self) -> &ReplicaRef {
        self.state.replica()
    }

    /// The CRDT, for reads (`list`, `get_by_key`, `dirty_list`) and checkers.
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// The replicas table: every peer heard from and not permdowned, by name.
    pub fn peers(&self) -> Vec<PeerView> {
        self.peers
            .iter()
            .map(|p| PeerView {
                replica: p.replica.clone(),
                status: p.status,
                last_heartbeat_at: p.last_heartbeat_at,
            })
            .collect()
    }

    /// When the caller must call [`Shard::tick`] next; `None` once stopped.
    pub fn next_tick_at(&self) -> Option<u64> {
        self.next_tick_at
    }

    pub fn is_stopped(&self) -> bool {
        self.next_tick_at.is_none()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    fn send(&mut self, to: Destination, msg: ShardMessage) {
        self.transmits.push_back(Transmit { to, msg });
    }

    fn report(&mut self, diff: Diff) {
        if !diff.is_empty() {
            self.events.push_back(ShardEvent::Diff(diff));
        }
    }

    /// Reports what a merge found, leaving out down replicas when the profile says so.
    fn report_merge(&mut self, mut diff: Diff) {
        if !self.cfg.profile.merge_reports_down_replicas {
            let state = &self.state;
            let up = |v: &Value| state.status(&v.tag.replica) != Some(Status::Down);
            diff.joins.retain(up);
            diff.leaves.retain(up);
        }
        self.report(diff);
    }

    fn check_running(&self) -> Result<(), ShardError> {
        if self.is_stopped() {
            Err(ShardError::Stopped)
        } else {
            Ok(())
        }
    }

    // ---- local operations --------------------------------------------------------------------

    /// `track`: refuses a `{topic, pid, key}` already held; reports the join at once.
    pub fn track(&mut self, key: ValueKey, meta: Json) -> Result<Value, ShardError> {
        self.check_running()?;
        let meta = Meta::from(meta);
        let tag = self.state.join(key.clone(), meta.clone())?;
        let v = Value { key, meta, tag };
        self.report(Diff {
            joins: vec![v.clone()],
            leaves: vec![],
        });
        Ok(v)
    }

    /// `untrack/4`: the leave is reported if the presence was held; a no-op otherwise.
    pub fn untrack(&mut self, key: &ValueKey) -> Result<Option<Value>, ShardError> {
        self.check_running()?;
        let left = self.state.leave(key);
        if let Some(v) = &left {
            self.report(Diff {
                joins: vec![],
                leaves: vec![v.clone()],
            });
        }
        Ok(left)
    }

    /// `untrack/2`, or the tracked process exiting: every presence of `pid` leaves, in one
    /// report.
    pub fn untrack_pid(&mut self, pid: &str) -> Result<Vec<Value>, ShardError> {
        self.check_running()?;
        let left = self.state.leave_pid(pid);
        self.report(Diff {
            joins: vec![],
            leaves: left.clone(),
        });
        Ok(left)
    }

    /// `update`: an atomic replace; reported as the new meta joining and the old one leaving.
    /// Returns `(old, new)`.
    pub fn update(&mut self, key: &ValueKey, meta: Json) -> Result<(Value, Value), ShardError> {
        self.check_running()?;
        let meta = Meta::from(meta);
        let (old, tag) = self.state.update(key, meta.clone())?;
        let new = Value {
            key: key.clone(),
            meta,
            tag,
        };
        self.report(Diff {
            joins: vec![new.clone()],
            leaves: vec![old.clone()],
        });
        Ok((old, new))
    }

    /// Stops the shard on purpose: peers are told to drop this replica at once instead of
    /// waiting for `down_period`. Nothing is processed afterwards.
    pub fn graceful_permdown(&mut self) {
        if self.is_stopped() {
            return;
        }
        let from = self.replica().clone();
        self.send(
            Destination::Broadcast,
            ShardMessage::GracefulPermdown { from },
        );
        self.next_tick_at = None;
    }

    // ---- the eager profile -------------------------------------------------------------------

    /// After a local change at `now`: in the eager profile, schedule the delta's early
    /// broadcast. It is a throttle with a leading edge: a change after a quiet window leaves at
    /// once (one network hop to the peers), while changes that follow within the window ride
    /// along in one delta at the window's end, so a burst costs at most one heartbeat per
    /// window and no change waits longer than one window.
    pub fn schedule_eager(&mut self, now: u64) {
        if let Some(window) = self.cfg.profile.eager_window
            && self.eager_at.is_none()
            && !self.is_stopped()
            && self.state.has_delta()
        {
            let at = match self.last_delta_at {
                Some(last) => now.max(last.saturating_add(window)),
                None => now,
            };
            self.eager_at = Some(at);
        }
    }

    /// The earliest instant this shard wants to run: its tick or an eager broadcast.
    pub fn next_timeout(&self) -> Option<u64> {
        match (self.next_tick_at, self.eager_at) {
            (Some(t), Some(e)) => Some(t.min(e)),
            (t, e) => t.or(e),
        }
    }

    /// Runs whatever is due at `now`: the tick, or else an eager broadcast of the delta.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.next_tick_at.is_some_and(|t| t <= now) {
            self.tick(now);
        } else if self.eager_at.is_some_and(|t| t <= now) {
            self.eager_at = None;
            if !self.is_stopped() && self.state.has_delta() {
                self.last_delta_at = Some(now);
                self.broadcast_heartbeat();
            }
        }
    }

    // ---- the tick ----------------------------------------------------------------------------

    /// One tick at `now`: heartbeat, transfer decision, down detection, in Phoenix's order.
    /// The next tick is `broadcast_period` after `now`, so a late tick delays the ones after it
    /// (as `Process.send_after` re-armed by the handler does); with [`TickModel::Drift`] the
    /// tick's work adds its overrun.
    pub fn tick(&mut self, now: u64) {
        if self.is_stopped() {
            return;
        }
        self.eager_at = None;
        if self.state.has_delta() {
            self.last_delta_at = Some(now);
        }
        self.broadcast_heartbeat();
        self.request_transfers();
        self.detect_downs(now);
        let overrun = self.overrun_ms();
        self.next_tick_at = Some(
            now.saturating_add(self.cfg.broadcast_period)
                .saturating_add(overrun),
        );
    }

    fn broadcast_heartbeat(&mut self) {
        let from = self.replica().clone();
        if self.state.has_delta() {
            // The clocks are read before the delta is flushed, as Phoenix reads them from the
            // state it has not yet reset.
            let clocks = self.state.clocks();
            let Some(delta) = self.state.flush() else {
                return;
            };
            self.work_values += delta.values.len() as u64;
            self.generations
                .push(&self.state, &delta, &self.cfg.max_delta_sizes);
            self.silent_periods = 0;
            self.send(
                Destination::Broadcast,
                ShardMessage::Heartbeat {
                    from,
                    delta: Some(delta),
                    clocks,
                },
            );
        } else if self.silent_periods >= self.cfg.max_silent_periods {
            self.silent_periods = 0;
            let clocks = self.state.clocks();
            self.send(
                Destination::Broadcast,
                ShardMessage::Heartbeat {
                    from,
                    delta: None,
                    clocks,
                },
            );
        } else {
            self.silent_periods += 1;
        }
    }

    /// Every `clock_sample_periods` ticks: ask each replica whose sampled clock knows something
    /// that neither we nor a more up-to-date replica know. Our own clock dominating the sample
    /// means nothing is asked.
    fn request_transfers(&mut self) {
        if self.sample_countdown > 1 {
            self.sample_countdown -= 1;
            return;
        }
        self.sample_countdown = self.cfg.clock_sample_periods;
        let mut set = std::mem::replace(&mut self.pending_clocks, ClockSet::new());
        if self.cfg.mutation == Some(NodeMutation::SkipTransfer) {
            return;
        }
        let me = self.replica().clone();
        set.append(me.clone(), self.state.clocks());
        for r in set.replicas().into_iter().filter(|r| *r != me) {
            let id = self.next_transfer_id;
            self.next_transfer_id += 1;
            self.send(
                Destination::Node(r.name.to_string()),
                ShardMessage::TransferReq {
                    id,
                    from: me.clone(),
                    clocks: self.state.clocks(),
                },
            );
        }
    }

    fn detect_downs(&mut self, now: u64) {
        let (mut down, mut perm) = (self.cfg.down_period(), self.cfg.permdown_period);
        if self.cfg.mutation == Some(NodeMutation::SlowDownDetection) {
            (down, perm) = (down.saturating_mul(4), perm.saturating_mul(4));
        }
        for name in self.peers.names() {
            let Some((prev, upd)) = self.peers.detect_down(&name, now, down, perm) else {
                continue;
            };
            match (prev.status, upd.status) {
                (PeerStatus::Up, PeerStatus::Permdown) => {
                    self.down(&prev.replica);
                    self.permdown(&prev.replica);
                }
                (PeerStatus::Down, PeerStatus::Permdown) => self.permdown(&prev.replica),
                (PeerStatus::Up, PeerStatus::Down) => self.down(&prev.replica),
                _ => {}
            }
        }
    }

    fn up(&mut self, r: &ReplicaRef) {
        self.events.push_back(ShardEvent::ReplicaUp(r.clone()));
        // `replica_up` refuses only our own ref, which `handle_message` has already refused.
        if let Ok(diff) = self.state.replica_up(r) {
            self.report(diff);
        }
    }

    fn down(&mut self, r: &ReplicaRef) {
        self.events.push_back(ShardEvent::ReplicaDown(r.clone()));
        if let Ok(diff) = self.state.replica_down(r) {
            self.report(diff);
        }
    }

    /// Deletes everything of `r` (no diff: its leaves were reported when it went down), prunes
    /// it from the generations so it cannot come back as a zombie, and forgets its table entry
    /// unless a newer incarnation already replaced it.
    fn permdown(&mut self, r: &ReplicaRef) {
        self.events
            .push_back(ShardEvent::ReplicaPermdown(r.clone()));
        // Every caller downs `r` first, which is what `remove_down` checks.
        let _ = self.state.remove_down(r);
        self.state.forget_status(r);
        self.generations.remove_replica(r);
        if self.peers.get(&r.name).is_some_and(|p| &p.replica == r) {
            self.peers.remove(&r.name);
        }
    }

    // ---- messages from peers -----------------------------------------------------------------

    /// Handles one message from a peer at `now`. A refused message changes nothing.
    pub fn handle_message(&mut self, now: u64, msg: ShardMessage) -> Result<(), ShardError> {
        self.check_running()?;
        self.check_origin(&msg)?;
        match msg {
            ShardMessage::Heartbeat {
                from,
                delta: None,
                clocks,
            } => {
                self.pending_clocks.append(from.clone(), clocks);
                self.heartbeat(now, &from);
            }
            ShardMessage::Heartbeat {
                from,
                delta: Some(delta),
                clocks,
            } => {
                self.heartbeat(now, &from);
                self.work_values += delta.values.len() as u64;
                let diff = self.state.merge_delta(&delta);
                self.report_merge(diff);
                self.pending_clocks.append(from, clocks);
                self.generations
                    .push(&self.state, &delta, &self.cfg.max_delta_sizes);
            }
            ShardMessage::TransferReq { id, from, clocks } => {
                let remote = bare_name_ref(&from.name, &clocks);
                let catchup = match self.cfg.mutation {
                    Some(NodeMutation::GenerationChoiceIgnoresGap) => {
                        choice_ignoring_gaps(&self.generations, &self.state, &remote, &clocks)
                    }
                    _ => self.generations.extract(&self.state, &remote, &clocks),
                };
                let payload = match catchup {
                    Catchup::Delta(_, d) => TransferPayload::Delta(d),
                    Catchup::Full(mut e) => {
                        if self.cfg.profile.transfer_excludes_requester {
                            e.values.retain(|t, _| t.replica != from);
                        }
                        TransferPayload::Full(e)
                    }
                };
                let me = self.replica().clone();
                self.send(
                    Destination::Node(from.name.into()),
                    ShardMessage::TransferAck {
                        id,
                        from: me,
                        payload,
                    },
                );
            }
            ShardMessage::TransferAck {
                payload: TransferPayload::Delta(delta),
                ..
            } => {
                self.work_values += delta.values.len() as u64;
                let diff = self.state.merge_delta(&delta);
                self.report_merge(diff);
                self.generations
                    .push(&self.state, &delta, &self.cfg.max_delta_sizes);
            }
            ShardMessage::TransferAck {
                payload: TransferPayload::Full(extract),
                ..
            } => {
                self.work_values += extract.values.len() as u64;
                let diff = self.state.merge_extract(&extract);
                self.report_merge(diff);
                self.generations.clear();
            }
            ShardMessage::GracefulPermdown { from } => {
                let Some(peer) = self.peers.get(&from.name).cloned() else {
                    return Ok(());
                };
                if peer.replica != from {
                    return Ok(());
                }
                if peer.status == PeerStatus::Up || self.cfg.profile.graceful_permdown_redowns {
                    self.down(&from);
                }
                self.permdown(&from);
            }
        }
        Ok(())
    }

    /// A direct heartbeat: the sender is (again) up; a new vsn under a known name retires the
    /// old incarnation first (§4.3 table).
    fn heartbeat(&mut self, now: u64, from: &ReplicaRef) {
        match self.peers.put_heartbeat(from, now) {
            None => self.up(from),
            Some(prev) if &prev.replica == from => {
                if prev.status != PeerStatus::Up {
                    self.up(from);
                }
            }
            Some(prev) => {
                if prev.status == PeerStatus::Up {
                    self.down(&prev.replica);
                }
                self.permdown(&prev.replica);
                self.up(from);
            }
        }
    }

    /// Refuses messages that could only come from ourselves or that claim our future.
    fn check_origin(&self, msg: &ShardMessage) -> Result<(), ShardError> {
        let me = self.replica();
        if msg.from().name == me.name {
            return Err(ShardError::OwnName(me.name.to_string()));
        }
        let clock = self.state.clock();
        let future = |c: u64| Tag::new(me.clone(), c);
        let check_ctx = |ctx: &Context| match ctx.get(me) {
            Some(&c) if c > clock => Err(ShardError::FromTheFuture(future(c))),
            _ => Ok(()),
        };
        let check_clouds =
            |clouds: &phxsim_tracker::Clouds| match clouds.get(me).and_then(|d| d.last()) {
                Some(&c) if c > clock => Err(ShardError::FromTheFuture(future(c))),
                _ => Ok(()),
            };
        let future_tags =
            || Tag::new(me.clone(), clock.saturating_add(1))..=Tag::new(me.clone(), u64::MAX);
        let check_first = |first: Option<(&Tag, &phxsim_tracker::TrackedMeta)>| match first {
            Some((t, _)) => Err(ShardError::FromTheFuture(t.clone())),
            None => Ok(()),
        };
        let check_delta = |d: &phxsim_tracker::Delta| {
            check_first(d.values.range(future_tags()).next())?;
            check_clouds(&d.clouds)?;
            check_ctx(&d.range.0)?;
            check_ctx(&d.range.1)
        };
        match msg {
            ShardMessage::Heartbeat { delta, clocks, .. } => {
                if let Some(d) = delta {
                    check_delta(d)?;
                }
                check_ctx(clocks)
            }
            ShardMessage::TransferReq { clocks, .. } => check_ctx(clocks),
            ShardMessage::TransferAck { payload, .. } => match payload {
                TransferPayload::Delta(d) => check_delta(d),
                TransferPayload::Full(e) => {
                    check_first(e.values.range(future_tags()).next())?;
                    check_clouds(&e.clouds)?;
                    check_ctx(&e.context)
                }
            },
            ShardMessage::GracefulPermdown { .. } => Ok(()),
        }
    }
}

/// [`NodeMutation::GenerationChoiceIgnoresGap`]: the smallest generation that tells the
/// requester something, whether or not its context reaches the generation's start.
fn choice_ignoring_gaps(
    generations: &Generations,
    state: &State,
    remote: &ReplicaRef,
    clocks: &Context,
) -> Catchup {
    for (i, g) in generations.as_slice().iter().enumerate() {
        let end = phxsim_tracker::clock::filter_replicas(&g.range.1, clocks.keys());
        if !phxsim_tracker::clock::dominates(clocks, &end) {
            return Catchup::Delta(i, g.extract(remote, clocks));
        }
    }
    Catchup::Full(state.extract(remote, clocks))
}

/// Anomaly 3, reproduced: Phoenix hands the extract the requester's bare node name where a
/// replica ref is expected, and a name never equals a ref, so the requester's own entries are
/// not left out. The equivalent here is a ref under that name that matches no replica the
/// requester listed.
fn bare_name_ref(name: &str, clocks: &Context) -> ReplicaRef {
    let mut vsn = u64::MAX;
    while clocks.contains_key(&ReplicaRef::new(name, vsn)) {
        vsn -= 1;
    }
    ReplicaRef::new(name, vsn)
}
