//! The Phoenix Channels server over WebSocket: the socket protocol (V1 and V2, text and V2
//! binary frames) and the reference `room:*` presence channel, on top of a [`Node`].
//!
//! - Transport-agnostic: [`Server::serve_connection`] takes any `AsyncRead + AsyncWrite`
//!   stream, so the same code serves tokio TCP ([`Server::listen`]), turmoil TCP in the
//!   simulator, or an in-memory duplex in a test. It never binds anything itself.
//! - One task per connection owns that socket's channels. Presence diffs come from the node
//!   through one [`Subscription`](crate::Subscription) per joined channel, so every socket on
//!   every node sees its node's view, as a Phoenix fastlane subscriber does.
//! - Time only from `tokio::time` (idle timeout, handshake timeout), maps are ordered, and no
//!   input from the network can make it panic: a frame that cannot be decoded closes that one
//!   connection with a close code and a reason, and its presences leave.
//! - [`ServerMutation`]s plant named, known bugs for the conformance tests to catch.

mod fastlane;
mod handshake;
mod outbox;
mod plain_get;
mod read_gate;
pub mod room;
mod socket;
mod topic_map;

pub use crate::encoded::EncodedFrames;
pub use handshake::{ConnectInfo, Refusal, SOCKET_PATH, decide, parse_query, percent_encode};

use crate::node::Node;
use phxsim_wire::{DEFAULT_MAX_FRAME_LEN, Frame, Serializer};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// WebSocket close codes the server uses, each with a reason text beside it on the wire.
///
/// Phoenix leaves codes to its HTTP adapter (Bandit sent 1011 for a malformed frame and 1002
/// for the idle timeout, with empty reasons). phoenix.js reconnects on every code but 1000, so
/// any code other than 1000 behaves the same for clients; these say what happened.
pub mod close_code {
    /// The idle timeout fired: nothing arrived for `idle_timeout` (RFC 6455 "going away").
    pub const IDLE: u16 = 1001;
    /// A frame that is not a Channels message (bad JSON, wrong shape, binary on V1, ...).
    pub const MALFORMED: u16 = 1007;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server could not encode a reply (an internal error, never the client's fault).
    pub const INTERNAL: u16 = 1011;
    /// The node behind the server stopped (graceful permdown): come back elsewhere or later.
    pub const NODE_STOPPED: u16 = 1012;
    /// The socket's outbound buffer passed `max_outbound_bytes`: the client does not read
    /// what it is sent (RFC 6455 "try again later"). The rest of the server is unaffected.
    pub const OUTBOX_FULL: u16 = 1013;
}

/// A planted server bug, for proving that conformance checks catch it. Default: none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerMutation {
    /// Metas go out without `phx_ref_prev` (in diffs, states and list replies).
    DropPhxRefPrev,
    /// The heartbeat reply goes out on topic `"heartbeat"` instead of `"phoenix"`.
    HeartbeatReplyWrongTopic,
    /// No `presence_state` after a join: a phoenix.js client buffers diffs forever.
    NoPresenceState,
    /// `presence_state` carries a join_ref the client never sent, so phoenix.js drops it as
    /// an outdated message.
    StateWithWrongJoinRef,
    /// A lost or closed connection leaves its presences tracked: ghosts.
    KeepPresencesOnDisconnect,
    /// `presence_diff`s go out with their leaves removed.
    DropLeaves,
    /// `phx_leave` is answered but never followed by `phx_close`.
    NoPhxCloseOnLeave,
    /// `presence_diff` leaves name a `phx_ref` the client never got: it keeps the presence
    /// that left, and the leave is of a ref it does not hold.
    LeaveWrongRef,
    /// The join's old order (issue 17): the presence is tracked without a lease, and the
    /// channel is recorded only after the join's writes reached the client, so a connection
    /// lost in the middle of the join skips the untrack: a ghost.
    TrackBeforeBookkeeping,
}

impl ServerMutation {
    /// Every mutation, for CLIs and test matrices.
    pub const ALL: [ServerMutation; 9] = [
        ServerMutation::DropPhxRefPrev,
        ServerMutation::HeartbeatReplyWrongTopic,
        ServerMutation::NoPresenceState,
        ServerMutation::StateWithWrongJoinRef,
        ServerMutation::KeepPresencesOnDisconnect,
        ServerMutation::DropLeaves,
        ServerMutation::NoPhxCloseOnLeave,
        ServerMutation::LeaveWrongRef,
        ServerMutation::TrackBeforeBookkeeping,
    ];

    /// The kebab-case name used on command lines and in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            ServerMutation::DropPhxRefPrev => "drop-phx-ref-prev",
            ServerMutation::HeartbeatReplyWrongTopic => "heartbeat-reply-wrong-topic",
            ServerMutation::NoPresenceState => "no-presence-state",
            ServerMutation::StateWithWrongJoinRef => "state-with-wrong-join-ref",
            ServerMutation::KeepPresencesOnDisconnect => "keep-presences-on-disconnect",
            ServerMutation::DropLeaves => "drop-leaves",
            ServerMutation::NoPhxCloseOnLeave => "no-phx-close-on-leave",
            ServerMutation::LeaveWrongRef => "leave-wrong-ref",
            ServerMutation::TrackBeforeBookkeeping => "track-before-bookkeeping",
        }
    }
}

impl fmt::Display for ServerMutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which Phoenix the server behaves as, where the versions differ (phoenix-races.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PhoenixRules {
    /// Phoenix 1.7.21, the recorded reference: no channel cap, a push with a stale join_ref is
    /// still answered, numeric `ref`/`join_ref` are accepted and echoed as numbers, a plain
    /// HTTP GET on the socket path gets 400 with a text body.
    V1_7_21,
    /// Phoenix 1.8: at most [`ServerConfig::max_channels`] channels per socket, stale pushes
    /// dropped silently, refs must be strings, a plain GET is dropped. What the simulator has
    /// always run (and still does: its clients are phoenix.js, which never tells them apart).
    #[default]
    V1_8,
}

impl PhoenixRules {
    /// `1.7.21` or `1.8`.
    pub fn name(self) -> &'static str {
        match self {
            PhoenixRules::V1_7_21 => "1.7.21",
            PhoenixRules::V1_8 => "1.8",
        }
    }
}

impl FromStr for PhoenixRules {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1.7.21" => Ok(PhoenixRules::V1_7_21),
            "1.8" => Ok(PhoenixRules::V1_8),
            other => Err(format!("unknown Phoenix version {other:?} (1.7.21 or 1.8)")),
        }
    }
}

/// Default of [`ServerConfig::max_outbound_bytes`]: room for a `presence_state` of about
/// 50 000 presences, far more than a reading client ever has queued.
pub const DEFAULT_MAX_OUTBOUND_BYTES: usize = 4 * 1024 * 1024;

/// How the server treats its connections.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// A socket on which nothing arrived for this long is closed (Phoenix: 60 s).
    pub idle_timeout: Duration,
    /// A connection that has not completed its WebSocket upgrade within this time is dropped.
    pub handshake_timeout: Duration,
    /// The largest WebSocket message accepted; a larger one closes the connection (1009).
    pub max_frame_len: usize,
    /// Channels one socket may have joined at once (Phoenix 1.7.24+: 100); one more join gets
    /// `too many channels joined`. Only with [`PhoenixRules::V1_8`].
    pub max_channels: usize,
    /// Which Phoenix to behave as where versions differ.
    pub phoenix: PhoenixRules,
    /// A write that cannot complete in this time (a client that stopped reading) drops the
    /// connection, so that one stuck client never holds a task forever.
    pub write_timeout: Duration,
    /// Bytes one socket may have queued for writing; one more frame closes the socket with
    /// [`close_code::OUTBOX_FULL`]. Bounds the memory a client that stops reading can hold.
    pub max_outbound_bytes: usize,
    /// Bytes of read buffer per connection (at least 256). tungstenite's default (128 KiB,
    /// allocated eagerly) would cost 1.3 GB for 10 000 sockets; what a client sends is small
    /// frames (a join, a heartbeat: a few hundred bytes), and the buffer grows to hold a
    /// larger frame when its header announces one, so 512 bytes serve them. tungstenite also
    /// zeroes this much before every read, so smaller is cheaper too (a larger frame takes
    /// more reads). The buffer is kept for the socket's life: at 160 000 simulated browsers
    /// the 2 KiB it used to be came to 330 MB.
    pub read_buffer_size: usize,
    /// Whether a join tracks the joiner (the reference channel: yes). Off, joins only
    /// subscribe: observer sockets, like a dashboard that lists presences without being
    /// present, which lets a benchmark hold 10 000 listeners on one topic without 10 000
    /// presences and their quadratic join traffic.
    pub track_on_join: bool,
    /// A planted bug; `None` in production.
    pub mutation: Option<ServerMutation>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_channels: 100,
            phoenix: PhoenixRules::default(),
            write_timeout: Duration::from_secs(60),
            max_outbound_bytes: DEFAULT_MAX_OUTBOUND_BYTES,
            read_buffer_size: 512,
            track_on_join: true,
            mutation: None,
        }
    }
}

/// How one connection ended; also what [`Server::serve_connection`]'s task returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The upgrade was refused with this HTTP status.
    Refused {
        /// 400, 403 or 404.
        status: u16,
        /// Why, for logs.
        reason: String,
    },
    /// The WebSocket handshake failed or timed out (not an HTTP refusal of ours).
    HandshakeFailed(String),
    /// The client sent a close frame.
    ClientClosed {
        /// The client's close code, if it gave one.
        code: Option<u16>,
    },
    /// The stream ended or failed without a close frame (a dropped TCP connection).
    Dropped(String),
    /// The server closed the connection with this code and reason.
    ServerClosed {
        /// See [`close_code`].
        code: u16,
        /// The reason sent in the close frame (and logged).
        reason: String,
    },
}

/// What a server reports to observers (transcripts, `phxsim serve` logs), in order per
/// connection.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// A socket was accepted.
    Connected {
        /// The server-wide connection number.
        conn: u64,
        /// The `user_id` connect param.
        user_id: String,
        /// The negotiated serializer.
        serializer: Serializer,
    },
    /// A data frame arrived.
    Received {
        /// The connection.
        conn: u64,
        /// The frame as received.
        frame: Frame,
    },
    /// A data frame was written.
    Sent {
        /// The connection.
        conn: u64,
        /// The frame as sent.
        frame: Frame,
    },
    /// The connection ended (also for refused upgrades).
    Ended {
        /// The connection.
        conn: u64,
        /// How.
        end: ConnectionEnd,
    },
}

struct Inner {
    node: Node,
    cfg: ServerConfig,
    next_conn: AtomicU64,
    observed: AtomicBool,
    /// Whether an observer wants the frames too ([`Server::observe`]): only then are
    /// `Sent`/`Received` events built, which copy every frame of every socket.
    frames_observed: AtomicBool,
    /// Each observer, and whether it takes frames.
    observers: Mutex<Vec<(mpsc::UnboundedSender<ServerEvent>, bool)>>,
}

/// A Channels server for one node. Cheap to clone; it owns no listener and no task of its own.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("node", &self.inner.node)
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server running the reference channel on `node`.
    pub fn new(node: Node, cfg: ServerConfig) -> Server {
        Server {
            inner: Arc::new(Inner {
                node,
                cfg,
                next_conn: AtomicU64::new(1),
                observed: AtomicBool::new(false),
                frames_observed: AtomicBool::new(false),
                observers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The node behind this server.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }

    /// Serves one accepted stream (tokio TCP, turmoil TCP, a duplex...) on a new task: the
    /// WebSocket upgrade, then the socket until it ends. The task's result says how it ended.
    pub fn serve_connection<S>(&self, stream: S) -> JoinHandle<ConnectionEnd>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(self.connection(stream))
    }

    /// [`Server::serve_connection`] on the caller's task.
    pub async fn run_connection<S>(&self, stream: S) -> ConnectionEnd
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.connection(stream).await
    }

    /// One connection from its upgrade to its end, as a future that stays small while the
    /// socket lives (a simulated node holds one per browser): the stream is moved at once
    /// into the boxed setup (upgrade and handshake), which is freed when the socket opens, and
    /// the open socket's session is boxed on its own. Held inline, the stream (three copies of
    /// its room: one per `async` layer that took it) and the handshake's locals made the
    /// spawned task 2.7 KB for as long as the socket lived.
    fn connection<S>(&self, stream: S) -> impl Future<Output = ConnectionEnd> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = self.clone();
        let setup = Box::pin(socket::open(self.clone(), stream));
        async move {
            let (conn, opened) = setup.await;
            let end = match opened {
                Ok(running) => running.await,
                Err(end) => end,
            };
            server.ended(conn, &end);
            end
        }
    }

    /// Logs how a connection ended and tells the observers.
    fn ended(&self, conn: u64, end: &ConnectionEnd) {
        match end {
            ConnectionEnd::ServerClosed { code, reason } => {
                tracing::info!(conn, code, reason = %reason, "server closed the socket")
            }
            ConnectionEnd::Dropped(why) => tracing::debug!(conn, why = %why, "socket dropped"),
            other => tracing::debug!(conn, end = ?other, "socket ended"),
        }
        self.emit(|| ServerEvent::Ended {
            conn,
            end: end.clone(),
        });
    }

    /// Accepts connections on a tokio listener until the returned task is aborted.
    pub fn listen(&self, listener: tokio::net::TcpListener) -> JoinHandle<()> {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        // Presence frames are small and latency-bound; Nagle only delays them.
                        let _ = stream.set_nodelay(true);
                        server.serve_connection(stream);
                    }
                    // Out of file descriptors, for example: that one peer is lost; back off a
                    // little instead of spinning on the error.
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                }
            }
        })
    }

    /// Every event of this server from now on, unbounded so that an observer misses none.
    pub fn observe(&self) -> mpsc::UnboundedReceiver<ServerEvent> {
        self.add_observer(true)
    }

    /// Connections only ([`ServerEvent::Connected`] and [`ServerEvent::Ended`]), for logs:
    /// unlike [`Server::observe`], this costs the sockets nothing per frame (a frame observer
    /// gets a copy of every frame of every socket, which at 10 000 sockets in one topic is
    /// gigabytes).
    pub fn observe_connections(&self) -> mpsc::UnboundedReceiver<ServerEvent> {
        self.add_observer(false)
    }

    fn add_observer(&self, frames: bool) -> mpsc::UnboundedReceiver<ServerEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut obs) = self.inner.observers.lock() {
            obs.push((tx, frames));
        }
        self.inner.observed.store(true, Ordering::Release);
        if frames {
            self.inner.frames_observed.store(true, Ordering::Release);
        }
        rx
    }

    /// Whether anyone observes: lets the hot path skip building events.
    fn observed(&self) -> bool {
        self.inner.observed.load(Ordering::Acquire)
    }

    /// A connection event, for every observer.
    fn emit(&self, event: impl FnOnce() -> ServerEvent) {
        if !self.observed() {
            return;
        }
        self.dispatch(event(), false);
    }

    /// A frame event (`Sent`, `Received`), built only if an observer takes frames.
    fn emit_frame(&self, event: impl FnOnce() -> ServerEvent) {
        if !self.inner.frames_observed.load(Ordering::Acquire) {
            return;
        }
        self.dispatch(event(), true);
    }

    fn dispatch(&self, event: ServerEvent, frame: bool) {
        if let Ok(mut obs) = self.inner.observers.lock() {
            obs.retain(|(tx, frames)| (frame && !frames) || tx.send(event.clone()).is_ok());
        }
    }

    fn mutated(&self, m: ServerMutation) -> bool {
        self.inner.cfg.mutation == Some(m)
    }
}
