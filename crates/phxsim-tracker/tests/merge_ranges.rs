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
