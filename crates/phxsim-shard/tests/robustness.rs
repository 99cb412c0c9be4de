//! Input from the network never breaks a node: refused messages are typed errors and change
//! nothing. And a scripted run is a pure function of its script.

mod common;

use common::replay::replay_run2;
use common::*;
use phxsim_shard::{InboundError, NodeMessage, Profile, ShardError, ShardMessage, TransferPayload};
use phxsim_tracker::{Context, Delta, Extract, ReplicaRef, Tag, TrackedMeta, ValueKey};
use serde_json::json;
use std::collections::BTreeMap;

fn fingerprint(t: &phxsim_shard::Tracker) -> String {
    let s = t.shards()[0].state();
    format!("{:?} {:?} {:?}", s.context(), s.clouds(), s.all_values())
}

#[test]
fn hostile_messages_are_refused_and_change_nothing() {
    let cfg = reference_config();
    let mut a = tracker(&cfg, "a", 1, 0, 0);
    a.track("p", "lobby", "alice", &meta(json!({}))).unwrap();
    while a.poll_event().is_some() {}
    let before = fingerprint(&a);
    let me = ReplicaRef::new("a", 1);
    let b = ReplicaRef::new("b", 1);
    let future_value = {
        let mut values = BTreeMap::new();
        values.insert(
            Tag::new(me.clone(), 99),
            TrackedMeta {
                key: ValueKey::new("lobby", "x@b", "mallory"),
                meta: json!({}).into(),
            },
        );
        values
    };
    let future_ctx: Context = [(me.clone(), 99)].into_iter().collect();
    let cases: Vec<(NodeMessage, &str, InboundError)> = vec![
        (
            NodeMessage {
                shard: 7,
                body: ShardMessage::GracefulPermdown { from: b.clone() },
            },
            "b",
            InboundError::UnknownShard {
                shard: 7,
                pool_size: 1,
            },
        ),
        (
            NodeMessage {
                shard: 0,
                body: ShardMessage::GracefulPermdown { from: b.clone() },
            },
            "c",
            InboundError::SenderMismatch {
                replica: b.clone(),
                link: "c".into(),
            },
        ),
        (
            NodeMessage {
                shard: 0,
                body: ShardMessage::Heartbeat {
                    from: ReplicaRef::new("a", 2),
                    delta: None,
                    clocks: Context::new(),
                },
            },
            "a",
            InboundError::Shard(ShardError::OwnName("a".into())),
        ),
        (
            NodeMessage {
                shard: 0,
                body: ShardMessage::Heartbeat {
                    from: b.clone(),
                    delta: Some(Delta {
                        values: future_value.clone(),
                        clouds: BTreeMap::new(),
                        range: (Context::new(), Context::new()),
                    }),
                    clocks: Context::new(),
                },
            },
            "b",
            InboundError::Shard(ShardError::FromTheFuture(Tag::new(me.clone(), 99))),
        ),
        (
            NodeMessage {
                shard: 0,
                body: ShardMessage::TransferAck {
                    id: 1,
                    from: b.clone(),
                    payload: TransferPayload::Full(Extract {
                        context: future_ctx,
                        clouds: BTreeMap::new(),
                        values: Default::default(),
                    }),
                },
            },
            "b",
            InboundError::Shard(ShardError::FromTheFuture(Tag::new(me.clone(), 99))),
        ),
    ];
    for (msg, link, want) in cases {
        assert_eq!(a.handle_message(10, link, msg), Err(want));
        assert_eq!(fingerprint(&a), before);
        assert!(a.poll_event().is_none());
        assert!(a.poll_transmit().is_none());
        assert!(a.peers().is_empty(), "no heartbeat was recorded");
    }
    // The node still works.
    a.track("p", "lobby", "bob", &meta(json!({}))).unwrap();
    assert_eq!(a.list("lobby").keys(), vec!["alice", "bob"]);
}

#[test]
fn a_stopped_node_refuses_everything() {
    let cfg = reference_config();
    let mut a = tracker(&cfg, "a", 1, 0, 0);
    a.graceful_permdown();
    let msg = NodeMessage {
        shard: 0,
        body: ShardMessage::GracefulPermdown {
            from: ReplicaRef::new("b", 1),
        },
    };
    assert_eq!(
        a.handle_message(1, "b", msg),
        Err(InboundError::Shard(ShardError::Stopped))
    );
}

#[test]
fn the_same_script_gives_the_same_run() {
    let one = replay_run2(Profile::faithful());
    let two = replay_run2(Profile::faithful());
    assert_eq!(one.net.records(), two.net.records());
    assert!(one.net.records().len() > 100, "{}", one.net.records().len());
}
