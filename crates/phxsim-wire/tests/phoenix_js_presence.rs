//! The 14 tests of phoenix.js's `assets/test/presence_test.js` (phoenix-protocol.md §3.7),
//! restated against the Rust port. Each test name says what phoenix.js guarantees.

use phxsim_wire::sync::{
    self, Callbacks, Event, Handled, PresenceEvents, PresenceInstance, SyncState,
};
use phxsim_wire::{Presence, PresenceDiff, PresenceState};
use serde_json::{Value, json};

fn presence(value: Value) -> Presence {
    match Presence::from_value("test", value) {
        Ok(p) => p,
        Err(err) => panic!("bad fixture: {err}"),
    }
}

fn new_state(value: Value) -> PresenceState {
    match PresenceState::from_payload(value) {
        Ok(s) => s,
        Err(err) => panic!("bad fixture: {err}"),
    }
}

fn diff(joins: Value, leaves: Value) -> PresenceDiff {
    match PresenceDiff::from_payload(json!({"joins": joins, "leaves": leaves})) {
        Ok(d) => d,
        Err(err) => panic!("bad fixture: {err}"),
    }
}

/// A state built by syncing from empty, without looking at callbacks.
fn state_of(value: Value) -> SyncState {
    let mut state = SyncState::new();
    sync::sync_state(&mut state, new_state(value), &mut ());
    state
}

fn as_json(state: &SyncState) -> Value {
    serde_json::to_value(state).unwrap_or(Value::Null)
}

fn keys(state: &SyncState) -> Vec<&str> {
    state.keys().collect()
}

/// Three users with one meta each: the suite's shared starting point.
fn three_users() -> Value {
    json!({
        "u1": {"metas": [{"id": 1, "phx_ref": "1"}]},
        "u2": {"metas": [{"id": 2, "phx_ref": "2"}]},
        "u3": {"metas": [{"id": 3, "phx_ref": "3"}]}
    })
}

fn joins(events: &[Event]) -> Vec<(&str, Option<&Presence>, &Presence)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Join {
                key,
                current,
                joined,
            } => Some((key.as_str(), current.as_ref(), joined)),
            _ => None,
        })
        .collect()
}

fn leaves(events: &[Event]) -> Vec<(&str, &Presence, &Presence)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Leave { key, current, left } => Some((key.as_str(), current, left)),
            _ => None,
        })
        .collect()
}

// ---- syncState ----

#[test]
fn sync_state_from_empty_yields_exactly_the_new_state() {
    let incoming = json!({"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}});
    let mut state = SyncState::new();
    sync::sync_state(&mut state, new_state(incoming.clone()), &mut ());
    assert_eq!(as_json(&state), incoming);
}

#[test]
fn sync_state_joins_new_keys_and_leaves_vanished_ones_whole() {
    let mut state = state_of(json!({"u4": {"metas": [{"id": 4, "phx_ref": "4"}]}}));
    let mut events = Vec::new();
    sync::sync_state(&mut state, new_state(three_users()), &mut events);
    assert_eq!(as_json(&state), three_users());

    let joined = joins(&events);
    assert_eq!(joined.len(), 3);
    for ((key, current, new), id) in joined.into_iter().zip(1..) {
        assert_eq!(key, format!("u{id}"));
        assert_eq!(current, None, "{key} was not present before");
        assert_eq!(
            *new,
            presence(json!({"metas": [{"id": id, "phx_ref": id.to_string()}]}))
        );
    }
    let left = leaves(&events);
    assert_eq!(left.len(), 1);
    let (key, current, gone) = left[0];
    assert_eq!(key, "u4");
    assert_eq!(*current, presence(json!({"metas": []})));
    assert_eq!(
        *gone,
        presence(json!({"metas": [{"id": 4, "phx_ref": "4"}]}))
    );
}

#[test]
fn sync_state_reports_only_the_newly_added_metas_of_a_known_key() {
    let mut state = state_of(json!({"u3": {"metas": [{"id": 3, "phx_ref": "3"}]}}));
    let incoming =
        json!({"u3": {"metas": [{"id": 3, "phx_ref": "3"}, {"id": 3, "phx_ref": "3.new"}]}});
    let mut events = Vec::new();
    sync::sync_state(&mut state, new_state(incoming.clone()), &mut events);
    assert_eq!(as_json(&state), incoming);
    assert_eq!(
        events,
        vec![Event::Join {
            key: "u3".to_owned(),
            current: Some(presence(json!({"metas": [{"id": 3, "phx_ref": "3"}]}))),
            joined: presence(json!({"metas": [{"id": 3, "phx_ref": "3.new"}]})),
        }]
    );
    assert!(leaves(&events).is_empty());
}

// ---- syncDiff ----

#[test]
fn sync_diff_into_empty_state_adds_the_joins() {
    let mut state = SyncState::new();
    let joined = json!({"u1": {"metas": [{"id": 1, "phx_ref": "1.2"}]}});
    sync::sync_diff(&mut state, diff(joined.clone(), json!({})), &mut ());
    assert_eq!(as_json(&state), joined);
}

#[test]
fn sync_diff_drops_a_key_whose_metas_empty_and_appends_joined_metas_after_old_ones() {
    let mut state = state_of(three_users());
    let d = diff(
        json!({"u1": {"metas": [{"id": 1, "phx_ref": "1.2"}]}}),
        json!({"u2": {"metas": [{"id": 2, "phx_ref": "2"}]}}),
    );
    sync::sync_diff(&mut state, d, &mut ());
    assert_eq!(
        as_json(&state),
        json!({
            "u1": {"metas": [{"id": 1, "phx_ref": "1"}, {"id": 1, "phx_ref": "1.2"}]},
            "u3": {"metas": [{"id": 3, "phx_ref": "3"}]}
        })
    );
    assert_eq!(keys(&state), ["u1", "u3"]);
}

#[test]
fn sync_diff_removes_one_meta_and_keeps_the_key_while_others_remain() {
    let mut state = state_of(
        json!({"u1": {"metas": [{"id": 1, "phx_ref": "1"}, {"id": 1, "phx_ref": "1.2"}]}}),
    );
    sync::sync_diff(
        &mut state,
        diff(
            json!({}),
            json!({"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}}),
        ),
        &mut (),
    );
    assert_eq!(
        as_json(&state),
        json!({"u1": {"metas": [{"id": 1, "phx_ref": "1.2"}]}})
    );
}

// ---- keys named like Object.prototype properties ----

#[test]
fn sync_state_handles_keys_named_like_object_prototype_properties() {
    let incoming = json!({
        "__proto__": {"metas": [{"id": 1, "phx_ref": "p"}]},
        "constructor": {"metas": [{"id": 2, "phx_ref": "c"}]},
        "hasOwnProperty": {"metas": [{"id": 3, "phx_ref": "h"}]}
    });
    let mut state = SyncState::new();
    let mut events = Vec::new();
    sync::sync_state(&mut state, new_state(incoming), &mut events);
    let joined: Vec<&str> = joins(&events).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(joined, ["__proto__", "constructor", "hasOwnProperty"]);
    let ids = sync::list_by(&state, |_, p| p.metas[0].as_map().get("id").cloned());
    assert_eq!(ids, [Some(json!(1)), Some(json!(2)), Some(json!(3))]);

    let mut events = Vec::new();
    sync::sync_state(&mut state, new_state(json!({})), &mut events);
    let left: Vec<&str> = leaves(&events).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(left, ["__proto__", "constructor", "hasOwnProperty"]);
    assert!(sync::list(&state).is_empty());
}

#[test]
fn sync_diff_handles_keys_named_like_object_prototype_properties() {
    let mut state = SyncState::new();
    let entry = json!({"__proto__": {"metas": [{"id": 1, "phx_ref": "p"}]}});
    sync::sync_diff(&mut state, diff(entry.clone(), json!({})), &mut ());
    let listed = sync::list_by(&state, |k, p| {
        (k.to_owned(), p.metas[0].as_map().get("id").cloned())
    });
    assert_eq!(listed, [("__proto__".to_owned(), Some(json!(1)))]);
    sync::sync_diff(&mut state, diff(json!({}), entry), &mut ());
    assert!(state.is_empty());
}

// ---- list ----

#[test]
fn list_gives_every_presence_in_key_order_by_default() {
    let state = state_of(three_users());
    let listed: Vec<Value> = sync::list(&state)
        .into_iter()
        .map(Presence::to_value)
        .collect();
    assert_eq!(
        listed,
        [
            json!({"metas": [{"id": 1, "phx_ref": "1"}]}),
            json!({"metas": [{"id": 2, "phx_ref": "2"}]}),
            json!({"metas": [{"id": 3, "phx_ref": "3"}]})
        ]
    );
}

#[test]
fn list_applies_a_chooser() {
    let state = state_of(
        json!({"u1": {"metas": [{"id": 1, "phx_ref": "1.first"}, {"id": 1, "phx_ref": "1.second"}]}}),
    );
    let first_metas = sync::list_by(&state, |_, p| {
        p.metas.first().map(|m| Value::Object(m.as_map().clone()))
    });
    assert_eq!(first_metas, [Some(json!({"id": 1, "phx_ref": "1.first"}))]);
}

// ---- the instance ----

fn first_meta_ids(instance: &PresenceInstance) -> Vec<Value> {
    instance.list_by(|_, p| {
        p.metas[0]
            .as_map()
            .get("id")
            .cloned()
            .unwrap_or(Value::Null)
    })
}

#[test]
fn instance_applies_a_state_then_live_diffs() {
    let mut inst = PresenceInstance::new();
    inst.handle_state(Some("1"), new_state(json!({"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}, "u2": {"metas": [{"id": 2, "phx_ref": "2"}]}})), &mut ());
    assert_eq!(first_meta_ids(&inst), [json!(1), json!(2)]);
    let applied = inst.handle_diff(
        Some("1"),
        diff(
            json!({}),
            json!({"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}}),
        ),
        &mut (),
    );
    assert!(applied);
    assert_eq!(first_meta_ids(&inst), [json!(2)]);
}

#[test]
fn instance_buffers_diffs_until_a_state_for_the_current_join_ref_arrives() {
    let mut inst = PresenceInstance::new();
    let mut events: Vec<Event> = Vec::new();
    let u1 = json!({"metas": [{"id": 1, "phx_ref": "1"}]});
    let u2 = json!({"metas": [{"id": 2, "phx_ref": "2"}]});

    // A diff before any state is held back.
    let leave_u2 = diff(json!({}), json!({"u2": u2.clone()}));
    assert!(!inst.handle_diff(Some("1"), leave_u2.clone(), &mut events));
    assert!(inst.list().is_empty());
    assert_eq!(inst.pending_diffs(), [leave_u2]);
    assert!(events.is_empty());

    // The state applies, then the buffered leave.
    inst.handle_state(
        Some("1"),
        new_state(json!({"u1": u1.clone(), "u2": u2.clone()})),
        &mut events,
    );
    assert_eq!(
        leaves(&events),
        [("u2", &presence_with_no_metas(), &presence(u2.clone()))]
    );
    assert_eq!(first_meta_ids(&inst), [json!(1)]);
    assert!(inst.pending_diffs().is_empty());
    let joined: Vec<(&str, Option<&Presence>)> =
        joins(&events).into_iter().map(|(k, c, _)| (k, c)).collect();
    assert_eq!(joined, [("u1", None), ("u2", None)]);

    // The channel rejoins: diffs are held back again, the list is unchanged meanwhile.
    assert!(inst.in_pending_sync_state(Some("2")));
    let leave_u1 = diff(json!({}), json!({"u1": u1.clone()}));
    assert!(!inst.handle_diff(Some("2"), leave_u1, &mut ()));
    assert_eq!(first_meta_ids(&inst), [json!(1)]);

    // The new incarnation's state arrives, then the queued leave of u1 applies on top of it.
    let u3 = json!({"metas": [{"id": 3, "phx_ref": "3"}]});
    inst.handle_state(Some("2"), new_state(json!({"u1": u1, "u3": u3})), &mut ());
    assert_eq!(first_meta_ids(&inst), [json!(3)]);
    assert!(!inst.in_pending_sync_state(Some("2")));
}

fn presence_with_no_metas() -> Presence {
    presence(json!({"metas": []}))
}

#[test]
fn instance_listens_to_custom_event_names() {
    let events = PresenceEvents {
        state: "the_state".to_owned(),
        diff: "the_diff".to_owned(),
    };
    let mut inst = PresenceInstance::with_events(events);
    let mut calls: Vec<Event> = Vec::new();
    let state = json!({"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}, "u2": {"metas": [{"id": 2, "phx_ref": "2"}]}});
    // The default names mean nothing to this instance.
    assert_eq!(
        inst.handle_message(Some("1"), "presence_state", state.clone(), &mut calls),
        Ok(Handled::Ignored)
    );
    assert!(inst.list().is_empty());
    assert_eq!(
        inst.handle_message(Some("1"), "the_state", state, &mut calls),
        Ok(Handled::State)
    );
    assert_eq!(first_meta_ids(&inst), [json!(1), json!(2)]);
    let leave = json!({"joins": {}, "leaves": {"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}}});
    assert_eq!(
        inst.handle_message(Some("1"), "the_diff", leave, &mut calls),
        Ok(Handled::Diff)
    );
    assert_eq!(first_meta_ids(&inst), [json!(2)]);
    assert_eq!(calls.iter().filter(|e| **e == Event::Sync).count(), 2);
}

#[test]
fn instance_replaces_a_meta_on_an_update_diff() {
    let mut inst = PresenceInstance::new();
    let old_meta = json!({"id": 2, "phx_ref": "2", "name": "chris"});
    let new_meta = json!({"id": 2, "phx_ref": "2.2", "phx_ref_prev": "2", "name": "chris.2"});
    let u1 = json!({"metas": [{"id": 1, "phx_ref": "1"}]});
    inst.handle_state(
        Some("1"),
        new_state(json!({"u1": u1.clone(), "u2": {"metas": [old_meta.clone()]}})),
        &mut (),
    );

    let mut events = Vec::new();
    let update = diff(
        json!({"u2": {"metas": [new_meta.clone()]}}),
        json!({"u2": {"metas": [old_meta.clone()]}}),
    );
    inst.handle_diff(Some("1"), update, &mut events);

    let metas = inst.list_by(|_, p| {
        Value::Array(
            p.metas
                .iter()
                .map(|m| Value::Object(m.as_map().clone()))
                .collect(),
        )
    });
    assert_eq!(metas, [u1["metas"].clone(), json!([new_meta.clone()])]);
    let joined = joins(&events);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].1, Some(&presence(json!({"metas": [old_meta]}))));
    assert_eq!(*joined[0].2, presence(json!({"metas": [new_meta]})));
}

/// A planted-bug check for the recorder the tests above rely on: a callback implementation that
/// ignores leaves must make the leave assertions see nothing.
#[test]
fn callbacks_that_ignore_leaves_record_no_leaves() {
    struct JoinsOnly(Vec<String>);
    impl Callbacks for JoinsOnly {
        fn on_join(&mut self, key: &str, _: Option<&Presence>, _: &Presence) {
            self.0.push(key.to_owned());
        }
    }
    let mut state = state_of(json!({"gone": {"metas": [{"phx_ref": "g"}]}}));
    let mut recorder = JoinsOnly(Vec::new());
    sync::sync_state(
        &mut state,
        new_state(json!({"new": {"metas": [{"phx_ref": "n"}]}})),
        &mut recorder,
    );
    assert_eq!(recorder.0, ["new"]);
    assert_eq!(keys(&state), ["new"]);
}
