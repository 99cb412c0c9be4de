//! `clock_test.exs` (§5.2), `replica_test.exs` (§5.3), in our words.

mod common;
use common::*;
use phxsim_tracker::clock::{self, ClockSet};
use phxsim_tracker::{Context, PeerStatus, Peers, ReplicaRef};

#[test]
fn dominates() {
    let abc = ctx(&[("a", 1), ("b", 2), ("c", 3)]);
    let ab = ctx(&[("a", 1), ("b", 2)]);
    let bcd = ctx(&[("b", 2), ("c", 3), ("d", 1)]);
    assert!(clock::dominates(&abc, &ab));
    assert!(!clock::dominates(&ab, &abc));
    assert!(!clock::dominates(&abc, &bcd));
    assert!(clock::dominates(&abc, &abc));
    assert!(clock::dominates_or_equal(&abc, &abc));
}

#[test]
fn a_clock_set_trims_members_the_others_already_cover() {
    let c1 = ctx(&[("a", 1), ("b", 2), ("c", 3)]);
    let c2 = ctx(&[("b", 2), ("c", 3), ("d", 1)]);
    let c3 = ctx(&[("a", 1), ("b", 2)]);
    let set = |members: &[(&str, &Context)]| {
        ClockSet::from_members(
            members
                .iter()
                .map(|(n, c)| (n.to_string(), (*c).clone()))
                .collect(),
        )
    };

    // c1 is dominated by the upper bound of c2 and c3, although on its own it dominates c3
    let mut s = set(&[("b", &c2), ("c", &c3)]);
    s.append("a".into(), c1.clone());
    assert_eq!(s, set(&[("b", &c2), ("c", &c3)]));
    assert_eq!(s.replicas(), ["b", "c"]);

    let mut s = set(&[("a", &c1), ("b", &c2)]);
    s.append("c".into(), c3.clone());
    assert_eq!(s, set(&[("a", &c1), ("b", &c2)]));

    let mut s = set(&[("a", &c1), ("b", &c2)]);
    s.append("b".into(), c2.clone());
    assert_eq!(s, set(&[("a", &c1), ("b", &c2)]));

    let mut s = set(&[("a", &c1), ("c", &c3)]);
    s.append("b".into(), c2.clone());
    assert_eq!(
        s.replicas(),
        ["b", "c", "a"],
        "the newcomer first, then the kept ones reversed"
    );
}

#[test]
fn upperbound() {
    let x = ctx(&[("a", 1), ("b", 2), ("c", 2)]);
    let y = ctx(&[("a", 3), ("b", 1), ("d", 2)]);
    assert_eq!(
        clock::upperbound(&x, &y),
        ctx(&[("a", 3), ("b", 2), ("c", 2), ("d", 2)])
    );
    assert_eq!(clock::upperbound(&Context::new(), &x), x);
    assert_eq!(clock::upperbound(&x, &Context::new()), x);
}

#[test]
fn lowerbound() {
    let x = ctx(&[("a", 1), ("b", 2), ("c", 2)]);
    let y = ctx(&[("a", 3), ("b", 1), ("d", 2)]);
    assert_eq!(
        clock::lowerbound(&x, &y),
        ctx(&[("a", 1), ("b", 1), ("c", 2), ("d", 2)])
    );
    assert_eq!(clock::lowerbound(&Context::new(), &x), x);
    assert_eq!(clock::lowerbound(&x, &Context::new()), x);
}

#[test]
fn filter_replicas() {
    let x = ctx(&[("a", 1), ("b", 2), ("c", 2)]);
    assert_eq!(
        clock::filter_replicas(&x, [&r("a"), &r("c")]),
        ctx(&[("a", 1), ("c", 2)])
    );
    assert_eq!(clock::filter_replicas(&x, [&r("zz")]), Context::new());
}

#[test]
fn replicas_of_a_clock() {
    let x = ctx(&[("a", 1), ("b", 2)]);
    assert_eq!(x.keys().cloned().collect::<Vec<_>>(), [r("a"), r("b")]);
    assert!(Context::new().keys().next().is_none());
}

// ---- replica_test.exs: the shard's peer table ------------------------------------------

#[test]
fn two_incarnations_of_a_name_are_different_replicas() {
    let (x, y) = (ReplicaRef::new("n", 1), ReplicaRef::new("n", 2));
    assert_ne!(x, y);
    assert_eq!((x.name.as_str(), x.vsn), ("n", 1));
}

#[test]
fn a_first_heartbeat_adds_the_peer_up() {
    let mut peers = Peers::new();
    assert_eq!(peers.put_heartbeat(&r("b"), 10), None);
    let p = peers.get("b").unwrap();
    assert_eq!((p.status, p.last_heartbeat_at), (PeerStatus::Up, 10));
}

#[test]
fn a_later_heartbeat_brings_the_peer_up_and_returns_the_previous_entry() {
    for status in [PeerStatus::Up, PeerStatus::Down] {
        let mut peers = Peers::new();
        peers.put_heartbeat(&r("b"), 10);
        if status == PeerStatus::Down {
            peers.detect_down("b", 100, 5, 1000);
        }
        let prev = peers.put_heartbeat(&r("b"), 200).unwrap();
        assert_eq!(prev.status, status);
        let now = peers.get("b").unwrap();
        assert_eq!(now.status, PeerStatus::Up);
        assert_ne!(now.last_heartbeat_at, prev.last_heartbeat_at);
    }
}

#[test]
fn detect_down_marks_a_silent_peer_down_and_keeps_it() {
    let mut peers = Peers::new();
    peers.put_heartbeat(&r("b"), 0);
    let (prev, updated) = peers.detect_down("b", 6, 5, 10).unwrap();
    assert_eq!(
        (prev.status, updated.status),
        (PeerStatus::Up, PeerStatus::Down)
    );
    assert_eq!(peers.get("b").unwrap().status, PeerStatus::Down);
}

#[test]
fn detect_down_permdowns_a_long_silent_peer_and_removes_it() {
    let mut peers = Peers::new();
    peers.put_heartbeat(&r("b"), 0);
    let (_, updated) = peers.detect_down("b", 11, 5, 10).unwrap();
    assert_eq!(updated.status, PeerStatus::Permdown);
    assert!(peers.get("b").is_none());
}

#[test]
fn detect_down_leaves_a_live_peer_alone() {
    let mut peers = Peers::new();
    peers.put_heartbeat(&r("b"), 0);
    let before = peers.clone();
    let (prev, updated) = peers.detect_down("b", 0, 5, 10).unwrap();
    assert_eq!(prev, updated);
    assert_eq!(peers, before);
}
