//! Each checker on hand-made observations: silent on a healthy run, and catching the fault it
//! exists for. (The simulator's planted-mutation tests show the same end to end.)

use phxsim_sim::checkers::{
    Bounds, Checkers, ClientSnapshot, FindingKind, NodeSnapshot, PresenceList, Snapshot,
};
use phxsim_sim::event::Event;
use serde_json::{Value as Json, json};
use std::sync::Arc;

/// A presence message as a client receives it (or its channel's join), for short tests.
enum ClientMessage {
    Joined(String),
    State(Json),
    Diff(Json),
}

/// The checkers read the run's event stream; these write the events a run would emit.
trait Feed {
    fn step(&mut self, at_ms: u64);
    fn observe(&mut self, snapshot: Snapshot);
    fn client_message(&mut self, at_ms: u64, client: &str, msg: ClientMessage);
}

impl Feed for Checkers {
    fn step(&mut self, at_ms: u64) {
        self.event(
            at_ms,
            Event::Step {
                action: "step".into(),
            },
        );
    }

    fn observe(&mut self, snapshot: Snapshot) {
        self.event(snapshot.at_ms, Event::Snapshot(snapshot));
    }

    fn client_message(&mut self, at_ms: u64, client: &str, msg: ClientMessage) {
        let client = client.to_owned();
        let event = match msg {
            ClientMessage::Joined(join_ref) => Event::Channel {
                client,
                state: "Joined".into(),
                join_ref: Some(join_ref),
            },
            ClientMessage::State(payload) => Event::Presence {
                client,
                event: "presence_state".into(),
                payload,
            },
            ClientMessage::Diff(payload) => Event::Presence {
                client,
                event: "presence_diff".into(),
                payload,
            },
        };
        self.event(at_ms, event);
    }
}

fn list(entries: &[(&str, &str)]) -> PresenceList {
    let mut l = PresenceList::new();
    for (k, r) in entries {
        l.entry((*k).into()).or_default().insert(
            (*r).into(),
            json!({"phx_ref": r, "status": "online"}).into(),
        );
    }
    l
}

fn node(lists: &[(&str, &str)], local: &[(&str, &str)]) -> NodeSnapshot {
    NodeSnapshot {
        lists: [("room:lobby".into(), Arc::new(list(lists).into()))].into(),
        local: [("room:lobby".into(), Arc::new(list(local).into()))].into(),
    }
}

fn snap(at_ms: u64, a: NodeSnapshot, b: NodeSnapshot) -> Snapshot {
    // every presence a node tracks itself belongs to a joined socket of that node
    let mut clients = std::collections::BTreeMap::new();
    for (name, n) in [("a", &a), ("b", &b)] {
        for (topic, list) in &n.local {
            for key in list.keys() {
                clients.insert(
                    format!("{key}@{name}").into(),
                    ClientSnapshot {
                        node: name.into(),
                        topic: topic.clone(),
                        user: key.clone(),
                        joined: true,
                        view: PresenceList::new(),
                    },
                );
            }
        }
    }
    Snapshot {
        at_ms,
        nodes: [
            ("a".to_string(), Arc::new(a)),
            ("b".to_string(), Arc::new(b)),
        ]
        .into(),
        clients: Arc::new(clients),
    }
}

fn checkers() -> Checkers {
    Checkers::new(
        Bounds {
            convergence_ms: 1000,
            ghost_ms: 500,
            link_recovery_ms: 2000,
            sample_ms: 1,
        },
        vec![],
    )
}

/// alice tracked on a and listed on both nodes at `at_ms`: the agreed start of most tests.
fn alice_on_a_seen_by_both(at_ms: u64) -> Snapshot {
    snap(
        at_ms,
        node(&[("alice", "r1")], &[("alice", "r1")]),
        node(&[("alice", "r1")], &[]),
    )
}

fn kinds(c: Checkers) -> Vec<FindingKind> {
    c.finish(&Default::default())
        .0
        .into_iter()
        .map(|f| f.kind)
        .collect()
}

#[test]
fn a_healthy_run_has_no_findings() {
    let mut c = checkers();
    c.step(0);
    c.observe(snap(
        0,
        node(&[("alice", "r1")], &[("alice", "r1")]),
        node(&[], &[]),
    ));
    c.observe(alice_on_a_seen_by_both(100));
    c.observe(alice_on_a_seen_by_both(2000));
    let (findings, converged) = c.finish(&Default::default());
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(converged, Some(100));
}

#[test]
fn a_node_that_never_learns_is_no_convergence_and_lost() {
    let mut c = checkers();
    c.step(0);
    for t in [0, 500, 2000] {
        c.observe(snap(
            t,
            node(&[("alice", "r1")], &[("alice", "r1")]),
            node(&[], &[]),
        ));
    }
    assert_eq!(kinds(c), [FindingKind::NoConvergence, FindingKind::Lost]);
}

#[test]
fn a_ghost_is_reported_at_the_first_sample_past_the_bound() {
    let mut c = checkers();
    c.step(0);
    c.observe(alice_on_a_seen_by_both(0));
    // alice leaves at a (gone from the truth at 100 ms); b keeps listing her
    for t in [100, 400, 600, 601, 700] {
        c.observe(snap(t, node(&[], &[]), node(&[("alice", "r1")], &[])));
    }
    let (findings, _) = c.finish(&Default::default());
    let ghosts: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::Ghost)
        .map(|f| (f.at_ms, f.subject.as_str()))
        .collect();
    assert_eq!(
        ghosts[0],
        (601, "b"),
        "not within the 500 ms bound, at the first sample past it"
    );
}

/// After a heal, a link that stalled during the split carries heartbeats again only after its
/// idle timeout and redials (`link_recovery_ms`): a replica cut off until then may still list
/// an owner that left during the split. That is settling, not a ghost; one that outlives the
/// recovery and the bound is.
#[test]
fn a_ghost_bound_after_a_heal_waits_for_the_links_to_recover() {
    let ghosts_at = |heal: &str| {
        let mut c = checkers();
        c.step(0);
        c.observe(alice_on_a_seen_by_both(0));
        // alice leaves at a at 100 ms while b is cut off; the split heals at 200 ms
        c.observe(snap(100, node(&[], &[]), node(&[("alice", "r1")], &[])));
        c.event(
            200,
            Event::Step {
                action: heal.into(),
            },
        );
        for t in [701, 1_500, 2_700, 2_701] {
            c.observe(snap(t, node(&[], &[]), node(&[("alice", "r1")], &[])));
        }
        let (findings, _) = c.finish(&Default::default());
        findings
            .iter()
            .filter(|f| f.kind == FindingKind::Ghost)
            .map(|f| f.at_ms)
            .next()
    };
    // 200 + 2 000 ms of link recovery + the 500 ms bound
    assert_eq!(ghosts_at("heal"), Some(2_701));
    assert_eq!(ghosts_at("release [[\"a\", \"b\"]]"), Some(2_701));
    // a step that reopens nothing keeps the plain bound from the step
    assert_eq!(ghosts_at("join bob"), Some(701));
}

/// The checkers read steps by their label; which labels reopen links must agree with the
/// typed `Action::reopens_links` for every action.
#[test]
fn step_labels_that_reopen_links_match_the_typed_actions() {
    use phxsim_sim::Action;
    use phxsim_sim::checkers::step_reopens_links;
    let link = vec![("a".to_string(), "b".to_string())];
    let every = [
        Action::Join("u".into()),
        Action::Leave("u".into()),
        Action::Update("u".into(), Default::default()),
        Action::Disconnect("u".into()),
        Action::DropMidJoin("u".into()),
        Action::Reconnect("u".into()),
        Action::CrashChannel("u".into()),
        Action::Partition(vec![vec!["a".into()], vec!["b".into()]]),
        Action::Cut(link.clone()),
        Action::CutOneway(link.clone()),
        Action::Heal,
        Action::Repair(link.clone()),
        Action::Crash("a".into()),
        Action::Restart("a".into()),
        Action::Permdown("a".into()),
        Action::Hold(link.clone()),
        Action::Release(link),
        Action::Loss(0.1),
        Action::ClientLoss(0.1),
    ];
    for action in every {
        assert_eq!(
            step_reopens_links(&action.label()),
            action.reopens_links(),
            "{}",
            action.label()
        );
    }
}

/// A sampler hands in the very same node lists while nothing changes: the checkers skip the
/// work that only depends on the lists, but what depends on time (the ghost bound, the
/// convergence clock) is judged at every sample all the same.
#[test]
fn unchanged_shared_lists_still_show_a_ghost_and_no_convergence() {
    let mut c = checkers();
    c.step(0);
    c.observe(alice_on_a_seen_by_both(0));
    let gone = snap(100, node(&[], &[]), node(&[("alice", "r1")], &[]));
    for t in [100, 400, 600, 601, 700, 2000] {
        // the same allocations every time, as the harness passes an unchanged node
        c.observe(Snapshot {
            at_ms: t,
            ..gone.clone()
        });
    }
    let (findings, converged) = c.finish(&Default::default());
    let ghosts: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::Ghost)
        .map(|f| (f.at_ms, f.subject.as_str()))
        .collect();
    assert_eq!(ghosts[0], (601, "b"), "at the first sample past the bound");
    assert_eq!(converged, None);
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::NoConvergence),
        "{findings:?}"
    );
}

#[test]
fn an_older_meta_listed_in_place_of_the_owners_is_stale() {
    let mut c = checkers();
    c.step(0);
    for t in [0, 2000] {
        c.observe(snap(
            t,
            node(&[("alice", "r2")], &[("alice", "r2")]),
            node(&[("alice", "r1")], &[]),
        ));
    }
    let k = kinds(c);
    assert!(k.contains(&FindingKind::StaleMeta), "{k:?}");
}

#[test]
fn a_client_whose_list_differs_from_its_node_is_a_client_view_finding() {
    let mut c = checkers();
    c.step(0);
    let mut s = alice_on_a_seen_by_both(0);
    Arc::make_mut(&mut s.clients).insert(
        "bob".into(),
        ClientSnapshot {
            node: "b".into(),
            topic: "room:lobby".into(),
            user: "bob".into(),
            joined: true,
            view: PresenceList::new(),
        },
    );
    c.observe(s);
    let final_views = [("bob".to_string(), PresenceList::new())].into();
    let k: Vec<FindingKind> = c
        .finish(&final_views)
        .0
        .into_iter()
        .map(|f| f.kind)
        .collect();
    assert_eq!(k, [FindingKind::ClientView]);
}

#[test]
fn clients_sharing_one_list_are_each_judged_against_their_own_node() {
    let mut c = checkers();
    c.step(0);
    // a lists alice, b lists alice and a ghost bob
    let mut s = snap(
        0,
        node(&[("alice", "r1")], &[("alice", "r1")]),
        node(&[("alice", "r1"), ("bob", "r9")], &[]),
    );
    for (name, node) in [
        ("p1", "a"),
        ("p2", "b"),
        ("p3", "a"),
        ("p4", "b"),
        ("p5", "b"),
    ] {
        Arc::make_mut(&mut s.clients).insert(
            name.into(),
            ClientSnapshot {
                node: node.into(),
                topic: "room:lobby".into(),
                user: name.into(),
                // p5 is not joined: nothing is asked of its list
                joined: name != "p5",
                view: PresenceList::new(),
            },
        );
    }
    c.observe(s);
    // every client shows alice only: right on a, wrong on b
    c.client_views_of(&["p1", "p2", "p3", "p4", "p5"], &list(&[("alice", "r1")]));
    // (b's ghost bob is also reported, as what it is, by the other checkers)
    let found: Vec<(FindingKind, String)> = c
        .finish(&Default::default())
        .0
        .into_iter()
        .filter(|f| f.kind == FindingKind::ClientView)
        .map(|f| (f.kind, f.subject))
        .collect();
    assert_eq!(
        found,
        [
            (FindingKind::ClientView, "p2".to_string()),
            (FindingKind::ClientView, "p4".to_string())
        ]
    );
}

fn state(entries: &[(&str, &str)]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, r) in entries {
        m.insert(k.to_string(), json!({"metas": [{"phx_ref": r}]}));
    }
    serde_json::Value::Object(m)
}

/// The state is read when the channel subscribes; a change between that and the join's track
/// reaches the client only as a diff that comes before the state. phoenix.js applies it after
/// the state, so the client holds that ref, and its later leave is no anomaly.
#[test]
fn a_buffered_diff_the_state_does_not_hold_is_applied_after_the_state() {
    let mut c = checkers();
    c.client_message(1, "amy", ClientMessage::Joined("1".into()));
    for (t, msg) in [
        (
            2,
            ClientMessage::Diff(json!({"joins": state(&[("amy", "m1")]), "leaves": {}})),
        ),
        (
            2,
            ClientMessage::Diff(json!({"joins": state(&[("alice", "a1")]), "leaves": {}})),
        ),
        (2, ClientMessage::State(state(&[("amy", "m1")]))),
        (
            5,
            ClientMessage::Diff(json!({"joins": {}, "leaves": state(&[("alice", "a1")])})),
        ),
    ] {
        c.client_message(t, "amy", msg);
    }
    let views = [("amy".to_string(), list(&[("amy", "m1")]))].into();
    let (findings, _) = c.finish(&views);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn leaves_of_refs_not_held_and_joins_of_refs_held_are_the_reference_anomalies() {
    let mut c = checkers();
    c.client_message(1, "bob", ClientMessage::Joined("1".into()));
    // a diff before the state is buffered, like phoenix.js: no anomaly for the joiner's own join
    c.client_message(
        2,
        "bob",
        ClientMessage::Diff(json!({"joins": state(&[("bob", "b1")]), "leaves": {}})),
    );
    c.client_message(
        3,
        "bob",
        ClientMessage::State(state(&[("alice", "a1"), ("bob", "b1")])),
    );
    c.client_message(
        4,
        "bob",
        ClientMessage::Diff(json!({"joins": {}, "leaves": state(&[("alice", "a1")])})),
    );
    c.client_message(
        5,
        "bob",
        ClientMessage::Diff(json!({"joins": {}, "leaves": state(&[("alice", "a1")])})),
    );
    c.client_message(
        6,
        "bob",
        ClientMessage::Diff(json!({"joins": state(&[("bob", "b1")]), "leaves": {}})),
    );
    let (findings, _) = c.finish(&Default::default());
    let got: Vec<_> = findings.iter().map(|f| (f.at_ms, f.kind)).collect();
    assert_eq!(
        got,
        [
            (5, FindingKind::DuplicateLeave),
            (6, FindingKind::DuplicateJoin)
        ]
    );
}

#[test]
fn a_client_that_shows_what_its_messages_do_not_say_is_a_diff_stream_finding() {
    let mut c = checkers();
    c.step(0);
    c.client_message(1, "bob", ClientMessage::Joined("1".into()));
    c.client_message(
        2,
        "bob",
        ClientMessage::Diff(json!({"joins": state(&[("alice", "a1")]), "leaves": {}})),
    );
    c.client_message(3, "bob", ClientMessage::State(state(&[("bob", "b1")])));
    let mut s = snap(
        2000,
        node(&[("alice", "a1"), ("bob", "b1")], &[("alice", "a1")]),
        node(&[("alice", "a1"), ("bob", "b1")], &[("bob", "b1")]),
    );
    // the client forgot the buffered diff: it shows only bob
    Arc::make_mut(&mut s.clients).insert(
        "bob".into(),
        ClientSnapshot {
            node: "b".into(),
            topic: "room:lobby".into(),
            user: "bob".into(),
            joined: true,
            view: list(&[("bob", "b1")]),
        },
    );
    c.observe(s);
    let final_views = [("bob".to_string(), list(&[("bob", "b1")]))].into();
    let k: Vec<FindingKind> = c
        .finish(&final_views)
        .0
        .into_iter()
        .map(|f| f.kind)
        .collect();
    assert!(k.contains(&FindingKind::DiffStream), "{k:?}");
    assert!(k.contains(&FindingKind::ClientView), "{k:?}");
}

/// bob joins, then gets a `presence_state` that is no presence list.
fn bob_gets_a_malformed_state(mut c: Checkers) -> Checkers {
    c.client_message(1, "bob", ClientMessage::Joined("1".into()));
    let malformed = json!({"alice": {"no_metas": []}});
    c.client_message(2, "bob", ClientMessage::State(malformed));
    c
}

#[test]
fn a_malformed_presence_payload_is_a_diff_stream_finding() {
    let c = bob_gets_a_malformed_state(checkers());
    let (findings, _) = c.finish(&Default::default());
    assert_eq!(findings[0].kind, FindingKind::DiffStream);
}

#[test]
fn a_presence_kept_after_its_socket_is_gone_is_a_ghost() {
    let mut c = checkers();
    c.step(0);
    for t in [0, 400, 600] {
        let mut s = alice_on_a_seen_by_both(t);
        // alice's socket on a is gone from t = 0, but a still tracks her presence
        Arc::make_mut(&mut s.clients)
            .values_mut()
            .for_each(|cl| cl.joined = false);
        c.observe(s);
    }
    let (findings, _) = c.finish(&Default::default());
    let ghosts: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::Ghost)
        .collect();
    assert_eq!(ghosts.len(), 1, "{findings:?}");
    assert_eq!((ghosts[0].at_ms, ghosts[0].subject.as_str()), (600, "a"));
    assert!(
        ghosts[0]
            .detail
            .contains("1 presence(s) tracked for 0 joined socket(s)")
    );
}

#[test]
fn only_the_replayed_clients_messages_are_replayed() {
    let others = checkers().replaying(Some(["amy".to_string()].into()));
    assert!(
        bob_gets_a_malformed_state(others)
            .finish(&Default::default())
            .0
            .is_empty()
    );
    let bob = checkers().replaying(Some(["bob".to_string()].into()));
    assert_eq!(
        kinds(bob_gets_a_malformed_state(bob)),
        [FindingKind::DiffStream]
    );
}
