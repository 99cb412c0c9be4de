//! `phxsim bench-ws --clients N [--rounds R]`: WebSocket fan-out of one node.
//!
//! One node with two endpoints on 127.0.0.1: N listener clients join `room:bench` as observers
//! (they subscribe but are not tracked, so joining costs O(N) rather than O(N²) diffs), and one
//! actor client joins the same topic normally. Each round the actor pushes `update_meta`; the
//! latency of a round at a listener is the time from just before that push to the moment the
//! listener has applied the resulting `presence_diff` (its client stamps the event).
//!
//! The clients run in a child process (this command again, with `--child`), so that each side
//! stays within the file-descriptor limit (10 000 connections are 20 000 descriptors) and so
//! that memory per connection is measured for the server alone: the server process's RSS growth
//! while the listeners connect, divided by N. The child reports its own side the same way.
//!
//! allow-nondeterminism: benchmark of real sockets. It reads the real clock (tokio's, not
//! paused) and /proc, and never runs inside a simulation.

use anyhow::{Context as _, bail};
use phxsim_runtime::client::{Client, ClientConfig, ClientEvent, PresenceOutcome};
use phxsim_runtime::server::{Server, ServerConfig};
use phxsim_runtime::{Node, NodeConfig};
use serde_json::{Value as Json, json};
use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

const TOPIC: &str = "room:bench";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Listener connections on the topic.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Presence changes measured (each reaches every listener).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Listeners connecting at once while setting up.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Internal: run the client side against `OBSERVER_ADDR,ACTOR_ADDR`.
    #[arg(long, hide = true)]
    pub child: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.clients == 0 || args.rounds == 0 || args.batch == 0 {
        eprintln!("phxsim bench-ws: --clients, --rounds and --batch must be positive");
        return Ok(ExitCode::from(2));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match args.child.clone() {
        None => runtime.block_on(server_side(args)),
        Some(addrs) => runtime.block_on(client_side(args, &addrs)),
    }
}

/// Resident set size of this process in KiB, from /proc/self/status.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn endpoint(node: &Node, cfg: ServerConfig) -> anyhow::Result<SocketAddr> {
    // A deep backlog: batches of connects arrive together.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let listener: TcpListener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    Server::new(node.clone(), cfg).listen(listener);
    Ok(addr)
}

fn client_cfg(addr: SocketAddr, user: &str, seed: u64) -> ClientConfig {
    ClientConfig {
        seed,
        // Long enough that no heartbeat falls inside a measured round.
        heartbeat_interval: Duration::from_secs(600),
        timeout: Duration::from_secs(60),
        ..ClientConfig::new(format!("ws://{addr}/socket/websocket"), user, TOPIC)
    }
}

/// The `round` of the actor's meta in a diff payload, if this diff carries one.
fn round_of(payload: &Json) -> Option<u64> {
    payload["joins"]["actor"]["metas"]
        .as_array()?
        .iter()
        .find_map(|m| m["round"].as_u64())
}

/// The parent: the node and its two endpoints; the clients run in a child process.
async fn server_side(args: Args) -> anyhow::Result<ExitCode> {
    let node = Node::start(NodeConfig {
        seed: Some(1),
        ..NodeConfig::new("bench", 1)
    })
    .context("starting the node")?;
    let observers = endpoint(
        &node,
        ServerConfig {
            track_on_join: false,
            ..ServerConfig::default()
        },
    )
    .await?;
    let actor = endpoint(&node, ServerConfig::default()).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_before = rss_kib();
    let exe = std::env::current_exe().context("locating phxsim")?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench-ws", "--clients", &args.clients.to_string()])
        .args([
            "--rounds",
            &args.rounds.to_string(),
            "--batch",
            &args.batch.to_string(),
        ])
        .args(["--child", &format!("{observers},{actor}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the client process")?;
    let mut stdin = child.stdin.take().context("child stdin")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut rss_after = None;
    while let Some(line) = lines.next_line().await? {
        if line == "connected" {
            // Let the allocator settle before reading RSS.
            tokio::time::sleep(Duration::from_millis(300)).await;
            rss_after = rss_kib();
            stdin.write_all(b"go\n").await?;
            stdin.flush().await?;
        } else {
            println!("{line}");
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("the client process failed: {status}");
    }
    match (rss_before, rss_after) {
        (Some(b), Some(a)) => {
            let per = a.saturating_sub(b) as f64 / args.clients as f64;
            println!("server rss         {b} KiB -> {a} KiB");
            println!("server memory/conn {per:.1} KiB");
        }
        _ => println!("server memory/conn n/a (no /proc/self/status)"),
    }
    node.crash();
    Ok(ExitCode::SUCCESS)
}

/// The child: N observer listeners and the actor, measuring on one clock.
async fn client_side(args: Args, addrs: &str) -> anyhow::Result<ExitCode> {
    let (observers, actor_addr) = addrs
        .split_once(',')
        .context("--child wants OBSERVER_ADDR,ACTOR_ADDR")?;
    let observers: SocketAddr = observers.parse()?;
    let actor_addr: SocketAddr = actor_addr.parse()?;
    let rss_before = rss_kib();
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut listeners = Vec::with_capacity(args.clients);
    let connect_started = Instant::now();
    let mut i = 0;
    while i < args.clients {
        let end = (i + args.batch).min(args.clients);
        for n in i..end {
            let cfg = client_cfg(observers, &format!("l{n}"), n as u64);
            let client = Client::start_tcp(cfg, observers);
            let mut events = client.subscribe();
            let tx = arrivals_tx.clone();
            // Forward only the arrival stamp of each round's diff; drop the rest at once.
            tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    if let ClientEvent::Presence {
                        payload,
                        outcome: PresenceOutcome::Applied,
                        ..
                    } = &e.event
                        && let Some(round) = round_of(payload)
                    {
                        let _ = tx.send((round, e.at));
                    }
                }
            });
            listeners.push(client);
        }
        for (n, c) in listeners.iter().enumerate().skip(i) {
            if c.wait_for(Duration::from_secs(60), |v| v.joined())
                .await
                .is_err()
            {
                bail!("listener {n} did not join within 60 s (file descriptor limit?)");
            }
        }
        i = end;
    }
    let connect_time = connect_started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss_kib();
    println!("connected");
    let mut go = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut go)
        .await?;

    let actor = Client::start_tcp(client_cfg(actor_addr, "actor", u64::MAX), actor_addr);
    actor
        .wait_for(Duration::from_secs(30), |v| v.joined())
        .await
        .map_err(|_| anyhow::anyhow!("the actor did not join"))?;
    // Its join diff reaches the listeners too; let it pass before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while arrivals.try_recv().is_ok() {}

    let mut latencies: Vec<Duration> = Vec::with_capacity(args.clients * args.rounds);
    let mut last_client = Vec::new();
    for round in 1..=args.rounds as u64 {
        let t0 = Instant::now();
        actor.update_meta(json!({"round": round}));
        let mut got = 0;
        let mut worst = Duration::ZERO;
        while got < args.clients {
            match tokio::time::timeout(Duration::from_secs(60), arrivals.recv()).await {
                Ok(Some((r, at))) if r == round => {
                    let l = at.saturating_duration_since(t0);
                    worst = worst.max(l);
                    latencies.push(l);
                    got += 1;
                }
                Ok(Some(_)) => {}
                _ => bail!(
                    "round {round}: only {got} of {} listeners got the diff within 60 s",
                    args.clients
                ),
            }
        }
        last_client.push(worst);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    last_client.sort();
    let pct = |v: &[Duration], p: f64| {
        let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(idx).copied().unwrap_or_default()
    };
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!("clients            {}", args.clients);
    println!("rounds             {}", args.rounds);
    println!("samples            {}", latencies.len());
    println!("connect+join all   {}", ms(connect_time));
    println!("latency p50        {}", ms(pct(&latencies, 0.50)));
    println!("latency p90        {}", ms(pct(&latencies, 0.90)));
    println!("latency p99        {}", ms(pct(&latencies, 0.99)));
    println!("latency max        {}", ms(pct(&latencies, 1.0)));
    println!("last client, median round {}", ms(pct(&last_client, 0.5)));
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        let per = a.saturating_sub(b) as f64 / args.clients as f64;
        println!("client rss         {b} KiB -> {a} KiB");
        println!("client memory/conn {per:.1} KiB");
    }
    for c in &listeners {
        c.stop();
    }
    actor.stop();
    Ok(ExitCode::SUCCESS)
}
