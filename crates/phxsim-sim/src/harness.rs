//! Runs one scenario on turmoil: a host per node (the real `phxsim-runtime` node, its
//! node-to-node links and its Channels server) and one host for every browser (the real
//! client). Between simulation steps the driver applies the scripted timeline and samples every
//! node's lists for the checkers. Everything random comes from the run's seed; time comes
//! only from turmoil's clock, so one seed replays a run byte for byte.

use crate::checkers::{Bounds, Checkers, Finding, FindingKind, PresenceList};
use crate::clients;
use crate::event::Event;
use crate::lossy::{BrowserConn, Loss, LossyStream};
use crate::node_trace::{TraceEvent, comparable_lists, trace_events};
use crate::pipe::{PipeEnd, Pipes};
use crate::planted::PlantedBug;
use crate::sampler::Sampler;
use crate::scenario::{Action, ProfileName, Scenario, TickModelName};
pub use crate::world::{BrowserReads, RunOptions};
use crate::world::{
    ClientControl, NODE_PORT, NodeControl, SharedRef, WS_PORT, derive_seed, lock, now_ms,
    segment_lost_report,
};
use phxsim_runtime::server::Server;
use phxsim_runtime::{Node, NodeConfig, NodeEvent};
use phxsim_shard::{NodeMutation, Profile, TickDrift, TickModel, TrackerConfig, TrackerEvent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;
use turmoil::net::TcpStream;

/// A dial that gets no answer (a partitioned SYN) is abandoned after this long.
const DIAL_TIMEOUT_MS: u64 = 500;
/// Pause between two dials of the same peer.
const REDIAL_MS: u64 = 100;
/// `tick_model = "drift"`: after a heal or repair, a dialler whose link is down dials again
/// this many ms later (drawn per dial from the seed), as distributed Erlang re-establishes a
/// healed connection in 2–46 ms (measured, `crates/phxsim/docs/phoenix-races.md`); a dial stalled
/// on the partition is abandoned at once instead of waiting for its timeout.
const HEAL_REDIAL_MS: [u64; 2] = [2, 46];

/// Link keepalive: turmoil stalls a partitioned stream instead of failing it, so the
/// keepalive and idle timeout play Erlang's net_ticktime and drop the dead link.
fn link_keepalive_ms(bp: u64) -> u64 {
    250.max(bp)
}

pub fn link_idle_ms(bp: u64) -> u64 {
    1_000.max(4 * bp)
}

/// Worst time for a healed link to carry heartbeats again: the stalled stream's idle timeout
/// (or a lost greeting's handshake timeout), then a dial that may time out, a pause, a dial.
pub fn link_recovery_ms(bp: u64) -> u64 {
    2 * link_idle_ms(bp) + 2 * (DIAL_TIMEOUT_MS + REDIAL_MS)
}

/// Every run starts at the same instant, so nothing depends on when it is run.
const EPOCH_SECS: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// A safety property or an expectation failed.
    Safety,
    /// The cluster did not converge within its bound (and nothing worse happened).
    NoConvergence,
    /// The simulation itself failed (a host returned an error).
    Internal,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub title: String,
    pub seed: u64,
    /// Every knob of the run, printed before it starts.
    pub knobs: Vec<(String, String)>,
    /// Every finding of the checkers, expected or not.
    pub findings: Vec<Finding>,
    /// The findings that make the run fail, after the scenario's expectations.
    pub failures: Vec<Finding>,
    pub converged_at_ms: Option<u64>,
    pub verdict: Verdict,
    /// JSON lines: every frame both ways, every node message, every fault, with simulated time.
    pub transcript: Vec<String>,
    /// Simulated time covered.
    pub simulated_ms: u64,
    /// Messages between nodes, counted both ways.
    pub node_messages: u64,
    /// Browser connections made over in-memory links (`transport = "memory"`).
    pub memory_connections: u64,
    /// Segments of those links handed to a browser's machine as they arrived, without
    /// waking its task ([`RunOptions::browser_reads`]).
    pub absorbed_segments: u64,
    /// With [`RunOptions::node_trace`]: every node's tracker events, in order.
    pub node_trace: Vec<TraceEvent>,
    /// With [`RunOptions::node_trace`]: each node's lists in the last sample of the run, in
    /// comparable form (nodes down at the end are absent).
    pub final_lists: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

fn tracker_config(s: &Scenario, mutation: Option<NodeMutation>) -> TrackerConfig {
    let t = &s.tracker;
    TrackerConfig {
        broadcast_period: t.broadcast_period_ms,
        max_silent_periods: t.max_silent_periods as u32,
        down_period: t.down_period_ms,
        permdown_period: t.permdown_period_ms,
        clock_sample_periods: t.clock_sample_periods as u32,
        max_delta_sizes: t.max_delta_sizes.clone(),
        pool_size: t.pool_size,
        first_tick_jitter: None,
        tick_model: match t.tick_model {
            TickModelName::Exact => TickModel::Exact,
            TickModelName::Drift => TickModel::Drift(TickDrift::calibrated()),
        },
        profile: match t.profile {
            ProfileName::Faithful => Profile::faithful(),
            ProfileName::Corrected => Profile::corrected(),
            ProfileName::Eager => Profile::eager(t.eager_window_ms.unwrap_or(5)),
        },
        mutation,
    }
}

fn node_event(node: &str, e: &NodeEvent) -> Option<Event> {
    let node = node.to_owned();
    Some(match e {
        NodeEvent::Tracker(TrackerEvent::PresenceDiff { .. }) => return None,
        NodeEvent::Tracker(TrackerEvent::ReplicaUp { replica, .. }) => Event::ReplicaUp {
            node,
            remote: replica.name.to_string(),
            vsn: replica.vsn,
        },
        NodeEvent::Tracker(TrackerEvent::ReplicaDown { replica, .. }) => Event::ReplicaDown {
            node,
            remote: replica.name.to_string(),
            vsn: replica.vsn,
        },
        NodeEvent::Tracker(TrackerEvent::ReplicaPermdown { replica, .. }) => {
            Event::ReplicaPermdown {
                node,
                remote: replica.name.to_string(),
                vsn: replica.vsn,
            }
        }
        NodeEvent::LinkUp { peer, vsn } => Event::LinkUp {
            node,
            peer: peer.clone(),
            vsn: *vsn,
        },
        NodeEvent::LinkDown { peer, reason } => Event::LinkDown {
            node,
            peer: peer.clone(),
            reason: reason.to_string(),
        },
        NodeEvent::Message {
            outbound: true,
            peer,
            kind,
        } => Event::NodeSend {
            from: node,
            to: peer.clone(),
            kind: (*kind).to_owned(),
        },
        NodeEvent::Message {
            outbound: false,
            peer,
            kind,
        } => Event::NodeRecv {
            from: peer.clone(),
            to: node,
            kind: (*kind).to_owned(),
        },
    })
}

/// The in-memory links of a run whose populations (`scenario`, before expansion) have
/// browsers with `transport = "memory"`; `None` if none has. Their latencies are the browser
/// links' (`[[network.links]]` between a node and `"clients"`, else the run's).
fn memory_links(scenario: &Scenario, seed: u64) -> Option<Pipes> {
    use crate::population::Transport;
    if !scenario
        .populations
        .iter()
        .any(|p| p.transport == Transport::Memory)
    {
        return None;
    }
    let mut by_node = BTreeMap::new();
    for l in &scenario.network.links {
        match &l.between {
            [n, c] | [c, n] if c == clients::CLIENTS_HOST => {
                by_node.insert(n.clone(), l.latency_ms);
            }
            _ => {}
        }
    }
    Some(Pipes::new(
        derive_seed(seed, "browser-pipes"),
        scenario.network.latency_ms,
        by_node,
    ))
}

/// Wraps host `from`'s streams in [`LossyStream`]s: each stream, numbered in the
/// (deterministic) order it appears, draws its losses from its own RNG, named by `label` and
/// its number, and every segment it loses is a `segment_lost` line of the transcript.
fn lossy_streams(
    loss: Loss,
    seed: u64,
    label: String,
    from: String,
    shared: SharedRef,
) -> impl Fn(TcpStream) -> LossyStream<TcpStream> + Clone {
    let streams = LossyStreams::new(loss, seed, label, from, shared);
    move |stream| streams.wrap(stream)
}

/// [`lossy_streams`] for streams of any kind, numbered together in the order they appear.
#[derive(Clone)]
struct LossyStreams {
    loss: Loss,
    seed: u64,
    label: Arc<str>,
    from: Arc<str>,
    shared: SharedRef,
    streams: Arc<AtomicU64>,
}

impl LossyStreams {
    fn new(loss: Loss, seed: u64, label: String, from: String, shared: SharedRef) -> Self {
        LossyStreams {
            loss,
            seed,
            label: label.into(),
            from: from.into(),
            shared,
            streams: Arc::default(),
        }
    }

    fn wrap<S: PeerName>(&self, stream: S) -> LossyStream<S> {
        let n = self.streams.fetch_add(1, Ordering::Relaxed);
        let seed = derive_seed(self.seed, &format!("{}/{n}", self.label));
        let report = segment_lost_report(
            self.shared.clone(),
            self.from.to_string(),
            stream.peer_name(),
            false,
        );
        LossyStream::new(stream, self.loss.clone(), seed).reporting(report)
    }
}

/// The host at the other end of a stream, as a `segment_lost` line names it.
trait PeerName {
    fn peer_name(&self) -> String;
}

impl PeerName for TcpStream {
    fn peer_name(&self) -> String {
        self.peer_addr()
            .ok()
            .and_then(|a| turmoil::reverse_lookup(a.ip()))
            .unwrap_or_default()
    }
}

impl PeerName for PipeEnd {
    /// Only browsers connect over pipes, all from their hosts: `clients`.
    fn peer_name(&self) -> String {
        crate::clients::CLIENTS_HOST.to_owned()
    }
}

/// The host of one node: the node, its links (accepting, and redialling every node named
/// before it), its Channels server, and its control channel.
fn node_host(
    sim: &mut turmoil::Sim<'_>,
    name: &str,
    index: usize,
    all: Vec<String>,
    scenario: &Scenario,
    opts: &RunOptions,
    shared: SharedRef,
) {
    let tracker = tracker_config(scenario, opts.planted.and_then(PlantedBug::node));
    let name = name.to_owned();
    let seed = opts.seed;
    let bp = scenario.tracker.broadcast_period_ms;
    let server_cfg = clients::server_config(scenario, opts);
    let rto = Duration::from_millis(scenario.network.rto_ms);
    sim.host(name.clone(), move || {
        let (name, all, tracker, shared, server_cfg) = (
            name.clone(),
            all.clone(),
            tracker.clone(),
            shared.clone(),
            server_cfg.clone(),
        );
        let loss = Loss {
            rate: lock(&shared).loss_rate.clone(),
            rto,
        };
        async move {
            let vsn = {
                let mut s = lock(&shared);
                let v = s.incarnations.entry(name.clone()).or_insert(0);
                *v += 1;
                *v
            };
            let cfg = NodeConfig {
                tracker,
                seed: Some(derive_seed(seed, &format!("node/{name}/{vsn}"))),
                // turmoil stalls a partitioned stream instead of failing it: the keepalive
                // and idle timeout play Erlang's net_ticktime and drop the dead link.
                link_keepalive: Duration::from_millis(link_keepalive_ms(bp)),
                link_idle_timeout: Duration::from_millis(link_idle_ms(bp)),
                // a greeting lost to a one-way cut must not hold the link for the 5 s default
                handshake_timeout: Duration::from_millis(link_idle_ms(bp)),
                meta_interner: Some(lock(&shared).meta_interner.clone()),
                ..NodeConfig::new(name.clone(), vsn)
            };
            tracing::debug!(node = %name, vsn, "node starts");
            let node = Node::start(cfg)?;
            let lossy = lossy_streams(
                loss,
                seed,
                format!("loss/{name}/{vsn}"),
                name.clone(),
                shared.clone(),
            );
            let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
            let mut events = node.observe().await?;
            {
                let mut s = lock(&shared);
                s.nodes.insert(name.clone(), node.clone());
                s.node_ctl.insert(name.clone(), ctl_tx);
                let t = now_ms();
                s.events.push(
                    t,
                    Event::NodeStart {
                        node: name.clone(),
                        vsn,
                    },
                );
            }
            let logger_shared = shared.clone();
            let logger_name = name.clone();
            tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    let mut s = lock(&logger_shared);
                    if matches!(e, NodeEvent::Message { outbound: true, .. }) {
                        s.node_messages += 1;
                    }
                    if let (Some(trace), NodeEvent::Tracker(te)) = (s.node_trace.as_mut(), &e) {
                        trace.extend(trace_events(now_ms(), &logger_name, te));
                    }
                    if s.events.is_printing()
                        && let Some(j) = node_event(&logger_name, &e)
                    {
                        let t = now_ms();
                        s.events.push(t, j);
                    }
                }
            });
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", NODE_PORT)).await?;
            let acceptor = node.clone();
            let accepted = lossy.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    acceptor.connect(accepted(stream));
                }
            });
            for peer in &all[..index] {
                let (n, peer, lossy) = (node.clone(), peer.clone(), lossy.clone());
                let heals = lock(&shared).heals.as_ref().map(|h| h.subscribe());
                let redial_seed = derive_seed(seed, &format!("redial/{name}/{vsn}/{peer}"));
                tokio::spawn(dialler(n, peer, lossy, heals, redial_seed));
            }
            // the server's end of each browser link
            let client_loss = Loss {
                rate: lock(&shared).client_loss_rate.clone(),
                rto,
            };
            let lossy_browser_link = LossyStreams::new(
                client_loss,
                seed,
                format!("client-loss/server/{name}/{vsn}"),
                name.clone(),
                shared.clone(),
            );
            let resets = shared.clone();
            let tcp_lossy = lossy_browser_link.clone();
            let tcp_link = move |stream: TcpStream| {
                let peer = stream.peer_addr().ok().map(BrowserConn::Tcp);
                let link = tcp_lossy.wrap(stream);
                match (lock(&resets).resets.as_mut(), peer) {
                    (Some(r), Some(peer)) => link.resettable(r.register(peer)),
                    _ => link,
                }
            };
            let resets = shared.clone();
            let pipes = lock(&shared).pipes.clone();
            let memory = pipes.map(|pipes| {
                let link = move |end: PipeEnd| {
                    let id = BrowserConn::Memory(end.id());
                    let link = lossy_browser_link.wrap(end);
                    match lock(&resets).resets.as_mut() {
                        Some(r) => link.resettable(r.register(id)),
                        None => link,
                    }
                };
                (pipes.listen(&name), link)
            });
            let server = Server::new(node.clone(), server_cfg.clone());
            clients::spawn_server(&server, WS_PORT, tcp_link).await?;
            if let Some((accepted, link)) = memory {
                clients::serve_pipes(&server, accepted, link);
            }
            while let Some(ctl) = ctl_rx.recv().await {
                match ctl {
                    NodeControl::GracefulPermdown => {
                        let _ = node.graceful_permdown().await;
                        lock(&shared).nodes.remove(&name);
                    }
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// Dials `peer` for node `n` for as long as the host runs: a dial abandoned after
/// [`DIAL_TIMEOUT_MS`], a link kept until it closes, [`REDIAL_MS`] between tries. With `heals`
/// (`tick_model = "drift"`), a heal or repair cuts a stalled dial or a pause short and dials
/// again [`HEAL_REDIAL_MS`] later; a link that is up is never disturbed.
async fn dialler<S>(
    n: Node,
    peer: String,
    lossy: impl Fn(TcpStream) -> S,
    mut heals: Option<tokio::sync::watch::Receiver<u64>>,
    redial_seed: u64,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let mut rng = ChaCha8Rng::seed_from_u64(redial_seed);
    let heal_redial = |rng: &mut ChaCha8Rng| {
        Duration::from_millis(rng.gen_range(HEAL_REDIAL_MS[0]..=HEAL_REDIAL_MS[1]))
    };
    loop {
        if let Some(h) = heals.as_mut() {
            h.borrow_and_update();
        }
        let dial = tokio::time::timeout(
            Duration::from_millis(DIAL_TIMEOUT_MS),
            turmoil::net::TcpStream::connect((peer.as_str(), NODE_PORT)),
        );
        let (stream, healed) = match heals.as_mut() {
            Some(h) => tokio::select! {
                d = dial => (d.ok().and_then(Result::ok), false),
                _ = h.changed() => (None, true),
            },
            None => (dial.await.ok().and_then(Result::ok), false),
        };
        if let Some(stream) = stream {
            n.connect(lossy(stream)).closed().await;
            if let Some(h) = heals.as_mut() {
                h.borrow_and_update();
            }
        }
        let pause = Duration::from_millis(REDIAL_MS);
        match heals.as_mut() {
            Some(_) if healed => tokio::time::sleep(heal_redial(&mut rng)).await,
            Some(h) => {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = h.changed() => tokio::time::sleep(heal_redial(&mut rng)).await,
                }
            }
            None => tokio::time::sleep(pause).await,
        }
    }
}

/// The checkers' bounds and the sampling interval of a scenario.
fn bounds_of(scenario: &Scenario) -> (Bounds, u64) {
    let lat_max = scenario.network.latency_ms[1];
    let bp = scenario.tracker.broadcast_period_ms;
    let sample_ms = (bp / 4).clamp(5, 250).max(scenario.network.tick_ms);
    let bounds = Bounds {
        convergence_ms: scenario
            .expect
            .converged_within_ms
            .unwrap_or_else(|| scenario.tracker.convergence_bound(lat_max) + link_recovery_ms(bp)),
        ghost_ms: scenario.tracker.down_period() + 3 * bp + 4 * lat_max,
        link_recovery_ms: link_recovery_ms(bp),
        sample_ms,
    };
    (bounds, sample_ms)
}

/// Every knob of a run, as printed before it starts (and stored in its transcript).
pub fn knobs(scenario: &Scenario, opts: &RunOptions) -> Vec<(String, String)> {
    let [lat_min, lat_max] = scenario.network.latency_ms;
    let bp = scenario.tracker.broadcast_period_ms;
    let (bounds, sample_ms) = bounds_of(scenario);
    let population_clients: usize = scenario.populations.iter().map(|p| p.count).sum();
    let mut knobs = vec![
        ("seed".to_string(), opts.seed.to_string()),
        ("nodes".into(), scenario.nodes.join(",")),
        (
            "clients".into(),
            (scenario.clients.len() + population_clients).to_string(),
        ),
        ("broadcast_period_ms".into(), bp.to_string()),
        (
            "down_period_ms".into(),
            scenario.tracker.down_period().to_string(),
        ),
        (
            "permdown_period_ms".into(),
            scenario.tracker.permdown_period_ms.to_string(),
        ),
        ("profile".into(), scenario.tracker.profile.to_string()),
        ("latency_ms".into(), format!("{lat_min}..{lat_max}")),
        ("loss".into(), scenario.network.loss.to_string()),
        (
            "client_loss".into(),
            scenario.network.client_loss.to_string(),
        ),
        ("tick_ms".into(), scenario.network.tick_ms.to_string()),
        (
            "convergence_bound_ms".into(),
            bounds.convergence_ms.to_string(),
        ),
        ("ghost_bound_ms".into(), bounds.ghost_ms.to_string()),
        ("sample_ms".into(), sample_ms.to_string()),
        (
            "node_mutation".into(),
            opts.planted
                .and_then(PlantedBug::node)
                .map(|m| m.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "server_mutation".into(),
            opts.planted
                .and_then(PlantedBug::server)
                .map(|m| m.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "client_mutation".into(),
            opts.planted
                .and_then(PlantedBug::client)
                .map(|m| m.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
    ];
    if opts.browser_reads != BrowserReads::default() {
        // only when not the default: the knob line of every earlier run stays as it was
        knobs.push(("browser_reads".into(), opts.browser_reads.name().into()));
    }
    if !scenario.populations.is_empty() {
        let counts: Vec<String> = scenario
            .populations
            .iter()
            .map(|p| p.count.to_string())
            .collect();
        knobs.push(("populations".into(), counts.join(",")));
    }
    knobs
}

/// Runs a scenario to its end and judges it.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> RunReport {
    crate::task_ids::align();
    let knobs = knobs(scenario, opts);
    let replayed = crate::population::replayed(scenario, opts.seed);
    // before expansion, which turns populations into plain clients
    let pipes = memory_links(scenario, opts.seed);
    if let (Some(pipes), BrowserReads::AbsorbAndWake) = (&pipes, opts.browser_reads) {
        pipes.wake_absorbed();
    }
    let memory_browsers = crate::pipe::MemoryBrowsers::of(&scenario.populations);
    let expanded;
    let (scenario, summaries) = if scenario.populations.is_empty() {
        (scenario, Vec::new())
    } else {
        expanded = crate::population::expand(scenario, opts.seed);
        (
            &expanded,
            crate::population::summaries(scenario, replayed.as_ref()),
        )
    };
    let shared: SharedRef = Arc::default();
    lock(&shared).replayed = replayed.clone();
    lock(&shared).loss_rate.set(scenario.network.loss);
    lock(&shared)
        .client_loss_rate
        .set(scenario.network.client_loss);
    if !opts.transcript {
        lock(&shared).events = crate::stream::EventStream::new(false);
    }
    if opts.node_trace {
        lock(&shared).node_trace = Some(Vec::new());
    }
    if scenario
        .timeline
        .iter()
        .any(|s| matches!(s.action, Action::DropMidJoin(_)))
    {
        lock(&shared).resets = Some(Default::default());
    }
    if scenario.tracker.tick_model == TickModelName::Drift {
        lock(&shared).heals = Some(tokio::sync::watch::channel(0).0);
    }
    lock(&shared).pipes = pipes;
    lock(&shared).memory_browsers = memory_browsers;
    let mut last_lists = BTreeMap::new();
    let [lat_min, lat_max] = scenario.network.latency_ms;
    let (bounds, sample_ms) = bounds_of(scenario);
    {
        let mut s = lock(&shared);
        let mut k = serde_json::Map::new();
        for (name, v) in &knobs {
            k.insert(name.clone(), Json::String(v.clone()));
        }
        s.events.push(
            0,
            Event::Run {
                title: scenario.title.clone(),
                knobs: k,
            },
        );
        for event in summaries {
            s.events.push(0, event);
        }
    }

    let limits = crate::capacity::TurmoilLimits::of(scenario);
    let mut sim = turmoil::Builder::new()
        .tcp_capacity(limits.tcp_capacity)
        .ephemeral_ports(limits.ephemeral_ports)
        .rng_seed(opts.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .tick_duration(Duration::from_millis(scenario.network.tick_ms))
        .simulation_duration(Duration::from_millis(scenario.duration_ms + 10_000))
        .min_message_latency(Duration::from_millis(lat_min))
        .max_message_latency(Duration::from_millis(lat_max))
        .build();

    for (i, name) in scenario.nodes.iter().enumerate() {
        node_host(
            &mut sim,
            name,
            i,
            scenario.nodes.clone(),
            scenario,
            opts,
            shared.clone(),
        );
    }
    clients::client_host(&mut sim, scenario, opts, shared.clone());
    let hosts = clients::HostNames::of(scenario, opts);
    for l in &scenario.network.links {
        let [x, y] = &l.between;
        // `clients` names every browsers' host; without clients there is nothing to slow down
        for (x, y) in hosts.pairs(x, y) {
            sim.set_link_latency(x, y, Duration::from_millis(l.latency_ms[0]));
            sim.set_link_max_message_latency(x, y, Duration::from_millis(l.latency_ms[1]));
        }
    }

    let pipes = lock(&shared).pipes.clone();
    let mut checkers = Checkers::new(bounds, scenario.expect.visible.clone())
        .replaying(lock(&shared).replayed.clone());
    let mut sampler = Sampler::new(sample_ms);
    let mut steps = scenario.timeline.iter().peekable();
    let mut cut: BTreeSet<(String, String)> = BTreeSet::new();
    let mut cut_oneway: BTreeSet<(String, String)> = BTreeSet::new();
    let mut held: BTreeSet<(String, String)> = BTreeSet::new();
    let mut mid_join = MidJoin::of(scenario, opts.seed);
    let mut internal: Option<String> = None;
    while (sim.elapsed().as_millis() as u64) < scenario.duration_ms {
        let now = sim.elapsed().as_millis() as u64;
        while let Some(step) = steps.next_if(|s| s.at_ms <= now) {
            {
                let action = step.action.label();
                tracing::debug!(t_ms = now, action = %action, "step");
                lock(&shared).events.push(now, Event::Step { action });
            }
            apply(
                &mut sim,
                &shared,
                &step.action,
                &mut cut,
                &mut cut_oneway,
                &mut held,
                &mut mid_join,
            );
        }
        sampler.before_step(now, &lock(&shared));
        if let Some(pipes) = &pipes {
            pipes.deliver(sim.elapsed());
        }
        if let Err(e) = sim.step() {
            tracing::error!(t_ms = now, error = %e, "a simulated host failed");
            internal = Some(e.to_string());
            break;
        }
        // the checkers read the stream as the run goes, so that nothing piles up in memory
        let drained = {
            let mut s = lock(&shared);
            let now = sim.elapsed().as_millis() as u64;
            if let Some(snap) = sampler.after_step(now, &s) {
                if opts.node_trace {
                    last_lists = snap.nodes.clone();
                }
                s.events.push(now, Event::Snapshot(snap));
            }
            s.events.drain()
        };
        feed(&mut checkers, drained);
    }
    let simulated_ms = sim.elapsed().as_millis() as u64;
    drop(sim);
    let mut s = lock(&shared);
    let drained = s.events.drain();
    feed(&mut checkers, drained);
    // the replayed clients' lists are kept for the replay's comparison; every other client's
    // list is compared with its node's one at a time, so no more than one is held at once
    let mut final_views: BTreeMap<String, PresenceList> = BTreeMap::new();
    // the list of the last client compared, reused for the next ones while they hold the same
    // presences (a topic's clients mostly do, and telling so costs no copy); the clients that
    // share it are compared with their nodes together. They are taken topic by topic: in name
    // order a population's neighbours are in different topics, and at 160 clients a topic
    // building every client's list took a tenth of a run (findings are sorted at the end, so
    // the order they are found in does not show)
    let mut others: Vec<(&str, &String, &phxsim_runtime::client::Client)> = Vec::new();
    for (name, c) in &s.clients {
        if replayed.as_ref().is_none_or(|r| r.contains(name)) {
            final_views.insert(name.clone(), clients::client_list(&c.client));
        } else {
            others.push((c.topic.as_str(), name, &c.client));
        }
    }
    // stable: within a topic, name order
    others.sort_by_key(|&(topic, _, _)| topic);
    let mut last: Option<(&phxsim_runtime::client::Client, PresenceList)> = None;
    let mut sharing: Vec<&str> = Vec::new();
    for (_, name, client) in others {
        match &last {
            Some((prev, _)) if prev.same_presences(client) => {}
            _ => {
                if let Some((_, view)) = &last {
                    checkers.client_views_of(&sharing, view);
                }
                sharing.clear();
                last = Some((client, clients::client_list(client)));
            }
        }
        sharing.push(name);
    }
    if let Some((_, view)) = &last {
        checkers.client_views_of(&sharing, view);
    }
    let (findings, converged_at_ms) = checkers.finish(&final_views);
    let mut failures: Vec<Finding> = findings
        .iter()
        .filter(|f| {
            let name = f.kind.name();
            !scenario.expect.allow.contains(name) && !scenario.expect.anomalies.contains(name)
        })
        .cloned()
        .collect();
    for expected in &scenario.expect.anomalies {
        if !findings.iter().any(|f| f.kind.name() == expected) {
            failures.push(Finding {
                at_ms: simulated_ms,
                kind: FindingKind::Expectation,
                subject: "scenario".into(),
                detail: format!("expected {expected} did not occur"),
            });
        }
    }
    if let Some(e) = &internal {
        failures.push(Finding {
            at_ms: simulated_ms,
            kind: FindingKind::Expectation,
            subject: "simulator".into(),
            detail: format!("internal error: {e}"),
        });
    }
    let verdict = if internal.is_some() {
        Verdict::Internal
    } else if failures.iter().any(|f| !f.kind.is_liveness()) {
        Verdict::Safety
    } else if !failures.is_empty() {
        Verdict::NoConvergence
    } else {
        Verdict::Pass
    };
    for f in &findings {
        s.events.push(
            f.at_ms,
            Event::Finding {
                kind: f.kind,
                subject: f.subject.clone(),
                detail: f.detail.clone(),
            },
        );
    }
    // the findings are printed only: the checkers are done
    s.events.drain();
    let transcript = if opts.transcript {
        s.events.take_printed()
    } else {
        Vec::new()
    };
    RunReport {
        title: scenario.title.clone(),
        seed: opts.seed,
        knobs,
        findings,
        failures,
        converged_at_ms,
        verdict,
        transcript,
        simulated_ms,
        node_messages: s.node_messages,
        memory_connections: pipes.as_ref().map_or(0, Pipes::connections),
        absorbed_segments: pipes.as_ref().map_or(0, Pipes::absorbed),
        node_trace: s.node_trace.take().unwrap_or_default(),
        final_lists: last_lists
            .iter()
            .map(|(n, snap)| (n.clone(), comparable_lists(&snap.lists)))
            .collect(),
    }
}

fn feed(checkers: &mut Checkers, lines: Vec<crate::event::Line>) {
    for line in lines {
        checkers.event(line.t, line.event);
    }
}

/// Tells the diallers that links may work again (`tick_model = "drift"`).
fn notify_heal(shared: &SharedRef) {
    if let Some(h) = &lock(shared).heals {
        h.send_modify(|n| *n += 1);
    }
}

/// Where `drop_mid_join` steps cut their join exchange: a delay after the join, drawn from a
/// stream of the run's seed of its own (so that a scenario without such steps draws nothing)
/// and uniform over the whole exchange from a fresh connection: TCP connect, WebSocket
/// upgrade, then `phx_join` and its reply and `presence_state`, three round trips of the
/// slowest link.
struct MidJoin {
    rng: ChaCha8Rng,
    window_ms: u64,
}

impl MidJoin {
    fn of(scenario: &Scenario, seed: u64) -> MidJoin {
        let slowest = scenario.network.slowest_ms();
        MidJoin {
            rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, "drop_mid_join")),
            window_ms: 6 * slowest + 2 * scenario.network.tick_ms,
        }
    }

    fn next(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(0..=self.window_ms))
    }
}

#[allow(clippy::too_many_arguments)] // the driver's state, passed apart so that each is borrowed alone
fn apply(
    sim: &mut turmoil::Sim<'_>,
    shared: &SharedRef,
    action: &Action,
    cut: &mut BTreeSet<(String, String)>,
    cut_oneway: &mut BTreeSet<(String, String)>,
    held: &mut BTreeSet<(String, String)>,
    mid_join: &mut MidJoin,
) {
    let client = |name: &str, ctl: ClientControl| {
        if let Some((tx, place)) = lock(shared).clients.get(name).map(|c| &c.ctl) {
            let _ = tx.send((*place, ctl));
        }
    };
    match action {
        Action::Join(c) => client(c, ClientControl::Join),
        Action::Leave(c) => client(c, ClientControl::Leave),
        Action::Update(c, meta) => client(c, ClientControl::Update(meta.clone())),
        Action::Disconnect(c) => client(c, ClientControl::Disconnect),
        Action::DropMidJoin(c) => client(c, ClientControl::DropMidJoin(mid_join.next())),
        Action::Reconnect(c) => client(c, ClientControl::Reconnect),
        Action::CrashChannel(c) => client(c, ClientControl::CrashChannel),
        Action::Partition(groups) => {
            for (i, g) in groups.iter().enumerate() {
                for other in groups.iter().skip(i + 1) {
                    for x in g {
                        for y in other {
                            sim.partition(x.as_str(), y.as_str());
                            cut.insert((x.clone(), y.clone()));
                        }
                    }
                }
            }
        }
        Action::Cut(links) => {
            for (x, y) in links {
                sim.partition(x.as_str(), y.as_str());
                cut.insert((x.clone(), y.clone()));
            }
        }
        Action::CutOneway(links) => {
            for (x, y) in links {
                sim.partition_oneway(x.as_str(), y.as_str());
                cut_oneway.insert((x.clone(), y.clone()));
            }
        }
        Action::Heal => {
            notify_heal(shared);
            for (x, y) in std::mem::take(cut) {
                sim.repair(x.as_str(), y.as_str());
            }
            for (x, y) in std::mem::take(cut_oneway) {
                sim.repair_oneway(x.as_str(), y.as_str());
            }
            for (x, y) in std::mem::take(held) {
                sim.release(x.as_str(), y.as_str());
            }
        }
        Action::Repair(links) => {
            notify_heal(shared);
            for (x, y) in links {
                sim.repair(x.as_str(), y.as_str());
                cut.remove(&(x.clone(), y.clone()));
                cut.remove(&(y.clone(), x.clone()));
            }
        }
        Action::Crash(n) => {
            sim.crash(n.as_str());
            let mut s = lock(shared);
            s.nodes.remove(n);
            s.node_ctl.remove(n);
        }
        Action::Restart(n) => {
            if !sim.is_host_running(n.as_str()) {
                sim.bounce(n.as_str());
            }
        }
        Action::Permdown(n) => {
            if let Some(tx) = lock(shared).node_ctl.get(n) {
                let _ = tx.send(NodeControl::GracefulPermdown);
            }
        }
        Action::Hold(links) => {
            for (x, y) in links {
                sim.hold(x.as_str(), y.as_str());
                held.insert((x.clone(), y.clone()));
            }
        }
        Action::Release(links) => {
            for (x, y) in links {
                sim.release(x.as_str(), y.as_str());
                held.remove(&(x.clone(), y.clone()));
            }
        }
        Action::Loss(rate) => lock(shared).loss_rate.set(*rate),
        Action::ClientLoss(rate) => lock(shared).client_loss_rate.set(*rate),
    }
}
