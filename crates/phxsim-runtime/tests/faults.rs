//! Nodes over in-memory duplex streams on a paused tokio clock: time only moves when every task
//! waits, so these runs are deterministic and minutes of cluster time take milliseconds. The
//! faults are the ones a simulator injects: a link closed (partition), a node dropped (crash),
//! a node started again under its name with a new vsn (restart), garbage on a link.

use phxsim_runtime::{LinkError, LinkHandle, Node, NodeConfig, NodeEvent};
use phxsim_shard::codec::{VERSION, encode_frame};
use phxsim_shard::{Frame, Hello, TrackerConfig, TrackerEvent};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, timeout};

const PERIOD: u64 = 100;

fn config(name: &str, vsn: u64) -> NodeConfig {
    NodeConfig {
        tracker: TrackerConfig {
            permdown_period: 5_000,
            ..TrackerConfig::with_broadcast_period(PERIOD)
        },
        seed: Some(vsn * 31 + name.len() as u64),
        ..NodeConfig::new(name, vsn)
    }
}

fn link(a: &Node, b: &Node) -> (LinkHandle, LinkHandle) {
    let (x, y) = tokio::io::duplex(64 * 1024);
    (a.connect(x), b.connect(y))
}

fn meta() -> serde_json::Map<String, serde_json::Value> {
    json!({"status": "online"}).as_object().unwrap().clone()
}

/// The next tracker event of a kind, skipping the rest; fails after 20 s of cluster time.
async fn next_replica_event(
    events: &mut UnboundedReceiver<NodeEvent>,
    want: fn(&TrackerEvent) -> bool,
) -> TrackerEvent {
    timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Some(NodeEvent::Tracker(e)) if want(&e) => return e,
                Some(_) => {}
                None => panic!("node stopped"),
            }
        }
    })
    .await
    .expect("event within 20 s")
}

fn is_up(e: &TrackerEvent) -> bool {
    matches!(e, TrackerEvent::ReplicaUp { .. })
}
fn is_down(e: &TrackerEvent) -> bool {
    matches!(e, TrackerEvent::ReplicaDown { .. })
}
fn is_permdown(e: &TrackerEvent) -> bool {
    matches!(e, TrackerEvent::ReplicaPermdown { .. })
}

#[tokio::test(start_paused = true)]
async fn partition_by_closing_the_link_gives_down_after_down_period_then_permdown() {
    let a = Node::start(config("a", 1)).unwrap();
    let b = Node::start(config("b", 1)).unwrap();
    let mut ea = a.observe().await.unwrap();
    let (la, _lb) = link(&a, &b);
    next_replica_event(&mut ea, is_up).await;
    b.track("s1", "lobby", "bob", meta()).await.unwrap();
    let a_sees_bob = timeout(Duration::from_secs(1), async {
        loop {
            if !a.list("lobby").await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    a_sees_bob.await.expect("bob replicated to a");

    let cut = Instant::now();
    la.close();
    let e = next_replica_event(&mut ea, is_down).await;
    let down_after = cut.elapsed().as_millis() as u64;
    assert!(matches!(e, TrackerEvent::ReplicaDown { ref replica, .. } if replica.name == "b"));
    // Down 2 000 ms after the last heartbeat heard, detected on a tick; b's last heartbeat was
    // at most one idle cadence (1 100 ms) before the cut.
    assert!(
        (900..=2_200).contains(&down_after),
        "down after {down_after} ms"
    );
    assert!(
        a.list("lobby").await.unwrap().is_empty(),
        "b's presence is hidden"
    );
    next_replica_event(&mut ea, is_permdown).await;
    let permdown_after = cut.elapsed().as_millis() as u64;
    assert!(
        (3_900..=5_200).contains(&permdown_after),
        "permdown after {permdown_after} ms"
    );
    assert!(a.peers().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn restart_with_a_new_vsn_retires_the_old_incarnation() {
    let a = Node::start(config("a", 1)).unwrap();
    let b1 = Node::start(config("b", 1)).unwrap();
    let mut ea = a.observe().await.unwrap();
    link(&a, &b1);
    next_replica_event(&mut ea, is_up).await;
    b1.track("s1", "lobby", "old", meta()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.list("lobby").await.unwrap().keys(), vec!["old"]);

    // Crash b and start it again at once, before a notices: a new vsn under the same name.
    b1.crash();
    let b2 = Node::start(config("b", 2)).unwrap();
    link(&a, &b2);
    b2.track("s1", "lobby", "new", meta()).await.unwrap();
    // a: down(old) with its leaves, permdown(old), up(new), then the new presence.
    let down = next_replica_event(&mut ea, is_down).await;
    let permdown = next_replica_event(&mut ea, is_permdown).await;
    let up = next_replica_event(&mut ea, is_up).await;
    let vsn = |e: &TrackerEvent| match e {
        TrackerEvent::ReplicaDown { replica, .. }
        | TrackerEvent::ReplicaPermdown { replica, .. }
        | TrackerEvent::ReplicaUp { replica, .. } => replica.vsn,
        TrackerEvent::PresenceDiff { .. } => 0,
    };
    assert_eq!((vsn(&down), vsn(&permdown), vsn(&up)), (1, 1, 2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.list("lobby").await.unwrap().keys(), vec!["new"]);
    assert!(!b1.is_running());
}

#[tokio::test(start_paused = true)]
async fn graceful_permdown_drops_the_presences_at_once() {
    let a = Node::start(config("a", 1)).unwrap();
    let b = Node::start(config("b", 1)).unwrap();
    let mut ea = a.observe().await.unwrap();
    link(&a, &b);
    next_replica_event(&mut ea, is_up).await;
    b.track("s1", "lobby", "bob", meta()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sub = a.subscribe("lobby").await.unwrap();
    assert_eq!(sub.state.keys(), vec!["bob"]);
    let t = Instant::now();
    b.graceful_permdown().await.unwrap();
    let update = timeout(Duration::from_millis(50), sub.diffs.recv())
        .await
        .expect("leave well before any tick-based detection")
        .unwrap();
    assert_eq!(update.diff.leaves.keys().collect::<Vec<_>>(), vec!["bob"]);
    assert!(t.elapsed() < Duration::from_millis(50));
    next_replica_event(&mut ea, is_permdown).await;
    assert!(a.list("lobby").await.unwrap().is_empty());
    assert!(matches!(
        b.track("s2", "lobby", "x", meta()).await,
        Err(phxsim_runtime::NodeError::NotRunning)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_malformed_frame_drops_only_that_link() {
    let a = Node::start(config("a", 1)).unwrap();
    let b = Node::start(config("b", 1)).unwrap();
    let mut ea = a.observe().await.unwrap();
    link(&a, &b);
    next_replica_event(&mut ea, is_up).await;

    // A rogue peer: a valid greeting, then a frame whose body is not JSON.
    let (ours, mut rogue) = tokio::io::duplex(64 * 1024);
    let rogue_link = a.connect(ours);
    let hello = encode_frame(&Frame::Hello(Hello {
        node: "mallory".into(),
        vsn: 1,
        pool_size: 1,
    }));
    rogue.write_all(&hello).await.unwrap();
    let mut garbage = 6u32.to_be_bytes().to_vec();
    garbage.push(VERSION);
    garbage.extend_from_slice(b"{oops");
    rogue.write_all(&garbage).await.unwrap();
    let reason = timeout(Duration::from_secs(1), rogue_link.closed())
        .await
        .expect("the rogue link ends");
    assert!(matches!(reason, LinkError::Codec(_)), "{reason:?}");
    // The stream is closed on our side: the rogue reads our hello, then EOF.
    let mut sink = Vec::new();
    timeout(Duration::from_secs(1), rogue.read_to_end(&mut sink))
        .await
        .expect("closed")
        .unwrap();

    // Replication with b is unaffected.
    b.track("s1", "lobby", "bob", meta()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.list("lobby").await.unwrap().keys(), vec!["bob"]);
    let downs = std::iter::from_fn(|| ea.try_recv().ok())
        .filter(|e| matches!(e, NodeEvent::Tracker(TrackerEvent::ReplicaDown { .. })))
        .count();
    assert_eq!(downs, 0);
}

#[tokio::test(start_paused = true)]
async fn links_that_disagree_on_the_pool_or_never_greet_are_refused() {
    let a = Node::start(config("a", 1)).unwrap();
    let other_pool = Node::start(NodeConfig {
        tracker: TrackerConfig {
            pool_size: 2,
            ..config("b", 1).tracker
        },
        ..config("b", 1)
    })
    .unwrap();
    let (la, _lb) = link(&a, &other_pool);
    let reason = timeout(Duration::from_secs(1), la.closed()).await.unwrap();
    assert_eq!(reason, LinkError::PoolSizeMismatch { peer: 2, ours: 1 });

    let (ours, _silent) = tokio::io::duplex(1024);
    let reason = timeout(Duration::from_secs(10), a.connect(ours).closed())
        .await
        .unwrap();
    assert_eq!(reason, LinkError::HandshakeTimeout(Duration::from_secs(5)));

    let same_name = Node::start(config("a", 2)).unwrap();
    let (la, _lb) = link(&a, &same_name);
    let reason = timeout(Duration::from_secs(1), la.closed()).await.unwrap();
    assert_eq!(reason, LinkError::OwnName);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_gets_the_state_then_every_diff_local_and_remote() {
    let a = Node::start(config("a", 1)).unwrap();
    let b = Node::start(config("b", 1)).unwrap();
    let mut ea = a.observe().await.unwrap();
    link(&a, &b);
    next_replica_event(&mut ea, is_up).await;
    let r1 = a.track("s1", "room:1", "alice", meta()).await.unwrap();
    let mut sub = a.subscribe("room:1").await.unwrap();
    assert_eq!(sub.state.refs(), vec![r1.as_str()]);
    let r2 = b.track("s2", "room:1", "bob", meta()).await.unwrap();
    let remote = timeout(Duration::from_secs(1), sub.diffs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(remote.diff.join_refs(), vec![r2.as_str()]);
    let r3 = a
        .update_with("s1", "room:1", "alice", |old| {
            let mut m = old.clone();
            m.insert("status".into(), json!("away"));
            m
        })
        .await
        .unwrap();
    let local = timeout(Duration::from_secs(1), sub.diffs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(local.diff.join_refs(), vec![r3.as_str()]);
    assert_eq!(local.diff.leave_refs(), vec![r1.as_str()]);
    let joined = &local.diff.joins["alice"][0];
    assert_eq!(joined["phx_ref_prev"], json!(r1));
    assert_eq!(joined["status"], json!("away"));
    // Another topic's changes do not reach this subscriber.
    a.track("s1", "room:2", "alice", meta()).await.unwrap();
    a.untrack_owner("s1").await.unwrap();
    let gone = timeout(Duration::from_secs(1), sub.diffs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*gone.topic, "room:1");
    assert_eq!(gone.diff.leave_refs(), vec![r3.as_str()]);
    assert!(sub.diffs.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_link_that_goes_silent_is_closed_by_the_idle_timeout() {
    let a = Node::start(NodeConfig {
        link_keepalive: Duration::from_millis(500),
        link_idle_timeout: Duration::from_secs(2),
        ..config("a", 1)
    })
    .unwrap();
    // A peer that greets and then never sends another byte (a half-open connection).
    let (ours, mut silent) = tokio::io::duplex(64 * 1024);
    let l = a.connect(ours);
    let hello = encode_frame(&Frame::Hello(Hello {
        node: "ghost".into(),
        vsn: 1,
        pool_size: 1,
    }));
    silent.write_all(&hello).await.unwrap();
    let t = Instant::now();
    // Keep draining what a writes (its hello, heartbeats, keepalives) so only silence counts.
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while silent.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let reason = timeout(Duration::from_secs(10), l.closed()).await.unwrap();
    assert_eq!(reason, LinkError::IdleTimeout(Duration::from_secs(2)));
    assert_eq!(t.elapsed(), Duration::from_secs(2));
    drain.await.unwrap();
}
