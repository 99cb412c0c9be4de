//! Three nodes in one process over real TCP on 127.0.0.1 (ephemeral ports): a track on node 1
//! is visible on node 3 within two broadcast periods. Every wait has a timeout, so the test
//! stops on its own whatever happens.

use phxsim_runtime::{Node, NodeConfig, NodeEvent};
use phxsim_shard::{TrackerConfig, TrackerEvent};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout};

const PERIOD: u64 = 100;

fn config(name: &str, seed: u64) -> NodeConfig {
    NodeConfig {
        tracker: TrackerConfig::with_broadcast_period(PERIOD),
        seed: Some(seed),
        ..NodeConfig::new(name, 1)
    }
}

async fn start(name: &str, seed: u64) -> (Node, std::net::SocketAddr) {
    let node = Node::start(config(name, seed)).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    node.listen(listener);
    (node, addr)
}

/// Waits until `node` has seen every name in `peers` come up.
async fn wait_up(events: &mut tokio::sync::mpsc::UnboundedReceiver<NodeEvent>, peers: &[&str]) {
    let mut missing: Vec<&str> = peers.to_vec();
    while !missing.is_empty() {
        match events.recv().await {
            Some(NodeEvent::Tracker(TrackerEvent::ReplicaUp { replica, .. })) => {
                missing.retain(|p| *p != replica.name);
            }
            Some(_) => {}
            None => panic!("node stopped"),
        }
    }
}

#[tokio::test]
async fn a_track_on_node_1_is_visible_on_node_3_within_two_broadcast_periods() {
    let (n1, _a1) = start("node1", 1).await;
    let (n2, a2) = start("node2", 2).await;
    let (n3, a3) = start("node3", 3).await;
    let mut e1 = n1.observe().await.unwrap();
    let mut e3 = n3.observe().await.unwrap();
    n1.connect_tcp(a2).await.expect("dial node2");
    n1.connect_tcp(a3).await.expect("dial node3");
    n2.connect_tcp(a3).await.expect("dial node3");

    // Idle heartbeats come every (max_silent_periods + 1) periods: 1.1 s here.
    let mesh = Duration::from_secs(5);
    timeout(mesh, wait_up(&mut e1, &["node2", "node3"]))
        .await
        .expect("node1 sees node2 and node3 up");
    timeout(mesh, wait_up(&mut e3, &["node1", "node2"]))
        .await
        .expect("node3 sees node1 and node2 up");

    let mut sub = n3.subscribe("lobby").await.unwrap();
    assert!(sub.state.is_empty());
    let started = Instant::now();
    let phx_ref = n1
        .track(
            "socket-1",
            "lobby",
            "alice",
            json!({"status": "online"}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    let update = timeout(Duration::from_millis(2 * PERIOD), sub.diffs.recv())
        .await
        .expect("node3 got the join within two broadcast periods")
        .expect("subscription open");
    let elapsed = started.elapsed();
    assert_eq!(&*update.topic, "lobby");
    assert_eq!(update.diff.join_refs(), vec![phx_ref.as_str()]);
    assert!(update.diff.leaves.is_empty());
    let listed = n3.list("lobby").await.unwrap();
    assert_eq!(listed.keys(), vec!["alice"]);
    assert_eq!(listed.metas("alice")[0]["status"], "online");
    eprintln!("track on node1 visible on node3 after {elapsed:?}");

    // And back: the untrack reaches node3 as a leave of the same phx_ref.
    n1.untrack("socket-1", "lobby", "alice").await.unwrap();
    let update = timeout(Duration::from_millis(2 * PERIOD), sub.diffs.recv())
        .await
        .expect("node3 got the leave within two broadcast periods")
        .expect("subscription open");
    assert_eq!(update.diff.leave_refs(), vec![phx_ref.as_str()]);
    assert!(n3.list("lobby").await.unwrap().is_empty());

    n1.crash();
    n2.crash();
    n3.crash();
}
