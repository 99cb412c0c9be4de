//! The same node code on turmoil's simulated network and clock: three hosts, each a node that
//! accepts links and keeps redialling the nodes named before it. A track is visible across the
//! cluster within two broadcast periods; a partition a | c (turmoil's, not ours) makes a hide
//! c's presences after the down period, and the repair brings them back.

use phxsim_runtime::{Node, NodeConfig};
use phxsim_shard::TrackerConfig;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio::time::{Instant, sleep, timeout};

const PERIOD: u64 = 100;
const PORT: u16 = 7000;
type Registry = Arc<Mutex<BTreeMap<&'static str, Node>>>;

fn config(name: &str, seed: u64) -> NodeConfig {
    NodeConfig {
        tracker: TrackerConfig {
            permdown_period: 10_000,
            ..TrackerConfig::with_broadcast_period(PERIOD)
        },
        seed: Some(seed),
        // turmoil drops the segments of a partitioned TCP stream and the receiver then waits
        // for them forever: only the link keepalive notices.
        link_keepalive: Duration::from_millis(250),
        link_idle_timeout: Duration::from_millis(1_000),
        ..NodeConfig::new(name, 1)
    }
}

fn node(reg: &Registry, name: &str) -> Node {
    reg.lock().expect("registry")[name].clone()
}

async fn eventually(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let t = Instant::now();
    timeout(limit, async {
        while !cond().await {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"));
    t.elapsed()
}

#[test]
fn a_cluster_on_turmoil_replicates_partitions_and_heals() -> turmoil::Result {
    let mut sim = turmoil::Builder::new()
        .rng_seed(42)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_750_000_000))
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .build();
    let reg: Registry = Arc::default();
    let names: [&'static str; 3] = ["a", "b", "c"];
    for (i, name) in names.into_iter().enumerate() {
        let reg = reg.clone();
        sim.host(name, move || {
            let reg = reg.clone();
            async move {
                let n = Node::start(config(name, i as u64 + 1))?;
                reg.lock().expect("registry").insert(name, n.clone());
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
                let acceptor = n.clone();
                tokio::spawn(async move {
                    while let Ok((s, _)) = listener.accept().await {
                        acceptor.connect(s);
                    }
                });
                // Redial the nodes named before this one whenever the link ends.
                for peer in names.into_iter().take(i) {
                    let n = n.clone();
                    tokio::spawn(async move {
                        loop {
                            if let Ok(s) = turmoil::net::TcpStream::connect((peer, PORT)).await {
                                n.connect(s).closed().await;
                            }
                            sleep(Duration::from_millis(200)).await;
                        }
                    });
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    let reg2 = reg.clone();
    sim.client("ctl", async move {
        let reg = reg2;
        // Everybody up everywhere (idle heartbeats every 1.1 s).
        eventually("mesh up", Duration::from_secs(5), async || {
            if reg.lock().expect("registry").len() < 3 {
                return false;
            }
            for n in names {
                let p = node(&reg, n).peers().await;
                if p.map(|p| p.len()).unwrap_or(0) < 2 {
                    return false;
                }
            }
            true
        })
        .await;
        let (a, c) = (node(&reg, "a"), node(&reg, "c"));
        let meta = json!({"status": "online"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let r = a.track("s1", "lobby", "alice", meta.clone()).await?;
        let took = eventually("track visible on c", Duration::from_secs(1), async || {
            c.list("lobby")
                .await
                .map(|s| s.refs() == vec![r.as_str()])
                .unwrap_or(false)
        })
        .await;
        assert!(
            took <= Duration::from_millis(2 * PERIOD),
            "visible on c after {took:?}"
        );

        c.track("s2", "lobby", "carol", meta).await?;
        eventually("carol visible on a", Duration::from_secs(1), async || {
            a.list("lobby")
                .await
                .map(|s| s.keys().contains(&"carol"))
                .unwrap_or(false)
        })
        .await;
        turmoil::partition("a", "c");
        let hidden = eventually("a hides carol", Duration::from_secs(5), async || {
            a.list("lobby")
                .await
                .map(|s| !s.keys().contains(&"carol"))
                .unwrap_or(false)
        })
        .await;
        // down_period 2 000 ms after the last heartbeat heard from c.
        assert!(
            hidden >= Duration::from_millis(800),
            "hidden after {hidden:?}"
        );
        turmoil::repair("a", "c");
        eventually("heal", Duration::from_secs(5), async || {
            a.list("lobby")
                .await
                .map(|s| s.keys() == vec!["alice", "carol"])
                .unwrap_or(false)
        })
        .await;
        Ok(())
    });
    sim.run()
}
