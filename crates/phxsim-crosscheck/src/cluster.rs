//! Runs a [`Plan`] on a real cluster: one BEAM per node with distributed Erlang on 127.0.0.1,
//! each running `elixir/node.exs` (a real `Phoenix.Tracker` from phoenix_pubsub) and driven
//! over its stdin; their stdout carries every `handle_diff` and replica event with its time.
//!
//! Everything it starts it stops: a private `epmd` on a free port (nothing is registered with a
//! shared one, and several crosschecks can run at once), the BEAMs (killed when dropped, and
//! each halts by itself when its stdin closes, so a killed `phxsim` leaves nothing behind), and
//! a temporary folder with the driver's source.

use crate::compare::{Lists, RunTrace};
use crate::plan::{Cmd, Plan};
use phxsim_sim::node_trace::{TraceEvent, TraceKind, canonical_meta};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The node driver, shipped inside the binary.
pub const NODE_EXS: &str = include_str!("../elixir/node.exs");
/// The Mix project `--mix` fetches phoenix_pubsub with.
pub const MIX_EXS: &str = include_str!("../elixir/mix.exs");

/// What a real run needs that is not there, or what went wrong while it ran.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{what} not found — {how}")]
    Missing { what: String, how: String },
    #[error("node {node}: {message}")]
    Node { node: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted (Ctrl-C): every process started was stopped")]
    Interrupted,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// Where phoenix_pubsub comes from.
#[derive(Clone, Debug)]
pub enum PubsubSource {
    /// A folder of compiled `.beam` files.
    Ebin(PathBuf),
    /// Fetch and compile phoenix_pubsub 2.2.0 with Mix (needs Hex and the network once), in
    /// this cache folder.
    Mix(PathBuf),
}

/// How to run the real cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub pubsub: PubsubSource,
    /// The private epmd's port; `None` picks a free one.
    pub epmd_port: Option<u16>,
    /// The range the nodes' distribution listeners use; `None` lets the OS pick.
    pub dist_ports: Option<(u16, u16)>,
    /// How long the BEAMs may take to boot.
    pub boot_timeout: Duration,
}

/// What a real run produced.
#[derive(Clone, Debug, Default)]
pub struct RealRun {
    pub trace: RunTrace,
    /// The longest a node's 5 ms timer woke late during the run (0 if never by more than
    /// 10 ms): a starved BEAM's timings are not Phoenix's.
    pub max_lag_ms: u64,
    /// How late the latest command ran on its node, counted from its instant (a starved driver
    /// or node is as bad as a late timer).
    pub max_send_lag_ms: u64,
    /// How far apart the trackers' first starts were: the simulator starts them together, so
    /// beyond Phoenix's own first-tick jitter the first heartbeats race differently.
    pub start_skew_ms: u64,
    /// Every line the nodes logged (JSON), in arrival order.
    pub log: Vec<Json>,
    pub otp: String,
    pub elixir: String,
}

/// Checks that `elixir` runs and says which versions it is.
pub async fn elixir_version() -> Result<String, ClusterError> {
    let out = Command::new("elixir")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|_| missing_elixir())?;
    if !out.status.success() {
        return Err(missing_elixir());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; "))
}

fn missing_elixir() -> ClusterError {
    ClusterError::Missing {
        what: "elixir".into(),
        how: "install Erlang/OTP and Elixir (Debian: apt-get install elixir)".into(),
    }
}

/// The ebin folder to load phoenix_pubsub from, fetching it first with `--mix`.
pub async fn pubsub_ebin(src: &PubsubSource) -> Result<PathBuf, ClusterError> {
    match src {
        PubsubSource::Ebin(dir) => {
            if dir.join("Elixir.Phoenix.Tracker.beam").is_file() {
                Ok(dir.clone())
            } else {
                Err(ClusterError::Missing {
                    what: format!("phoenix_pubsub in {}", dir.display()),
                    how: "point --pubsub-ebin at a compiled phoenix_pubsub ebin folder (one holding Elixir.Phoenix.Tracker.beam), or use --mix".into(),
                })
            }
        }
        PubsubSource::Mix(cache) => {
            let ebin = cache.join("_build/prod/lib/phoenix_pubsub/ebin");
            if ebin.join("Elixir.Phoenix.Tracker.beam").is_file() {
                return Ok(ebin);
            }
            std::fs::create_dir_all(cache).map_err(io(format!("creating {}", cache.display())))?;
            std::fs::write(cache.join("mix.exs"), MIX_EXS)
                .map_err(io(format!("writing {}/mix.exs", cache.display())))?;
            for args in [
                &["local.hex", "--force", "--if-missing"][..],
                &["deps.get"],
                &["deps.compile"],
            ] {
                let status = Command::new("mix")
                    .args(args)
                    .current_dir(cache)
                    .env("MIX_ENV", "prod")
                    .stdin(Stdio::null())
                    .status()
                    .await
                    .map_err(|_| ClusterError::Missing {
                        what: "mix".into(),
                        how:
                            "install Elixir (Debian: apt-get install elixir), or use --pubsub-ebin"
                                .into(),
                    })?;
                if !status.success() {
                    return Err(ClusterError::Missing {
                        what: "phoenix_pubsub 2.2.0 from Hex".into(),
                        how: format!(
                            "`mix {}` failed in {} (it needs the network once); or use --pubsub-ebin DIR",
                            args.join(" "),
                            cache.display()
                        ),
                    });
                }
            }
            if ebin.join("Elixir.Phoenix.Tracker.beam").is_file() {
                Ok(ebin)
            } else {
                Err(ClusterError::Missing {
                    what: format!("{}", ebin.display()),
                    how: "mix compiled phoenix_pubsub elsewhere; use --pubsub-ebin".into(),
                })
            }
        }
    }
}

/// A free TCP port on 127.0.0.1 (the OS's choice; it is released again at once, so another
/// process could take it first: the caller retries on failure).
fn free_port() -> Result<u16, ClusterError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io("finding a free port"))?;
    Ok(l.local_addr().map_err(io("finding a free port"))?.port())
}

/// A private epmd, run under a shell that stops it as soon as its stdin closes: when
/// [`Epmd::stop`] closes it, and also when `phxsim` dies in any way (the pipe closes with it),
/// so no epmd outlives a crosscheck.
struct Epmd {
    guard: Child,
    port: u16,
}

/// The guard: starts epmd and stops it when stdin reaches its end. It ignores Ctrl-C's SIGINT
/// (which reaches the whole process group), and so do its children, so that epmd is always
/// stopped by the guard, never orphaned.
const EPMD_GUARD: &str = r#"trap '' INT; epmd -port "$0" -address 127.0.0.1 & pid=$!; cat >/dev/null; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 0"#;

impl Epmd {
    /// Starts a private epmd (on `port`, or on a free one) and waits until it answers.
    async fn start(port: Option<u16>) -> Result<Epmd, ClusterError> {
        if Command::new("epmd")
            .arg("-help")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_err()
        {
            return Err(ClusterError::Missing {
                what: "epmd".into(),
                how: "it comes with Erlang/OTP (Debian: apt-get install erlang-base)".into(),
            });
        }
        let mut last = None;
        for _ in 0..5 {
            let port = match port {
                Some(p) => p,
                None => free_port()?,
            };
            let guard = Command::new("sh")
                .args(["-c", EPMD_GUARD, &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(io("starting sh for epmd"))?;
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut up = false;
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut epmd = Epmd { guard, port };
            if up {
                return Ok(epmd);
            }
            epmd.stop().await;
            last = Some(port);
        }
        Err(ClusterError::Node {
            node: "epmd".into(),
            message: format!("could not start a private epmd (last port tried: {last:?})"),
        })
    }

    /// Closes the guard's stdin, so that it stops epmd, and waits for it.
    async fn stop(&mut self) {
        drop(self.guard.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.guard.wait())
            .await
            .is_err()
        {
            let _ = self.guard.kill().await;
        }
    }
}

struct BeamNode {
    name: String,
    child: Child,
    stdin: ChildStdin,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn command_line(cmd: &Cmd) -> String {
    let words: Vec<String> = match cmd {
        Cmd::Connect(p) => vec!["connect".into(), hex(p)],
        Cmd::Disconnect(p) => vec!["disconnect".into(), hex(p)],
        Cmd::Block(p) => vec!["block".into(), hex(p)],
        Cmd::Unblock(p) => vec!["unblock".into(), hex(p)],
        Cmd::Start => vec!["start".into()],
        Cmd::Crash => vec!["crash".into()],
        Cmd::Permdown => vec!["permdown".into()],
        Cmd::Track {
            client,
            topic,
            key,
            meta,
        } => vec!["track".into(), hex(client), hex(topic), hex(key), hex(meta)],
        Cmd::Untrack { client } => vec!["untrack".into(), hex(client)],
        Cmd::Update { client, meta } => vec!["update".into(), hex(client), hex(meta)],
        Cmd::Drop { client } => vec!["drop".into(), hex(client)],
    };
    words.join(" ") + "\n"
}

/// `cmd` due at `due_ms` (os clock, ms since the epoch): the node runs it on its own timer, or
/// at once if that instant has passed, logging how late it is. Every argument is hex, the
/// command's name included.
fn at_line(due_ms: u64, cmd: &Cmd) -> String {
    let line = command_line(cmd);
    let (name, args) = line
        .trim_end()
        .split_once(' ')
        .unwrap_or((line.trim_end(), ""));
    format!("at {} {} {args}\n", hex(&due_ms.to_string()), hex(name))
}

/// The tracker settings as the driver's arguments.
fn driver_args(plan: &Plan, s: &phxsim_sim::Scenario) -> Vec<String> {
    let t = &s.tracker;
    vec![
        if plan.needs_filter { "1" } else { "0" }.into(),
        t.broadcast_period_ms.to_string(),
        t.max_silent_periods.to_string(),
        t.down_period().to_string(),
        t.permdown_period_ms.to_string(),
        t.clock_sample_periods.to_string(),
        t.max_delta_sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(","),
        t.pool_size.to_string(),
    ]
}

/// Wall-clock milliseconds since the Unix epoch: the nodes log their times against it.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // a real cluster: real time, never simulated
fn wall_ms() -> u64 {
    std::time::SystemTime::now() // allow-nondeterminism: a real cluster logs wall-clock times
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a real cluster is running now (in this process), so that a Ctrl-C handler
/// elsewhere leaves stopping it to [`run`].
pub fn is_running() -> bool {
    RUNNING.load(std::sync::atomic::Ordering::SeqCst)
}

static RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs the plan of scenario `s` on a real cluster and returns its trace.
pub async fn run(
    s: &phxsim_sim::Scenario,
    plan: &Plan,
    opts: &ClusterOptions,
) -> Result<RealRun, ClusterError> {
    let ebin = pubsub_ebin(&opts.pubsub).await?;
    elixir_version().await?;
    let dir = tempfile::Builder::new()
        .prefix("phxsim-crosscheck-")
        .tempdir()
        .map_err(io("creating a temporary folder"))?;
    let script = dir.path().join("node.exs");
    std::fs::write(&script, NODE_EXS).map_err(io(format!("writing {}", script.display())))?;
    let mut epmd = Epmd::start(opts.epmd_port).await?;
    RUNNING.store(true, std::sync::atomic::Ordering::SeqCst);
    let result = tokio::select! {
        r = drive(s, plan, opts, &ebin, &script, epmd.port, dir.path()) => r,
        _ = tokio::signal::ctrl_c() => Err(ClusterError::Interrupted),
    };
    // every BEAM of `drive` is killed when its future is dropped; then epmd
    epmd.stop().await;
    RUNNING.store(false, std::sync::atomic::Ordering::SeqCst);
    result
}

async fn drive(
    s: &phxsim_sim::Scenario,
    plan: &Plan,
    opts: &ClusterOptions,
    ebin: &Path,
    script: &Path,
    epmd_port: u16,
    dir: &Path,
) -> Result<RealRun, ClusterError> {
    let cookie = format!("phxsim{}", wall_ms());
    // One scheduler per BEAM and no busy-waiting: N BEAMs share a few cores, and spinning
    // schedulers would steal them from each other.
    let mut erl_flags = "-connect_all false -kernel dist_auto_connect never -start_epmd false \
         -kernel logger_level emergency +S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none"
        .to_string();
    if let Some((lo, hi)) = opts.dist_ports {
        erl_flags += &format!(" -kernel inet_dist_listen_min {lo} inet_dist_listen_max {hi}");
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Result<Json, String>)>();
    let mut nodes: BTreeMap<String, BeamNode> = BTreeMap::new();
    for name in &plan.nodes {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(io(format!("creating {}", stderr_path.display())))?;
        let mut child = Command::new("elixir")
            .arg("--name")
            .arg(format!("{name}@127.0.0.1"))
            .arg("--cookie")
            .arg(&cookie)
            .arg("--erl")
            .arg(&erl_flags)
            .arg("-pa")
            .arg(ebin)
            .arg(script)
            .args(driver_args(plan, s))
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|_| missing_elixir())?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, node) = (tx.clone(), name.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(j) = line.strip_prefix("@@ ") {
                    let parsed = serde_json::from_str(j).map_err(|e| format!("{e}: {j}"));
                    if tx.send((node.clone(), parsed)).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send((node, Err("exited".into())));
        });
        nodes.insert(
            name.clone(),
            BeamNode {
                name: name.clone(),
                child,
                stdin,
            },
        );
    }
    drop(tx);
    let stderr_of = |node: &str| {
        std::fs::read_to_string(dir.join(format!("{node}.stderr")))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut out = RealRun::default();

    // boot: every node says it is ready
    let mut ready = BTreeSet::new();
    let boot_deadline = Instant::now() + opts.boot_timeout;
    while ready.len() < nodes.len() {
        let msg = tokio::time::timeout_at(boot_deadline, rx.recv()).await;
        match msg {
            Ok(Some((node, Ok(j)))) if j["ev"] == "ready" => {
                out.otp = j["otp"].as_str().unwrap_or_default().into();
                out.elixir = j["elixir"].as_str().unwrap_or_default().into();
                ready.insert(node);
            }
            Ok(Some((node, Err(e)))) => {
                return Err(ClusterError::Node {
                    message: format!("did not boot ({e}); its stderr:\n{}", stderr_of(&node)),
                    node,
                });
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                let late: Vec<&String> =
                    plan.nodes.iter().filter(|n| !ready.contains(*n)).collect();
                return Err(ClusterError::Node {
                    node: format!("{late:?}"),
                    message: format!(
                        "not ready after {:?}; stderr of the first:\n{}",
                        opts.boot_timeout,
                        late.first().map(|n| stderr_of(n)).unwrap_or_default()
                    ),
                });
            }
        }
    }

    // the mesh comes up before time 0, so that every tracker starts fully connected
    let (setup, timeline): (Vec<_>, Vec<_>) = plan
        .steps
        .iter()
        .partition(|t| t.at_ms == 0 && matches!(t.cmd, Cmd::Connect(_)));
    for t in &setup {
        send(&mut nodes, &t.node, &command_line(&t.cmd)).await?;
    }
    let mut connected = 0;
    let connect_deadline = Instant::now() + Duration::from_secs(10);
    while connected < setup.len() {
        match tokio::time::timeout_at(connect_deadline, rx.recv()).await {
            Ok(Some((_, Ok(j)))) if j["ev"] == "connect" => {
                if j["ok"] != true {
                    return Err(ClusterError::Node {
                        node: j["node"].as_str().unwrap_or("?").into(),
                        message: format!("could not connect to {}", j["peer"]),
                    });
                }
                connected += 1;
            }
            Ok(Some((node, Err(e)))) => {
                return Err(ClusterError::Node {
                    message: format!("{e}; its stderr:\n{}", stderr_of(&node)),
                    node,
                });
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                return Err(ClusterError::Node {
                    node: "cluster".into(),
                    message: "the mesh did not connect within 10 s".into(),
                });
            }
        }
    }
    // :pg learns the other nodes' PubSub members one round trip after a connection
    tokio::time::sleep(Duration::from_millis(200)).await;

    let lead = Duration::from_millis(100);
    let base = Instant::now() + lead;
    let t0 = wall_ms() + lead.as_millis() as u64;
    for n in &plan.nodes {
        send(&mut nodes, n, &format!("clock {}\n", hex(&t0.to_string()))).await?;
    }
    // the trackers of time 0 start on each node's own timer at t0, not when a line arrives
    let (initial, timeline): (Vec<_>, Vec<_>) = timeline
        .into_iter()
        .partition(|t| t.at_ms == 0 && t.cmd == Cmd::Start);
    for t in &initial {
        send(&mut nodes, &t.node, &at_line(t0, &t.cmd)).await?;
    }
    let mut log = Vec::new();
    let mut steps = timeline.into_iter().peekable();
    let end = base + Duration::from_millis(plan.duration_ms);
    loop {
        let next_at = steps
            .peek()
            .map(|t| base + Duration::from_millis(t.at_ms))
            .unwrap_or(end)
            .min(end);
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(next_at) => {
                if next_at >= end && steps.peek().is_none_or(|t| base + Duration::from_millis(t.at_ms) >= end) {
                    break;
                }
                while let Some(t) = steps.next_if(|t| base + Duration::from_millis(t.at_ms) <= Instant::now()) {
                    let late = Instant::now().saturating_duration_since(base + Duration::from_millis(t.at_ms));
                    out.max_send_lag_ms = out.max_send_lag_ms.max(late.as_millis() as u64);
                    send(&mut nodes, &t.node, &at_line(t0 + t.at_ms, &t.cmd)).await?;
                }
            }
            msg = rx.recv() => match msg {
                Some((_, Ok(j))) => log.push(j),
                Some((node, Err(e))) => return Err(ClusterError::Node {
                    message: format!("{e}; its stderr:\n{}", stderr_of(&node)),
                    node,
                }),
                None => return Err(ClusterError::Node { node: "cluster".into(), message: "every node exited".into() }),
            },
        }
    }

    // the final lists, of every topic a client uses
    let topics: BTreeSet<&str> = s.clients.iter().map(|c| c.topic.as_str()).collect();
    for n in &plan.nodes {
        for topic in &topics {
            send(&mut nodes, n, &format!("list {}\n", hex(topic))).await?;
        }
    }
    let mut lists_left = plan.nodes.len() * topics.len();
    let list_deadline = Instant::now() + Duration::from_secs(10);
    while lists_left > 0 {
        match tokio::time::timeout_at(list_deadline, rx.recv()).await {
            Ok(Some((_, Ok(j)))) => {
                if j["ev"] == "list" {
                    lists_left -= 1;
                }
                log.push(j);
            }
            Ok(Some((node, Err(e)))) => {
                return Err(ClusterError::Node {
                    message: format!("{e} before listing; its stderr:\n{}", stderr_of(&node)),
                    node,
                });
            }
            Ok(None) | Err(_) => {
                return Err(ClusterError::Node {
                    node: "cluster".into(),
                    message: "the final lists did not come within 10 s".into(),
                });
            }
        }
    }
    for n in nodes.values_mut() {
        let _ = n.stdin.write_all(b"quit\n").await;
    }
    for n in nodes.values_mut() {
        if tokio::time::timeout(Duration::from_secs(5), n.child.wait())
            .await
            .is_err()
        {
            let _ = n.child.kill().await;
        }
    }
    out.trace = trace_of(&log);
    out.max_lag_ms = log
        .iter()
        .filter(|j| j["ev"] == "lag" && j["t"].as_i64().unwrap_or(-1) >= 0)
        .filter_map(|j| j["ms"].as_u64())
        .max()
        .unwrap_or(0);
    let late_commands = log
        .iter()
        .filter(|j| j["ev"] == "late")
        .filter_map(|j| j["ms"].as_u64())
        .max()
        .unwrap_or(0);
    out.max_send_lag_ms = out.max_send_lag_ms.max(late_commands);
    let mut first_start: BTreeMap<&str, i64> = BTreeMap::new();
    for j in log.iter().filter(|j| j["ev"] == "tracker_start") {
        let (node, t) = (
            j["node"].as_str().unwrap_or_default(),
            j["t"].as_i64().unwrap_or(0),
        );
        first_start.entry(node).or_insert(t);
    }
    let (lo, hi) = (first_start.values().min(), first_start.values().max());
    out.start_skew_ms = match (lo, hi) {
        (Some(lo), Some(hi)) => (hi - lo).max(0) as u64,
        _ => 0,
    };
    out.log = log;
    Ok(out)
}

async fn send(
    nodes: &mut BTreeMap<String, BeamNode>,
    node: &str,
    line: &str,
) -> Result<(), ClusterError> {
    let n = nodes.get_mut(node).ok_or_else(|| ClusterError::Node {
        node: node.into(),
        message: "not in the cluster".into(),
    })?;
    n.stdin
        .write_all(line.as_bytes())
        .await
        .map_err(io(format!("writing to node {}", n.name)))
}

/// The comparable trace of the nodes' log lines.
pub fn trace_of(log: &[Json]) -> RunTrace {
    let mut trace = RunTrace::default();
    for j in log {
        let node = j["node"].as_str().unwrap_or_default().to_owned();
        let t_ms = j["t"].as_i64().unwrap_or(0).max(0) as u64;
        let replica = |kind| TraceEvent {
            t_ms,
            node: node.clone(),
            kind,
            subject: j["remote"].as_str().unwrap_or_default().to_owned(),
            meta: None,
        };
        let canonical = |text: &Json| {
            let parsed: Json = serde_json::from_str(text.as_str().unwrap_or("{}"))
                .unwrap_or(Json::String(text.to_string()));
            canonical_meta(&parsed)
        };
        match j["ev"].as_str().unwrap_or_default() {
            "replica_up" => trace.events.push(replica(TraceKind::ReplicaUp)),
            "replica_down" => trace.events.push(replica(TraceKind::ReplicaDown)),
            "replica_permdown" => trace.events.push(replica(TraceKind::ReplicaPermdown)),
            "diff" => {
                let topic = j["topic"].as_str().unwrap_or_default();
                for (kind, field) in [(TraceKind::Join, "joins"), (TraceKind::Leave, "leaves")] {
                    for e in j[field].as_array().into_iter().flatten() {
                        trace.events.push(TraceEvent {
                            t_ms,
                            node: node.clone(),
                            kind,
                            subject: format!("{topic}/{}", e["key"].as_str().unwrap_or_default()),
                            meta: Some(canonical(&e["meta"])),
                        });
                    }
                }
            }
            "list" => {
                let topic = j["topic"].as_str().unwrap_or_default();
                if let Some(entries) = j["entries"].as_array() {
                    let lists: &mut Lists = trace.lists.entry(node.clone()).or_default();
                    for e in entries {
                        let key = format!("{topic}/{}", e["key"].as_str().unwrap_or_default());
                        lists.entry(key).or_default().push(canonical(&e["meta"]));
                    }
                    for metas in lists.values_mut() {
                        metas.sort();
                    }
                }
            }
            _ => {}
        }
    }
    trace
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_lines_become_trace_events_and_lists() {
        let log = vec![
            json!({"ev": "replica_up", "node": "a", "remote": "b", "t": 12}),
            json!({"ev": "diff", "node": "a", "t": 40, "topic": "room:lobby",
                   "joins": [{"key": "alice", "meta": "{\"z\":1,\"a\":2}"}],
                   "leaves": [{"key": "bob", "meta": "{}"}]}),
            json!({"ev": "list", "node": "a", "t": 50, "topic": "room:lobby",
                   "entries": [{"key": "alice", "meta": "{\"a\":2,\"z\":1}"}]}),
            json!({"ev": "list", "node": "c", "t": 50, "topic": "room:lobby", "entries": null}),
        ];
        let t = trace_of(&log);
        assert_eq!(t.events.len(), 3);
        assert_eq!(t.events[1].subject, "room:lobby/alice");
        assert_eq!(t.events[1].meta.as_deref(), Some(r#"{"a":2,"z":1}"#));
        assert_eq!(t.events[2].kind, TraceKind::Leave);
        assert_eq!(
            t.lists["a"]["room:lobby/alice"],
            vec![r#"{"a":2,"z":1}"#.to_string()]
        );
        assert!(
            !t.lists.contains_key("c"),
            "a node down at the end lists nothing"
        );
    }

    #[test]
    fn a_timed_command_carries_its_instant_and_a_hex_name() {
        assert_eq!(at_line(12, &Cmd::Start), "at 3132 7374617274 \n");
        assert_eq!(
            at_line(5, &Cmd::Connect("b".into())),
            "at 35 636f6e6e656374 62\n"
        );
    }

    #[test]
    fn command_arguments_are_hex_so_no_key_can_break_a_line() {
        let line = command_line(&Cmd::Track {
            client: "c 1".into(),
            topic: "t".into(),
            key: "k\n".into(),
            meta: "{}".into(),
        });
        assert_eq!(line, "track 632031 74 6b0a 7b7d\n");
    }
}
