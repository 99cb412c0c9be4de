//! phoenix_pubsub's `shard_replication_test.exs` (phoenix-protocol.md §5.6), in our own words,
//! on the scripted network with the upstream test settings (period 100, 2 silent periods so an
//! idle heartbeat every 300 ms, down 400 ms, permdown 1 500 ms). The nodes are `primary`,
//! `node1`, `node2`. "Stops listening" is a one-way cut towards the primary. Cases 17 and 18
//! (`handle_info` callbacks of a tracker module) have no counterpart: there is no callback
//! module here.

mod common;

use common::*;
use phxsim_shard::{PresenceError, Profile, SimNet, TrackerConfig};
use phxsim_tracker::PeerStatus;
use serde_json::json;

fn cfg() -> TrackerConfig {
    upstream_test_config(1, Profile::faithful())
}

/// `names` started at time `now`, first ticks spread by 7 ms, not connected yet.
fn net_of(names: &[&str]) -> SimNet {
    let mut net = SimNet::new(1, 0);
    for (i, n) in names.iter().enumerate() {
        net.add(tracker(&cfg(), n, 1, 0, 7 * i as u64));
    }
    net
}

fn cluster(names: &[&str]) -> SimNet {
    let mut net = net_of(names);
    net.connect_all();
    let all_up = |n: &SimNet| {
        names.iter().all(|a| {
            let others: Vec<&str> = names.iter().copied().filter(|b| b != a).collect();
            sees_up(n, a, &others)
        })
    };
    net.run_until_cond(2_000, all_up).expect("cluster up");
    net
}

fn track(net: &mut SimNet, node: &str, owner: &str, topic: &str, key: &str) -> String {
    net.with(node, |t| {
        t.track(owner, topic, key, &meta(json!({"name": key})))
    })
    .expect("track")
}

fn wait(net: &mut SimNet, ms: u64, cond: impl FnMut(&SimNet) -> bool) -> u64 {
    let limit = net.now() + ms;
    net.run_until_cond(limit, cond)
        .unwrap_or_else(|| panic!("condition not met within {ms} ms"))
}

#[test]
fn heartbeats() {
    let mut net = net_of(&["primary", "node1"]);
    net.connect_all();
    net.run_until(1_000);
    let hb: Vec<u64> = net
        .sent_since(0)
        .into_iter()
        .filter(|(_, from, _, kind)| from == "primary" && *kind == "heartbeat_empty")
        .map(|(at, ..)| at)
        .collect();
    assert!(hb.len() >= 3, "{hb:?}");
    // Idle cadence: every (max_silent_periods + 1) ticks.
    assert!(hb.windows(2).all(|w| w[1] - w[0] == 300), "{hb:?}");
}

#[test]
fn gossip_from_unseen_node_triggers_nodeup_and_transfer_request() {
    let mut net = net_of(&["primary", "node1"]);
    net.connect_all();
    net.disconnect_oneway("node1", "primary");
    let r = track(&mut net, "node1", "p1", "topic", "node1");
    net.run_until(500);
    assert!(peer_status(&net, "primary", "node1").is_none());
    let resumed = net.now();
    net.connect("node1", "primary");
    wait(&mut net, 1_000, |n| {
        lists_all(n, "primary", "topic", &["node1"])
    });
    let sent = net.sent_since(resumed);
    let kinds: Vec<(&str, &str, &str)> = sent
        .iter()
        .filter(|(_, _, _, k)| k.starts_with("transfer"))
        .map(|(_, f, t, k)| (f.as_str(), t.as_str(), *k))
        .collect();
    assert_eq!(
        kinds[..2],
        [
            ("primary", "node1", "transfer_req"),
            ("node1", "primary", "transfer_ack")
        ]
    );
    assert_eq!(net.node("primary").list("topic").refs(), vec![r.as_str()]);
}

#[test]
fn requests_for_transfer_collapses_clocks() {
    let mut net = cluster(&["primary", "node1", "node2"]);
    net.disconnect_oneway("node1", "primary");
    net.disconnect_oneway("node2", "primary");
    track(&mut net, "node1", "p1", "topic", "one");
    track(&mut net, "node1", "p2", "topic", "two");
    track(&mut net, "node2", "p3", "topic", "three");
    wait(&mut net, 1_000, |n| {
        lists_all(n, "node1", "topic", &["three"])
            && lists_all(n, "node2", "topic", &["one", "two"])
    });
    // Resume before the primary marks them down (down_period 400): nothing for it to merge
    // but clocks.
    let resumed = net.now();
    net.connect("node1", "primary");
    net.connect("node2", "primary");
    wait(&mut net, 1_000, |n| {
        lists_all(n, "primary", "topic", &["one", "two", "three"])
    });
    net.run_until(net.now() + 500);
    let reqs: Vec<String> = net
        .sent_since(resumed)
        .into_iter()
        .filter(|(_, from, _, k)| from == "primary" && *k == "transfer_req")
        .map(|(_, _, to, _)| to)
        .collect();
    assert_eq!(
        reqs.len(),
        1,
        "one request, to the dominant node only: {reqs:?}"
    );
}

#[test]
fn old_pids_from_a_node_are_permdowned_when_the_node_comes_back_up() {
    let mut net = cluster(&["primary", "node1", "node2"]);
    track(&mut net, "node1", "old-pid", "topic", "old");
    wait(&mut net, 1_000, |n| {
        lists_all(n, "primary", "topic", &["old"])
    });
    net.crash("node1");
    wait(&mut net, 3_000, |n| {
        peer_status(n, "primary", "node1").is_none()
    });
    assert!(
        replica_events(&net, "primary", 0)
            .iter()
            .any(|e| e.1 == "permdown" && e.2 == "node1")
    );
    let now = net.now();
    net.add(tracker(&cfg(), "node1", 2, now, 3));
    net.connect_all();
    track(&mut net, "node1", "new-pid", "topic", "new");
    wait(&mut net, 2_000, |n| {
        ["primary", "node1", "node2"]
            .iter()
            .all(|x| lists_all(n, x, "topic", &["new"]))
    });
    net.run_until(net.now() + 1_000);
    for node in ["primary", "node1", "node2"] {
        let dirty = net.node(node).dirty_list("topic");
        assert_eq!(
            dirty.keys(),
            vec!["new"],
            "no zombie of the old pid on {node}"
        );
    }
}

#[test]
fn tempdowns_with_nodeups_of_new_vsn_and_permdowns() {
    let mut net = cluster(&["primary", "node1", "node2"]);
    track(&mut net, "node1", "p1", "topic", "node1");
    track(&mut net, "node2", "p2", "topic", "node2");
    wait(&mut net, 1_000, |n| {
        lists_all(n, "primary", "topic", &["node1", "node2"])
    });
    // Suspend node1: leave and down, same vsn.
    net.isolate("node1");
    wait(&mut net, 1_000, |n| {
        lists_none(n, "primary", "topic", &["node1"])
    });
    assert_eq!(
        peer_status(&net, "primary", "node1").map(|(r, s)| (r.vsn, s)),
        Some((1, PeerStatus::Down))
    );
    // Resume: join and up, same vsn.
    net.connect_all();
    wait(&mut net, 1_000, |n| {
        lists_all(n, "primary", "topic", &["node1"])
    });
    assert_eq!(
        peer_status(&net, "primary", "node1").map(|(r, s)| (r.vsn, s)),
        Some((1, PeerStatus::Up))
    );
    // Kill: leave and down.
    net.crash("node1");
    wait(&mut net, 1_000, |n| {
        lists_none(n, "primary", "topic", &["node1"])
    });
    // Restart with a new vsn.
    let now = net.now();
    net.add(tracker(&cfg(), "node1", 2, now, 0));
    net.connect_all();
    track(&mut net, "node1", "p1", "topic", "node1-back");
    wait(&mut net, 1_500, |n| {
        lists_all(n, "primary", "topic", &["node2", "node1-back"])
    });
    assert_eq!(
        net.node("primary").list("topic").keys(),
        vec!["node1-back", "node2"]
    );
    assert_eq!(
        peer_status(&net, "primary", "node1").map(|(r, _)| r.vsn),
        Some(2)
    );
    // Kill again: leave, and after permdown only node2 remains in the table.
    net.crash("node1");
    wait(&mut net, 1_000, |n| {
        lists_none(n, "primary", "topic", &["node1-back"])
    });
    wait(&mut net, 3_000, |n| {
        peer_status(n, "primary", "node1").is_none()
    });
    let names: Vec<String> = net
        .node("primary")
        .peers()
        .into_iter()
        .map(|p| p.replica.name.into())
        .collect();
    assert_eq!(names, vec!["node2"]);
}

#[test]
fn node_detects_and_locally_broadcasts_presence_join_and_leave() {
    let mut net = cluster(&["primary", "node1"]);
    let local = track(&mut net, "primary", "local-pid", "topic", "local");
    let d = diff_refs(&net, "primary", 0);
    assert_eq!(
        d.last().unwrap().1,
        vec![local.clone()],
        "local join at once"
    );
    assert_eq!(
        net.node("primary").list("topic").metas("local")[0]["phx_ref"],
        json!(local)
    );
    let since = net.now();
    let remote = track(&mut net, "node1", "remote-pid", "topic", "remote");
    wait(&mut net, 500, |n| {
        lists_all(n, "primary", "topic", &["remote"])
    });
    assert!(
        diff_refs(&net, "primary", since)
            .iter()
            .any(|(_, j, _)| j == &vec![remote.clone()])
    );
    net.with("primary", |t| t.untrack_owner("local-pid"))
        .unwrap();
    let last = diff_refs(&net, "primary", 0).pop().unwrap();
    assert_eq!(last.2, vec![local]);
    let since = net.now();
    net.with("node1", |t| t.untrack_owner("remote-pid"))
        .unwrap();
    wait(&mut net, 500, |n| {
        lists_none(n, "primary", "topic", &["remote"])
    });
    assert!(
        diff_refs(&net, "primary", since)
            .iter()
            .any(|(_, j, l)| j.is_empty() && l == &vec![remote.clone()])
    );
}

#[test]
fn detects_nodedown_and_locally_broadcasts_leaves() {
    let mut net = cluster(&["primary", "node1"]);
    track(&mut net, "node1", "p", "topic", "node1");
    wait(&mut net, 500, |n| {
        lists_all(n, "primary", "topic", &["node1"])
    });
    net.crash("node1");
    wait(&mut net, 1_000, |n| {
        lists_none(n, "primary", "topic", &["node1"])
    });
    assert_eq!(
        peer_status(&net, "primary", "node1").map(|(_, s)| s),
        Some(PeerStatus::Down)
    );
    assert_eq!(
        net.node("primary").dirty_list("topic").keys(),
        vec!["node1"]
    );
    wait(&mut net, 2_000, |n| {
        n.node("primary").dirty_list("topic").is_empty()
    });
    assert!(peer_status(&net, "primary", "node1").is_none());
}

#[test]
fn untrack_with_no_tracked_topic_is_a_noop() {
    let mut net = net_of(&["primary"]);
    assert_eq!(
        net.with("primary", |t| t.untrack("nobody", "topic", "key")),
        Ok(())
    );
    assert!(net.events_of("primary", 0).is_empty());
}

#[test]
fn untrack_with_topic_removes_only_that_topic() {
    let mut net = net_of(&["primary"]);
    track(&mut net, "primary", "pid", "topic1", "one");
    track(&mut net, "primary", "pid", "topic2", "two");
    net.with("primary", |t| t.untrack("pid", "topic1", "one"))
        .unwrap();
    assert!(net.node("primary").list("topic1").is_empty());
    assert_eq!(net.node("primary").list("topic2").keys(), vec!["two"]);
    net.with("primary", |t| t.untrack("pid", "topic2", "two"))
        .unwrap();
    assert!(net.node("primary").list("topic2").is_empty());
}

#[test]
fn untrack_from_all_topics() {
    let mut net = net_of(&["primary"]);
    track(&mut net, "primary", "pid", "topic1", "one");
    track(&mut net, "primary", "pid", "topic2", "two");
    track(&mut net, "primary", "other", "topic2", "three");
    net.with("primary", |t| t.untrack_owner("pid")).unwrap();
    assert!(net.node("primary").list("topic1").is_empty());
    assert_eq!(net.node("primary").list("topic2").keys(), vec!["three"]);
}

#[test]
fn updating_presence_sends_join_and_leave_and_phx_ref_prev() {
    let mut net = cluster(&["primary", "node1"]);
    let old = net
        .with("primary", |t| {
            t.track("pid", "topic", "u1", &meta(json!({"name": "u1"})))
        })
        .unwrap();
    // Let node1 see the original first: a track and an update within one broadcast window
    // reach peers as the new meta alone.
    wait(&mut net, 500, |n| lists_all(n, "node1", "topic", &["u1"]));
    let new = net
        .with("primary", |t| {
            t.update("pid", "topic", "u1", &meta(json!({"name": "u1-updated"})))
        })
        .unwrap();
    let (_, joins, leaves) = diff_refs(&net, "primary", 0).pop().unwrap();
    assert_eq!((joins, leaves), (vec![new.clone()], vec![old.clone()]));
    let metas = net.node("primary").get_by_key("topic", "u1");
    assert_eq!(
        metas,
        vec![json!({"phx_ref": new, "phx_ref_prev": old, "name": "u1-updated"})]
    );
    // The remote node gets the same change as one diff.
    wait(&mut net, 500, |n| {
        field(n, "node1", "topic", "u1", "name") == Some(json!("u1-updated"))
    });
    let (_, joins, leaves) = diff_refs(&net, "node1", 0).pop().unwrap();
    assert_eq!((joins, leaves), (vec![new], vec![old]));
}

#[test]
fn updating_presence_with_a_function_keeps_the_other_fields() {
    let mut net = net_of(&["primary"]);
    let old = net
        .with("primary", |t| {
            t.track("pid", "topic", "u1", &meta(json!({"name": "u1", "age": 3})))
        })
        .unwrap();
    let new = net
        .with("primary", |t| {
            t.update_with("pid", "topic", "u1", |m| {
                let mut m = m.clone();
                m.insert("status".into(), json!("away"));
                m
            })
        })
        .unwrap();
    let metas = net.node("primary").get_by_key("topic", "u1");
    assert_eq!(
        metas,
        vec![
            json!({"phx_ref": new, "phx_ref_prev": old, "name": "u1", "age": 3, "status": "away"})
        ]
    );
}

#[test]
fn updating_with_no_prior_presence() {
    let mut net = net_of(&["primary"]);
    let err = net
        .with("primary", |t| {
            t.update("pid", "topic", "u1", &meta(json!({})))
        })
        .unwrap_err();
    assert!(matches!(err, PresenceError::NoPresence { .. }));
}

#[test]
fn duplicate_tracking() {
    let mut net = net_of(&["primary"]);
    track(&mut net, "primary", "pid", "topic", "u1");
    let err = net
        .with("primary", |t| {
            t.track("pid", "topic", "u1", &meta(json!({})))
        })
        .unwrap_err();
    assert_eq!(
        err,
        PresenceError::AlreadyTracked {
            owner: "pid".into(),
            topic: "topic".into(),
            key: "u1".into()
        }
    );
    assert!(err.to_string().starts_with("already tracked"));
    track(&mut net, "primary", "pid", "topic2", "u1");
    track(&mut net, "primary", "pid", "topic", "u2");
    for (topic, key) in [("topic", "u1"), ("topic2", "u1"), ("topic", "u2")] {
        assert_eq!(
            net.with("primary", |t| t.untrack("pid", topic, key)),
            Ok(())
        );
    }
    assert!(net.node("primary").list("topic").is_empty());
}

#[test]
fn graceful_exits_with_permdown() {
    let mut net = cluster(&["primary", "node1"]);
    track(&mut net, "node1", "p", "topic", "node1");
    wait(&mut net, 500, |n| {
        lists_all(n, "primary", "topic", &["node1"])
    });
    let t0 = net.now();
    net.with("node1", |t| t.graceful_permdown());
    let gone = wait(&mut net, 100, |n| {
        n.node("primary").list("topic").is_empty()
    });
    assert!(gone - t0 <= 1, "at once, not after down_period");
    assert!(net.node("primary").peers().is_empty());
    assert!(net.node("primary").dirty_list("topic").is_empty());
}

#[test]
fn rolling_node_update_sends_exactly_one_transfer_request() {
    let cfg = TrackerConfig {
        permdown_period: 2_000,
        ..cfg()
    };
    let mut net = SimNet::new(1, 0);
    net.add(tracker(&cfg, "primary", 1, 0, 0));
    net.add(tracker(&cfg, "node1", 1, 0, 5));
    net.connect_all();
    net.run_until_cond(2_000, |n| sees_up(n, "primary", &["node1"]))
        .unwrap();
    net.with("primary", |t| {
        t.track("p", "topic", "primary", &meta(json!({})))
    })
    .unwrap();
    net.crash("node1");
    wait(&mut net, 1_000, |n| {
        peer_status(n, "primary", "node1").map(|p| p.1) == Some(PeerStatus::Down)
    });
    // node2 starts; the primary's clocks leave the down node1 out, so node2, once caught up,
    // is as up to date as everyone it can hear and stops asking (phoenix_pubsub #135).
    let start = net.now();
    net.add(tracker(&cfg, "node2", 1, start, 0));
    net.connect_all();
    wait(&mut net, 1_000, |n| {
        lists_all(n, "node2", "topic", &["primary"])
    });
    wait(&mut net, 3_000, |n| {
        peer_status(n, "primary", "node1").is_none()
    });
    let reqs = net
        .sent_since(start)
        .into_iter()
        .filter(|(_, from, to, k)| from == "node2" && to == "primary" && *k == "transfer_req")
        .count();
    assert_eq!(reqs, 1);
    assert!(
        !net.node("node2").shards()[0]
            .state()
            .context()
            .keys()
            .any(|r| r.name == "node1"),
        "node2 never learns of node1"
    );
}

/// What a simulator's sampler reads in one pass (`list_and_local`) is `list` and `local_list`
/// read separately, with remote values, several presences of one key and a replica down; and
/// the revision moves whenever that answer does.
#[test]
fn list_and_local_is_list_and_local_list_and_the_revision_follows_them() {
    let mut net = cluster(&["primary", "node1"]);
    let same = |net: &SimNet, node: &str| {
        let t = net.node(node);
        for topic in ["room:1", "room:2"] {
            assert_eq!(
                t.list_and_local(topic),
                (t.list(topic), t.local_list(topic)),
                "{node} {topic}"
            );
        }
    };
    let before = net.node("primary").revision();
    track(&mut net, "primary", "p1", "room:1", "alice");
    track(&mut net, "primary", "p2", "room:1", "alice");
    track(&mut net, "node1", "n1", "room:1", "bob");
    track(&mut net, "node1", "n2", "room:2", "carol");
    assert_ne!(net.node("primary").revision(), before, "a local track");
    wait(&mut net, 1_000, |n| {
        n.node("primary").list("room:1").0.len() == 2
    });
    same(&net, "primary");
    same(&net, "node1");

    // a quiet cluster: heartbeats come and go, the revision stays
    let quiet = net.node("primary").revision();
    let t = net.now();
    net.run_until(t + 1_000);
    assert_eq!(net.node("primary").revision(), quiet, "idle heartbeats");

    // node1 goes down for primary: its values are hidden, and the revision moves
    net.disconnect("primary", "node1");
    wait(&mut net, 2_000, |n| {
        n.node("primary").list("room:1").0.len() == 1
    });
    assert_ne!(net.node("primary").revision(), quiet, "a replica down");
    same(&net, "primary");
}
