//! phoenix_pubsub's `pool_test.exs` (phoenix-protocol.md §5.7), in our own words, for pool sizes
//! 1, 2, 8 and 512, plus what the pool means for replication: shard `n` replicates only with
//! shard `n`, and every topic, whatever its shard, reaches the other node. (`tracker_test.exs`,
//! §5.8, checks an Elixir child spec and has no counterpart here.)

mod common;

use common::*;
use phxsim_shard::{Profile, SimNet, Tracker, TrackerConfig};
use serde_json::json;

const SIZES: [u32; 4] = [1, 2, 8, 512];

fn pool(size: u32) -> Tracker {
    tracker(
        &upstream_test_config(size, Profile::faithful()),
        "me",
        1,
        0,
        0,
    )
}

fn topics() -> impl Iterator<Item = String> {
    (0..100).map(|i| format!("topic{i}"))
}

#[test]
fn a_track_results_in_the_id_being_tracked() {
    for size in SIZES {
        let mut t = pool(size);
        let r = t
            .track("pid", "topic", "me", &meta(json!({"name": "me"})))
            .unwrap();
        assert_eq!(
            t.list("topic").to_json(),
            json!({"me": {"metas": [{"phx_ref": r, "name": "me"}]}}),
            "pool size {size}"
        );
    }
}

#[test]
fn tracks_result_in_all_ids_being_tracked() {
    for size in SIZES {
        let mut t = pool(size);
        let refs: Vec<(String, String)> = topics()
            .map(|topic| {
                let r = t
                    .track("pid", &topic, "me", &meta(json!({"name": "me"})))
                    .unwrap();
                (topic, r)
            })
            .collect();
        for (topic, r) in refs {
            assert_eq!(t.list(&topic).refs(), vec![r.as_str()], "pool size {size}");
        }
        if size > 1 {
            let used: std::collections::BTreeSet<usize> =
                topics().map(|tp| t.shard_index(&tp)).collect();
            assert!(used.len() > 1, "topics spread over shards (size {size})");
        }
    }
}

#[test]
fn untrack_results_in_all_ids_being_untracked() {
    for size in SIZES {
        let mut t = pool(size);
        for topic in topics() {
            t.track("pid", &topic, "me", &meta(json!({}))).unwrap();
        }
        for topic in topics() {
            t.untrack("pid", &topic, "me").unwrap();
        }
        assert!(
            topics().all(|tp| t.list(&tp).is_empty()),
            "pool size {size}"
        );
    }
}

#[test]
fn untrack_owner_results_in_all_ids_being_untracked() {
    for size in SIZES {
        let mut t = pool(size);
        for topic in topics() {
            t.track("pid", &topic, "me", &meta(json!({}))).unwrap();
        }
        t.untrack_owner("pid").unwrap();
        assert!(
            topics().all(|tp| t.list(&tp).is_empty()),
            "pool size {size}"
        );
    }
}

#[test]
fn update_replaces_the_metas() {
    for size in SIZES {
        let mut t = pool(size);
        let old: Vec<String> = topics()
            .map(|tp| {
                t.track("pid", &tp, "me", &meta(json!({"name": "me"})))
                    .unwrap()
            })
            .collect();
        for (tp, old) in topics().zip(old) {
            let new = t
                .update("pid", &tp, "me", &meta(json!({"name": "me-updated"})))
                .unwrap();
            assert_ne!(new, old);
            assert_eq!(
                t.get_by_key(&tp, "me"),
                vec![json!({"phx_ref": new, "phx_ref_prev": old, "name": "me-updated"})],
                "pool size {size}"
            );
        }
    }
}

#[test]
fn update_applies_a_function_to_the_metas() {
    for size in SIZES {
        let mut t = pool(size);
        for tp in topics() {
            t.track("pid", &tp, "me", &meta(json!({"name": "me", "n": 1})))
                .unwrap();
        }
        for tp in topics() {
            t.update_with("pid", &tp, "me", |m| {
                let mut m = m.clone();
                m.insert("n".into(), json!(m["n"].as_i64().unwrap_or(0) + 1));
                m
            })
            .unwrap();
            let metas = t.get_by_key(&tp, "me");
            assert_eq!(metas[0]["n"], json!(2), "pool size {size}");
            assert_eq!(metas[0]["name"], json!("me"));
        }
    }
}

#[test]
fn graceful_permdown_stops_every_shard_and_a_restarted_pool_is_empty() {
    for size in SIZES {
        let mut t = pool(size);
        for tp in topics() {
            t.track("pid", &tp, "me", &meta(json!({}))).unwrap();
        }
        t.graceful_permdown();
        assert!(t.shards().iter().all(|s| s.is_stopped()));
        assert_eq!(t.poll_timeout(), None);
        let mut sent = 0;
        while t.poll_transmit().is_some() {
            sent += 1;
        }
        assert_eq!(sent, size as usize, "one graceful_permdown per shard");
        assert!(t.track("pid", "topic0", "x", &meta(json!({}))).is_err());
        let restarted = tracker(
            &upstream_test_config(size, Profile::faithful()),
            "me",
            2,
            0,
            0,
        );
        assert!(topics().all(|tp| restarted.list(&tp).is_empty()));
    }
}

#[test]
fn every_shard_replicates_with_its_counterpart() {
    for size in SIZES {
        let cfg: TrackerConfig = upstream_test_config(size, Profile::faithful());
        let mut net = SimNet::new(1, 0);
        net.add(tracker(&cfg, "a", 1, 0, 0));
        net.add(tracker(&cfg, "b", 1, 0, 50));
        net.connect_all();
        for tp in topics() {
            net.with("a", |t| t.track("pid", &tp, "from-a", &meta(json!({}))))
                .unwrap();
        }
        net.run_until_cond(3_000, |n| {
            topics().all(|tp| lists_all(n, "b", &tp, &["from-a"]))
        })
        .unwrap_or_else(|| panic!("pool size {size}: not replicated"));
        // Each shard is its own replica: b's shard i knows a only in shard i.
        for (i, shard) in net.node("b").shards().iter().enumerate() {
            let holds = shard.state().len();
            let expected = topics()
                .filter(|tp| net.node("b").shard_index(tp) == i)
                .count();
            assert_eq!(holds, expected, "pool size {size}, shard {i}");
        }
    }
}
