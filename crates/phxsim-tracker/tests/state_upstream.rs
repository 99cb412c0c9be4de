//! `test/phoenix/tracker/state_test.exs` (phoenix_pubsub 2.2, §5.1 of the spec), in our words.

mod common;
use common::*;
use phxsim_tracker::State;
use serde_json::json;

#[test]
fn a_fresh_state_extracts_nothing_for_itself() {
    let s = new_state("a");
    let ex = s.extract(s.replica(), &s.clocks());
    assert!(ex.values.is_empty());
}

#[test]
fn a_joined_user_is_online_until_it_leaves() {
    let mut s = new_state("a");
    s.join(k("lobby", "p1", "alice"), empty()).unwrap();
    assert_eq!(keys(&s.get_by_topic("lobby")), ["alice"]);
    s.leave(&k("lobby", "p1", "alice")).unwrap();
    assert!(s.get_by_topic("lobby").is_empty());
}

#[test]
fn users_from_other_servers_merge() {
    let (mut a, mut b) = (new_state("a"), new_state("b"));
    connect(&mut [&mut a, &mut b]);
    a.join(k("lobby", "pa", "alice"), empty()).unwrap();
    b.join(k("lobby", "pb", "bob"), empty()).unwrap();

    let d = transfer(&b, &mut a);
    assert_eq!(keys(&d.joins), ["bob"]);
    assert!(d.leaves.is_empty());
    assert_eq!(sorted_keys(&a.online()), ["alice", "bob"]);

    // merging the same thing again: no events, same state, same pid rows
    let before = (a.online(), a.context().clone(), a.get_by_pid("pb"));
    let d = transfer(&b, &mut a);
    assert!(d.is_empty());
    assert_eq!(
        before,
        (a.online(), a.context().clone(), a.get_by_pid("pb"))
    );

    let d = transfer(&a, &mut b);
    assert_eq!(keys(&d.joins), ["alice"]);

    a.leave(&k("lobby", "pa", "alice")).unwrap();
    let d = transfer(&a, &mut b);
    assert_eq!(keys(&d.leaves), ["alice"]);
    assert!(b.get_by_pid("pa").is_empty());

    b.join(k("lobby", "pc", "carol"), empty()).unwrap();
    let d = transfer(&b, &mut a);
    assert_eq!(keys(&d.joins), ["carol"]);
    assert_eq!(sorted_keys(&a.online()), sorted_keys(&b.online()));

    b.update(&k("lobby", "pc", "carol"), json!({"updated": true}))
        .unwrap();
    let d = transfer(&b, &mut a);
    assert_eq!(keys(&d.joins), ["carol"]);
    assert_eq!(d.joins[0].meta, json!({"updated": true}));
    assert_eq!(keys(&d.leaves), ["carol"]);
    assert_eq!(d.leaves[0].meta, json!({}));
    let pids = a.get_by_pid("pc");
    assert!(transfer(&b, &mut a).is_empty());
    assert_eq!(a.get_by_pid("pc"), pids);
}

#[test]
fn basic_netsplit_hides_and_restores_a_replica() {
    let (mut a, mut b) = (new_state("a"), new_state("b"));
    connect(&mut [&mut a, &mut b]);
    a.join(k("lobby", "pa", "alice"), empty()).unwrap();
    b.join(k("lobby", "pb", "bob"), empty()).unwrap();
    assert_eq!(keys(&transfer(&b, &mut a).joins), ["bob"]);
    a.join(k("lobby", "pc", "carol"), empty()).unwrap();
    a.leave(&k("lobby", "pa", "alice")).unwrap();
    a.join(k("lobby", "pd", "david"), empty()).unwrap();

    let d = a.replica_down(&r("b")).unwrap();
    assert_eq!(keys(&d.leaves), ["bob"]);
    assert_eq!(sorted_keys(&a.online()), ["carol", "david"]);

    assert!(
        transfer(&b, &mut a).is_empty(),
        "b is down: a's clocks omit it, nothing merges"
    );
    assert_eq!(sorted_keys(&a.online()), ["carol", "david"]);

    let d = a.replica_up(&r("b")).unwrap();
    assert_eq!(keys(&d.joins), ["bob"]);
    assert_eq!(sorted_keys(&a.online()), ["bob", "carol", "david"]);
}

fn three() -> (State, State, State) {
    let (mut a, mut b, mut c) = (new_state("a"), new_state("b"), new_state("c"));
    connect(&mut [&mut a, &mut b, &mut c]);
    (a, b, c)
}

#[test]
fn joins_are_observed_via_another_node() {
    let (mut a, mut b, mut c) = three();
    a.join(k("lobby", "pa", "alice"), empty()).unwrap();
    assert_eq!(keys(&transfer(&a, &mut c).joins), ["alice"]);
    a.replica_down(&r("c")).unwrap();
    assert_eq!(keys(&c.replica_down(&r("a")).unwrap().leaves), ["alice"]);
    a.join(k("lobby", "pb", "bob"), empty()).unwrap();
    assert_eq!(sorted_keys(&transfer(&a, &mut b).joins), ["alice", "bob"]);
    // Upstream extracts for c's full context (down replicas included): merges of a down
    // replica's values still apply, hidden until it comes back.
    let ex = b.extract(c.replica(), &c.context().clone());
    let d = c.merge_extract(&ex);
    assert_eq!(
        keys(&d.joins),
        ["bob"],
        "only what c had not seen, though a is down at c"
    );
    assert!(c.online().is_empty(), "a is down at c: bob stays hidden");
    assert_eq!(
        sorted_keys(&c.replica_up(&r("a")).unwrap().joins),
        ["alice", "bob"]
    );
}

#[test]
fn removes_are_observed_via_another_node() {
    let (mut a, mut b, mut c) = three();
    a.join(k("lobby", "pa", "bob"), empty()).unwrap();
    transfer(&a, &mut b);
    assert_eq!(keys(&transfer(&b, &mut c).joins), ["bob"]);
    a.leave(&k("lobby", "pa", "bob")).unwrap();
    assert_eq!(keys(&transfer(&a, &mut b).leaves), ["bob"]);
    assert_eq!(
        keys(&transfer(&b, &mut c).leaves),
        ["bob"],
        "the tombstone travelled through b"
    );
}

#[test]
fn get_by_pid_finds_a_pids_presences() {
    let mut s = new_state("node1");
    assert!(s.get_by_pid("p").is_empty());
    s.join(k("topic", "p", "key"), json!({})).unwrap();
    let got = s.get_by_pid("p");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key, k("topic", "p", "key"));
    assert_eq!(got[0].tag.replica, r("node1"));
    assert_eq!(got[0].tag.clock, 1);
    assert_eq!(s.get(&k("topic", "p", "key")).map(|v| v.tag.clock), Some(1));
    assert_eq!(s.get(&k("topic", "p", "other")), None);
}

#[test]
fn get_by_key_lists_every_pid_of_a_key_in_pid_order() {
    let mut s = new_state("a");
    s.join(k("topic", "p2", "key1"), json!({"n": 2})).unwrap();
    s.join(k("topic", "p1", "key1"), json!({"n": 1})).unwrap();
    s.join(k("topic", "p3", "key2"), json!({"n": 3})).unwrap();
    let got = s.get_by_key("topic", "key1");
    let pids: Vec<_> = got
        .iter()
        .map(|v| (v.key.pid.as_str(), v.meta.to_json()["n"].clone()))
        .collect();
    assert_eq!(pids, [("p1", json!(1)), ("p2", json!(2))]);
    assert!(s.get_by_key("another_topic", "key1").is_empty());
    assert!(s.get_by_key("topic", "another_key").is_empty());
}

#[test]
fn get_by_topic_hides_down_replicas() {
    let (mut a, mut b, mut c) = three();
    for s in [&a, &b, &c] {
        assert_eq!(s.clocks(), ctx(&[("a", 0), ("b", 0), ("c", 0)]));
    }
    a.join(k("topic", "pa1", "a1"), empty()).unwrap();
    a.join(k("topic", "pa2", "a2"), empty()).unwrap();
    b.join(k("topic", "pb", "b1"), empty()).unwrap();
    c.join(k("topic", "pc", "c1"), empty()).unwrap();
    assert_eq!(sorted_keys(&a.get_by_topic("topic")), ["a1", "a2"]);
    transfer(&b, &mut a);
    transfer(&c, &mut a);
    assert_eq!(
        sorted_keys(&a.get_by_topic("topic")),
        ["a1", "a2", "b1", "c1"]
    );
    a.replica_down(&r("b")).unwrap();
    assert_eq!(sorted_keys(&a.get_by_topic("topic")), ["a1", "a2", "c1"]);
    a.replica_down(&r("c")).unwrap();
    assert_eq!(sorted_keys(&a.get_by_topic("topic")), ["a1", "a2"]);
    assert!(a.get_by_topic("another:topic").is_empty());
}

#[test]
fn remove_down_replicas_purges_and_nothing_comes_back() {
    let (mut s1, mut s2) = (new_state("node1"), new_state("node2"));
    connect(&mut [&mut s1, &mut s2]);
    s1.join(k("lobby", "alice", "alice"), empty()).unwrap();
    s2.join(k("lobby", "bob", "bob"), empty()).unwrap();
    transfer(&s1, &mut s2);
    s2.replica_down(&r("node1")).unwrap();
    assert_eq!(
        s2.get_by_pid("alice").len(),
        1,
        "down hides, it does not delete"
    );
    assert_eq!(s2.get_by_pid("bob").len(), 1);
    s2.remove_down(&r("node1")).unwrap();
    assert!(s2.get_by_pid("alice").is_empty());
    assert_eq!(s2.get_by_pid("bob").len(), 1);
    s2.replica_up(&r("node1")).unwrap();
    assert_eq!(keys(&s2.online()), ["bob"]);
}

#[test]
fn basic_deltas_advance_the_receivers_clock() {
    let (mut a, mut b) = (new_state("a"), new_state("b"));
    connect(&mut [&mut a, &mut b]);
    a.join(k("lobby", "pa", "alice"), empty()).unwrap();
    assert_eq!(keys(&b.merge_delta(a.delta()).joins), ["alice"]);
    // b has not bumped its own clock; Phoenix's test joins on b first. Ours: b's own is 0.
    assert_eq!(b.clocks(), ctx(&[("a", 1), ("b", 0)]));
    a.reset_delta();
    a.leave(&k("lobby", "pa", "alice")).unwrap();
    assert_eq!(keys(&b.merge_delta(a.delta()).leaves), ["alice"]);
    assert_eq!(b.clocks(), ctx(&[("a", 2), ("b", 0)]));
    a.reset_delta();
    a.join(k("lobby", "pa", "alice"), empty()).unwrap();
    assert_eq!(keys(&b.merge_delta(a.delta()).joins), ["alice"]);
    assert_eq!(b.clocks(), ctx(&[("a", 3), ("b", 0)]));
    assert!(b.clouds().values().all(|c| c.is_empty()), "fully compacted");
}

#[test]
fn deltas_with_a_gap_between_them_do_not_merge() {
    let mut s = new_state("s");
    s.join(k("lobby", "p1", "u1"), empty()).unwrap();
    let first = s.delta().clone(); // range 0 → 1
    s.join(k("lobby", "p2", "u2"), empty()).unwrap();
    s.reset_delta(); // the delta with dot 2 is lost
    s.join(k("lobby", "p3", "u3"), empty()).unwrap();
    let third = s.delta().clone(); // range 2 → 3
    assert!(first.merge(&third).is_err());
    assert!(third.merge(&first).is_err());
}

#[test]
fn an_extract_carries_only_replicas_the_remote_knows() {
    let (mut s1, mut s2, mut s3) = (new_state("s1"), new_state("s2"), new_state("s3"));
    s2.replica_up(&r("s1")).unwrap();
    s2.replica_up(&r("s3")).unwrap();
    s1.replica_up(&r("s2")).unwrap();
    s3.replica_up(&r("s2")).unwrap();
    s1.join(k("lobby", "p1", "u1"), empty()).unwrap();
    s2.join(k("lobby", "p2", "u2"), empty()).unwrap();
    s3.join(k("lobby", "p3", "u3"), empty()).unwrap();
    s2.merge_delta(s1.delta());
    s2.merge_delta(s3.delta());
    let ex = s2.extract(s1.replica(), &s1.clocks());
    assert_eq!(ex.context, ctx(&[("s1", 1), ("s2", 1)]));
    assert!(ex.values.keys().all(|t| t.replica == r("s2")));
}

#[test]
fn independent_deltas_merge_into_all_their_values() {
    let (mut s1, mut s2) = (new_state("s1"), new_state("s2"));
    s1.join(k("lobby", "p1", "u1"), empty()).unwrap();
    s1.join(k("lobby", "p2", "u2"), empty()).unwrap();
    s2.join(k("lobby", "p3", "u3"), empty()).unwrap();
    s2.join(k("lobby", "p4", "u4"), empty()).unwrap();
    let merged = s1.delta().merge(s2.delta()).unwrap();
    assert_eq!(merged.values.len(), 4);
    let dots: usize = merged.clouds.values().map(|c| c.len()).sum();
    assert_eq!(dots, 4);
}

#[test]
fn merging_deltas_with_removes_lets_the_concurrent_add_win() {
    let (mut s1, mut s2) = (new_state("s1"), new_state("s2"));
    connect(&mut [&mut s1, &mut s2]);
    s2.join(k("lobby", "user1", "user1"), empty()).unwrap();
    s2.leave(&k("lobby", "user1", "user1")).unwrap();
    s1.join(k("lobby", "user1", "user1"), empty()).unwrap();
    s1.join(k("private", "user1", "user1"), empty()).unwrap();

    let merged = s1.delta().merge(s2.delta()).unwrap();
    let topics: Vec<_> = merged
        .values
        .values()
        .map(|p| p.key.topic.as_str())
        .collect();
    assert_eq!(topics, ["lobby", "private"]);
    let clouds: Vec<(String, Vec<u64>)> = merged
        .clouds
        .iter()
        .map(|(r, c)| (r.name.to_string(), c.iter().copied().collect()))
        .collect();
    assert_eq!(
        clouds,
        [("s1".into(), vec![1, 2]), ("s2".into(), vec![1, 2])]
    );
    assert_eq!(
        merged.merge(s2.delta()).unwrap(),
        merged,
        "re-merging changes nothing"
    );

    s2.merge_delta(s1.delta());
    s2.leave(&k("private", "user1", "user1")).unwrap();
    let merged = s1.delta().merge(s2.delta()).unwrap();
    let topics: Vec<_> = merged
        .values
        .values()
        .map(|p| p.key.topic.as_str())
        .collect();
    assert_eq!(topics, ["lobby"]);
    assert!(
        merged.clouds[&r("s2")].contains(&3),
        "the observed remove's tombstone is kept"
    );
}
