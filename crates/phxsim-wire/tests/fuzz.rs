//! Property tests: hostile bytes never panic a decoder, encode → decode gives the message back,
//! and arbitrary JSON never panics the presence payload readers or the sync state machine.

use phxsim_wire::message::PHX_REPLY;
use phxsim_wire::sync::{self, Event, PresenceInstance, SyncState};
use phxsim_wire::{Codec, Frame, Message, Payload, PresenceDiff, PresenceState, Role, Serializer};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn all_codecs() -> [Codec; 4] {
    [
        Codec::server(Serializer::V1),
        Codec::client(Serializer::V1),
        Codec::server(Serializer::V2),
        Codec::client(Serializer::V2),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Quarters are exact in binary and short in decimal, so they survive a text round trip.
        (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
        "[a-z0-9_\"\\\\é: ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("[a-z_0-9]{0,6}", inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn arb_ref() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[ -~é]{0,12}")
}

fn arb_json_message() -> impl Strategy<Value = Message> {
    (
        arb_ref(),
        arb_ref(),
        "[ -~é]{0,20}",
        "[a-z_]{0,12}",
        arb_json(),
    )
        .prop_map(|(join_ref, ref_, topic, event, payload)| {
            Message::new(join_ref, ref_, topic, event, payload)
        })
}

/// A presence payload that is mostly well-formed, so the sync code is reached.
fn arb_presences() -> impl Strategy<Value = Value> {
    let meta = prop_oneof![
        4 => (prop::option::of(prop_oneof!["[0-9a]{1,2}".prop_map(Value::String), (0i64..3).prop_map(Value::from), Just(Value::Null)]), arb_json())
            .prop_map(|(phx_ref, extra)| {
                let mut map = Map::new();
                if let Some(r) = phx_ref { map.insert("phx_ref".to_owned(), r); }
                map.insert("x".to_owned(), extra);
                Value::Object(map)
            }),
        1 => arb_json(),
    ];
    let presence = prop_oneof![
        6 => prop::collection::vec(meta, 0..4).prop_map(|metas| serde_json::json!({"metas": metas})),
        1 => arb_json(),
    ];
    prop::collection::vec(
        (
            prop_oneof!["[a-c]", "[0-9]{1,3}", Just("__proto__".to_owned())],
            presence,
        ),
        0..5,
    )
    .prop_map(|entries| Value::Object(entries.into_iter().collect()))
}

fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(op, at, byte) in edits {
        let at = if bytes.is_empty() {
            0
        } else {
            at % (bytes.len() + 1)
        };
        match op % 4 {
            0 if at < bytes.len() => bytes[at] ^= byte | 1,
            1 => bytes.insert(at, byte),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn valid_frames() -> Vec<Frame> {
    let msg = Message::new(
        Some("3".to_owned()),
        Some("4".to_owned()),
        "room:lobby",
        "presence_state",
        serde_json::json!({"u1": {"metas": [{"phx_ref": "GOwkd632-VXGVQHi", "n": [1, 2.5, null]}]}}),
    );
    let binary = Message::new(
        Some("3".to_owned()),
        Some("4".to_owned()),
        "room:lobby",
        "ping",
        Payload::Binary(vec![1, 2, 3]),
    );
    let reply = Message::new(
        Some("3".to_owned()),
        Some("4".to_owned()),
        "room:lobby",
        PHX_REPLY,
        Payload::BinaryReply {
            status: "ok".to_owned(),
            response: vec![9],
        },
    );
    let broadcast = Message::broadcast("room:lobby", "presence_diff", Payload::Binary(vec![0xff]));
    let mut frames = Vec::new();
    for codec in all_codecs() {
        for m in [&msg, &binary, &reply, &broadcast] {
            if let Ok(frame) = codec.encode(m) {
                frames.push(frame);
            }
        }
    }
    frames
}

/// What a message looks like after a trip through `codec`: V1 servers drop join_ref, and binary
/// frames turn a missing join_ref/ref into the empty string.
fn expected_after_round_trip(codec: Codec, mut msg: Message) -> Message {
    if codec.serializer() == Serializer::V1 && codec.role() == Role::Server {
        msg.join_ref = None;
    }
    if msg.payload.is_binary() {
        let empty = |r: Option<String>| Some(r.unwrap_or_default());
        match (&msg.payload, codec.role()) {
            (Payload::Binary(_), Role::Client) => {
                msg.join_ref = empty(msg.join_ref);
                msg.ref_ = empty(msg.ref_);
            }
            (Payload::Binary(_), Role::Server) if msg.join_ref.is_some() => {
                msg.join_ref = empty(msg.join_ref)
            }
            (Payload::BinaryReply { .. }, _) => {
                msg.join_ref = empty(msg.join_ref);
                msg.ref_ = empty(msg.ref_);
            }
            _ => {}
        }
    }
    msg
}

/// The codec that reads what `codec` writes.
fn peer(codec: Codec) -> Codec {
    match codec.role() {
        Role::Server => Codec::client(codec.serializer()),
        Role::Client => Codec::server(codec.serializer()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for codec in all_codecs() {
            let _ = codec.decode(&Frame::Binary(bytes.clone()));
            let _ = codec.decode(&Frame::Text(text.clone()));
            let _ = codec.with_max_frame_len(bytes.len() / 2).decode(&Frame::Binary(bytes.clone()));
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic_a_decoder(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
    ) {
        let frames = valid_frames();
        let frame = pick.get(&frames);
        let bytes = match frame {
            Frame::Text(t) => t.clone().into_bytes(),
            Frame::Binary(b) => b.clone(),
        };
        let mutated = mutate(bytes, &edits);
        let as_text = String::from_utf8_lossy(&mutated).into_owned();
        for codec in all_codecs() {
            let _ = codec.decode(&Frame::Binary(mutated.clone()));
            let _ = codec.decode(&Frame::Text(as_text.clone()));
        }
    }

    #[test]
    fn json_messages_round_trip_through_every_codec(msg in arb_json_message()) {
        for codec in all_codecs() {
            let frame = codec.encode(&msg);
            prop_assert!(frame.is_ok(), "{codec:?} {frame:?}");
            let frame = frame.unwrap_or(Frame::Text(String::new()));
            let back = peer(codec).decode(&frame);
            prop_assert_eq!(back, Ok(expected_after_round_trip(codec, msg.clone())), "{:?}", codec);
        }
    }

    #[test]
    fn binary_messages_round_trip_in_v2(
        join_ref in prop::option::of("[ -~]{0,8}"),
        ref_ in prop::option::of("[ -~]{0,8}"),
        topic in "[ -~é]{0,30}",
        event in "[a-z_]{0,10}",
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        shape in 0u8..3,
    ) {
        let client = Codec::client(Serializer::V2);
        let server = Codec::server(Serializer::V2);
        let sent_by_client = Message::new(join_ref.clone(), ref_.clone(), topic.clone(), event.clone(), Payload::Binary(bytes.clone()));
        let frame = client.encode(&sent_by_client);
        prop_assert!(frame.is_ok());
        let back = server.decode(&frame.unwrap_or(Frame::Binary(vec![])));
        prop_assert_eq!(back, Ok(expected_after_round_trip(client, sent_by_client)));

        let sent_by_server = match shape {
            0 => Message::broadcast(topic, event, Payload::Binary(bytes)),
            1 => Message::push(Some(join_ref.unwrap_or_default()), topic, event, Payload::Binary(bytes)),
            _ => Message::new(join_ref, ref_, topic, PHX_REPLY, Payload::BinaryReply { status: event, response: bytes }),
        };
        let frame = server.encode(&sent_by_server);
        prop_assert!(frame.is_ok());
        let back = client.decode(&frame.unwrap_or(Frame::Binary(vec![])));
        prop_assert_eq!(back, Ok(expected_after_round_trip(server, sent_by_server)));
    }

    #[test]
    fn arbitrary_json_never_panics_presence_sync(
        ops in prop::collection::vec((0u8..4, arb_presences(), arb_presences()), 0..12),
    ) {
        let mut state = SyncState::new();
        let mut instance = PresenceInstance::new();
        let mut events: Vec<Event> = Vec::new();
        for (op, a, b) in ops {
            let diff_payload = serde_json::json!({"joins": a.clone(), "leaves": b});
            match op {
                0 => {
                    if let Ok(s) = PresenceState::from_payload(a.clone()) {
                        sync::sync_state(&mut state, s, &mut events);
                    }
                    let _ = instance.handle_message(Some("1"), "presence_state", a, &mut events);
                }
                1 => {
                    if let Ok(d) = PresenceDiff::from_payload(diff_payload.clone()) {
                        sync::sync_diff(&mut state, d, &mut events);
                    }
                    let _ = instance.handle_message(Some("1"), "presence_diff", diff_payload, &mut events);
                }
                2 => {
                    let _ = instance.handle_message(Some("2"), "presence_diff", diff_payload, &mut events);
                }
                _ => {
                    let _ = PresenceDiff::from_payload(a);
                }
            }
            // Whatever happened, keys stay in JavaScript order: array indices first, ascending.
            let indices: Vec<u32> = state.keys().map_while(phxsim_wire::jsmap::array_index).collect();
            prop_assert!(indices.windows(2).all(|w| w[0] < w[1]), "{:?}", indices);
            prop_assert!(state.keys().skip(indices.len()).all(|k| phxsim_wire::jsmap::array_index(k).is_none()));
            prop_assert_eq!(sync::list(&state).len(), state.len());
        }
    }
}
