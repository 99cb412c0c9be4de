//! A list whose shared diffs are queued and applied in batches
//! (`PresenceInstance::queue_shared_diff`) ends every step exactly where phoenix.js's eager
//! list does: same keys in the same order, same presences, same buffered diffs, same answers,
//! over random sequences of diffs, states, rejoins (diffs then arrive while a state is
//! pending), owned diffs and reads.

use phxsim_wire::sync::{PresenceInstance, QUEUED_DIFFS_MAX};
use phxsim_wire::{JsMap, Presence, PresenceDiff, PresenceState, SharedDiff};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Few keys (two of them array indices, whose place differs) and few refs, so that joins
/// re-join, leaves hit, and keys empty and come back.
const KEYS: [&str; 5] = ["a", "b", "c", "0", "10"];

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
    // up to every key on both sides: a diff of more than `QUEUED_DIFF_MAX_KEYS` keys is
    // applied at once, after the queue
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
    /// A broadcast diff: queued on one list, applied at once on the other.
    Shared(Value, Value),
    /// A diff handled the ordinary way on both lists.
    Owned(Value, Value),
    /// A `presence_state` (owned on both, or shared on both).
    State(Value, bool),
    /// The channel rejoins: its join_ref moves on, so diffs wait for the next state.
    Rejoin,
    /// Someone reads the list (which applies the queue).
    Read,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (arb_presences(), arb_presences()).prop_map(|(j, l)| Step::Shared(j, l)),
        1 => (arb_presences(), arb_presences()).prop_map(|(j, l)| Step::Owned(j, l)),
        2 => (arb_presences(), any::<bool>()).prop_map(|(s, shared)| Step::State(s, shared)),
        1 => Just(Step::Rejoin),
        1 => Just(Step::Read),
    ]
}

fn diff(joins: &Value, leaves: &Value) -> PresenceDiff {
    PresenceDiff::from_payload(json!({"joins": joins, "leaves": leaves})).unwrap_or_default()
}

fn state(payload: &Value) -> PresenceState {
    PresenceState::from_payload(payload.clone()).unwrap_or_default()
}

fn shared_state(payload: &Value) -> JsMap<Presence> {
    state(payload).presences.into_iter().collect()
}

/// The list as a reader sees it, key order included.
fn listed(p: &PresenceInstance) -> Vec<(String, Presence)> {
    p.state()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}

fn same(eager: &PresenceInstance, batched: &mut PresenceInstance) -> Result<(), TestCaseError> {
    prop_assert_eq!(batched.join_ref(), eager.join_ref());
    prop_assert_eq!(batched.pending_diffs(), eager.pending_diffs());
    batched.apply_queued();
    prop_assert_eq!(batched.queued_diffs(), 0);
    prop_assert_eq!(listed(batched), listed(eager));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn queued_diffs_end_in_the_eager_list(steps in prop::collection::vec(arb_step(), 0..120)) {
        let mut eager = PresenceInstance::new();
        let mut batched = PresenceInstance::new();
        let mut joins = 1u32;
        let mut channel = Some(joins.to_string());
        for step in &steps {
            let channel_ref = channel.as_deref();
            match step {
                Step::Shared(j, l) => {
                    let d = Arc::new(SharedDiff::new(diff(j, l)));
                    let applied = eager.handle_shared_diff(channel_ref, &d, &mut ());
                    prop_assert_eq!(batched.queue_shared_diff(channel_ref, &d), applied);
                }
                Step::Owned(j, l) => {
                    let applied = eager.handle_diff(channel_ref, diff(j, l), &mut ());
                    prop_assert_eq!(batched.handle_diff(channel_ref, diff(j, l), &mut ()), applied);
                }
                Step::State(s, true) => {
                    eager.handle_shared_state(channel_ref, shared_state(s), &mut ());
                    batched.handle_shared_state(channel_ref, shared_state(s), &mut ());
                }
                Step::State(s, false) => {
                    eager.handle_state(channel_ref, state(s), &mut ());
                    batched.handle_state(channel_ref, state(s), &mut ());
                }
                Step::Rejoin => {
                    joins += 1;
                    channel = Some(joins.to_string());
                }
                Step::Read => same(&eager, &mut batched)?,
            }
            // the status fields observers read move as the eager list's do, queue or not
            prop_assert_eq!(batched.pending_diffs().len(), eager.pending_diffs().len());
            prop_assert_eq!(batched.in_pending_sync_state(channel.as_deref()),
                eager.in_pending_sync_state(channel.as_deref()));
            prop_assert!(batched.queued_diffs() < QUEUED_DIFFS_MAX);
        }
        same(&eager, &mut batched)?;
    }
}

/// Diffs that arrive while a state is pending are buffered, not queued, and replayed after
/// the state, after the diffs queued before the rejoin.
#[test]
fn diffs_queued_before_a_rejoin_come_before_the_state_and_its_buffered_diffs() {
    let m = |r: &str| json!({"metas": [{"phx_ref": r}]});
    let mut eager = PresenceInstance::new();
    let mut batched = PresenceInstance::new();
    let start = json!({"a": m("1")});
    eager.handle_state(Some("1"), state(&start), &mut ());
    batched.handle_state(Some("1"), state(&start), &mut ());
    let before = Arc::new(SharedDiff::new(diff(&json!({"b": m("2")}), &json!({}))));
    assert!(eager.handle_shared_diff(Some("1"), &before, &mut ()));
    assert!(batched.queue_shared_diff(Some("1"), &before));
    assert_eq!(batched.queued_diffs(), 1);
    // rejoined: this diff waits for the state
    let during = Arc::new(SharedDiff::new(diff(
        &json!({"c": m("3")}),
        &json!({"b": m("2")}),
    )));
    assert!(!eager.handle_shared_diff(Some("2"), &during, &mut ()));
    assert!(!batched.queue_shared_diff(Some("2"), &during));
    assert_eq!(batched.pending_diffs().len(), 1);
    let next = json!({"a": m("1"), "b": m("2")});
    eager.handle_state(Some("2"), state(&next), &mut ());
    batched.handle_state(Some("2"), state(&next), &mut ());
    assert_eq!(batched.queued_diffs(), 0);
    assert_eq!(listed(&batched), listed(&eager));
    assert_eq!(
        listed(&eager)
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["a", "c"]
    );
}
