//! Helpers shared by the ported upstream tests (included with `mod common;`).
#![allow(dead_code)]

use phxsim_tracker::{Context, ReplicaRef, State, Value, ValueKey};
use serde_json::{Value as Json, json};

pub fn r(name: &str) -> ReplicaRef {
    ReplicaRef::new(name, 1)
}

pub fn new_state(name: &str) -> State {
    State::new(r(name))
}

pub fn k(topic: &str, pid: &str, key: &str) -> ValueKey {
    ValueKey::new(topic, pid, key)
}

pub fn meta(v: Json) -> Json {
    v
}

pub fn empty() -> Json {
    json!({})
}

/// Keys of a value list, for compact assertions.
pub fn keys(values: &[Value]) -> Vec<String> {
    values.iter().map(|v| v.key.key.to_string()).collect()
}

pub fn sorted_keys(values: &[Value]) -> Vec<String> {
    let mut ks = keys(values);
    ks.sort();
    ks
}

pub fn ctx(entries: &[(&str, u64)]) -> Context {
    entries.iter().map(|(n, c)| (r(n), *c)).collect()
}

/// Marks each of `states` up at every other one.
pub fn connect(states: &mut [&mut State]) {
    let refs: Vec<ReplicaRef> = states.iter().map(|s| s.replica().clone()).collect();
    for s in states.iter_mut() {
        for rr in &refs {
            if rr != s.replica() {
                s.replica_up(rr).unwrap();
            }
        }
    }
}

/// What a transfer does: `to` merges `from`'s extract for `to`'s clocks.
pub fn transfer(from: &State, to: &mut State) -> phxsim_tracker::Diff {
    let ex = from.extract(to.replica(), &to.clocks());
    to.merge_extract(&ex)
}
