//! What a run's hosts and its driver share: the world state behind one lock, the run's
//! event stream (which the checkers and the transcript read), the control messages of nodes and clients, the ports, and
//! the seed derivation. Every other simulator module depends on this one and it on none of
//! them but the data types it holds (events, loss rates, the stream), so
//! the harness, the client glue and the sampler have no import loop.

use crate::event::Event;
use crate::lossy::{LossRate, LossReport, Resets};
use crate::node_trace::TraceEvent;
use crate::planted::PlantedBug;
use crate::snapshot::Name;
use crate::stream::EventStream;
use phxsim_runtime::Node;
use phxsim_runtime::client::Client;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How to run a scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The run's seed; every random choice derives from it.
    pub seed: u64,
    /// A planted bug in a node, the server or the client (tests and `--mutate` only).
    pub planted: Option<PlantedBug>,
    /// Keep the full transcript (every frame and node message) in the report.
    pub transcript: bool,
    /// Keep every node's tracker events and final lists in the report (for `crosscheck`).
    pub node_trace: bool,
    /// With `transcript`: also every frame of every `[[population]]` client (by default only
    /// the frames of the sample the checkers replay, and one summary line per population).
    pub population_frames: bool,
    /// The most browsers one simulated host runs; `None`:
    /// [`crate::clients::clients_per_host`] of the scenario. Tests set it low to run several browsers' hosts
    /// with a few clients.
    pub clients_per_host: Option<usize>,
    /// How population browsers on in-memory links take what arrives (tests compare the
    /// three).
    pub browser_reads: BrowserReads,
}

/// How a population browser on an in-memory link takes the segments that arrive
/// (`--browser-reads`). A seed replays the same run only with the same choice: a run found
/// by a phxsim older than this choice replays with `task`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BrowserReads {
    /// Cached broadcast diffs that arrive while its task waits idle are handed to its
    /// machine at once, and the task is not woken (`phxsim_runtime::client::Absorber`).
    /// Fewer task wake-ups reorder the tasks a host runs within a step, so a run takes other
    /// (equally valid) turns than with [`BrowserReads::Task`].
    #[default]
    Absorb,
    /// As [`BrowserReads::Absorb`], and the task is woken as if it were to read them: a run
    /// is then byte for byte the run of [`BrowserReads::Task`] (what tests check the
    /// absorber with).
    AbsorbAndWake,
    /// The browser's task reads every segment.
    Task,
}

impl BrowserReads {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BrowserReads::Absorb => "absorb",
            BrowserReads::AbsorbAndWake => "absorb-and-wake",
            BrowserReads::Task => "task",
        }
    }
}

/// Port of the node-to-node links on every node host.
pub(crate) const NODE_PORT: u16 = 4369;
/// Port of the Channels WebSocket endpoint on every node host.
pub(crate) const WS_PORT: u16 = 4000;

/// What hosts and the driver share. One process, one thread: the lock is never contended, it
/// only satisfies the types.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) incarnations: BTreeMap<String, u64>,
    pub(crate) node_ctl: BTreeMap<String, mpsc::UnboundedSender<NodeControl>>,
    pub(crate) clients: BTreeMap<String, SimClient>,
    /// Every event of the run, emitted once: the driver drains it into the checkers and the
    /// transcript after each step.
    pub(crate) events: EventStream,
    pub(crate) node_messages: u64,
    /// The loss rate of every node link; `loss` steps change it.
    pub(crate) loss_rate: LossRate,
    /// The loss rate of every browser link (both ends); `client_loss` steps change it.
    pub(crate) client_loss_rate: LossRate,
    /// Tracker events of every node, kept when `Some` ([`RunOptions::node_trace`]).
    pub(crate) node_trace: Option<Vec<TraceEvent>>,
    /// Counts heals and repairs; diallers watch it (`tick_model = "drift"`).
    pub(crate) heals: Option<tokio::sync::watch::Sender<u64>>,
    /// The browser connections `drop_mid_join` steps reset; `Some` only in runs with such
    /// steps.
    pub(crate) resets: Option<Resets>,
    /// The clients whose presence messages the checkers replay; `None`: every client (see
    /// [`crate::population::replayed`]).
    pub(crate) replayed: Option<std::collections::BTreeSet<String>>,
    /// One block per presence text for every node of the run, restarted ones included (see
    /// `phxsim_tracker::MetaInterner`): a presence learnt by fifteen nodes is one block, and
    /// the sampler and checkers tell two nodes' metas equal by pointer.
    pub(crate) meta_interner: phxsim_runtime::SharedInterner,
    /// The in-memory browser links of population browsers with `transport = "memory"`;
    /// `None` in runs without any.
    pub(crate) pipes: Option<crate::pipe::Pipes>,
    /// Which browsers use `pipes`.
    pub(crate) memory_browsers: crate::pipe::MemoryBrowsers,
}

pub(crate) type SharedRef = Arc<Mutex<Shared>>;

pub(crate) fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    // a panic inside a host already fails the run; the data is still usable for the report
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Simulated milliseconds, read inside a host or the driver.
pub(crate) fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

pub(crate) enum NodeControl {
    GracefulPermdown,
}

/// A stable 64-bit mix of the run seed and a label (splitmix64 over FNV-1a), so that every
/// host and incarnation gets its own stream without drawing from a shared RNG in host order.
pub(crate) fn derive_seed(seed: u64, label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the timeline tells a client to do. Small (the meta is boxed): each browser's control
/// channel allocates room for 32 of these up front (72 B each inline, 24 B boxed).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ClientControl {
    Join,
    Leave,
    Update(Box<Json>),
    /// The browser vanishes: its TCP connection drops without a close frame and it stays away
    /// until `Reconnect`.
    Disconnect,
    /// Connects again; a channel that was joined rejoins, as phoenix.js does.
    Reconnect,
    /// The reference channel's `crash` event.
    CrashChannel,
    /// A fresh connection and a join on it (a joined channel rejoins, a closed one joins),
    /// and the connection drops without a close frame this long after: somewhere in the
    /// join exchange. The browser stays away until `Reconnect`.
    DropMidJoin(Duration),
}

/// A client as the observer sees it. Its names are held inline when short: a run keeps one
/// of these per browser, up to 200 000.
#[derive(Clone, Debug)]
pub(crate) struct SimClient {
    pub(crate) node: Name,
    pub(crate) topic: Name,
    pub(crate) user: Name,
    pub(crate) client: Client,
    /// Where the timeline's controls for it go: its browsers' host, and its place there.
    pub(crate) ctl: (mpsc::UnboundedSender<(u32, ClientControl)>, u32),
}

/// Emits each segment lost from `from` (a node, or a browser when `by_browser`) to `to` as an
/// event, with the delay its retransmissions add.
pub(crate) fn segment_lost_report(
    shared: SharedRef,
    from: String,
    to: String,
    by_browser: bool,
) -> LossReport {
    let sender = if by_browser { "browser" } else { "node" };
    Arc::new(move |delay: Duration| {
        let event = Event::SegmentLost {
            sender: sender.to_owned(),
            from: from.clone(),
            to: to.clone(),
            delay_ms: delay.as_millis() as u64,
        };
        lock(&shared).events.push(now_ms(), event);
    })
}
