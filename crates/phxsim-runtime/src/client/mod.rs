//! A Channels client over WebSocket that behaves like phoenix.js for one channel: connect with
//! params, join, heartbeat, push/join timeouts, reconnect with backoff and rejoin (a new
//! join_ref each time), leave; presences kept by `phxsim_wire`'s phoenix.js-exact
//! [`PresenceInstance`](phxsim_wire::PresenceInstance), which buffers diffs until the state.
//!
//! - The socket and channel logic is a sans-IO state machine (`machine`) with time passed in;
//!   the tokio task (`task`) is the glue that reads the clock, the stream and the commands.
//! - Streams come from a caller-supplied factory, so the client runs on tokio TCP, on turmoil
//!   TCP in the simulator, or on an in-memory duplex.
//! - Time only from `tokio::time`; the WebSocket key comes from the configured seed.
//! - For checkers: [`Client::status`] and [`Client::watch`] (connected, joined, join_ref,
//!   counters), [`Client::view`] (the status and the presence list, built from the client's one
//!   list on demand) and [`Client::subscribe`] (every frame sent and received, every presence
//!   message with what was done with it, every channel state change), all current as each
//!   message is handled.
//! - [`ClientMutation`]s plant known client bugs.

mod absorb;
mod frame_cache;
mod lean_ws;
mod machine;
mod task;
mod upgrade;

pub use absorb::{Absorbed, Absorber};
pub use frame_cache::FrameCache;

use futures_util::task::AtomicWaker;
use phxsim_wire::{DEFAULT_MAX_FRAME_LEN, Frame, PresenceInstance, Serializer};
use serde_json::{Map, Value as Json};
use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use machine::Machine;

/// A planted client bug. Default: none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientMutation {
    /// Diffs that arrive before the state (of the current join) are dropped instead of
    /// buffered, so changes that overtook the state are lost.
    ForgetPendingDiffs,
}

impl ClientMutation {
    /// Every mutation.
    pub const ALL: [ClientMutation; 1] = [ClientMutation::ForgetPendingDiffs];

    /// The kebab-case name used on command lines and in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            ClientMutation::ForgetPendingDiffs => "forget-pending-diffs",
        }
    }
}

impl fmt::Display for ClientMutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// phoenix.js `reconnectAfterMs`, in milliseconds.
const RECONNECT_MS: [u64; 10] = [10, 50, 100, 150, 200, 250, 500, 1000, 2000, 5000];
/// phoenix.js `rejoinAfterMs`, in milliseconds.
const REJOIN_MS: [u64; 4] = [1000, 2000, 5000, 10_000];

/// A retry schedule: the delay before try `n` (1-based) is entry `n - 1`, and the last entry
/// repeats forever. phoenix.js has no jitter, and neither does this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff(pub Vec<Duration>);

impl Backoff {
    /// phoenix.js `reconnectAfterMs`: 10, 50, 100, 150, 200, 250, 500, 1000, 2000, then 5000 ms.
    pub fn reconnect() -> Backoff {
        Backoff::millis(&RECONNECT_MS)
    }

    /// phoenix.js `rejoinAfterMs`: 1000, 2000, 5000, then 10 000 ms.
    pub fn rejoin() -> Backoff {
        Backoff::millis(&REJOIN_MS)
    }

    /// [`Backoff::reconnect`], one copy for the whole process: what [`ClientConfig::new`]
    /// gives every client (a simulation holds one client per browser, and each had its own
    /// 160-byte schedule).
    pub fn shared_reconnect() -> Arc<Backoff> {
        static RECONNECT: LazyLock<Arc<Backoff>> = LazyLock::new(|| Arc::new(Backoff::reconnect()));
        Arc::clone(&RECONNECT)
    }

    /// [`Backoff::rejoin`], one copy for the whole process (see [`Backoff::shared_reconnect`]).
    pub fn shared_rejoin() -> Arc<Backoff> {
        static REJOIN: LazyLock<Arc<Backoff>> = LazyLock::new(|| Arc::new(Backoff::rejoin()));
        Arc::clone(&REJOIN)
    }

    /// A schedule from milliseconds.
    pub fn millis(ms: &[u64]) -> Backoff {
        Backoff(ms.iter().map(|m| Duration::from_millis(*m)).collect())
    }

    /// The delay before try `tries` (1 for the first retry).
    pub fn delay(&self, tries: u32) -> Duration {
        let i = usize::try_from(tries.max(1) - 1).unwrap_or(usize::MAX);
        self.0
            .get(i)
            .or(self.0.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }
}

/// How a client connects and behaves.
///
/// A simulation runs one client per browser, up to 160 000 of them, and most of a browser's
/// configuration is the same for every browser of its population: the URL, the topic, the
/// join payload and the retry schedules are shared (`Arc`), so that browsers that share them
/// hold one copy between them (give them clones of one `Arc`; [`ClientConfig::new`] shares
/// the default schedules by itself).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The socket URL without query, e.g. `ws://127.0.0.1:4000/socket/websocket`.
    pub url: Arc<str>,
    /// Connect params (e.g. `user_id`), sent in the query after `vsn`. A name is most often
    /// a constant (`"user_id".into()` borrows it): a simulation holds one client per browser.
    pub params: Vec<(Cow<'static, str>, String)>,
    /// V2 (phoenix.js's default) or V1 (`vsn=1.0.0`).
    pub serializer: Serializer,
    /// The one channel this client joins.
    pub topic: Arc<str>,
    /// The join payload, e.g. `{"meta": {"name": "Alice"}}` ([`ClientConfig::meta_payload`]);
    /// each join sends a copy.
    pub join_payload: Arc<Json>,
    /// phoenix.js `heartbeatIntervalMs`: a heartbeat this long after the last reply, and a
    /// missing reply after as long again closes the connection and reconnects.
    pub heartbeat_interval: Duration,
    /// phoenix.js `timeout`: join, push and leave timeouts; also bounds connect + upgrade.
    pub timeout: Duration,
    /// Delays between reconnect attempts.
    pub reconnect_after: Arc<Backoff>,
    /// Delays between rejoin attempts after a refused or timed-out join or a `phx_error`.
    pub rejoin_after: Arc<Backoff>,
    /// The largest frame accepted from the server.
    pub max_frame_len: usize,
    /// How much is read from the stream at once (tungstenite zeroes this much before every
    /// read): 8 KiB by default; a simulated browser, whose reads copy from memory, takes less.
    /// An idle connection holds a read buffer of this size (tungstenite's: at least 1 KiB, or
    /// the largest frame it read; the lean WebSocket's: this size again after a larger frame).
    pub read_buffer_size: usize,
    /// Read and write the open connection with phxsim's lean WebSocket (`client/lean_ws.rs`)
    /// instead of tungstenite's: frames parsed in place in a buffer it owns and lets go after
    /// a frame longer than `read_buffer_size`, a text message handed over borrowed, no waker
    /// plumbing. For simulated browsers, held by the thousand (the simulator sets it); real
    /// clients keep tungstenite (off by default). Both keep the client's side of RFC 6455.
    pub lean_websocket: bool,
    /// Seeds the WebSocket keys, so a simulated run's bytes come from its seed.
    pub seed: u64,
    /// Connect as soon as started (else wait for [`Client::connect`]).
    pub auto_connect: bool,
    /// Join as soon as connected (else wait for [`Client::join`]).
    pub auto_join: bool,
    /// A planted bug; `None` normally.
    pub mutation: Option<ClientMutation>,
    /// Decoded `presence_diff` frames shared with the other clients holding this cache (one
    /// per simulated browsers' host): a broadcast is decoded once instead of once per client.
    /// Unobserved clients only; `None` decodes every frame itself.
    pub frame_cache: Option<FrameCache>,
}

impl ClientConfig {
    /// phoenix.js defaults for `url`, joining `topic` as `user_id`.
    /// `url` and `topic` may be shared (`Arc<str>`), or anything that becomes a string.
    pub fn new(
        url: impl Into<Arc<str>>,
        user_id: impl Into<String>,
        topic: impl Into<Arc<str>>,
    ) -> Self {
        ClientConfig {
            url: url.into(),
            params: vec![("user_id".into(), user_id.into())],
            serializer: Serializer::V2,
            topic: topic.into(),
            join_payload: Arc::new(Json::Object(Map::new())),
            heartbeat_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            reconnect_after: Backoff::shared_reconnect(),
            rejoin_after: Backoff::shared_rejoin(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            read_buffer_size: 8 * 1024,
            lean_websocket: false,
            seed: 0,
            auto_connect: true,
            auto_join: true,
            mutation: None,
            frame_cache: None,
        }
    }

    /// Joins with `{"meta": meta}`.
    pub fn with_meta(self, meta: Json) -> Self {
        self.with_join_payload(ClientConfig::meta_payload(meta))
    }

    /// Joins with `payload`, shared with whoever else holds it (clients of one population
    /// join with one payload).
    pub fn with_join_payload(mut self, payload: Arc<Json>) -> Self {
        self.join_payload = payload;
        self
    }

    /// The join payload `{"meta": meta}` ([`ClientConfig::with_meta`]), to share between
    /// clients ([`ClientConfig::with_join_payload`]).
    pub fn meta_payload(meta: Json) -> Arc<Json> {
        let mut payload = Map::new();
        payload.insert("meta".into(), meta);
        Arc::new(Json::Object(payload))
    }
}

/// phoenix.js channel states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChannelState {
    /// Not joined and not trying (initially, after a leave or a `phx_close`).
    #[default]
    Closed,
    /// A join was sent (or will be, once connected).
    Joining,
    /// The join was accepted.
    Joined,
    /// Lost (error, timeout, connection loss): a rejoin is scheduled or waits for a connection.
    Errored,
    /// A leave was sent.
    Leaving,
}

/// What a client reports besides its presence list: cheap to copy, and what
/// [`Client::watch`] publishes on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Whether a WebSocket is open.
    pub connected: bool,
    /// The channel's state.
    pub channel: ChannelState,
    /// The join_ref of the current (or last) join.
    pub join_ref: Option<String>,
    /// Diffs buffered while waiting for the state of the current join.
    pub pending_diffs: usize,
    /// Successful WebSocket upgrades so far.
    pub connects: u64,
    /// Joins accepted so far.
    pub joins: u64,
    /// Counts the presence messages handled (and fresh instances): it moves whenever the
    /// presence list may have changed.
    pub presence_changes: u64,
}

impl ClientStatus {
    /// Whether the channel is joined (`channel == Joined`).
    pub fn joined(&self) -> bool {
        self.channel == ChannelState::Joined
    }

    /// Whether every field but the presence counters (`pending_diffs`, `presence_changes`)
    /// is the same as `other`'s.
    fn same_lifecycle(&self, other: &ClientStatus) -> bool {
        let ClientStatus {
            connected,
            channel,
            join_ref,
            pending_diffs: _,
            connects,
            joins,
            presence_changes: _,
        } = self;
        *connected == other.connected
            && *channel == other.channel
            && *join_ref == other.join_ref
            && *connects == other.connects
            && *joins == other.joins
    }
}

/// What a checker reads of a client at one instant: its status and its presence list, the
/// list computed from the one the client keeps ([`Client::view`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientView {
    /// Whether a WebSocket is open.
    pub connected: bool,
    /// The channel's state.
    pub channel: ChannelState,
    /// The join_ref of the current (or last) join.
    pub join_ref: Option<String>,
    /// The presence list: key → metas, as phoenix.js's `Presence.list` holds them.
    pub presences: BTreeMap<String, Vec<Json>>,
    /// Diffs buffered while waiting for the state of the current join.
    pub pending_diffs: usize,
    /// Successful WebSocket upgrades so far.
    pub connects: u64,
    /// Joins accepted so far.
    pub joins: u64,
}

impl ClientView {
    /// Whether the channel is joined (`channel == Joined`).
    pub fn joined(&self) -> bool {
        self.channel == ChannelState::Joined
    }

    /// Every `phx_ref` listed, by key.
    pub fn refs(&self) -> BTreeMap<String, Vec<String>> {
        self.presences
            .iter()
            .map(|(k, metas)| {
                let refs = metas
                    .iter()
                    .filter_map(|m| m.get("phx_ref").and_then(Json::as_str).map(str::to_owned))
                    .collect();
                (k.clone(), refs)
            })
            .collect()
    }
}

/// A presence message's fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceOutcome {
    /// Applied to the state (a state with its buffered diffs, or a live diff).
    Applied,
    /// Buffered until the state of the current join arrives.
    Buffered,
    /// Dropped by [`ClientMutation::ForgetPendingDiffs`].
    Dropped,
    /// The payload was not a valid presence payload; nothing changed.
    Invalid(String),
}

/// One thing that happened to a client, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// A connect attempt starts (1 for the first after a success).
    Connecting { attempt: u32 },
    /// The WebSocket is open.
    Connected,
    /// A connect attempt failed; the next comes after the reconnect backoff.
    ConnectFailed { reason: String },
    /// The WebSocket is gone.
    Disconnected {
        /// Why (close code and reason, heartbeat timeout, I/O error...).
        reason: String,
        /// Whether the client will reconnect.
        reconnect: bool,
    },
    /// A frame written.
    Sent(Frame),
    /// A frame received.
    Received(Frame),
    /// A received frame that does not decode; it is ignored (phoenix.js logs and goes on).
    Undecodable { error: String },
    /// A `presence_state` or `presence_diff` of this channel, as it arrived, and its fate.
    Presence {
        /// `presence_state` or `presence_diff`.
        event: String,
        /// The channel join_ref when it arrived.
        join_ref: Option<String>,
        /// The payload as received.
        payload: Json,
        /// What was done with it.
        outcome: PresenceOutcome,
    },
    /// The channel changed state.
    Channel {
        /// The new state.
        state: ChannelState,
        /// The join_ref it concerns.
        join_ref: Option<String>,
    },
    /// A reply to a push of ours (not join, leave or heartbeat).
    Reply {
        /// The push's event.
        event: String,
        /// `ok`, `error`...
        status: String,
        /// The response (raw bytes of a binary reply are given as an array of numbers).
        response: Json,
    },
    /// A push (or join, or leave) got no reply within the timeout.
    Timeout { event: String },
}

/// An event with the time it happened (tokio's clock: simulated time under turmoil).
#[derive(Clone, Debug, PartialEq)]
pub struct Stamped {
    /// When.
    pub at: Instant,
    /// What.
    pub event: ClientEvent,
}

/// What the handle asks of the client task.
#[derive(Debug)]
pub(crate) enum Command {
    Connect,
    Disconnect,
    DropConnection,
    Join,
    Leave,
    /// The payload boxed: every client's command channel allocates room for 32 commands up
    /// front (96 B each with the payload inline, 40 B boxed).
    Push {
        event: String,
        payload: Box<Json>,
    },
}

/// The handle's commands to the task, in order, and the task's waker.
///
/// Why not an mpsc channel: the task looks for a command each time it waits for input,
/// that is after every frame it receives, and a channel is a cold structure of its own
/// (3 % of a 3 000-client simulation went into polling the empty channels). This queue
/// lives in [`Shared`], beside the machine the task has just used, and behaves as the
/// unbounded channel did: commands in order, none after the task ended, the end of the
/// commands (every handle dropped) seen once the queue is empty, and the task's budget of
/// tokio's cooperative scheduling spent on every command received.
#[derive(Default)]
pub(crate) struct Commands {
    queue: Mutex<CommandQueue>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct CommandQueue {
    commands: VecDeque<Command>,
    /// Every handle is gone.
    handles_gone: bool,
    /// The task is gone: nobody will read a command.
    task_gone: bool,
}

impl Commands {
    fn queue(&self) -> std::sync::MutexGuard<'_, CommandQueue> {
        // a queue is only changed by whole pushes and pops
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, cmd: Command) {
        {
            let mut q = self.queue();
            if q.task_gone {
                return;
            }
            q.commands.push_back(cmd);
        }
        self.waker.wake();
    }

    fn handles_dropped(&self) {
        self.queue().handles_gone = true;
        self.waker.wake();
    }

    /// The task ends: commands are dropped from now on.
    pub(crate) fn task_ended(&self) {
        let mut q = self.queue();
        q.task_gone = true;
        q.commands.clear();
    }

    /// The next command, `Some(None)` once every handle is gone and the queue is empty. The
    /// queue's memory goes with its last command: commands are rare (a join, a leave), and
    /// room for four (about 0.2 KB) kept by every simulated browser adds up.
    fn pop(&self) -> Option<Option<Command>> {
        let mut q = self.queue();
        match q.commands.pop_front() {
            Some(cmd) => {
                if q.commands.is_empty() {
                    q.commands = VecDeque::new();
                }
                Some(Some(cmd))
            }
            None => q.handles_gone.then_some(None),
        }
    }

    /// The next command; `None` once every handle is gone and the queue is empty.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        if let Some(next) = self.pop() {
            coop.made_progress();
            return Poll::Ready(next);
        }
        self.waker.register(cx.waker());
        // a command may have come between the look and the registration
        match self.pop() {
            Some(next) => {
                coop.made_progress();
                Poll::Ready(next)
            }
            None => Poll::Pending,
        }
    }

    /// [`Commands::poll_recv`] as a future.
    pub(crate) async fn recv(&self) -> Option<Command> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// What an observer wants besides the connection and channel events.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Wants {
    /// [`ClientEvent::Sent`] and [`ClientEvent::Received`].
    pub(crate) frames: bool,
    /// [`ClientEvent::Presence`].
    pub(crate) presence: bool,
}

/// What the handle and the task share: the state machine, the status watchers see, and the
/// event observers.
pub(crate) struct Shared {
    machine: Mutex<Machine>,
    /// The status as of the last step (the presence counters not moved by absorbed diffs);
    /// its receivers ([`Client::watch_lifecycle`]) are woken only when something but the
    /// presence counters moves. A simulated browser handles thousands
    /// of presence messages, and waking a watch for each (its version, its eight `Notify`s)
    /// cost about 5 % of a 3 000-client run where only the sampler watches, for `joined`.
    status: watch::Sender<ClientStatus>,
    /// The status for [`Client::watch`], woken on every change; made at the first call and
    /// kept current only while it has receivers (a simulated browser has none).
    every_change: std::sync::OnceLock<watch::Sender<ClientStatus>>,
    /// Every observer, and what it wants. Events travel boxed: tokio allocates each channel
    /// 32 slots up front, 5.2 KB of 160-byte events for every observed client (one per
    /// browser in a simulation), 0.3 KB of boxes.
    observers: Mutex<Vec<(mpsc::UnboundedSender<Box<Stamped>>, Wants)>>,
    /// The handle's commands.
    pub(crate) commands: Commands,
    /// The task waits for the stream's next bytes with none of an earlier frame in its
    /// buffer, owing the server nothing: bytes that arrive now could be handed to the
    /// machine by an [`Absorber`] as the task itself would, first thing at its next poll.
    pub(crate) read_idle: AtomicBool,
}

impl Shared {
    fn machine(&self) -> std::sync::MutexGuard<'_, Machine> {
        // the machine is only changed through whole steps, so a panic elsewhere leaves it usable
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one input of the machine, then hands its events to the observers (stamped `now`)
    /// and its status to the watchers.
    pub(crate) fn step<T>(&self, now: Instant, f: impl FnOnce(&mut Machine) -> T) -> T {
        let (out, events) = {
            let mut m = self.machine();
            let out = f(&mut m);
            self.publish(&m);
            (out, m.take_events())
        };
        for event in events {
            self.deliver(now, event);
        }
        out
    }

    /// Hands the machine's status to the watchers (after a step).
    fn publish(&self, m: &Machine) {
        let now = m.status();
        self.status.send_if_modified(|s| {
            if s.same_lifecycle(now) {
                // kept current without waking anyone
                s.pending_diffs = now.pending_diffs;
                s.presence_changes = now.presence_changes;
                false
            } else {
                s.clone_from(now);
                true
            }
        });
        if let Some(every) = self.every_change.get()
            && every.receiver_count() > 0
        {
            every.send_if_modified(|s| {
                let changed = s != now;
                if changed {
                    s.clone_from(now);
                }
                changed
            });
        }
    }

    /// Reads the machine without changing it.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Machine) -> T) -> T {
        f(&self.machine())
    }

    fn deliver(&self, at: Instant, event: ClientEvent) {
        let wanted_by = |w: &Wants| match event {
            ClientEvent::Sent(_) | ClientEvent::Received(_) => w.frames,
            ClientEvent::Presence { .. } => w.presence,
            _ => true,
        };
        if let Ok(mut obs) = self.observers.lock() {
            // every observer but the last that wants it gets a copy; that one gets the event
            let last = obs.iter().rposition(|(_, w)| wanted_by(w));
            let wanted: Vec<bool> = obs.iter().map(|(_, w)| wanted_by(w)).collect();
            let mut stamped = Some(Box::new(Stamped { at, event }));
            let mut i = 0;
            obs.retain(|(tx, _)| {
                let this = i;
                i += 1;
                if !wanted[this] {
                    return !tx.is_closed();
                }
                let event = if Some(this) == last {
                    stamped.take()
                } else {
                    stamped.clone()
                };
                event.is_some_and(|e| tx.send(e).is_ok())
            });
        }
    }
}

/// A running client. Cloning gives another handle to the same client; it stops when
/// [`Client::stop`] is called or every handle is dropped.
#[derive(Clone)]
pub struct Client {
    handles: Arc<Handles>,
    shared: Arc<Shared>,
    task: AbortHandle,
}

/// Lives as long as some handle: its drop ends the commands.
struct Handles(Arc<Shared>);

impl Drop for Handles {
    fn drop(&mut self) {
        self.0.commands.handles_dropped();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("status", &*self.shared.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a client on the current runtime (or turmoil host). `connect` opens a fresh
    /// stream to the server for every connection attempt.
    pub fn start<C, F, S>(cfg: ClientConfig, connect: C) -> Client
    where
        C: FnMut() -> F + Send + 'static,
        F: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let machine = Machine::new(cfg, Instant::now());
        let shared = Arc::new(Shared {
            status: watch::Sender::new(machine.status().clone()),
            every_change: std::sync::OnceLock::new(),
            machine: Mutex::new(machine),
            observers: Mutex::new(Vec::new()),
            commands: Commands::default(),
            read_idle: AtomicBool::new(false),
        });
        let task = tokio::spawn(task::run(connect, Arc::clone(&shared)));
        Client {
            handles: Arc::new(Handles(Arc::clone(&shared))),
            shared,
            task: task.abort_handle(),
        }
    }

    /// A client over tokio TCP to `addr` (the URL's host part is only the `Host` header).
    pub fn start_tcp(cfg: ClientConfig, addr: std::net::SocketAddr) -> Client {
        Client::start(cfg, move || async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            Ok(stream)
        })
    }

    fn send(&self, cmd: Command) {
        // A stopped client ignores commands: there is nobody left to act on them.
        self.handles.0.commands.send(cmd);
    }

    /// Connects (again) after [`Client::disconnect`], or now if `auto_connect` was off.
    pub fn connect(&self) {
        self.send(Command::Connect);
    }

    /// Closes the socket cleanly (code 1000): no reconnect until [`Client::connect`]. The
    /// channel becomes errored and rejoins on the next connection, as in phoenix.js.
    pub fn disconnect(&self) {
        self.send(Command::Disconnect);
    }

    /// Drops the TCP connection without a close frame (a network failure, from the server's
    /// point of view); the client reconnects with backoff.
    pub fn drop_connection(&self) {
        self.send(Command::DropConnection);
    }

    /// Joins the channel (a fresh `Presence`, as a new phoenix.js channel has) if it is closed.
    pub fn join(&self) {
        self.send(Command::Join);
    }

    /// Leaves the channel.
    pub fn leave(&self) {
        self.send(Command::Leave);
    }

    /// Pushes an event on the channel (buffered until joined, as phoenix.js does).
    pub fn push(&self, event: impl Into<String>, payload: Json) {
        self.send(Command::Push {
            event: event.into(),
            payload: Box::new(payload),
        });
    }

    /// The reference channel's `update_meta`.
    pub fn update_meta(&self, meta: Json) {
        self.push("update_meta", meta);
    }

    /// Stops the client task at once (no close frame).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// The current view. Its presence list is built from the client's own on each call.
    pub fn view(&self) -> ClientView {
        self.shared.read(Machine::view)
    }

    /// The current status (the view without the presence list).
    pub fn status(&self) -> ClientStatus {
        self.shared.read(|m| m.status().clone())
    }

    /// Reads the presences as the client keeps them (phoenix.js's `Presence` state), without
    /// copying them.
    pub fn with_presences<T>(&self, f: impl FnOnce(&PresenceInstance) -> T) -> T {
        self.shared.read(|m| f(m.presence()))
    }

    /// Whether two clients hold the same presences: the same keys, in any order (clients
    /// that joined at different times list them in different orders), each with equal
    /// presences (metas in the same order). Cheap when their lists are shared
    /// ([`ClientConfig::frame_cache`]: clients of one cache that nobody observes and that hold
    /// the same presences hold one list), or at least their presences: a shared presence
    /// compares by pointer.
    pub fn same_presences(&self, other: &Client) -> bool {
        if Arc::ptr_eq(&self.shared, &other.shared) {
            return true;
        }
        let (a, b) = (self.shared.machine(), other.shared.machine());
        a.presence().state().same_presences(b.presence().state())
    }

    /// A receiver of every status change (a presence message moves
    /// [`ClientStatus::presence_changes`]).
    pub fn watch(&self) -> watch::Receiver<ClientStatus> {
        // under the machine's lock, so no step runs between bringing the value up to date
        // and subscribing (a step keeps it current only while it has receivers)
        let m = self.shared.machine();
        let every = self
            .shared
            .every_change
            .get_or_init(|| watch::Sender::new(m.status().clone()));
        every.send_if_modified(|s| {
            s.clone_from(m.status());
            false
        });
        every.subscribe()
    }

    /// A receiver woken only when the connection or the channel moves (every field of
    /// [`ClientStatus`] but `pending_diffs` and `presence_changes`, which it reads as of the
    /// task's last step: a diff an [`Absorber`] hands over while the task waits moves them
    /// only in [`Client::status`]): for a watcher of many clients that wants `joined`.
    pub fn watch_lifecycle(&self) -> watch::Receiver<ClientStatus> {
        self.shared.status.subscribe()
    }

    /// Every event from now on, unbounded so that a checker misses none.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Box<Stamped>> {
        self.subscribe_with(Wants {
            frames: true,
            presence: true,
        })
    }

    /// Every event but the frames ([`ClientEvent::Sent`], [`ClientEvent::Received`]): for an
    /// observer that keeps no transcript, a client then copies no frame for it.
    pub fn subscribe_without_frames(&self) -> mpsc::UnboundedReceiver<Box<Stamped>> {
        self.subscribe_with(Wants {
            frames: false,
            presence: true,
        })
    }

    /// What a simulated link offers the segments arriving on this client's connection, to
    /// hand cached broadcast diffs to the machine without waking the task ([`Absorber`]).
    pub fn absorber(&self) -> Absorber {
        Absorber(Arc::clone(&self.shared))
    }

    /// The connection and channel events only: neither frames nor presence messages
    /// ([`ClientEvent::Presence`]). A client nobody else observes then keeps no payload for
    /// its observers and may share decoded diffs ([`ClientConfig::frame_cache`]).
    pub fn subscribe_lifecycle(&self) -> mpsc::UnboundedReceiver<Box<Stamped>> {
        self.subscribe_with(Wants {
            frames: false,
            presence: false,
        })
    }

    fn subscribe_with(&self, wants: Wants) -> mpsc::UnboundedReceiver<Box<Stamped>> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut obs) = self.shared.observers.lock() {
            obs.push((tx, wants));
        }
        self.shared.machine().observe(wants);
        rx
    }

    /// Waits until the view satisfies `pred`, at most `limit`; returns the last view either way.
    /// The view is built again after every status change, so this is for tests and tools, not
    /// for a loop over many clients.
    pub async fn wait_for(
        &self,
        limit: Duration,
        mut pred: impl FnMut(&ClientView) -> bool,
    ) -> Result<ClientView, ClientView> {
        let mut rx = self.watch();
        let waited = tokio::time::timeout(limit, async {
            loop {
                rx.borrow_and_update();
                let view = self.view();
                if pred(&view) {
                    return Some(view);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(view)) => Ok(view),
            _ => Err(self.view()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Command, Commands};

    #[test]
    fn the_command_queue_keeps_order_and_no_memory_once_empty() {
        let commands = Commands::default();
        commands.send(Command::Join);
        commands.send(Command::Leave);
        assert!(matches!(commands.pop(), Some(Some(Command::Join))));
        assert!(commands.queue().commands.capacity() > 0);
        assert!(matches!(commands.pop(), Some(Some(Command::Leave))));
        assert_eq!(commands.queue().commands.capacity(), 0);
        assert!(commands.pop().is_none(), "empty, handles alive");
        commands.send(Command::Connect);
        commands.handles_dropped();
        assert!(matches!(commands.pop(), Some(Some(Command::Connect))));
        assert!(matches!(commands.pop(), Some(None)), "then the end");
    }
}
