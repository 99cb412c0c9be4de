//! `phxsim serve --nodes 3` against the real phoenix.js (npm `phoenix` 1.8.16, over `ws`):
//! `ci/js/e2e.mjs` connects one client to node 1 and one to node 3 in the same room and checks
//! that each lists the other within two broadcast periods (plus 500 ms of slack for a loaded
//! machine), that a meta update and a leave propagate; with V2 (phoenix.js's default) and with
//! V1. Then SIGINT must stop the server cleanly. Loopback only, free ports, every wait bounded.

// The test harness reads the child's output on plain threads and times it with the wall clock:
// nothing here runs inside a simulation.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PERIOD_MS: u64 = 200;
const NODES: u16 = 3;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether phoenix.js and ws are installed. Outside CI a missing install skips the test,
/// loudly (`ci/test`, the README's test command, installs them first); with `CI` set it fails.
fn node_modules_installed() -> bool {
    let js = repo().join("ci/js/node_modules");
    for pkg in ["phoenix", "ws"] {
        if !js.join(pkg).join("package.json").exists() {
            let why = format!(
                "ci/js/node_modules/{pkg} is missing — run `npm ci --prefix ci/js` (ci/test does)"
            );
            assert!(std::env::var_os("CI").is_none(), "{why}");
            // straight to stderr: the test harness would hide an `eprintln!` of a passing test
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            return false;
        }
    }
    true
}

struct Serve {
    child: Child,
    urls: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

/// Starts `phxsim serve` on a free block of ports, retrying on another block when one is taken;
/// every frame is recorded in `frames`.
fn start_serve(frames: &std::path::Path) -> Serve {
    let mut seed = u64::from(std::process::id()).wrapping_mul(2_654_435_761);
    for attempt in 0..10 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let base = 20_000 + (seed >> 33) as u16 % 40_000;
        let mut child = Command::new(env!("CARGO_BIN_EXE_phxsim"))
            .args([
                "serve",
                "--nodes",
                &NODES.to_string(),
                "--port",
                &base.to_string(),
            ])
            .args(["--broadcast-period", &PERIOD_MS.to_string()])
            .arg("--frames")
            .arg(frames)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn phxsim serve");
        let (out_tx, out_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if out_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut urls = Vec::new();
        while urls.len() < usize::from(NODES) {
            let left = deadline.saturating_duration_since(Instant::now());
            match out_rx.recv_timeout(left) {
                Ok(line) => {
                    let mut words = line.split_whitespace();
                    assert_eq!(words.next(), Some("node"), "ready line: {line}");
                    let name = words.next().expect("node name");
                    assert_eq!(name, format!("n{}", urls.len() + 1));
                    assert_eq!(words.next(), Some("ready"));
                    let url = words.next().expect("url").to_owned();
                    assert_eq!(
                        url,
                        format!(
                            "ws://127.0.0.1:{}/socket/websocket",
                            base + urls.len() as u16
                        )
                    );
                    urls.push(url);
                }
                Err(_) => break,
            }
        }
        if urls.len() == usize::from(NODES) {
            return Serve {
                child,
                urls,
                stderr: err_rx,
            };
        }
        // Not ready: a taken port makes serve exit at once; anything else is a failure.
        let status = wait(&mut child, Duration::from_secs(5));
        let errors: Vec<String> = err_rx.try_iter().collect();
        let taken = errors.iter().any(|l| l.contains("cannot listen"));
        assert!(
            taken && status.is_some(),
            "phxsim serve did not become ready (attempt {attempt}, status {status:?}): {errors:?}"
        );
    }
    panic!("no free block of {NODES} ports after 10 attempts");
}

fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn run_e2e(serve: &Serve, vsn: &str) {
    // phoenix.js wants the socket mount; it appends /websocket itself.
    let mount = |url: &str| url.trim_end_matches("/websocket").to_owned();
    let mut child = Command::new("node")
        .current_dir(repo())
        .args(["ci/js/e2e.mjs", "--url1", &mount(&serve.urls[0])])
        .args(["--url3", &mount(&serve.urls[2]), "--vsn", vsn])
        .args(["--period", &PERIOD_MS.to_string()])
        // the suite runs this beside every other test on two cores: a stalled process must
        // not read as a late diff (the latency itself is measured by `phxsim bench-latency`)
        .args(["--slack", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node (is Node.js installed?)");
    let status = wait(&mut child, Duration::from_secs(60));
    let mut out = String::new();
    let mut err = String::new();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    use std::io::Read as _;
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    eprintln!("[e2e {vsn}] {out}{err}");
    assert!(
        status.is_some_and(|s| s.success()),
        "e2e with vsn {vsn} failed ({status:?}):\n{out}\n{err}"
    );
    assert!(out.contains("cross-node presence"), "{out}");
    assert!(out.trim_end().ends_with("e2e ok"), "{out}");
}

#[test]
fn phoenix_js_clients_on_nodes_1_and_3_see_each_other_update_and_leave() {
    if !node_modules_installed() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("phxsim-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let frames = dir.join("frames.jsonl");
    let mut serve = start_serve(&frames);
    run_e2e(&serve, "2.0.0");
    run_e2e(&serve, "1.0.0");
    // the last close handshakes may still be on their way when node exits: let the recorder
    // see all four before the server stops
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&frames).unwrap_or_default();
        if text.matches(r#""event":"closed""#).count() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGINT stops it cleanly, and soon.
    let pid = serve.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = wait(&mut serve.child, Duration::from_secs(10));
    if status.is_none() {
        let _ = serve.child.kill();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not stop cleanly on SIGINT: {status:?}"
    );
    let said: Vec<String> = serve.stderr.try_iter().collect();
    assert!(said.iter().any(|l| l.contains("stopping")), "{said:?}");
    check_frames(&std::fs::read_to_string(&frames).expect("--frames file"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `--frames` recording of both runs: each client's join on its node, as text in both
/// serializers, the replies and pushes it received, and a clean close for every connection.
fn check_frames(text: &str) {
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=lines.len() as u64).collect::<Vec<_>>(),
        "numbered"
    );
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| lines.iter().filter(|l| f(l)).count();
    for (node, user) in [("n1", "alice"), ("n3", "bob")] {
        for vsn in ["1.0.0", "2.0.0"] {
            let connected = count(&|l| {
                l["node"] == node
                    && l["event"] == "connected"
                    && l["user_id"] == user
                    && l["vsn"] == vsn
            });
            assert_eq!(connected, 1, "{user} connected to {node} with {vsn}");
        }
        let joins = count(&|l| {
            l["node"] == node
                && l["dir"] == "send"
                && l["data"].as_str().is_some_and(|d| d.contains("phx_join"))
        });
        assert_eq!(joins, 2, "{user}'s joins on {node}, one per serializer");
        let states = count(&|l| {
            l["node"] == node
                && l["dir"] == "recv"
                && l["data"]
                    .as_str()
                    .is_some_and(|d| d.contains("presence_state"))
        });
        assert_eq!(states, 2, "{user}'s presence_state on {node}");
    }
    let closes: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "closed").collect();
    assert_eq!(closes.len(), 4, "{closes:?}");
    assert!(closes.iter().all(|l| l["by"] == "client"), "{closes:?}");
}
