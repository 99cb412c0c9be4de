//! `delta_generation_test.exs` (§5.4), in our words.

mod common;
use common::*;
use phxsim_tracker::{Catchup, Delta, Generations, State};
use std::collections::BTreeSet;

fn value_keys(d: &Delta) -> BTreeSet<String> {
    d.values.values().map(|p| p.key.key.to_string()).collect()
}

fn dots(d: &Delta) -> BTreeSet<(String, u64)> {
    d.clouds
        .iter()
        .flat_map(|(r, c)| c.iter().map(move |&n| (r.name.to_string(), n)))
        .collect()
}

/// A join on `s` isolated in its own delta, as a heartbeat would produce it.
fn join_delta(s: &mut State, key: &str) -> Delta {
    s.reset_delta();
    s.join(k("lobby", key, key), empty()).unwrap();
    s.delta().clone()
}

#[test]
fn generations_grow_until_their_limit_then_restart_from_below() {
    let limits = [2, 5, 6];
    let mut s1 = new_state("s1");
    let mut s2 = new_state("s2");
    connect(&mut [&mut s1, &mut s2]);
    let mut gens = Generations::new();
    let parent = new_state("s1");

    let d1 = join_delta(&mut s1, "k1");
    gens.push(&parent, &d1, &limits);
    for g in gens.as_slice() {
        assert_eq!(value_keys(g), ["k1".to_string()].into());
    }
    let again = gens.clone();
    gens.push(&parent, &d1, &limits);
    assert_eq!(gens, again, "pushing the same delta again changes nothing");

    let d2 = join_delta(&mut s1, "k2");
    gens.push(&parent, &d2, &limits);
    let g = gens.as_slice();
    assert_eq!(
        value_keys(&g[0]),
        ["k2".to_string()].into(),
        "size 4 > 2: only the newest"
    );
    assert_eq!(
        value_keys(&g[1]),
        ["k1".to_string(), "k2".to_string()].into()
    );
    assert_eq!(
        value_keys(&g[2]),
        ["k1".to_string(), "k2".to_string()].into()
    );

    let d3 = join_delta(&mut s1, "k3");
    gens.push(&parent, &d3, &limits);
    let g = gens.as_slice();
    assert_eq!(value_keys(&g[0]), ["k3".to_string()].into());
    assert_eq!(
        value_keys(&g[1]),
        ["k2".to_string(), "k3".to_string()].into(),
        "6 > 5: level 0's merge"
    );
    assert_eq!(
        value_keys(&g[2]),
        ["k1", "k2", "k3"].map(String::from).into()
    );

    let d4 = join_delta(&mut s1, "k4");
    gens.push(&parent, &d4, &limits);
    let g = gens.as_slice();
    assert_eq!(value_keys(&g[0]), ["k4".to_string()].into());
    assert_eq!(
        value_keys(&g[1]),
        ["k3".to_string(), "k4".to_string()].into()
    );
    assert_eq!(
        value_keys(&g[2]),
        ["k2", "k3", "k4"].map(String::from).into(),
        "8 > 6: level 1's merge (old level 1 + k4), computed although over its own limit"
    );

    // a remote's delta folds in like any other; its tombstone empties level 0 of values
    s2.join(k("lobby", "r1", "r1"), empty()).unwrap();
    s2.reset_delta();
    s2.leave(&k("lobby", "r1", "r1")).unwrap();
    let remote_leave = s2.delta().clone();
    gens.push(&parent, &remote_leave, &limits);
    let g0 = &gens.as_slice()[0];
    assert!(g0.values.is_empty());
    assert!(dots(g0).is_superset(&[("s2".to_string(), 1), ("s2".to_string(), 2)].into()));
}

#[test]
fn a_non_contiguous_delta_is_not_folded_in() {
    let limits = [5, 10];
    let mut s1 = new_state("s1");
    let parent = new_state("s1");
    let mut gens = Generations::new();
    gens.push(&parent, &join_delta(&mut s1, "k1"), &limits);
    let before = gens.clone();
    join_delta(&mut s1, "lost");
    let after_gap = join_delta(&mut s1, "k3");
    gens.push(&parent, &after_gap, &limits);
    assert_eq!(gens, before);
}

#[test]
fn remove_replica_prunes_every_generation() {
    let limits = [5, 10];
    let mut s2 = new_state("s2");
    let parent = new_state("s1");
    let mut gens = Generations::new();
    gens.push(&parent, &join_delta(&mut s2, "k1"), &limits);
    gens.remove_replica(&r("s2"));
    let mut fresh = new_state("s1");
    fresh.replica_up(&r("s2")).unwrap();
    for g in gens.as_slice() {
        assert!(fresh.merge_delta(g).is_empty());
    }
    assert!(fresh.online().is_empty());
}

#[test]
fn the_whole_state_is_extracted_when_there_are_no_generations() {
    let mut s = new_state("r1");
    s.join(k("lobby", "p", "u"), empty()).unwrap();
    let gens = Generations::new();
    match gens.extract(&s, &r("r2"), &ctx(&[("r1", 1)])) {
        Catchup::Full(ex) => assert_eq!(ex.values.len(), 1),
        other => panic!("expected the full state, got {other:?}"),
    }
}

#[test]
fn the_first_generation_the_remote_can_apply_is_extracted() {
    let limits = [1, 3, 100];
    let mut s = new_state("r1");
    let parent = new_state("r1");
    let mut gens = Generations::new();
    for key in ["k1", "k2", "k3"] {
        let d = join_delta(&mut s, key);
        gens.push(&parent, &d, &limits);
    }
    // the remote has k1 (clock 1): level 0 (k3 only) starts at 2, level 1 (k2, k3) starts at 1
    match gens.extract(&s, &r("r2"), &ctx(&[("r1", 1), ("r2", 0)])) {
        Catchup::Delta(i, d) => {
            assert_eq!(i, 1);
            assert_eq!(value_keys(&d), ["k2".to_string(), "k3".to_string()].into());
        }
        other => panic!("expected a delta, got {other:?}"),
    }
}

#[test]
fn an_empty_generation_is_skipped_and_the_next_restricted_to_known_replicas() {
    let mut s = new_state("r1");
    let mut other = new_state("r3");
    s.replica_up(&r("r3")).unwrap();
    s.replica_up(&r("r2")).unwrap();
    let mut gens = Generations::from_vec(vec![Delta::empty_at(ctx(&[("r1", 0)]))]);
    s.join(k("lobby", "p", "u"), empty()).unwrap();
    other.join(k("lobby", "q", "v"), empty()).unwrap();
    let mut d = s.delta().clone().merge(other.delta()).unwrap();
    d.range.0.insert(r("r3"), 0);
    let mut list = gens.as_slice().to_vec();
    list.push(d);
    gens = Generations::from_vec(list);
    match gens.extract(&s, &r("r2"), &ctx(&[("r1", 0), ("r2", 0)])) {
        Catchup::Delta(i, d) => {
            assert_eq!(i, 1);
            assert!(d.values.keys().all(|t| t.replica == r("r1")));
            assert!(d.clouds.keys().all(|rr| rr == &r("r1")));
            assert!(!d.range.1.contains_key(&r("r3")));
        }
        other => panic!("expected a delta, got {other:?}"),
    }
}

#[test]
fn a_generation_that_starts_beyond_the_remote_is_skipped() {
    let limits = [1, 100];
    let mut s = new_state("r1");
    let parent = new_state("r1");
    let mut gens = Generations::new();
    for key in ["k1", "k2"] {
        let d = join_delta(&mut s, key);
        gens.push(&parent, &d, &limits);
    }
    // the remote knows nothing of r1: level 0 starts at 1, which it has not seen
    match gens.extract(&s, &r("r2"), &ctx(&[("r1", 0), ("r2", 0)])) {
        Catchup::Delta(i, d) => {
            assert_eq!(i, 1);
            assert_eq!(value_keys(&d), ["k1".to_string(), "k2".to_string()].into());
        }
        other => panic!("expected a delta, got {other:?}"),
    }
}
