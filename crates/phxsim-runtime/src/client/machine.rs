//! The client as a sans-IO state machine: phoenix.js's socket and one channel, with time passed
//! in. It reads no clock, owns no stream and spawns nothing: the tokio task in `task.rs` feeds
//! it frames, commands, connection changes and the current instant, and writes out the frames
//! it queues. Its one presence list is the phoenix.js-exact [`PresenceInstance`]; a
//! [`ClientView`] is computed from it on demand, so a client holds each list once.

use super::frame_cache::{CachedDiff, FrameCache};
use super::{
    ChannelState, ClientConfig, ClientEvent, ClientMutation, ClientStatus, ClientView, Command,
    PresenceOutcome, Wants,
};
use phxsim_wire::message::{
    HEARTBEAT, PHOENIX_TOPIC, PHX_CLOSE, PHX_ERROR, PHX_JOIN, PHX_LEAVE, PHX_REPLY, PRESENCE_DIFF,
    PRESENCE_STATE,
};
use phxsim_wire::{
    Codec, Frame, Handled, Message, Payload, PresenceDiff, PresenceInstance, PresenceState,
    SharedDiff,
};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::time::Instant;

/// How a connection ends, and whether to come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionEnd {
    pub(crate) reason: String,
    pub(crate) reconnect: bool,
    pub(crate) close: CloseWith,
}

/// What is left to say on a connection that ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseWith {
    /// Nothing: the stream is gone (or is being dropped on purpose).
    Nothing,
    /// Answer the server's close frame.
    Reply,
    /// Close cleanly with code 1000 and the end's reason.
    Normal,
}

impl SessionEnd {
    pub(crate) fn new(reason: impl Into<String>, reconnect: bool, close: CloseWith) -> Self {
        SessionEnd {
            reason: reason.into(),
            reconnect,
            close,
        }
    }

    pub(crate) fn lost(reason: impl Into<String>) -> Self {
        SessionEnd::new(reason, true, CloseWith::Nothing)
    }
}

pub(crate) const STOPPED: &str = "client stopped";
const DROPPED: &str = "connection dropped";
const HEARTBEAT_TIMEOUT: &str = "heartbeat timeout";

/// A broadcast `presence_diff` a client was handed: decoded by its cache, or just now (with
/// its text).
enum BroadcastDiff<'a> {
    Cached(Arc<CachedDiff>),
    Fresh(&'a str, Message),
}

/// phoenix.js's socket and channel state for one channel.
pub(crate) struct Machine {
    /// Shared with the task, which reads it for every connection (one copy per client).
    cfg: Arc<ClientConfig>,
    codec: Codec,
    /// phoenix.js `socket.ref`: one counter for every ref of the socket, across reconnects.
    next_ref: u64,
    want_connected: bool,
    /// The channel, as phoenix.js's `Channel` holds it.
    state: ChannelState,
    join_ref: Option<String>,
    join_deadline: Option<Instant>,
    rejoin_tries: u32,
    rejoin_at: Option<Instant>,
    leave_ref: Option<String>,
    leave_deadline: Option<Instant>,
    /// Pushes made before the channel joined, sent once it does.
    buffered: Vec<(String, Json)>,
    /// Pushes awaiting a reply: ref → (event, deadline).
    awaiting: BTreeMap<String, (String, Instant)>,
    heartbeat_ref: Option<String>,
    /// When the next heartbeat is due, or (with `heartbeat_ref` set) when its reply is late.
    heartbeat_at: Instant,
    presence: PresenceInstance,
    /// What a checker reads besides the list.
    status: ClientStatus,
    /// Messages to send, in order.
    out: VecDeque<Message>,
    /// Events for observers, in order; recorded only while someone observes.
    events: Vec<ClientEvent>,
    /// Someone observes events (channel and connection events at least).
    observed: bool,
    /// Someone wants the frames.
    frames_observed: bool,
    /// Someone wants the presence messages.
    presence_observed: bool,
    /// What a broadcast diff reads of the configuration (besides the codec's limits, which
    /// the codec holds), held inline: the configuration is a block of its own, and a browser
    /// takes thousands of diffs in a join storm, each one more cache miss.
    hot: HotConfig,
}

/// See [`Machine::hot`].
struct HotConfig {
    topic: Arc<str>,
    frame_cache: Option<FrameCache>,
    forget_pending_diffs: bool,
}

impl Machine {
    pub(crate) fn new(cfg: ClientConfig, now: Instant) -> Machine {
        let mut m = Machine {
            codec: phxsim_wire::Codec::client(cfg.serializer).with_max_frame_len(cfg.max_frame_len),
            next_ref: 0,
            want_connected: cfg.auto_connect,
            state: ChannelState::Closed,
            join_ref: None,
            join_deadline: None,
            rejoin_tries: 0,
            rejoin_at: None,
            leave_ref: None,
            leave_deadline: None,
            buffered: Vec::new(),
            awaiting: BTreeMap::new(),
            heartbeat_ref: None,
            heartbeat_at: now,
            presence: PresenceInstance::new(),
            status: ClientStatus::default(),
            out: VecDeque::new(),
            events: Vec::new(),
            observed: false,
            frames_observed: false,
            presence_observed: false,
            hot: HotConfig {
                topic: Arc::clone(&cfg.topic),
                frame_cache: cfg.frame_cache.clone(),
                forget_pending_diffs: cfg.mutation == Some(ClientMutation::ForgetPendingDiffs),
            },
            cfg: Arc::new(cfg),
        };
        if m.cfg.auto_join {
            m.set_state(ChannelState::Joining);
        }
        m
    }

    pub(crate) fn config(&self) -> &Arc<ClientConfig> {
        &self.cfg
    }

    /// The longest frame the client takes (the configuration's, held by the codec).
    pub(crate) fn max_frame_len(&self) -> usize {
        self.codec.max_frame_len()
    }

    /// Someone observes events from now on, and what else it wants.
    pub(crate) fn observe(&mut self, wants: Wants) {
        self.observed = true;
        self.frames_observed |= wants.frames;
        self.presence_observed |= wants.presence;
    }

    /// Whether the socket should be (re)connecting.
    pub(crate) fn wants_connection(&self) -> bool {
        self.want_connected
    }

    /// Whether a step emitted events not yet taken.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The events since the last call, in order.
    pub(crate) fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events)
    }

    pub(crate) fn status(&self) -> &ClientStatus {
        &self.status
    }

    /// The view a checker reads, the presence list computed from the one the client keeps.
    pub(crate) fn view(&self) -> ClientView {
        let s = &self.status;
        ClientView {
            connected: s.connected,
            channel: s.channel,
            join_ref: s.join_ref.clone(),
            presences: self
                .presence
                .list_by(|key, p| {
                    let metas = p
                        .metas
                        .iter()
                        .map(|m| Json::Object(m.as_map().clone()))
                        .collect();
                    (key.to_owned(), metas)
                })
                .into_iter()
                .collect(),
            pending_diffs: s.pending_diffs,
            connects: s.connects,
            joins: s.joins,
        }
    }

    /// The presences as the client holds them.
    pub(crate) fn presence(&self) -> &PresenceInstance {
        &self.presence
    }

    fn emit(&mut self, event: impl FnOnce() -> ClientEvent) {
        if self.observed {
            self.events.push(event());
        }
    }

    fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    fn set_state(&mut self, state: ChannelState) {
        self.state = state;
        self.status.channel = state;
        self.status.join_ref.clone_from(&self.join_ref);
        let join_ref = self.join_ref.clone();
        self.emit(|| ClientEvent::Channel { state, join_ref });
    }

    /// A connect attempt starts (1 for the first after a success).
    pub(crate) fn connecting(&mut self, attempt: u32) {
        self.emit(|| ClientEvent::Connecting { attempt });
    }

    /// A connect attempt failed.
    pub(crate) fn connect_failed(&mut self, reason: String) {
        self.emit(|| ClientEvent::ConnectFailed { reason });
    }

    /// A command while no connection is open.
    pub(crate) fn offline_command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect => self.want_connected = true,
            Command::Disconnect | Command::DropConnection => self.want_connected = false,
            Command::Join => self.start_join_intent(),
            // phoenix.js: a leave that cannot be pushed closes the channel at once.
            Command::Leave => {
                if self.state != ChannelState::Closed {
                    self.set_state(ChannelState::Closed);
                }
                self.buffered.clear();
            }
            Command::Push { event, payload } => self.buffer_push(event, *payload),
        }
    }

    /// A connection ended for good (no reconnect until [`Command::Connect`]).
    pub(crate) fn stop_connecting(&mut self) {
        self.want_connected = false;
    }

    fn start_join_intent(&mut self) {
        if self.state == ChannelState::Closed {
            // A new channel: a new Presence, as phoenix.js apps create one per channel.
            self.presence = PresenceInstance::new();
            self.status.pending_diffs = 0;
            self.status.presence_changes += 1;
            self.rejoin_tries = 0;
            self.set_state(ChannelState::Joining);
        }
    }

    fn buffer_push(&mut self, event: String, payload: Json) {
        if self.state == ChannelState::Closed || self.state == ChannelState::Leaving {
            // phoenix.js throws for a push on a channel never joined; here it is reported.
            self.emit(|| ClientEvent::Timeout { event });
        } else {
            self.buffered.push((event, payload));
        }
    }

    /// The WebSocket is open.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.status.connected = true;
        self.status.connects += 1;
        self.emit(|| ClientEvent::Connected);
        self.heartbeat_ref = None;
        self.heartbeat_at = now + self.cfg.heartbeat_interval;
        // On open, an errored or joining channel (re)joins at once, without backoff.
        if matches!(self.state, ChannelState::Joining | ChannelState::Errored) {
            self.rejoin_at = Some(now);
        }
    }

    /// After a connection ends: phoenix.js errors every channel that is not already errored,
    /// leaving or closed, and forgets what it was waiting for.
    pub(crate) fn disconnected(&mut self, end: &SessionEnd) {
        self.status.connected = false;
        let reason = end.reason.clone();
        let reconnect = end.reconnect;
        tracing::debug!(topic = %self.cfg.topic, reason = %reason, reconnect, "client disconnected");
        self.emit(|| ClientEvent::Disconnected { reason, reconnect });
        self.heartbeat_ref = None;
        self.awaiting.clear();
        self.join_deadline = None;
        self.rejoin_at = None;
        // what was queued for the closed connection is not sent on the next one
        self.out.clear();
        match self.state {
            ChannelState::Joined | ChannelState::Joining => self.set_state(ChannelState::Errored),
            ChannelState::Leaving => {
                self.leave_ref = None;
                self.leave_deadline = None;
                self.set_state(ChannelState::Closed);
            }
            ChannelState::Errored | ChannelState::Closed => {}
        }
    }

    /// The earliest instant at which [`Machine::timers`] has something to do.
    pub(crate) fn next_deadline(&self) -> Instant {
        let mut due = self.heartbeat_at;
        for d in [self.join_deadline, self.rejoin_at, self.leave_deadline]
            .into_iter()
            .flatten()
        {
            due = due.min(d);
        }
        for (_, d) in self.awaiting.values() {
            due = due.min(*d);
        }
        due
    }

    /// Fires every timer due at `now`.
    pub(crate) fn timers(&mut self, now: Instant) -> Result<(), SessionEnd> {
        if self.heartbeat_at <= now {
            if self.heartbeat_ref.is_some() {
                // No reply within an interval: phoenix.js closes (1000) and reconnects.
                return Err(SessionEnd::new(HEARTBEAT_TIMEOUT, true, CloseWith::Normal));
            }
            let r = self.make_ref();
            self.out.push_back(Message::new(
                None,
                Some(r.clone()),
                PHOENIX_TOPIC,
                HEARTBEAT,
                Json::Object(Map::new()),
            ));
            self.heartbeat_ref = Some(r);
            self.heartbeat_at = now + self.cfg.heartbeat_interval;
        }
        if self.join_deadline.is_some_and(|d| d <= now) {
            // Join timeout: leave that join_ref, error, rejoin with backoff.
            self.join_deadline = None;
            self.emit(|| ClientEvent::Timeout {
                event: PHX_JOIN.into(),
            });
            let r = self.make_ref();
            self.push_leave(r);
            self.errored(now);
        }
        if self.rejoin_at.is_some_and(|d| d <= now) {
            self.rejoin_at = None;
            if matches!(self.state, ChannelState::Joining | ChannelState::Errored) {
                self.send_join(now);
            }
        }
        if self.leave_deadline.is_some_and(|d| d <= now) {
            self.leave_deadline = None;
            self.leave_ref = None;
            self.emit(|| ClientEvent::Timeout {
                event: PHX_LEAVE.into(),
            });
            self.set_state(ChannelState::Closed);
        }
        let late: Vec<String> = self
            .awaiting
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in late {
            if let Some((event, _)) = self.awaiting.remove(&r) {
                self.emit(|| ClientEvent::Timeout { event });
            }
        }
        Ok(())
    }

    /// The channel errored: rejoin after the backoff.
    fn errored(&mut self, now: Instant) {
        self.rejoin_tries += 1;
        self.rejoin_at = Some(now + self.cfg.rejoin_after.delay(self.rejoin_tries));
        self.set_state(ChannelState::Errored);
    }

    fn send_join(&mut self, now: Instant) {
        let r = self.make_ref();
        self.join_ref = Some(r.clone());
        self.join_deadline = Some(now + self.cfg.timeout);
        self.out.push_back(Message::new(
            Some(r.clone()),
            Some(r),
            &*self.cfg.topic,
            PHX_JOIN,
            Json::clone(&self.cfg.join_payload),
        ));
        self.set_state(ChannelState::Joining);
    }

    fn send_push(&mut self, now: Instant, event: String, payload: Json) {
        let r = self.make_ref();
        self.awaiting
            .insert(r.clone(), (event.clone(), now + self.cfg.timeout));
        self.out.push_back(Message::new(
            self.join_ref.clone(),
            Some(r),
            &*self.cfg.topic,
            event,
            payload,
        ));
    }

    /// A command while a connection is open.
    pub(crate) fn online_command(&mut self, now: Instant, cmd: Command) -> Result<(), SessionEnd> {
        match cmd {
            Command::Connect => {}
            Command::Disconnect => {
                return Err(SessionEnd::new("disconnect", false, CloseWith::Normal));
            }
            Command::DropConnection => {
                return Err(SessionEnd::lost(DROPPED));
            }
            Command::Join => {
                if self.state == ChannelState::Closed {
                    self.start_join_intent();
                    self.send_join(now);
                }
            }
            Command::Leave => match self.state {
                ChannelState::Joined | ChannelState::Joining => {
                    let r = self.make_ref();
                    self.leave_ref = Some(r.clone());
                    self.leave_deadline = Some(now + self.cfg.timeout);
                    self.join_deadline = None;
                    self.rejoin_at = None;
                    self.buffered.clear();
                    self.push_leave(r);
                    self.set_state(ChannelState::Leaving);
                }
                ChannelState::Errored => {
                    self.rejoin_at = None;
                    self.buffered.clear();
                    self.set_state(ChannelState::Closed);
                }
                ChannelState::Closed | ChannelState::Leaving => {}
            },
            Command::Push { event, payload } => {
                if self.state == ChannelState::Joined {
                    self.send_push(now, event, *payload);
                } else {
                    self.buffer_push(event, *payload);
                }
            }
        }
        Ok(())
    }

    /// A text or binary frame from the server.
    #[cfg(test)]
    pub(crate) fn receive(&mut self, now: Instant, frame: Frame) {
        if let Frame::Text(text) = &frame
            && self.receive_cached(now, text)
        {
            return;
        }
        self.receive_uncached(now, frame);
    }

    /// A text frame from the server, borrowed: a diff that a client of the cache decoded
    /// before is applied without a copy of the frame (the common case in a simulation,
    /// where each of a topic's browsers receives each diff); any other frame is copied.
    pub(crate) fn receive_text(&mut self, now: Instant, text: &str) {
        if !self.receive_cached(now, text) {
            self.receive_uncached(now, Frame::Text(text.to_owned()));
        }
    }

    /// An observer of presence messages or frames gets every payload as received, so only
    /// a client without one uses (and fills) the shared cache of decoded diffs.
    fn cache(&self) -> Option<&FrameCache> {
        if self.presence_observed || self.frames_observed {
            None
        } else {
            self.hot.frame_cache.as_ref()
        }
    }

    /// Handles a text frame that the cache holds decoded; false (nothing done) if it does not.
    fn receive_cached(&mut self, now: Instant, text: &str) -> bool {
        let Some(hit) = self
            .cache()
            .filter(|_| text.len() <= self.codec.max_frame_len())
            .and_then(|cache| cache.get(self.codec.serializer(), text.as_bytes()))
        else {
            return false;
        };
        if self.accepts(now, hit.ref_.as_ref(), &hit.topic, hit.join_ref.as_deref()) {
            self.shared_diff(&hit.diff);
        }
        true
    }

    /// The broadcast `presence_diff`s of `texts` (in order) as [`Machine::receive_text`]
    /// handles them, if every one is such a diff (no ref, so none can answer a heartbeat
    /// and the time of arrival matters to none) and the client shares its cache's decoded
    /// diffs; else false, with nothing done. What [`crate::client::Absorber`] hands over.
    /// A text is checked as UTF-8 only if the cache does not hold it (a cached frame's text
    /// is text).
    pub(crate) fn receive_broadcast_diffs<'a>(
        &mut self,
        mut texts: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> bool {
        let Some(cache) = self.cache().cloned() else {
            return false;
        };
        let mut rest = texts.clone();
        if let (Some(text), None) = (rest.next(), rest.next()) {
            // one frame (the usual segment): looked at and handled in one go
            return match self.broadcast_diff(&cache, text) {
                Some(diff) => {
                    self.take_broadcast_diff(&cache, diff);
                    true
                }
                None => false,
            };
        }
        // all or nothing: every frame is looked at before any is handled
        if !texts
            .clone()
            .all(|t| self.broadcast_diff(&cache, t).is_some())
        {
            return false;
        }
        texts.all(|text| {
            // (an earlier frame of these may have put this one in the cache)
            if let Some(diff) = self.broadcast_diff(&cache, text) {
                self.take_broadcast_diff(&cache, diff);
            }
            true
        })
    }

    /// `text` if it is a broadcast `presence_diff` (no ref): decoded by the cache, or now.
    fn broadcast_diff<'a>(&self, cache: &FrameCache, text: &'a [u8]) -> Option<BroadcastDiff<'a>> {
        if text.len() > self.codec.max_frame_len() {
            return None;
        }
        match cache.get(self.codec.serializer(), text) {
            Some(hit) => hit.ref_.is_none().then_some(BroadcastDiff::Cached(hit)),
            None => {
                let text = std::str::from_utf8(text).ok()?;
                match self.codec.decode_text(text) {
                    Ok(msg) if msg.ref_.is_none() && msg.event == PRESENCE_DIFF => {
                        Some(BroadcastDiff::Fresh(text, msg))
                    }
                    _ => None,
                }
            }
        }
    }

    /// Handles a broadcast diff as [`Machine::receive_text`] does.
    fn take_broadcast_diff(&mut self, cache: &FrameCache, diff: BroadcastDiff<'_>) {
        match diff {
            BroadcastDiff::Cached(hit) => {
                if self.accepts_message(&hit.topic, hit.join_ref.as_deref()) {
                    self.shared_diff(&hit.diff);
                }
            }
            BroadcastDiff::Fresh(text, msg) => {
                if self.accepts_message(&msg.topic, msg.join_ref.as_deref()) {
                    self.first_shared_diff(cache, text, msg);
                }
            }
        }
    }

    /// A frame that is not in the cache.
    pub(crate) fn receive_uncached(&mut self, now: Instant, frame: Frame) {
        let cache = self.cache().cloned();
        if let Some(cache) = &cache
            && let Some(raw) = self.codec.split(&frame)
            && raw.event == PRESENCE_STATE
            && let Some(state) = cache.decode_state(raw.payload)
        {
            // what the ordinary way below does with a state, its presences decoded once for
            // every client of the cache, and the list shared with those that hold the same
            if self.accepts(now, raw.ref_.as_ref(), &raw.topic, raw.join_ref.as_deref()) {
                let (presence, join_ref) = (&mut self.presence, self.join_ref.as_deref());
                cache.lists(|lists| presence.handle_interned_state(join_ref, state, lists));
                self.presence_handled(PresenceOutcome::Applied);
            }
            return;
        }
        // decoding emits nothing, so the frame can be decoded first and then handed over
        let decoded = self.codec.decode(&frame);
        let frame = if self.frames_observed {
            self.events.push(ClientEvent::Received(frame));
            None
        } else {
            Some(frame)
        };
        let msg = match decoded {
            Ok(msg) => msg,
            Err(e) => {
                self.emit(|| ClientEvent::Undecodable {
                    error: e.to_string(),
                });
                return;
            }
        };
        if !self.accepts(now, msg.ref_.as_ref(), &msg.topic, msg.join_ref.as_deref()) {
            return;
        }
        match msg.event.as_str() {
            PHX_REPLY => self.reply(now, msg),
            PHX_ERROR => {
                if matches!(self.state, ChannelState::Joined | ChannelState::Joining) {
                    self.join_deadline = None;
                    self.errored(now);
                }
            }
            PHX_CLOSE => {
                self.join_deadline = None;
                self.rejoin_at = None;
                self.leave_deadline = None;
                self.set_state(ChannelState::Closed);
            }
            PRESENCE_DIFF => match (cache, frame) {
                (Some(cache), Some(Frame::Text(text))) => {
                    self.first_shared_diff(&cache, &text, msg)
                }
                _ => self.presence_message(msg),
            },
            PRESENCE_STATE => self.presence_message(msg),
            _ => {}
        }
    }

    /// Whether a message is for this channel (phoenix.js's socket and `isMember`); a reply to
    /// the pending heartbeat re-arms it first, whatever its topic.
    fn accepts(
        &mut self,
        now: Instant,
        ref_: Option<&String>,
        topic: &str,
        join_ref: Option<&str>,
    ) -> bool {
        if ref_.is_some() && ref_ == self.heartbeat_ref.as_ref() {
            self.heartbeat_ref = None;
            self.heartbeat_at = now + self.cfg.heartbeat_interval;
        }
        self.accepts_message(topic, join_ref)
    }

    /// Whether a message of `topic` with `join_ref` is this channel's current one (the part
    /// of [`Machine::accepts`] that does not look at the ref).
    fn accepts_message(&self, topic: &str, join_ref: Option<&str>) -> bool {
        if topic != &*self.hot.topic || self.state == ChannelState::Closed {
            return false;
        }
        // phoenix.js `isMember`: a message of another incarnation is dropped.
        if let Some(jr) = join_ref
            && !jr.is_empty()
            && Some(jr) != self.join_ref.as_deref()
        {
            return false;
        }
        true
    }

    /// Queues a `phx_leave` of the current join with ref `r` (after a join timeout, and when
    /// the user leaves).
    fn push_leave(&mut self, r: String) {
        self.out.push_back(Message::new(
            self.join_ref.clone(),
            Some(r),
            &*self.cfg.topic,
            PHX_LEAVE,
            Json::Object(Map::new()),
        ));
    }

    /// A diff frame no client of the cache has decoded yet: decoded once, kept, then handled
    /// as [`Machine::shared_diff`] handles the copies.
    fn first_shared_diff(&mut self, cache: &FrameCache, text: &str, msg: Message) {
        let Message {
            join_ref,
            ref_,
            topic,
            payload,
            ..
        } = msg;
        let Payload::Json(payload) = payload else {
            return;
        };
        match PresenceDiff::from_payload(payload) {
            Ok(diff) => {
                let cached = Arc::new(CachedDiff {
                    join_ref,
                    ref_,
                    topic,
                    diff: Arc::new(cache.shared_diff(diff)),
                });
                cache.insert(self.codec.serializer(), text, cached.clone());
                self.shared_diff(&cached.diff);
            }
            Err(e) => self.presence_handled(PresenceOutcome::Invalid(e.to_string())),
        }
    }

    /// A decoded `presence_diff` of this channel, for a client nobody observes: what
    /// [`Machine::presence_message`] does with the diff, without a payload to report, on the
    /// list the client shares with the clients of its cache that hold the same presences.
    fn shared_diff(&mut self, diff: &Arc<SharedDiff>) {
        let forget = self.hot.forget_pending_diffs
            && self
                .presence
                .in_pending_sync_state(self.join_ref.as_deref());
        let outcome = if forget {
            PresenceOutcome::Dropped
        } else {
            let (presence, join_ref) = (&mut self.presence, self.join_ref.as_deref());
            let applied = match &self.hot.frame_cache {
                Some(cache) => cache.lists(|l| presence.handle_interned_diff(join_ref, diff, l)),
                // (a shared diff comes from a cache: there is one)
                None => presence.handle_shared_diff(join_ref, diff, &mut ()),
            };
            if applied {
                PresenceOutcome::Applied
            } else {
                PresenceOutcome::Buffered
            }
        };
        self.presence_handled(outcome);
    }

    /// After a presence message: the status moves with the list.
    fn presence_handled(&mut self, outcome: PresenceOutcome) {
        if outcome != PresenceOutcome::Dropped {
            self.status.presence_changes += 1;
        }
        self.status.pending_diffs = self.presence.pending_diffs().len();
    }

    fn reply(&mut self, now: Instant, msg: Message) {
        let (status, response) = match msg.payload {
            Payload::Json(Json::Object(mut m)) => (
                m.get("status")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                m.remove("response").unwrap_or(Json::Null),
            ),
            Payload::BinaryReply { status, response } => (
                status,
                Json::Array(response.into_iter().map(Json::from).collect()),
            ),
            _ => (String::new(), Json::Null),
        };
        let r = msg.ref_;
        if r.is_some() && r == self.join_ref && self.state == ChannelState::Joining {
            self.join_deadline = None;
            if status == "ok" {
                self.rejoin_tries = 0;
                self.status.joins += 1;
                self.set_state(ChannelState::Joined);
                for (event, payload) in std::mem::take(&mut self.buffered) {
                    self.send_push(now, event, payload);
                }
            } else {
                self.errored(now);
            }
        } else if r.is_some() && r == self.leave_ref {
            self.leave_ref = None;
            self.leave_deadline = None;
            self.set_state(ChannelState::Closed);
        } else if let Some((event, _)) = r.and_then(|r| self.awaiting.remove(&r)) {
            self.emit(|| ClientEvent::Reply {
                event,
                status,
                response,
            });
        }
    }

    fn presence_message(&mut self, msg: Message) {
        let Payload::Json(payload) = msg.payload else {
            return;
        };
        let join_ref = self.join_ref.clone();
        let forget = self.cfg.mutation == Some(ClientMutation::ForgetPendingDiffs)
            && msg.event == PRESENCE_DIFF
            && self.presence.in_pending_sync_state(join_ref.as_deref());
        // the payload is copied only for an observer: the sync consumes its own
        let kept = self.presence_observed.then(|| payload.clone());
        let outcome = if forget {
            match PresenceDiff::from_payload(payload) {
                Ok(_) => PresenceOutcome::Dropped,
                Err(e) => PresenceOutcome::Invalid(e.to_string()),
            }
        } else if let (Some(cache), PRESENCE_STATE) = (&self.hot.frame_cache, msg.event.as_str()) {
            // what `handle_message` does with a state, with the metas shared in between
            match PresenceState::from_payload(payload) {
                Ok(mut state) => {
                    cache.share_metas(&mut state.presences);
                    self.presence
                        .handle_state(join_ref.as_deref(), state, &mut ());
                    PresenceOutcome::Applied
                }
                Err(e) => PresenceOutcome::Invalid(e.to_string()),
            }
        } else {
            match self
                .presence
                .handle_message(join_ref.as_deref(), &msg.event, payload, &mut ())
            {
                Ok(Handled::Buffered) => PresenceOutcome::Buffered,
                Ok(_) => PresenceOutcome::Applied,
                Err(e) => PresenceOutcome::Invalid(e.to_string()),
            }
        };
        let reported = kept.map(|payload| (payload, outcome.clone()));
        self.presence_handled(outcome);
        if let Some((payload, outcome)) = reported {
            self.events.push(ClientEvent::Presence {
                event: msg.event,
                join_ref,
                payload,
                outcome,
            });
        }
    }

    /// The next frame to write, encoded; an unencodable message is reported and skipped.
    /// The queue's memory goes once it is empty: a client sends a few messages (a join, a
    /// heartbeat every 30 s) and would otherwise keep room for four of them, about 0.7 KB,
    /// for its whole life; a simulation holds one client per browser.
    pub(crate) fn poll_transmit(&mut self) -> Option<Frame> {
        if self.out.is_empty() {
            self.out = VecDeque::new();
            return None;
        }
        while let Some(msg) = self.out.pop_front() {
            match self.codec.encode(&msg) {
                Ok(frame) => {
                    if self.frames_observed {
                        self.events.push(ClientEvent::Sent(frame.clone()));
                    }
                    return Some(frame);
                }
                Err(e) => self.emit(|| ClientEvent::Undecodable {
                    error: format!("cannot encode {}: {e}", msg.event),
                }),
            }
        }
        None
    }

    /// Whether frames are waiting to be written.
    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    //! The machine alone: no stream, no runtime, time chosen by the test.
    use super::*;
    use std::time::Duration;

    fn machine(now: Instant) -> Machine {
        let cfg = ClientConfig::new("ws://server/socket/websocket", "me", "room:t");
        Machine::new(cfg, now)
    }

    fn sent(m: &mut Machine) -> Vec<String> {
        std::iter::from_fn(|| m.poll_transmit())
            .map(|f| match f {
                Frame::Text(t) => t,
                Frame::Binary(b) => format!("{b:?}"),
            })
            .collect()
    }

    #[test]
    fn joins_on_open_then_heartbeats_and_a_missing_reply_ends_the_session() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        m.connected(t0);
        assert_eq!(m.next_deadline(), t0, "the join is due at once");
        m.timers(t0).unwrap();
        assert_eq!(sent(&mut m), [r#"["1","1","room:t","phx_join",{}]"#]);
        m.receive(
            t0,
            Frame::Text(r#"["1","1","room:t","phx_reply",{"response":{},"status":"ok"}]"#.into()),
        );
        assert!(m.status().joined());
        assert_eq!(m.status().joins, 1);
        let beat = t0 + Duration::from_secs(30);
        assert_eq!(m.next_deadline(), beat);
        m.timers(beat).unwrap();
        assert_eq!(sent(&mut m), [r#"[null,"2","phoenix","heartbeat",{}]"#]);
        let end = m.timers(beat + Duration::from_secs(30)).unwrap_err();
        assert_eq!(end.reason, HEARTBEAT_TIMEOUT);
        m.disconnected(&end);
        assert_eq!(m.status().channel, ChannelState::Errored);
    }

    /// What an absorber hands over is taken only if it is broadcast diffs, all of them, and
    /// then as `receive_text` takes them.
    #[test]
    fn broadcast_diffs_are_taken_as_received_and_nothing_else_is() {
        let t0 = Instant::now();
        let cache = FrameCache::new();
        let joined = |cache: &FrameCache| {
            let mut cfg = ClientConfig::new("ws://server/socket/websocket", "me", "room:t");
            cfg.frame_cache = Some(cache.clone());
            let mut m = Machine::new(cfg, t0);
            m.connected(t0);
            m.timers(t0).unwrap();
            sent(&mut m);
            m.receive_text(
                t0,
                r#"["1","1","room:t","phx_reply",{"response":{},"status":"ok"}]"#,
            );
            m.receive_text(
                t0,
                r#"["1",null,"room:t","presence_state",{"me":{"metas":[{"phx_ref":"r1"}]}}]"#,
            );
            m
        };
        let (mut taking, mut reading) = (joined(&cache), joined(&FrameCache::new()));
        let diff = |key: &str| {
            format!(
                r#"[null,null,"room:t","presence_diff",{{"joins":{{"{key}":{{"metas":[{{"phx_ref":"r{key}"}}]}}}},"leaves":{{}}}}]"#
            )
        };
        let other_topic = r#"[null,null,"room:u","presence_diff",{"joins":{"z":{"metas":[{"phx_ref":"rz"}]}},"leaves":{}}]"#;
        let reply = r#"[null,"5","room:t","phx_reply",{"response":{},"status":"ok"}]"#;
        let with_ref = r#"[null,"6","room:t","presence_diff",{"joins":{},"leaves":{}}]"#;
        let (x, y, w) = (diff("x"), diff("y"), diff("w"));
        let not_text = [b"[null,null,".as_slice(), &[0xff], b"]"].concat();
        // taken: a diff (decoded now, then from the cache), another topic's (dropped, as
        // received), two diffs in one segment
        for texts in [
            vec![x.as_str()],
            vec![x.as_str()],
            vec![other_topic],
            vec![y.as_str(), w.as_str()],
        ] {
            let bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
            assert!(
                taking.receive_broadcast_diffs(bytes.iter().copied()),
                "{texts:?}"
            );
            for t in texts {
                reading.receive_text(t0, t);
            }
            assert_eq!(taking.view(), reading.view());
        }
        // refused, with nothing done: a reply, a diff with a ref, text that is not UTF-8, a
        // segment whose second frame is a reply
        let before = taking.view();
        for texts in [
            vec![reply.as_bytes()],
            vec![with_ref.as_bytes()],
            vec![not_text.as_slice()],
            vec![diff("v").as_bytes(), reply.as_bytes()],
        ] {
            assert!(!taking.receive_broadcast_diffs(texts.iter().copied()));
            assert_eq!(taking.view(), before);
        }
        assert_eq!(
            before.presences.keys().collect::<Vec<_>>(),
            ["me", "w", "x", "y"]
        );
        // an observed client takes nothing
        let mut observed = joined(&cache);
        observed.observe(Wants {
            frames: false,
            presence: true,
        });
        assert!(!observed.receive_broadcast_diffs([x.as_bytes()].into_iter()));
    }

    #[test]
    fn the_send_queue_holds_no_memory_once_written() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        m.connected(t0);
        m.timers(t0).unwrap();
        assert!(m.out.capacity() > 0);
        assert_eq!(sent(&mut m).len(), 1);
        assert_eq!(m.out.capacity(), 0, "the drained queue let go of its room");
        m.online_command(t0, Command::Leave).unwrap();
        assert_eq!(
            sent(&mut m),
            [r#"["1","2","room:t","phx_leave",{}]"#],
            "a queue used again works as before"
        );
        assert_eq!(m.out.capacity(), 0);
    }

    #[test]
    fn an_unanswered_join_is_left_and_retried_after_the_rejoin_backoff() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        m.observe(Wants::default());
        m.connected(t0);
        m.timers(t0).unwrap();
        sent(&mut m);
        let late = t0 + Duration::from_secs(10);
        assert_eq!(m.next_deadline(), late);
        m.timers(late).unwrap();
        assert_eq!(sent(&mut m), [r#"["1","2","room:t","phx_leave",{}]"#]);
        assert_eq!(m.status().channel, ChannelState::Errored);
        assert!(m.take_events().contains(&ClientEvent::Timeout {
            event: PHX_JOIN.into()
        }));
        let retry = late + Duration::from_secs(1);
        assert_eq!(m.next_deadline(), retry);
        m.timers(retry).unwrap();
        assert_eq!(sent(&mut m), [r#"["3","3","room:t","phx_join",{}]"#]);
    }
}
