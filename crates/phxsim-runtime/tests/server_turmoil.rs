//! The server and the client on turmoil's simulated network and clock, as the simulator runs
//! them: two node hosts (each a node, its links and its Channels server over turmoil TCP) and a
//! host per browser. Clients on different nodes see each other; when a browser host's link is
//! cut, the server's idle timeout drops its presence everywhere, and after the repair the
//! client reconnects and rejoins with a new join_ref.

use phxsim_runtime::client::{Client, ClientConfig, ClientView};
use phxsim_runtime::server::{Server, ServerConfig};
use phxsim_runtime::{Node, NodeConfig};
use phxsim_shard::TrackerConfig;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

const PERIOD: u64 = 100;
const NODE_PORT: u16 = 7000;
const WS_PORT: u16 = 4000;

type Views = Arc<Mutex<Vec<(&'static str, ClientView)>>>;

fn node_host(
    sim: &mut turmoil::Sim<'_>,
    name: &'static str,
    seed: u64,
    dial: Option<&'static str>,
) {
    sim.host(name, move || async move {
        let node = Node::start(NodeConfig {
            tracker: TrackerConfig::with_broadcast_period(PERIOD),
            seed: Some(seed),
            link_keepalive: Duration::from_millis(250),
            link_idle_timeout: Duration::from_millis(1_000),
            ..NodeConfig::new(name, 1)
        })?;
        let links = turmoil::net::TcpListener::bind(("0.0.0.0", NODE_PORT)).await?;
        let acceptor = node.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = links.accept().await {
                acceptor.connect(s);
            }
        });
        if let Some(peer) = dial {
            let n = node.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(s) = turmoil::net::TcpStream::connect((peer, NODE_PORT)).await {
                        n.connect(s).closed().await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        let server = Server::new(
            node,
            ServerConfig {
                idle_timeout: Duration::from_secs(2),
                ..ServerConfig::default()
            },
        );
        let ws = turmoil::net::TcpListener::bind(("0.0.0.0", WS_PORT)).await?;
        loop {
            let (stream, _) = ws.accept().await?;
            server.serve_connection(stream);
        }
    });
}

fn browser(sim: &mut turmoil::Sim<'_>, name: &'static str, node: &'static str, views: Views) {
    sim.client(name, async move {
        let cfg = ClientConfig {
            heartbeat_interval: Duration::from_millis(500),
            seed: name.len() as u64,
            ..ClientConfig::new(
                format!("ws://{node}:{WS_PORT}/socket/websocket"),
                name,
                "room:t",
            )
        };
        let client = Client::start(cfg, move || {
            turmoil::net::TcpStream::connect((node, WS_PORT))
        });
        let mut rx = client.watch();
        loop {
            rx.borrow_and_update();
            views.lock().expect("views").push((name, client.view()));
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    });
}

fn last(views: &Views, who: &str) -> ClientView {
    views
        .lock()
        .expect("views")
        .iter()
        .rev()
        .find(|(n, _)| *n == who)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Steps the simulation until `cond` holds; returns the simulated time it took.
fn step_until(
    sim: &mut turmoil::Sim<'_>,
    limit: Duration,
    what: &str,
    cond: impl Fn() -> bool,
) -> Duration {
    let start = sim.elapsed();
    while !cond() {
        assert!(
            sim.elapsed() - start < limit,
            "{what}: not within {limit:?}"
        );
        let _ = sim.step();
    }
    sim.elapsed() - start
}

#[test]
fn browsers_on_two_nodes_see_each_other_and_a_cut_browser_leaves_and_comes_back() {
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_750_000_000))
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .build();
    let views: Views = Arc::default();
    node_host(&mut sim, "n1", 1, None);
    node_host(&mut sim, "n2", 2, Some("n1"));
    browser(&mut sim, "alice", "n1", views.clone());
    browser(&mut sim, "bob", "n2", views.clone());

    step_until(&mut sim, Duration::from_secs(10), "both list both", || {
        let (a, b) = (last(&views, "alice"), last(&views, "bob"));
        a.joined()
            && b.joined()
            && a.presences.contains_key("bob")
            && b.presences.contains_key("alice")
    });
    let first_ref = last(&views, "bob").join_ref;

    // Cut bob's browser off: its server notices nothing until the idle timeout (2 s).
    sim.partition("bob", "n2");
    let gone = step_until(
        &mut sim,
        Duration::from_secs(10),
        "alice sees bob leave",
        || !last(&views, "alice").presences.contains_key("bob"),
    );
    assert!(
        gone >= Duration::from_millis(1500),
        "bob left after {gone:?}"
    );
    sim.repair("bob", "n2");
    step_until(
        &mut sim,
        Duration::from_secs(20),
        "bob rejoins and alice lists him",
        || {
            let b = last(&views, "bob");
            b.joined()
                && b.join_ref != first_ref
                && last(&views, "alice").presences.contains_key("bob")
        },
    );
    let b = last(&views, "bob");
    assert!(b.connects >= 2, "{b:?}");
}
