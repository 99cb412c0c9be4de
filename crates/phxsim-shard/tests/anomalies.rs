//! The reference's client-visible anomalies (tracker.md, "Known anomalies" 1 and 2), reproduced
//! by scripts in the faithful profile and absent in the corrected one.
//!
//! A client that applies every `presence_diff` of its node to the state it holds sees an anomaly
//! when a diff does not apply cleanly: a join of a `phx_ref` it already holds, or a leave of one
//! it does not hold. [`ClientView`] is that client.

mod common;

use common::replay::{P7_HEAL, P7_PARTITION_A_C, replay_run2};
use common::*;
use phxsim_shard::{Profile, SimNet, TrackerConfig, TrackerEvent};
use serde_json::json;
use std::collections::BTreeSet;

/// What a client of one node holds, built only from that node's diffs.
#[derive(Default)]
struct ClientView {
    held: BTreeSet<String>,
    duplicate_joins: Vec<(u64, String)>,
    unknown_leaves: Vec<(u64, String)>,
}

impl ClientView {
    /// Applies every diff `node` emitted, in order (joins before leaves, as phoenix.js does).
    fn of(net: &SimNet, node: &str) -> Self {
        let mut v = Self::default();
        for (at, joins, leaves) in diff_refs(net, node, 0) {
            for r in joins {
                if !v.held.insert(r.clone()) {
                    v.duplicate_joins.push((at, r));
                }
            }
            for r in leaves {
                if !v.held.remove(&r) {
                    v.unknown_leaves.push((at, r));
                }
            }
        }
        v
    }
}

fn dave_ref(net: &SimNet, since: u64) -> String {
    net.events_of("c", since)
        .into_iter()
        .find_map(|(_, e)| match e {
            TrackerEvent::PresenceDiff { diff, .. } => diff
                .joins
                .get("dave")
                .and_then(|m| m.first())
                .and_then(|m| m["phx_ref"].as_str().map(str::to_owned)),
            _ => None,
        })
        .expect("c reported dave's join")
}

#[test]
fn asymmetric_split_gives_a_duplicate_leave_in_the_faithful_profile() {
    // Reference P7: a–c cut, b sees both. a reports dave gone when it marks c down; then c
    // updates dave, b relays the removal of dave's old dot as a tombstone in its own delta,
    // and a reports the same leave again (reference: a second, leave-only diff at +1 330 ms).
    let r = replay_run2(Profile::faithful());
    let net = &r.net;
    let old_dave = dave_ref(net, 0);
    let p7: Vec<_> = diff_refs(net, "a", P7_PARTITION_A_C)
        .into_iter()
        .filter(|(at, _, _)| *at < P7_HEAL)
        .collect();
    let leaves_of_dave: Vec<u64> = p7
        .iter()
        .filter(|(_, _, l)| l.contains(&old_dave))
        .map(|(at, _, _)| *at)
        .collect();
    assert_eq!(leaves_of_dave.len(), 2, "a's diffs in P7: {p7:?}");
    let (first, second) = (leaves_of_dave[0], leaves_of_dave[1]);
    let down_at = replica_events(net, "a", P7_PARTITION_A_C)
        .into_iter()
        .find(|e| e.1 == "down" && e.2 == "c")
        .expect("a marks c down")
        .0;
    assert_eq!(first, down_at, "first leave: replica_down");
    let second_diff = p7.iter().find(|(at, _, _)| *at == second).unwrap();
    assert!(second_diff.1.is_empty(), "the second diff is leave-only");
    assert!(
        (second - P7_PARTITION_A_C).abs_diff(1_330) <= 100,
        "reference: the duplicate leave at +1 330 ms, here +{}",
        second - P7_PARTITION_A_C
    );
    let client = ClientView::of(net, "a");
    assert_eq!(client.unknown_leaves, vec![(second, old_dave)]);
}

#[test]
fn the_corrected_profile_gives_every_client_a_clean_diff_stream() {
    // The whole reference run, corrected: every diff applies cleanly on every node, and the
    // nodes still converge (the last rows of the replay check that).
    let r = replay_run2(Profile::corrected());
    for node in ["a", "b", "c"] {
        let client = ClientView::of(&r.net, node);
        assert!(
            client.duplicate_joins.is_empty() && client.unknown_leaves.is_empty(),
            "{node}: duplicate joins {:?}, unknown leaves {:?}",
            client.duplicate_joins,
            client.unknown_leaves
        );
    }
    // And the faithful run is not clean, so this check can fail.
    let f = replay_run2(Profile::faithful());
    assert!(!ClientView::of(&f.net, "a").unknown_leaves.is_empty());
}

/// a–c cut; c tracks zed; b relays c's clock to a in an idle heartbeat that lands just before
/// the tick at which a both decides on transfers and marks c down. a asks b (c still up, so its
/// clocks name c), marks c down, and b's answer brings zed: a join reported while `list` hides
/// it. On heal, `replica_up(c)` reports zed again.
fn transfer_racing_down(profile: Profile) -> SimNet {
    let cfg = TrackerConfig {
        profile,
        ..reference_config()
    };
    let mut net = SimNet::new(0, 1);
    net.add(tracker(&cfg, "a", 1, 0, 10));
    net.add(tracker(&cfg, "c", 1, 0, 80));
    net.run_until(316);
    net.add(tracker(&cfg, "b", 1, 316, 45));
    net.connect_all();
    net.run_until(1_600);
    net.with("c", |t| {
        t.track("carol-1", "lobby", "carol", &meta(json!({})))
    })
    .unwrap();
    net.run_until(2_000);
    net.disconnect("a", "c");
    net.run_until(3_000);
    net.with("c", |t| t.track("zed-1", "lobby", "zed", &meta(json!({}))))
        .unwrap();
    net.run_until(5_000);
    net.connect("a", "c");
    net.run_until(6_000);
    net
}

fn zed_joins(net: &SimNet) -> Vec<u64> {
    diffs(net, "a", "lobby", 0)
        .into_iter()
        .filter(|(_, j, _)| j.iter().any(|k| k == "zed"))
        .map(|(at, _, _)| at)
        .collect()
}

#[test]
fn a_transfer_racing_replica_down_gives_a_duplicate_join_in_the_faithful_profile() {
    let net = transfer_racing_down(Profile::faithful());
    let events = replica_events(&net, "a", 0);
    let down = events
        .iter()
        .find(|e| e.1 == "down" && e.2 == "c")
        .expect("a marks c down")
        .0;
    let up = events
        .iter()
        .find(|e| e.1 == "up" && e.2 == "c" && e.0 > down)
        .expect("a marks c up after the heal")
        .0;
    // Precondition of the race: the transfer request to b left on the down tick.
    assert!(
        net.sent_since(down)
            .iter()
            .any(|(at, from, to, kind)| *at == down
                && from == "a"
                && to == "b"
                && *kind == "transfer_req"),
        "a asked b for a transfer on the tick it marked c down"
    );
    assert_eq!(zed_joins(&net), vec![down, up]);
    let client = ClientView::of(&net, "a");
    assert_eq!(client.duplicate_joins.len(), 1);
    assert_eq!(client.duplicate_joins[0].0, up);
    // The first join was of a presence `list` hid: zed's replica was down.
    assert!(lists_all(&net, "a", "lobby", &["carol", "zed"]));
}

#[test]
fn a_transfer_racing_replica_down_joins_once_in_the_corrected_profile() {
    let net = transfer_racing_down(Profile::corrected());
    let up = replica_events(&net, "a", 0)
        .into_iter()
        .rfind(|e| e.1 == "up" && e.2 == "c")
        .expect("a marks c up after the heal")
        .0;
    assert_eq!(zed_joins(&net), vec![up]);
    let client = ClientView::of(&net, "a");
    assert!(client.duplicate_joins.is_empty() && client.unknown_leaves.is_empty());
    assert!(lists_all(&net, "a", "lobby", &["carol", "zed"]));
}
