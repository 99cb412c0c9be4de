//! The Rust client against the Rust server over real loopback TCP: a 3-node cluster, one
//! client on node 1 and one on node 3 in the same room. Each sees the other within two
//! broadcast periods, a meta update and a leave propagate, and a client whose connection the
//! server drops reconnects and rejoins with a new join_ref. Every wait is bounded.

use phxsim_runtime::client::{ChannelState, Client, ClientConfig, ClientEvent, ClientView};
use phxsim_runtime::server::{Server, ServerConfig};
use phxsim_runtime::{Node, NodeConfig, NodeEvent};
use phxsim_shard::{TrackerConfig, TrackerEvent};
use phxsim_wire::Serializer;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

const PERIOD: u64 = 100;
const WAIT: Duration = Duration::from_secs(5);

struct Cluster {
    nodes: Vec<Node>,
    ws: Vec<SocketAddr>,
}

async fn cluster(n: usize, server_cfg: ServerConfig) -> Cluster {
    let mut nodes = Vec::new();
    let mut links = Vec::new();
    let mut ws = Vec::new();
    for i in 1..=n {
        let node = Node::start(NodeConfig {
            tracker: TrackerConfig::with_broadcast_period(PERIOD),
            seed: Some(i as u64),
            ..NodeConfig::new(format!("n{i}"), 1)
        })
        .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        links.push(l.local_addr().unwrap());
        node.listen(l);
        let server = Server::new(node.clone(), server_cfg.clone());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        ws.push(l.local_addr().unwrap());
        server.listen(l);
        nodes.push(node);
    }
    let mut events = Vec::new();
    for node in &nodes {
        events.push(node.observe().await.unwrap());
    }
    for (i, node) in nodes.iter().enumerate() {
        for addr in links.iter().skip(i + 1) {
            node.connect_tcp(*addr).await.unwrap();
        }
    }
    for ev in &mut events {
        let mut up = 0;
        tokio::time::timeout(WAIT, async {
            while up < n - 1 {
                if let Some(NodeEvent::Tracker(TrackerEvent::ReplicaUp { .. })) = ev.recv().await {
                    up += 1;
                }
            }
        })
        .await
        .expect("the mesh comes up");
    }
    Cluster { nodes, ws }
}

fn client(addr: SocketAddr, user: &str, vsn: Serializer) -> Client {
    let mut cfg = ClientConfig::new(format!("ws://{addr}/socket/websocket"), user, "room:lobby")
        .with_meta(json!({"name": user}));
    cfg.serializer = vsn;
    cfg.seed = user.len() as u64;
    Client::start_tcp(cfg, addr)
}

fn lists(v: &ClientView, key: &str) -> bool {
    v.presences.contains_key(key)
}

async fn two_clients_see_each_other_then_update_and_leave(vsn: Serializer) {
    let c = cluster(3, ServerConfig::default()).await;
    let a = client(c.ws[0], "alice", vsn);
    let b = client(c.ws[2], "bob", vsn);
    a.wait_for(WAIT, ClientView::joined)
        .await
        .expect("alice joins");
    b.wait_for(WAIT, ClientView::joined)
        .await
        .expect("bob joins");
    let started = tokio::time::Instant::now();
    let two_periods = Duration::from_millis(2 * PERIOD);
    a.wait_for(two_periods, |v| lists(v, "bob"))
        .await
        .expect("alice lists bob within two broadcast periods");
    b.wait_for(
        two_periods.saturating_sub(started.elapsed()) + Duration::from_millis(PERIOD),
        |v| lists(v, "alice"),
    )
    .await
    .expect("bob lists alice");
    let v = a.view();
    assert_eq!(v.presences["alice"][0]["status"], "online");
    assert_eq!(v.presences["alice"][0]["name"], "alice");

    a.update_meta(json!({"name": "alice", "status": "away"}));
    let v = b
        .wait_for(WAIT, |v| {
            v.presences
                .get("alice")
                .is_some_and(|m| m.len() == 1 && m[0]["status"] == "away")
        })
        .await
        .expect("bob sees alice away");
    assert!(v.presences["alice"][0]["phx_ref_prev"].is_string());

    b.leave();
    a.wait_for(WAIT, |v| !lists(v, "bob"))
        .await
        .expect("alice sees bob leave");
    let v = b
        .wait_for(WAIT, |v| v.channel == ChannelState::Closed)
        .await
        .unwrap();
    assert!(v.connected);
    for n in &c.nodes {
        n.crash();
    }
}

#[tokio::test]
async fn v2_clients_on_nodes_1_and_3_see_each_other_update_and_leave() {
    two_clients_see_each_other_then_update_and_leave(Serializer::V2).await;
}

#[tokio::test]
async fn v1_clients_on_nodes_1_and_3_see_each_other_update_and_leave() {
    two_clients_see_each_other_then_update_and_leave(Serializer::V1).await;
}

#[tokio::test]
async fn a_client_dropped_by_the_server_reconnects_and_rejoins_with_a_new_join_ref() {
    // The server closes sockets idle for 300 ms; the client heartbeats only every 30 s.
    let cfg = ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let c = cluster(1, cfg).await;
    let watcher_cfg = ClientConfig {
        heartbeat_interval: Duration::from_millis(50),
        ..ClientConfig::new(
            format!("ws://{}/socket/websocket", c.ws[0]),
            "w",
            "room:lobby",
        )
    };
    let watcher = Client::start_tcp(watcher_cfg, c.ws[0]);
    let a = client(c.ws[0], "alice", Serializer::V2);
    let mut log = a.subscribe();
    let first = a.wait_for(WAIT, ClientView::joined).await.unwrap();
    let first_ref = first.join_ref.clone().unwrap();
    let rejoined = a
        .wait_for(WAIT, |v| v.joins >= 2 && v.joined())
        .await
        .expect("rejoined after the server dropped the connection");
    assert_ne!(rejoined.join_ref.as_deref(), Some(first_ref.as_str()));
    assert!(rejoined.connects >= 2);
    assert!(lists(&rejoined, "alice"));
    // The log shows the server's close, then a new join.
    let mut saw_close = false;
    while let Ok(e) = log.try_recv() {
        if let ClientEvent::Disconnected { reason, reconnect } = &e.event {
            assert!(reason.contains("1001"), "{reason}");
            assert!(*reconnect);
            saw_close = true;
        }
    }
    assert!(saw_close);
    // Another client (kept alive by heartbeats) saw alice leave and come back.
    watcher
        .wait_for(WAIT, |v| {
            v.presences.get("alice").is_some_and(|m| m.len() == 1)
        })
        .await
        .expect("the watcher lists alice again");
    c.nodes[0].crash();
}

/// An observer that keeps no transcript subscribes without frames: it gets every other event
/// (presence messages, channel states) and not one frame, while an observer beside it, before
/// or after it, still gets every frame.
#[tokio::test]
async fn an_observer_without_frames_gets_every_event_but_the_frames() {
    let c = cluster(1, ServerConfig::default()).await;
    let a = client(c.ws[0], "alice", Serializer::V2);
    let mut before = a.subscribe_without_frames();
    let mut all = a.subscribe();
    let mut after = a.subscribe_without_frames();
    a.wait_for(WAIT, |v| v.joined() && lists(v, "alice"))
        .await
        .expect("alice joined and listed");
    // the presence_state may still be on its way to the observers
    tokio::time::sleep(Duration::from_millis(PERIOD)).await;
    let drain =
        |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Box<phxsim_runtime::client::Stamped>>| {
            let mut events = Vec::new();
            while let Ok(e) = rx.try_recv() {
                events.push(e.event);
            }
            events
        };
    let is_frame = |e: &ClientEvent| matches!(e, ClientEvent::Sent(_) | ClientEvent::Received(_));
    let is_presence = |e: &ClientEvent| matches!(e, ClientEvent::Presence { .. });
    let all = drain(&mut all);
    assert!(all.iter().any(is_frame), "{all:?}");
    assert!(all.iter().any(is_presence), "{all:?}");
    let without: Vec<ClientEvent> = all.iter().filter(|e| !is_frame(e)).cloned().collect();
    for rx in [&mut before, &mut after] {
        assert_eq!(drain(rx), without);
    }
    c.nodes[0].crash();
}

/// A presence message moves the status: a receiver of [`Client::watch`] is woken by it, one
/// of [`Client::watch_lifecycle`] is not (yet reads the counters current), and both are
/// woken when the channel moves.
#[tokio::test]
async fn a_lifecycle_watcher_is_woken_by_the_channel_and_not_by_presence_messages() {
    let c = cluster(1, ServerConfig::default()).await;
    let a = client(c.ws[0], "alice", Serializer::V2);
    a.wait_for(WAIT, |v| v.joined() && lists(v, "alice"))
        .await
        .expect("alice joined and listed");
    let mut every = a.watch();
    let mut lifecycle = a.watch_lifecycle();
    every.borrow_and_update();
    lifecycle.borrow_and_update();
    let before = a.status().presence_changes;
    let b = client(c.ws[0], "bob", Serializer::V2);
    a.wait_for(WAIT, |v| lists(v, "bob"))
        .await
        .expect("alice lists bob");
    assert!(every.has_changed().unwrap(), "woken by the presence diff");
    assert!(!lifecycle.has_changed().unwrap(), "not woken by it");
    let now = a.status();
    assert!(now.presence_changes > before);
    assert_eq!(*lifecycle.borrow(), now, "yet current");
    every.borrow_and_update();
    a.leave();
    a.wait_for(WAIT, |v| v.channel == ChannelState::Closed)
        .await
        .expect("alice left");
    assert!(every.has_changed().unwrap());
    assert!(lifecycle.has_changed().unwrap(), "woken by the channel");
    b.stop();
    c.nodes[0].crash();
}
