//! Random histories of two tracker replicas, for the property tests of what the node keeps
//! from one answer to the next (`topic_list.rs`, `kept_lists.rs`): each test patches its copy at
//! every [`Op::Check`] and compares it with one built anew from replica `a`.

use phxsim_tracker::{Mutation, ReplicaRef, State, ValueKey};
use proptest::prelude::*;
use serde_json::Value as Json;

/// Pids, keys and topics that need escaping or sort oddly (a key over 22 bytes is not held
/// inline).
pub(super) const PIDS: [&str; 4] = ["p1", "p2", "conn000000000010/ch000001", "p\u{e9}"];
pub(super) const KEYS: [&str; 4] = [
    "k1",
    "k2",
    "a key longer than twenty-two bytes",
    "\"q\u{e9}",
];
pub(super) const TOPICS: [&str; 2] = ["t", "u"];

/// One step of a random history of the local replica `a` and a remote replica `b`.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// On `a` (true) or `b`: track, untrack or update `{topic, pid, key}` with meta `n`.
    Track(bool, usize, usize, usize, u8),
    Untrack(bool, usize, usize, usize),
    Update(bool, usize, usize, usize, u8),
    /// `b`'s pending delta merged into `a`.
    Sync,
    /// A full transfer from `b` to `a`.
    Transfer,
    /// `a` marks `b` down, up, or permanently down (removed and forgotten).
    Down,
    Up,
    Permdown,
    /// `b` restarts as a new replica.
    Restart,
    /// The test compares what it keeps with what it would build anew.
    Check,
}

/// Random steps, tracks most often.
pub(super) fn op() -> impl Strategy<Value = Op> {
    let at = || (any::<bool>(), 0..TOPICS.len(), 0..PIDS.len(), 0..KEYS.len());
    prop_oneof![
        4 => (at(), any::<u8>()).prop_map(|((s, t, p, k), n)| Op::Track(s, t, p, k, n)),
        2 => at().prop_map(|(s, t, p, k)| Op::Untrack(s, t, p, k)),
        2 => (at(), any::<u8>()).prop_map(|((s, t, p, k), n)| Op::Update(s, t, p, k, n)),
        2 => Just(Op::Sync),
        1 => Just(Op::Transfer),
        1 => Just(Op::Down),
        1 => Just(Op::Up),
        1 => Just(Op::Permdown),
        1 => Just(Op::Restart),
        3 => Just(Op::Check),
    ]
}

/// The two replicas, `b` restarted as often as the history says.
pub(super) struct History {
    pub(super) a: State,
    b: State,
    b_vsn: u64,
}

impl History {
    pub(super) fn new(mutation: Option<Mutation>) -> History {
        History {
            a: State::new(ReplicaRef::new("a", 1)).with_mutation(mutation),
            b: State::new(ReplicaRef::new("b", 1)),
            b_vsn: 1,
        }
    }

    /// Applies `op` (meta `n` is `meta(n)`); returns whether it is a [`Op::Check`], which is
    /// the test's to make. An operation the replicas refuse is skipped.
    pub(super) fn apply(&mut self, op: &Op, meta: impl Fn(u8) -> Json) -> bool {
        let (a, b) = (&mut self.a, &mut self.b);
        match *op {
            Op::Track(on_a, t, p, k, n) => {
                let s = if on_a { a } else { b };
                let _ = s.join(ValueKey::new(TOPICS[t], PIDS[p], KEYS[k]), meta(n));
            }
            Op::Untrack(on_a, t, p, k) => {
                let s = if on_a { a } else { b };
                let _ = s.leave(&ValueKey::new(TOPICS[t], PIDS[p], KEYS[k]));
            }
            Op::Update(on_a, t, p, k, n) => {
                let s = if on_a { a } else { b };
                let _ = s.update(&ValueKey::new(TOPICS[t], PIDS[p], KEYS[k]), meta(n));
            }
            Op::Sync => {
                if let Some(d) = b.flush() {
                    let _ = a.merge_delta(&d);
                }
            }
            Op::Transfer => {
                let extract = b.extract(a.replica(), &a.clocks());
                let _ = a.merge_extract(&extract);
            }
            Op::Down => {
                let _ = a.replica_down(b.replica());
            }
            Op::Up => {
                let _ = a.replica_up(b.replica());
            }
            Op::Permdown => {
                if a.remove_down(b.replica()).is_ok() {
                    a.forget_status(b.replica());
                }
            }
            Op::Restart => {
                self.b_vsn += 1;
                self.b = State::new(ReplicaRef::new("b", self.b_vsn));
            }
            Op::Check => return true,
        }
        false
    }
}
