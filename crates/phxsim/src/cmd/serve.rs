//! `phxsim serve --nodes 3 --port 4000 [--broadcast-period MS] [--bind 127.0.0.1]
//! [--phoenix 1.7.21|1.8]`: a real
//! cluster in one process for real clients. Node `i` serves the reference channel at
//! `ws://BIND:(PORT+i-1)/socket/websocket`; the nodes talk to each other over loopback TCP.
//! One ready line per node on stdout once the cluster is meshed; Ctrl-C (SIGINT) stops it.
//!
//! Production, not simulation: `phx_ref`s come from OS entropy and time from the real clock.

use super::serve_frames;
use super::{bad_input, outln};
use anyhow::{Context as _, bail};
use phxsim_runtime::server::{
    ConnectionEnd, PhoenixRules, Server, ServerConfig, ServerEvent, ServerMutation,
};
use phxsim_runtime::{Coalesce, Node, NodeConfig, NodeEvent};
use phxsim_shard::{TrackerConfig, TrackerEvent};
use phxsim_sim::planted::PlantedBug;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

/// Exit code for bad flags.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many nodes (1 to 32).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// WebSocket port of node 1; node i listens on PORT+i-1.
    #[arg(long, default_value_t = 4000)]
    pub port: u16,
    /// Tracker broadcast period in ms (Phoenix: 1500).
    #[arg(long = "broadcast-period", default_value_t = 1500)]
    pub broadcast_period: u64,
    /// Address the WebSocket endpoints listen on. Anything but loopback exposes the cluster
    /// to the network, so it must be asked for explicitly.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Idle timeout of client sockets in ms (Phoenix: 60 000).
    #[arg(long = "idle-timeout", default_value_t = 60_000)]
    pub idle_timeout: u64,
    /// Plant a known server bug, for proving conformance checks (`phxsim mutations` lists
    /// every planted bug; serve takes those of the server layer).
    #[arg(long, value_name = "NAME")]
    pub mutate: Option<PlantedBug>,
    /// Which Phoenix to behave as where versions differ: 1.7.21 (the recorded reference: no
    /// channel cap, stale pushes answered, numeric refs echoed, a plain GET gets 400) or 1.8.
    #[arg(long, default_value = "1.7.21", value_parser = ["1.7.21", "1.8"])]
    pub phoenix: String,
    /// Bytes one socket may have queued for writing; a client that does not read and goes
    /// past it is closed with 1013, and its presences leave.
    #[arg(long = "max-outbound-bytes", default_value_t = phxsim_runtime::server::DEFAULT_MAX_OUTBOUND_BYTES)]
    pub max_outbound_bytes: usize,
    /// Batch a big topic's presence_diffs: after a diff, the topic's next changes wait 20 µs
    /// per subscriber, at most this many ms, and go out merged into one diff (a change after a
    /// quiet window goes out at once, and a topic of a few subscribers waits microseconds).
    /// 0 sends one diff per change, as Phoenix does, which at N sockets on one topic is N²
    /// frames.
    #[arg(long = "coalesce-max-ms", default_value_t = 250)]
    pub coalesce_max_ms: u64,
    /// Record every frame between the cluster and its clients here, as JSON lines in the shape
    /// of the recorded Phoenix sessions (`dir` send/recv from the client's side, `node`, `conn`).
    #[arg(long)]
    pub frames: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(1..=32).contains(&args.nodes) {
        eprintln!("phxsim serve: --nodes must be between 1 and 32");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    if u32::from(args.port) + u32::from(args.nodes) - 1 > u32::from(u16::MAX) || args.port == 0 {
        eprintln!(
            "phxsim serve: ports {}..{} do not fit",
            args.port,
            u32::from(args.port) + u32::from(args.nodes) - 1
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let mutation = match args.mutate {
        None => None,
        Some(PlantedBug::Server(m)) => Some(m),
        Some(b) => {
            let known: Vec<&str> = PlantedBug::ALL
                .iter()
                .filter(|b| b.server().is_some())
                .map(|b| b.name())
                .collect();
            eprintln!(
                "phxsim serve: --mutate {b} is not a server bug; serve plants only: {}",
                known.join(", ")
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    if args.idle_timeout == 0 {
        eprintln!("phxsim serve: --idle-timeout must be at least 1 ms (Phoenix: 60000)");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    if let Err(e) = TrackerConfig::with_broadcast_period(args.broadcast_period).validate() {
        eprintln!("phxsim serve: --broadcast-period: {e}");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let frames = match &args.frames {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("phxsim serve: --frames {}: {e}", path.display());
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        },
    };
    crate::alloc_counter::no_huge_pages();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args, mutation, frames))
}

/// Pending connections the kernel queues for `accept` (capped by `net.core.somaxconn`).
/// `TcpListener::bind` asks for 128: a burst of a few hundred connects (a reconnect storm, a
/// load test) overflows that queue, the kernel drops the handshake's last ACK, and each
/// dropped client waits for a SYN-ACK retransmission, 1 s later (measured: 200 sockets joined
/// in 23 ms, or in 1 040 ms when 13 of them overflowed). Bandit's listener asks for 1024.
const LISTEN_BACKLOG: u32 = 4096;

/// A WebSocket endpoint's listener, with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // as `TcpListener::bind` does: a restarted server may take its port back at once
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn serve(
    args: Args,
    mutation: Option<ServerMutation>,
    frames: Option<std::io::BufWriter<std::fs::File>>,
) -> anyhow::Result<ExitCode> {
    // The endpoints first: a taken port fails the command before anything starts.
    let mut endpoints = Vec::new();
    for i in 0..args.nodes {
        let addr = SocketAddr::new(args.bind, args.port + i);
        // a port in use, a privileged port or an address not on this machine: bad input
        let listener = match listen(addr) {
            Ok(l) => l,
            Err(e) => {
                return bad_input(format!(
                    "cannot listen on {addr}: {e} (node {} of {}; pick other ports with --port)",
                    i + 1,
                    args.nodes
                ));
            }
        };
        endpoints.push((addr, listener));
    }
    let phoenix = args
        .phoenix
        .parse::<PhoenixRules>()
        .map_err(anyhow::Error::msg)?;
    let server_cfg = ServerConfig {
        idle_timeout: Duration::from_millis(args.idle_timeout),
        phoenix,
        max_outbound_bytes: args.max_outbound_bytes,
        mutation,
        ..ServerConfig::default()
    };
    let mut nodes = Vec::new();
    let mut link_addrs = Vec::new();
    let mut events = Vec::new();
    for i in 1..=args.nodes {
        let node = Node::start(NodeConfig {
            tracker: TrackerConfig::with_broadcast_period(args.broadcast_period),
            coalesce: (args.coalesce_max_ms > 0).then(|| Coalesce {
                max_window: Duration::from_millis(args.coalesce_max_ms),
                ..Coalesce::default()
            }),
            ..NodeConfig::new(format!("n{i}"), 1)
        })
        .context("starting a node")?;
        // Node links stay on loopback whatever --bind says: they carry no authentication.
        let links = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("listening for node links")?;
        link_addrs.push(links.local_addr()?);
        node.listen(links);
        events.push(node.observe().await?);
        nodes.push(node);
    }
    for (i, node) in nodes.iter().enumerate() {
        for addr in link_addrs.iter().skip(i + 1) {
            node.connect_tcp(*addr)
                .await
                .with_context(|| format!("linking {} to {addr}", node.name()))?;
        }
    }
    // Ready means meshed: every node has seen every other come up. An idle shard heartbeats
    // at least every few broadcast periods, so this is bounded.
    let mesh_limit =
        Duration::from_millis(args.broadcast_period.saturating_mul(30)) + Duration::from_secs(5);
    let peers = nodes.len() - 1;
    for (node, ev) in nodes.iter().zip(events.iter_mut()) {
        let meshed = tokio::time::timeout(mesh_limit, async {
            let mut up = std::collections::BTreeSet::new();
            while up.len() < peers {
                match ev.recv().await {
                    Some(NodeEvent::Tracker(TrackerEvent::ReplicaUp { replica, .. })) => {
                        up.insert(replica.name.clone());
                    }
                    Some(_) => {}
                    None => return false,
                }
            }
            true
        })
        .await;
        if meshed != Ok(true) {
            bail!(
                "{} did not see every peer come up within {mesh_limit:?}",
                node.name()
            );
        }
    }
    let (record, recorder) = match frames {
        Some(out) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (
                Some(tx),
                Some(tokio::spawn(serve_frames::write_all(out, rx))),
            )
        }
        None => (None, None),
    };
    let mut tasks = Vec::new();
    for (node, (addr, listener)) in nodes.iter().zip(endpoints) {
        let server = Server::new(node.clone(), server_cfg.clone());
        // Frames are observed only for --frames: copying every frame for nothing cost more
        // than serving it at 10 000 sockets.
        let events = if record.is_some() {
            server.observe()
        } else {
            server.observe_connections()
        };
        tasks.push(observe(node.name().to_owned(), events, record.clone()));
        tasks.push(server.listen(listener));
        outln!("node {} ready ws://{addr}/socket/websocket", node.name())?;
    }
    std::io::stdout().flush().ok();
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("phxsim serve: stopping");
    for t in &tasks {
        t.abort();
    }
    for node in &nodes {
        node.crash();
    }
    // The observers are gone with their senders: the recorder writes what is queued and ends.
    drop(record);
    if let Some(r) = recorder {
        match tokio::time::timeout(Duration::from_secs(5), r).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("phxsim serve: writing --frames: {e}"),
            Ok(Err(e)) => eprintln!("phxsim serve: the --frames writer failed: {e}"),
            Err(_) => eprintln!("phxsim serve: the --frames writer did not finish within 5 s"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs every connection the server ended on its own, with the reason (stderr), and hands
/// every event to the `--frames` recorder if there is one.
fn observe(
    node: String,
    mut events: tokio::sync::mpsc::UnboundedReceiver<ServerEvent>,
    record: Option<tokio::sync::mpsc::UnboundedSender<serve_frames::Observed>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Some(tx) = &record {
                let _ = tx.send(serve_frames::Observed {
                    node: node.clone(),
                    event: e.clone(),
                });
            }
            if let ServerEvent::Ended { conn, end } = e {
                match end {
                    ConnectionEnd::ServerClosed { code, reason } => {
                        eprintln!(
                            "{node}: connection {conn} closed by the server ({code}): {reason}"
                        );
                    }
                    ConnectionEnd::Refused { status, reason } => {
                        eprintln!("{node}: connection {conn} refused ({status}): {reason}");
                    }
                    _ => {}
                }
            }
        }
    })
}
