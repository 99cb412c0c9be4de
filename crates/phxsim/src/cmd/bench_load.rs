//! `phxsim bench-load --url WS_URL [--url ...] --sockets N`: a load generator for any
//! Phoenix-protocol server with the reference `room:*` channel (`phxsim serve`, the real
//! Phoenix reference server, or your own app).
//!
//! Phases, on one topic (or `--topics K`: socket i joins `TOPIC:<i mod K>`, to hold many
//! sockets without every one of them following every other):
//! 1. join: N sockets connect (spread round-robin over the URLs, one URL per node) and join;
//!    reports the time until all are joined, and the server's memory per socket when its pid
//!    is given (`--server-pid`, RSS from /proc).
//! 2. latency: socket 0 pushes `update_meta` `--rounds` times; each round's diff latency is
//!    the time from the push to the moment each socket has read the diff (p50/p99/max).
//! 3. churn for `--duration` seconds at `--churn-rate` operations per second: updates,
//!    leave + rejoin, abrupt closes (the TCP connection dropped without a close frame) and
//!    reconnects, and sockets that drop right after sending their join (mid-join).
//! 4. ghost check: after `--settle-ms`, a fresh observer socket on every URL joins and its
//!    `presence_state` must list exactly the sockets that are joined. Then every socket closes
//!    abruptly and, after settling again, the observers must see nobody.
//!
//! Each presence key is unique per connection (`u<socket>.<generation>`), so a ghost is a key
//! that no live socket holds. Exit status 1 when a ghost or a missing presence is found.
//!
//! allow-nondeterminism: a benchmark of real sockets; it reads the real clock and /proc and
//! never runs inside a simulation.

mod wire;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Ws;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// WebSocket endpoint, e.g. ws://127.0.0.1:4000/socket/websocket; repeat it for more
    /// nodes (sockets are spread round-robin).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Sockets held open (each joins the topic and is tracked).
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    /// The topic every socket joins.
    #[arg(long, default_value = "room:load")]
    pub topic: String,
    /// Spread the sockets over this many topics (`TOPIC:0` ... `TOPIC:K-1`); 1 keeps them
    /// all on `TOPIC`. The latency rounds are measured on socket 0's topic.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Connects in flight at once while ramping up.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Presence changes whose latency is measured.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Milliseconds between the end of one latency round and the next push. `phxsim serve`
    /// batches a big topic's diffs (`--coalesce-max-ms`): a change within that window of the
    /// previous diff waits for the window's end, so a gap shorter than the window measures
    /// the batching too, and a longer one the fan-out of a change alone.
    #[arg(long = "round-gap-ms", default_value_t = 50)]
    pub round_gap_ms: u64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Churn operations per second.
    #[arg(long = "churn-rate", default_value_t = 200)]
    pub churn_rate: u64,
    /// Milliseconds to let the cluster settle before each ghost check.
    #[arg(long = "settle-ms", default_value_t = 3000)]
    pub settle_ms: u64,
    /// The server's process id: its RSS gives the memory per socket.
    #[arg(long = "server-pid")]
    pub server_pid: Option<u32>,
    /// How long any one wait may take (a join, a round, a check) before it counts as failed.
    #[arg(long = "timeout-s", default_value_t = 120)]
    pub timeout_s: u64,
    /// Seed of the churn schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// phoenix.js's default heartbeat interval.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// What the coordinator tells one socket.
enum Ctl {
    Update(u64),
    /// Presence change with a `mark`: the latency probe.
    Mark(u64),
    Leave,
    Join,
    /// Drop the TCP connection without a close frame.
    Abort,
    /// Report the presence key if joined (no join pending), else `None` or wait.
    Status(oneshot::Sender<Status>),
}

#[derive(Debug)]
enum Status {
    Joined(String),
    NotJoined,
}

/// What sockets report.
enum Ev {
    Joined { at: Instant },
    Mark { mark: u64, at: Instant },
    Error(String),
}

struct Sock {
    ctl: mpsc::UnboundedSender<Ctl>,
    generation: u64,
}

/// The topic socket `id` joins.
fn topic_of(args: &Args, id: usize) -> String {
    if args.topics <= 1 {
        args.topic.clone()
    } else {
        format!("{}:{}", args.topic, id % args.topics)
    }
}

fn url_for(base: &str, user: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}vsn=2.0.0&user_id={user}")
}

/// Raises the soft file-descriptor limit to the hard one: every socket is a descriptor.
fn raise_fd_limit(want: u64) -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum)
        && cur < max
    {
        lim.current = Some(max);
        setrlimit(Resource::Nofile, lim).context("raising RLIMIT_NOFILE")?;
    }
    let have = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if have < want {
        eprintln!(
            "phxsim bench-load: warning: {want} descriptors wanted, the limit is {have} (raise `ulimit -Hn`)"
        );
    }
    Ok(have)
}

/// Resident set size of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `mark` of the first presence in a diff's joins, without parsing the whole frame (the
/// sockets read O(N²) bytes of diffs while N sockets join, none with a mark: the search is
/// memchr's, several times faster than `str::find` over a diff that has none).
fn mark_in(text: &str) -> Option<u64> {
    use memchr::memmem::find;
    let joins = find(text.as_bytes(), b"\"joins\":")?;
    let rest = &text.as_bytes()[joins..];
    let at = find(rest, b"\"mark\":")? + 7;
    let digits: String = rest[at..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .map(|c| char::from(*c))
        .collect();
    digits.parse().ok()
}

/// Where one socket reports, tagged with its id (no task of its own in between: at 10 000
/// sockets a relay task per socket doubled the client's wake-ups per frame).
struct Events {
    id: usize,
    tx: mpsc::UnboundedSender<(usize, Ev)>,
}

impl Events {
    fn send(&self, e: Ev) -> Result<(), mpsc::error::SendError<(usize, Ev)>> {
        self.tx.send((self.id, e))
    }
}

/// The `event` of a V2 text frame (`[join_ref, ref, topic, event, payload]`), read from the
/// head of the frame only: the sockets read O(N²) bytes of states and diffs in a join storm,
/// and scanning whole frames for event names cost the client more than the server.
fn event_of(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = 1; // after '['
    if b.first() != Some(&b'[') {
        return None;
    }
    for field in 0..4 {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        let start = i;
        match b.get(i)? {
            b'n' => i += 4, // null
            b'"' => {
                i += 1;
                while *b.get(i)? != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                if field == 3 {
                    return text.get(start + 1..i - 1);
                }
            }
            // a numeric ref
            _ => {
                while b.get(i).is_some_and(|c| *c != b',') {
                    i += 1;
                }
            }
        }
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
    None
}

/// Opens a WebSocket as a browser does (no Nagle delay), with a small read buffer:
/// tungstenite zeroes its whole read buffer (128 KiB by default) before every read attempt,
/// which at 10 000 sockets was the client's largest cost per frame.
async fn connect(
    url: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024);
    tokio_tungstenite::connect_async_with_config(url, Some(cfg), true)
        .await
        .map(|(ws, _)| ws)
}

/// One socket: connects, joins, then follows the coordinator until aborted.
#[allow(clippy::too_many_lines)]
async fn socket(
    url: String,
    user: String,
    topic: String,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    ev: Events,
    limit: Duration,
    seed: u64,
) {
    let connected = tokio::time::timeout(limit, connect(&url)).await;
    // The handshake is tungstenite's; frames are read and written by `wire` (see there why).
    // A server sends nothing after its 101 until the client's first frame, so nothing read
    // ahead is lost with tungstenite's buffer.
    let mut stream = match connected {
        Ok(Ok(ws)) => ws.into_inner(),
        Ok(Err(e)) => {
            let _ = ev.send(Ev::Error(format!("connect {user}: {e}")));
            return;
        }
        Err(_) => {
            let _ = ev.send(Ev::Error(format!("connect {user}: timed out")));
            return;
        }
    };
    let mut reader = wire::FrameReader::default();
    // Client frames are masked (RFC 6455 §5.3); the masks come from the run's seed.
    let mut masks = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut next_ref = 1u64;
    let mut join_ref;
    let mut pending_join: Option<String>;
    let mut joined = false;
    let mut waiting: Vec<oneshot::Sender<Status>> = Vec::new();
    macro_rules! write_text {
        ($frame:expr, $what:expr) => {{
            let frame: Json = $frame;
            if wire::write_text(&mut stream, frame.to_string(), masks.r#gen())
                .await
                .is_err()
            {
                let _ = ev.send(Ev::Error(format!("{user}: {} write failed", $what)));
                return;
            }
        }};
    }
    macro_rules! push {
        ($event:expr, $payload:expr) => {{
            next_ref += 1;
            write_text!(
                serde_json::json!([join_ref, next_ref.to_string(), topic, $event, $payload]),
                $event
            );
        }};
    }
    macro_rules! join {
        () => {{
            next_ref += 1;
            join_ref = next_ref.to_string();
            write_text!(
                serde_json::json!([join_ref, join_ref, topic, "phx_join", {}]),
                "join"
            );
            pending_join = Some(join_ref.clone());
        }};
    }
    join!();
    // phoenix.js's heartbeat: without it the server's idle timeout (60 s) closes the socket.
    let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                next_ref += 1;
                write_text!(
                    serde_json::json!([null, next_ref.to_string(), "phoenix", "heartbeat", {}]),
                    "heartbeat"
                );
            }
            m = reader.next(&mut stream) => {
                let text = match m {
                    Ok(Some(wire::Incoming::Text(t))) => t,
                    Ok(Some(wire::Incoming::Close(code))) => {
                        let _ = ev.send(Ev::Error(format!("{user}: closed by the server: {code:?}")));
                        return;
                    }
                    Ok(Some(wire::Incoming::Ping(payload))) => {
                        if wire::write_pong(&mut stream, payload, masks.r#gen()).await.is_err() {
                            let _ = ev.send(Ev::Error(format!("{user}: pong write failed")));
                            return;
                        }
                        continue;
                    }
                    Ok(Some(wire::Incoming::State | wire::Incoming::Other)) => continue,
                    Err(e) => {
                        let _ = ev.send(Ev::Error(format!("{user}: {e}")));
                        return;
                    }
                    Ok(None) => {
                        let _ = ev.send(Ev::Error(format!("{user}: connection ended")));
                        return;
                    }
                };
                let at = Instant::now();
                let text = text.as_str();
                let event = event_of(text).unwrap_or("");
                if let Some(jr) = &pending_join
                    && event == "phx_reply"
                    && text.starts_with(&format!("[\"{jr}\",\"{jr}\""))
                {
                    pending_join = None;
                    if text.contains("\"status\":\"ok\"") {
                        joined = true;
                        let _ = ev.send(Ev::Joined { at });
                    } else {
                        let _ = ev.send(Ev::Error(format!("{user}: join refused: {text}")));
                    }
                    for w in waiting.drain(..) {
                        let _ = w.send(if joined { Status::Joined(user.clone()) } else { Status::NotJoined });
                    }
                } else if joined && event == "phx_error" {
                    // The server's channel crashed: the presence is gone, the socket stays.
                    joined = false;
                    let _ = ev.send(Ev::Error(format!("{user}: channel crashed (phx_error)")));
                } else if event == "presence_diff"
                    && let Some(mark) = mark_in(text)
                {
                    let _ = ev.send(Ev::Mark { mark, at });
                }
            }
            c = ctl.recv() => match c {
                None | Some(Ctl::Abort) => return,
                Some(Ctl::Update(n)) => {
                    if joined {
                        push!("update_meta", serde_json::json!({"n": n}));
                    }
                }
                Some(Ctl::Mark(mark)) => {
                    push!("update_meta", serde_json::json!({"mark": mark}));
                }
                Some(Ctl::Leave) => {
                    if joined && pending_join.is_none() {
                        push!("phx_leave", serde_json::json!({}));
                        joined = false;
                    }
                }
                Some(Ctl::Join) => {
                    if !joined && pending_join.is_none() {
                        join!();
                    }
                }
                Some(Ctl::Status(tx)) => {
                    if pending_join.is_some() {
                        waiting.push(tx);
                    } else if joined {
                        let _ = tx.send(Status::Joined(user.clone()));
                    } else {
                        let _ = tx.send(Status::NotJoined);
                    }
                }
            }
        }
    }
}

/// Sends its join and drops the connection at once: the issue's mid-join cut.
async fn cut_mid_join(url: String, topic: String, limit: Duration) -> Result<(), String> {
    let mut ws = tokio::time::timeout(limit, connect(&url))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let frame = serde_json::json!(["1", "1", topic, "phx_join", {}]);
    ws.send(Ws::text(frame.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    drop(ws);
    Ok(())
}

/// The keys a fresh observer on `url` sees in its `presence_state` (its own left out).
async fn observe(
    url: &str,
    topic: &str,
    name: &str,
    limit: Duration,
) -> anyhow::Result<BTreeSet<String>> {
    let mut ws = tokio::time::timeout(limit, connect(&url_for(url, name)))
        .await
        .context("observer connect timed out")??;
    let frame = serde_json::json!(["1", "1", topic, "phx_join", {}]);
    ws.send(Ws::text(frame.to_string())).await?;
    let state = tokio::time::timeout(limit, async {
        while let Some(m) = ws.next().await {
            if let Ws::Text(t) = m? {
                let v: Json = serde_json::from_str(t.as_str())?;
                if v[3] == "presence_state" {
                    return Ok::<Json, anyhow::Error>(v[4].clone());
                }
            }
        }
        bail!("observer connection ended before presence_state")
    })
    .await
    .context("no presence_state in time")??;
    let _ = ws.close(None).await;
    Ok(state
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| !k.starts_with("observer"))
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.sockets < 2 || args.rounds == 0 || args.concurrency == 0 {
        eprintln!(
            "phxsim bench-load: --sockets must be at least 2, --rounds and --concurrency positive"
        );
        return Ok(ExitCode::from(2));
    }
    for u in &args.urls {
        if !(u.starts_with("ws://") || u.starts_with("wss://")) {
            eprintln!("phxsim bench-load: --url {u:?} is not a ws:// or wss:// URL");
            return Ok(ExitCode::from(2));
        }
    }
    raise_fd_limit(args.sockets as u64 + 256)?;
    crate::alloc_counter::no_huge_pages();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(load(args))
}

struct Run {
    args: Args,
    limit: Duration,
    socks: Vec<Sock>,
    ev_tx: mpsc::UnboundedSender<(usize, Ev)>,
    ev_rx: mpsc::UnboundedReceiver<(usize, Ev)>,
    errors: BTreeMap<String, usize>,
}

impl Run {
    fn spawn(&mut self, id: usize) {
        let generation = self.socks.get(id).map_or(0, |s| s.generation + 1);
        let (tx, rx) = mpsc::unbounded_channel();
        let user = format!("u{id}.{generation}");
        let url = url_for(&self.args.urls[id % self.args.urls.len()], &user);
        tokio::spawn(socket(
            url,
            user,
            topic_of(&self.args, id),
            rx,
            Events {
                id,
                tx: self.ev_tx.clone(),
            },
            self.limit,
            self.args.seed ^ ((id as u64) << 20) ^ generation,
        ));
        let s = Sock {
            ctl: tx,
            generation,
        };
        if id < self.socks.len() {
            self.socks[id] = s;
        } else {
            self.socks.push(s);
        }
    }

    fn error(&mut self, e: String) {
        // Group errors by their kind (the text after the user).
        let kind = e.split_once(": ").map_or(e.as_str(), |(_, k)| k).to_owned();
        let kind: String = kind.chars().take(80).collect();
        *self.errors.entry(kind).or_default() += 1;
    }

    /// The keys of every joined socket by topic, once no join is pending.
    async fn expected(&mut self) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
        let mut keys: BTreeMap<String, BTreeSet<String>> = (0..self.args.topics.max(1))
            .map(|i| (topic_of(&self.args, i), BTreeSet::new()))
            .collect();
        for (id, s) in self.socks.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            if s.ctl.send(Ctl::Status(tx)).is_err() {
                continue; // the socket is gone (its error was counted)
            }
            match tokio::time::timeout(self.limit, rx).await {
                Ok(Ok(Status::Joined(k))) => {
                    keys.entry(topic_of(&self.args, id)).or_default().insert(k);
                }
                Ok(Ok(Status::NotJoined) | Err(_)) => {}
                Err(_) => bail!("a socket did not report its status in time"),
            }
        }
        Ok(keys)
    }

    /// Observers on every URL and topic compare what they see with `expected`; returns
    /// (ghosts, missing).
    async fn check(
        &self,
        expected: &BTreeMap<String, BTreeSet<String>>,
        label: &str,
    ) -> anyhow::Result<(usize, usize)> {
        let (mut ghosts, mut missing) = (0, 0);
        for (i, url) in self.args.urls.iter().enumerate() {
            let (mut listed, mut wanted, mut g_all, mut m_all) = (0, 0, Vec::new(), 0);
            for (t, (topic, keys)) in expected.iter().enumerate() {
                let seen =
                    observe(url, topic, &format!("observer.{label}.{i}.{t}"), self.limit).await?;
                listed += seen.len();
                wanted += keys.len();
                g_all.extend(seen.difference(keys).cloned());
                m_all += keys.difference(&seen).count();
            }
            println!(
                "check {label:<14} node {i}: {listed} listed, {wanted} expected, {} ghosts, {m_all} missing{}",
                g_all.len(),
                if g_all.is_empty() {
                    String::new()
                } else {
                    format!(" e.g. {:?}", &g_all[..g_all.len().min(5)])
                }
            );
            ghosts += g_all.len();
            missing += m_all;
        }
        Ok((ghosts, missing))
    }
}

#[allow(clippy::too_many_lines)]
async fn load(args: Args) -> anyhow::Result<ExitCode> {
    let limit = Duration::from_secs(args.timeout_s);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let mut run = Run {
        limit,
        socks: Vec::with_capacity(args.sockets),
        ev_tx,
        ev_rx,
        errors: BTreeMap::new(),
        args,
    };
    let n = run.args.sockets;
    let rss_before = run.args.server_pid.and_then(rss_kib);

    // 1. join
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(run.args.concurrency));
    let mut joined = 0usize;
    let mut joined_ids = BTreeSet::new();
    let mut last_join = started;
    let mut in_flight = Vec::new();
    for id in 0..n {
        // A permit per connect, released when that socket has joined (or failed).
        let permit = Arc::clone(&gate).acquire_owned().await?;
        in_flight.push(permit);
        run.spawn(id);
        while let Ok((jid, e)) = run.ev_rx.try_recv() {
            match e {
                Ev::Joined { at } => {
                    joined += 1;
                    joined_ids.insert(jid);
                    last_join = last_join.max(at);
                    in_flight.pop();
                }
                Ev::Error(e) => {
                    run.error(e);
                    in_flight.pop();
                }
                Ev::Mark { .. } => {}
            }
        }
        if in_flight.len() >= run.args.concurrency {
            // wait for one join before the next connect
            match tokio::time::timeout(limit, run.ev_rx.recv()).await {
                Ok(Some((id, Ev::Joined { at }))) => {
                    joined += 1;
                    joined_ids.insert(id);
                    last_join = last_join.max(at);
                    in_flight.pop();
                }
                Ok(Some((_, Ev::Error(e)))) => {
                    run.error(e);
                    in_flight.pop();
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => bail!("no socket joined within {limit:?}"),
            }
        }
    }
    let mut failed = run.errors.values().sum::<usize>();
    while joined + failed < n {
        match tokio::time::timeout(limit, run.ev_rx.recv()).await {
            Ok(Some((id, Ev::Joined { at }))) => {
                joined += 1;
                joined_ids.insert(id);
                last_join = last_join.max(at);
            }
            Ok(Some((_, Ev::Error(e)))) => {
                run.error(e);
                failed += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                println!("join: only {joined} of {n} joined within {limit:?}");
                break;
            }
        }
    }
    drop(in_flight);
    let join_time = last_join.duration_since(started);
    println!(
        "sockets            {n} over {} url(s), topic {} ({} topic(s))",
        run.args.urls.len(),
        run.args.topic,
        run.args.topics.max(1)
    );
    println!("joined             {joined} of {n} in {}", ms(join_time));
    // Let the join storm's diffs drain before measuring memory and latency.
    tokio::time::sleep(Duration::from_millis(run.args.settle_ms)).await;
    while run.ev_rx.try_recv().is_ok() {}
    if let (Some(pid), Some(before)) = (run.args.server_pid, rss_before)
        && let Some(after) = rss_kib(pid)
    {
        let per = after.saturating_sub(before) as f64 / n as f64;
        println!("server rss         {before} KiB -> {after} KiB");
        println!("server memory/sock {per:.1} KiB");
    }

    // 2. latency: socket 0 moves, every joined socket of its topic (itself included) must
    // see it.
    let followers = joined_ids
        .iter()
        .filter(|id| topic_of(&run.args, **id) == topic_of(&run.args, 0))
        .count();
    let mut latencies = Vec::with_capacity(n * run.args.rounds);
    let mut incomplete_rounds = 0;
    // Each round's first and last arrival: the spread of a fan-out, and a round that waited.
    let mut round_spans = Vec::new();
    for round in 1..=run.args.rounds as u64 {
        let t0 = Instant::now();
        if run.socks[0].ctl.send(Ctl::Mark(round)).is_err() {
            bail!("socket 0 is gone: cannot measure latency");
        }
        let mut got = 0;
        let deadline = t0 + limit.min(Duration::from_secs(30));
        let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
        while got < followers {
            match tokio::time::timeout_at(deadline, run.ev_rx.recv()).await {
                Ok(Some((_, Ev::Mark { mark, at }))) if mark == round => {
                    let l = at.saturating_duration_since(t0);
                    (first, last) = (first.min(l), last.max(l));
                    latencies.push(l);
                    got += 1;
                }
                Ok(Some((_, Ev::Error(e)))) => run.error(e),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    incomplete_rounds += 1;
                    break;
                }
            }
        }
        if got < followers {
            println!(
                "latency: round {round} reached {got} of {followers} sockets in 30 s; no more rounds"
            );
            break;
        }
        round_spans.push(format!(
            "{:.0}-{:.0}",
            first.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3
        ));
        tokio::time::sleep(Duration::from_millis(run.args.round_gap_ms)).await;
    }
    latencies.sort();
    println!(
        "diff latency       p50 {}  p99 {}  max {}  ({} samples, {} rounds incomplete)",
        ms(pct(&latencies, 0.5)),
        ms(pct(&latencies, 0.99)),
        ms(pct(&latencies, 1.0)),
        latencies.len(),
        incomplete_rounds
    );
    println!("rounds first-last ms {}", round_spans.join(" "));

    // 3. churn
    let mut rng = run.args.seed;
    let mut ops = BTreeMap::<&str, usize>::new();
    let churn_started = Instant::now();
    let churn_end = churn_started + Duration::from_secs(run.args.duration);
    let period = Duration::from_micros(1_000_000 / run.args.churn_rate.max(1));
    let mut tick = tokio::time::interval(period);
    let mut cuts = Vec::new();
    let mut cut_no = 0u64;
    while Instant::now() < churn_end && run.args.churn_rate > 0 {
        tick.tick().await;
        while let Ok((_, e)) = run.ev_rx.try_recv() {
            if let Ev::Error(e) = e {
                run.error(e);
            }
        }
        let id = 1 + (splitmix(&mut rng) as usize) % (n - 1);
        let op = splitmix(&mut rng) % 10;
        let name = match op {
            0..=3 => {
                let _ = run.socks[id]
                    .ctl
                    .send(Ctl::Update(splitmix(&mut rng) % 1000));
                "update"
            }
            4 => {
                let _ = run.socks[id].ctl.send(Ctl::Leave);
                "leave"
            }
            5 | 6 => {
                let _ = run.socks[id].ctl.send(Ctl::Join);
                "join"
            }
            7 | 8 => {
                let _ = run.socks[id].ctl.send(Ctl::Abort);
                run.spawn(id);
                "abrupt close + reconnect"
            }
            _ => {
                cut_no += 1;
                let url = url_for(
                    &run.args.urls[id % run.args.urls.len()],
                    &format!("cut{cut_no}"),
                );
                cuts.push(tokio::spawn(cut_mid_join(
                    url,
                    topic_of(&run.args, id),
                    limit,
                )));
                "cut mid-join"
            }
        };
        *ops.entry(name).or_default() += 1;
    }
    for c in cuts {
        if let Ok(Err(e)) = c.await {
            run.error(format!("cut: {e}"));
        }
    }
    println!(
        "churn              {} s: {}",
        run.args.duration,
        ops.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 4. ghosts, with everyone who should be there, then after everyone closed abruptly.
    let expected = run.expected().await?;
    tokio::time::sleep(Duration::from_millis(run.args.settle_ms)).await;
    while let Ok((_, e)) = run.ev_rx.try_recv() {
        if let Ev::Error(e) = e {
            run.error(e);
        }
    }
    let (g1, m1) = run.check(&expected, "after-churn").await?;
    let alive: usize = expected.values().map(BTreeSet::len).sum();
    for s in &run.socks {
        let _ = s.ctl.send(Ctl::Abort);
    }
    tokio::time::sleep(Duration::from_millis(run.args.settle_ms)).await;
    let nobody = expected
        .keys()
        .map(|t| (t.clone(), BTreeSet::new()))
        .collect();
    let (g2, m2) = run.check(&nobody, "after-close").await?;
    println!("abrupt closes      {alive} joined sockets dropped without a close frame");
    let errors: usize = run.errors.values().sum();
    println!("errors             {errors}");
    for (kind, count) in &run.errors {
        println!("  {count:>6}  {kind}");
    }
    let ghosts = g1 + g2;
    println!("ghosts             {ghosts} (missing {})", m1 + m2);
    Ok(if ghosts + m1 + m2 > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_come_from_the_joins() {
        let diff = r#"[null,null,"room:x","presence_diff",{"joins":{"u0.0":{"metas":[{"mark":7,"phx_ref":"a"}]}},"leaves":{"u0.0":{"metas":[{"mark":6}]}}}]"#;
        assert_eq!(mark_in(diff), Some(7));
        let other = r#"[null,null,"room:x","presence_diff",{"joins":{"u3.0":{"metas":[{"n":7}]}},"leaves":{}}]"#;
        assert_eq!(mark_in(other), None);
    }

    #[test]
    fn events_come_from_the_frame_head() {
        let f = |t: &str| event_of(t).map(str::to_owned);
        assert_eq!(
            f(r#"["1","2","room:x","phx_reply",{"status":"ok"}]"#).as_deref(),
            Some("phx_reply")
        );
        assert_eq!(
            f(r#"[null,null,"room:\"x\"","presence_diff",{"joins":{}}]"#).as_deref(),
            Some("presence_diff")
        );
        assert_eq!(
            f(r#"[1,2,"t","phx_error",{}]"#).as_deref(),
            Some("phx_error")
        );
        // not a V2 frame, or cut short: no event
        assert_eq!(f(r#"{"event":"phx_reply"}"#), None);
        assert_eq!(f(r#"["1","2","room"#), None);
        assert_eq!(f(""), None);
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 0.5), Duration::from_millis(51));
        assert_eq!(pct(&v, 1.0), Duration::from_millis(100));
        assert_eq!(pct(&[], 0.5), Duration::ZERO);
    }
}
