//! Edges of the merge's context ranges, which random histories rarely reach: a replica's
//! context can end exactly on a dot it no longer holds when it dropped that dot without a tick
//! of its owner (a permdown), and a transfer from it must then remove that dot elsewhere.

use phxsim_tracker::{ReplicaRef, State, ValueKey};
use serde_json::json;

fn replica(name: &str) -> ReplicaRef {
    ReplicaRef::new(name, 1)
}

/// Replicas that know each other.
fn cluster<const N: usize>(names: [&str; N]) -> [State; N] {
    names.map(|n| {
        let mut s = State::new(replica(n));
        for o in names.iter().filter(|o| **o != n) {
            s.replica_up(&replica(o)).expect("another replica");
        }
        s
    })
}

#[test]
fn a_transfer_removes_the_dot_its_context_ends_on() {
    let [mut a, mut b, mut c, mut d] = cluster(["a", "b", "c", "d"]);
    // alice's join (a, 1) reaches everyone
    a.join(ValueKey::new("t", "a.p1", "alice"), json!({}))
        .expect("join");
    let joined = a.flush().expect("a delta");
    for s in [&mut b, &mut c, &mut d] {
        s.merge_delta(&joined);
    }
    // her leave reaches b only, which relays it as a tombstone of (a, 1) alone
    a.leave(&ValueKey::new("t", "a.p1", "alice"));
    b.merge_delta(&a.flush().expect("a delta"));
    c.merge_delta(&b.flush().expect("b's relay"));
    // c no longer holds (a, 1), and its context for a ends exactly on it
    assert!(c.all_values().is_empty(), "{:?}", c.all_values());
    // d learns it by a transfer from c: the last dot of c's range counts as seen
    let extract = c.extract(d.replica(), &d.clocks());
    let diff = d.merge_extract(&extract);
    assert_eq!(diff.leaves.len(), 1, "{diff:?}");
    assert!(d.all_values().is_empty(), "{:?}", d.all_values());
}

/// A generation (many values) pushed a later delta that removes one of them: the value goes,
/// the others stay, whichever way `merge_owned` finds the removed ones (walking the later
/// delta's few dots, or checking every value against a later delta with more dots).
#[test]
fn a_later_leave_removes_the_value_from_an_older_delta() {
    let [mut a] = cluster(["a"]);
    let keys: Vec<ValueKey> = (0..8)
        .map(|i| ValueKey::new("t", format!("a.p{i}"), "u"))
        .collect();
    for k in &keys {
        a.join(k.clone(), json!({})).expect("join");
    }
    let joined = a.flush().expect("a delta");
    // a leave is two dots (the tombstone and its own tick): 2 dots against 8 values, then 14
    for leaving in [1, 7] {
        let mut a2 = a.clone();
        for k in &keys[..leaving] {
            a2.leave(k);
        }
        let left = a2.flush().expect("a delta");
        let merged = joined.clone().merge_owned(&left).expect("contiguous");
        assert_eq!(merged, joined.merge(&left).expect("contiguous"));
        let kept: Vec<String> = merged
            .values
            .values()
            .map(|v| v.key.pid.to_string())
            .collect();
        let want: Vec<String> = (leaving..8).map(|i| format!("a.p{i}")).collect();
        assert_eq!(kept, want, "{leaving} left");
    }
}
