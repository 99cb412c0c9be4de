//! Clients whose lists are shared (`PresenceInstance::handle_interned_state` and
//! `handle_interned_diff`, through one `SharedLists`) end every step holding exactly the
//! presences phoenix.js's exact list holds, over random sequences of broadcast diffs, states,
//! rejoins (diffs then arrive while a state is pending) and owned diffs; and clients that
//! hold the same presences hold one list.

use phxsim_wire::sync::{Listed, PresenceInstance};
use phxsim_wire::{
    JsMap, Presence, PresenceDiff, PresenceState, SharedDiff, SharedList, SharedLists,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Few keys (two of them array indices, whose place differs) and few refs, so that joins
/// re-join, leaves hit, and keys empty and come back.
const KEYS: [&str; 5] = ["a", "b", "c", "0", "10"];

/// How many clients share the lists.
const CLIENTS: usize = 3;

fn arb_presences() -> impl Strategy<Value = Value> {
    let meta = (0usize..4, 0u8..3).prop_map(|(r, v)| {
        // refs "1", "2", "3" and the number 1 (not `===` to "1")
        let phx_ref = match r {
            0 => json!("1"),
            1 => json!("2"),
            2 => json!("3"),
            _ => json!(1),
        };
        json!({"phx_ref": phx_ref, "v": v})
    });
    prop::collection::vec((0..KEYS.len(), prop::collection::vec(meta, 0..3)), 0..7).prop_map(
        |entries| {
            let map: Map<String, Value> = entries
                .into_iter()
                .map(|(k, metas)| (KEYS[k].to_owned(), json!({ "metas": metas })))
                .collect();
            Value::Object(map)
        },
    )
}

#[derive(Clone, Debug)]
enum Step {
    /// A broadcast diff, one `Arc` for every client.
    Broadcast(Value, Value),
    /// A diff handled the ordinary way (with callbacks) by one client.
    Owned(usize, Value, Value),
    /// A `presence_state` for one client.
    State(usize, Value),
    /// One client's channel rejoins: its join_ref moves on, so diffs wait for its next state.
    Rejoin(usize),
}

fn arb_step() -> impl Strategy<Value = Step> {
    let client = 0..CLIENTS;
    prop_oneof![
        12 => (arb_presences(), arb_presences()).prop_map(|(j, l)| Step::Broadcast(j, l)),
        1 => (client.clone(), arb_presences(), arb_presences())
            .prop_map(|(c, j, l)| Step::Owned(c, j, l)),
        4 => (client.clone(), arb_presences()).prop_map(|(c, s)| Step::State(c, s)),
        2 => client.prop_map(Step::Rejoin),
    ]
}

fn diff(joins: &Value, leaves: &Value) -> PresenceDiff {
    PresenceDiff::from_payload(json!({"joins": joins, "leaves": leaves})).unwrap_or_default()
}

fn shared_state(payload: &Value) -> JsMap<Presence> {
    PresenceState::from_payload(payload.clone())
        .unwrap_or_default()
        .presences
        .into_iter()
        .collect()
}

fn shared_list(payload: &Value) -> SharedList {
    SharedList::from_entries(shared_state(payload).entries().cloned().collect())
        .expect("a JSON object's keys are unique")
}

/// The presences, in key order.
fn content(p: &PresenceInstance) -> Vec<(String, Presence)> {
    let mut all: Vec<(String, Presence)> = p
        .state()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// One client, twice: phoenix.js's exact list, and the shared one.
struct Client {
    exact: PresenceInstance,
    shared: PresenceInstance,
    channel: u32,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn shared_lists_hold_what_exact_lists_hold(steps in prop::collection::vec(arb_step(), 0..120)) {
        let mut lists = SharedLists::new();
        let mut clients: Vec<Client> = (0..CLIENTS)
            .map(|_| Client { exact: PresenceInstance::new(), shared: PresenceInstance::new(), channel: 1 })
            .collect();
        for step in &steps {
            match step {
                Step::Broadcast(j, l) => {
                    let d = Arc::new(SharedDiff::new(diff(j, l)));
                    for c in &mut clients {
                        let channel = c.channel.to_string();
                        let applied = c.exact.handle_shared_diff(Some(&channel), &d, &mut ());
                        prop_assert_eq!(
                            c.shared.handle_interned_diff(Some(&channel), &d, &mut lists),
                            applied
                        );
                    }
                }
                Step::Owned(i, j, l) => {
                    let c = &mut clients[*i];
                    let channel = c.channel.to_string();
                    let applied = c.exact.handle_diff(Some(&channel), diff(j, l), &mut ());
                    prop_assert_eq!(
                        c.shared.handle_diff(Some(&channel), diff(j, l), &mut ()),
                        applied
                    );
                }
                Step::State(i, s) => {
                    let c = &mut clients[*i];
                    let channel = c.channel.to_string();
                    c.exact.handle_shared_state(Some(&channel), shared_state(s), &mut ());
                    c.shared.handle_interned_state(Some(&channel), shared_list(s), &mut lists);
                }
                Step::Rejoin(i) => clients[*i].channel += 1,
            }
            for c in &clients {
                let channel = c.channel.to_string();
                prop_assert_eq!(c.shared.join_ref(), c.exact.join_ref());
                prop_assert_eq!(c.shared.pending_diffs(), c.exact.pending_diffs());
                prop_assert_eq!(
                    c.shared.in_pending_sync_state(Some(&channel)),
                    c.exact.in_pending_sync_state(Some(&channel))
                );
                prop_assert_eq!(content(&c.shared), content(&c.exact));
                prop_assert!(c.shared.state().same_presences(c.exact.state()));
            }
            // clients whose shared lists hold the same presences hold one list
            for a in &clients {
                for b in &clients {
                    if let (Listed::Shared(x), Listed::Shared(y)) = (a.shared.state(), b.shared.state()) {
                        prop_assert_eq!(
                            std::ptr::eq(x, y),
                            content(&a.shared) == content(&b.shared)
                        );
                        prop_assert_eq!(
                            a.shared.state().same_presences(b.shared.state()),
                            content(&a.shared) == content(&b.shared)
                        );
                    }
                }
            }
        }
    }
}

/// Diffs that arrive while a state is pending are buffered and replayed after the state.
#[test]
fn diffs_buffered_during_a_rejoin_are_replayed_after_the_state() {
    let m = |r: &str| json!({"metas": [{"phx_ref": r}]});
    let mut lists = SharedLists::new();
    let mut shared = PresenceInstance::new();
    shared.handle_interned_state(Some("1"), shared_list(&json!({"a": m("1")})), &mut lists);
    let before = Arc::new(SharedDiff::new(diff(&json!({"b": m("2")}), &json!({}))));
    assert!(shared.handle_interned_diff(Some("1"), &before, &mut lists));
    // rejoined: this diff waits for the state
    let during = Arc::new(SharedDiff::new(diff(
        &json!({"c": m("3")}),
        &json!({"b": m("2")}),
    )));
    assert!(!shared.handle_interned_diff(Some("2"), &during, &mut lists));
    assert_eq!(shared.pending_diffs().len(), 1);
    let next = json!({"a": m("1"), "b": m("2")});
    shared.handle_interned_state(Some("2"), shared_list(&next), &mut lists);
    assert!(shared.pending_diffs().is_empty());
    let keys: Vec<String> = content(&shared).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a", "c"]);
}

/// A client that applies a diff another client applied to the same list takes that client's
/// result; lists nobody holds any more are forgotten.
#[test]
fn a_diff_applied_to_a_shared_list_is_computed_once() {
    let m = |r: &str| json!({"metas": [{"phx_ref": r}]});
    let mut lists = SharedLists::new();
    let (mut one, mut two) = (PresenceInstance::new(), PresenceInstance::new());
    one.handle_interned_state(Some("1"), shared_list(&json!({"a": m("1")})), &mut lists);
    // the same presences, from another state text: one list
    two.handle_interned_state(Some("1"), shared_list(&json!({"a": m("1")})), &mut lists);
    let same = |a: &PresenceInstance, b: &PresenceInstance| match (a.state(), b.state()) {
        (Listed::Shared(x), Listed::Shared(y)) => std::ptr::eq(x, y),
        _ => false,
    };
    assert!(same(&one, &two));
    let d = Arc::new(SharedDiff::new(diff(&json!({"b": m("2")}), &json!({}))));
    assert!(one.handle_interned_diff(Some("1"), &d, &mut lists));
    assert!(!same(&one, &two));
    assert!(two.handle_interned_diff(Some("1"), &d, &mut lists));
    assert!(same(&one, &two));
    assert_eq!(content(&one).len(), 2);
}
