//! The codec against the upstream test vectors and against every frame a real Phoenix 1.7.21
//! server exchanged (the copy in phxsim-conform/data/), plus one test per decode error.

use phxsim_wire::message::PHX_REPLY;
use phxsim_wire::{
    Codec, DecodeError, EncodeError, Frame, Message, Payload, PresenceDiff, PresenceState,
    Serializer,
};
use serde_json::{Value, json};

fn reference(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/../phxsim-conform/data/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{path}: {err}")))
        .collect()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|err| panic!("bad hex: {err}"))
        })
        .collect()
}

fn frame_of(record: &Value) -> Frame {
    match (record["data"].as_str(), record["data_hex"].as_str()) {
        (Some(text), _) => Frame::Text(text.to_owned()),
        (None, Some(h)) => Frame::Binary(hex(h)),
        _ => panic!("record without data: {record}"),
    }
}

fn s(text: &str) -> Option<String> {
    Some(text.to_owned())
}

// ---- V2 binary vectors from Phoenix's and phoenix.js's own tests (phoenix-protocol.md §1.5) ----

#[test]
fn binary_client_push_matches_the_upstream_vector() {
    let msg = Message::new(
        s("12"),
        s("123"),
        "topic",
        "event",
        Payload::Binary(vec![101, 102, 103]),
    );
    let mut expected = vec![0, 2, 3, 5, 5];
    expected.extend_from_slice(b"12123topicevent");
    expected.extend_from_slice(&[101, 102, 103]);
    let frame = Codec::client(Serializer::V2).encode(&msg);
    assert_eq!(frame, Ok(Frame::Binary(expected.clone())));
    assert_eq!(Serializer::V2.decode(&Frame::Binary(expected)), Ok(msg));
}

#[test]
fn binary_reply_push_and_broadcast_match_the_upstream_vectors() {
    let server = Codec::server(Serializer::V2);
    let client = Codec::client(Serializer::V2);
    let cases = [
        (
            Message::new(
                s("12"),
                s("123"),
                "topic",
                PHX_REPLY,
                Payload::BinaryReply {
                    status: "ok".to_owned(),
                    response: vec![101, 102, 103],
                },
            ),
            [&[1u8, 2, 3, 5, 2][..], b"12123topicok", &[101, 102, 103]].concat(),
        ),
        (
            Message::broadcast("topic", "event", Payload::Binary(vec![101, 102, 103])),
            [&[2u8, 5, 5][..], b"topicevent", &[101, 102, 103]].concat(),
        ),
        (
            Message::push(
                s("12"),
                "topic",
                "event",
                Payload::Binary(vec![101, 102, 103]),
            ),
            [&[0u8, 2, 5, 5][..], b"12topicevent", &[101, 102, 103]].concat(),
        ),
    ];
    for (msg, bytes) in cases {
        assert_eq!(
            server.encode(&msg),
            Ok(Frame::Binary(bytes.clone())),
            "{msg:?}"
        );
        assert_eq!(client.decode(&Frame::Binary(bytes)), Ok(msg));
    }
}

#[test]
fn binary_lengths_count_utf8_bytes_and_stop_at_255() {
    let msg = Message::new(s("0"), s("1"), "room:café", "e", Payload::Binary(vec![1]));
    let Ok(Frame::Binary(bytes)) = Codec::client(Serializer::V2).encode(&msg) else {
        panic!("encode failed")
    };
    assert_eq!(&bytes[..5], &[0, 1, 1, 10, 1]);
    let long = Message::new(
        s("0"),
        s("1"),
        "t".repeat(256),
        "e",
        Payload::Binary(vec![]),
    );
    assert_eq!(
        Codec::client(Serializer::V2).encode(&long),
        Err(EncodeError::FieldTooLong {
            field: "topic",
            len: 256
        })
    );
    let just_fits = Message::new(
        s("0"),
        s("1"),
        "t".repeat(255),
        "e",
        Payload::Binary(vec![]),
    );
    assert!(Codec::client(Serializer::V2).encode(&just_fits).is_ok());
}

#[test]
fn binary_frames_cannot_say_null_so_none_comes_back_empty() {
    let msg = Message::new(None, None, "t", "e", Payload::Binary(vec![7]));
    let Ok(frame) = Codec::client(Serializer::V2).encode(&msg) else {
        panic!("encode failed")
    };
    let back = Serializer::V2.decode(&frame);
    assert_eq!(
        back,
        Ok(Message::new(
            s(""),
            s(""),
            "t",
            "e",
            Payload::Binary(vec![7])
        ))
    );
}

#[test]
fn shapes_a_side_never_sends_are_encode_errors() {
    let server = Codec::server(Serializer::V2);
    let push_with_ref = Message::new(s("1"), s("2"), "t", "e", Payload::Binary(vec![]));
    assert_eq!(
        server.encode(&push_with_ref),
        Err(EncodeError::RefOnServerPush)
    );
    let reply = Message::new(
        s("1"),
        s("2"),
        "t",
        PHX_REPLY,
        Payload::BinaryReply {
            status: "ok".to_owned(),
            response: vec![],
        },
    );
    assert_eq!(
        Codec::client(Serializer::V2).encode(&reply),
        Err(EncodeError::ReplyFromClient)
    );
    let binary = Message::broadcast("t", "e", Payload::Binary(vec![]));
    assert_eq!(Serializer::V1.encode(&binary), Err(EncodeError::BinaryOnV1));
}

// ---- the recorded Phoenix 1.7.21 exchange ----

/// Every frame the real server sent decodes on the client side and re-encodes on the server
/// side to the same bytes; every well-formed frame the client sent decodes on the server side;
/// the three deliberately malformed ones fail for the reason Phoenix closed the socket.
fn check_reference(file: &str, serializer: Serializer) -> (usize, usize) {
    let server = Codec::server(serializer);
    let client = Codec::client(serializer);
    let (mut sent, mut received) = (0, 0);
    for record in reference(file) {
        let seq = &record["seq"];
        match record["dir"].as_str() {
            Some("recv") => {
                received += 1;
                let frame = frame_of(&record);
                let msg = client.decode(&frame).unwrap_or_else(|err| {
                    panic!("{file} seq {seq}: server frame does not decode: {err}")
                });
                let again = server.encode(&msg);
                assert_eq!(
                    again,
                    Ok(frame),
                    "{file} seq {seq}: re-encoding changed the frame"
                );
                check_presence_payload(file, seq, &msg);
            }
            Some("send") => {
                sent += 1;
                let frame = frame_of(&record);
                let result = server.decode(&frame);
                match &frame {
                    Frame::Text(text) if text == "this is not json" => {
                        assert!(
                            matches!(result, Err(DecodeError::NotJson { .. })),
                            "{result:?}"
                        )
                    }
                    Frame::Text(text) if text == r#"["1","9","room:lobby"]"# => {
                        assert_eq!(result, Err(DecodeError::WrongArity { found: 3 }))
                    }
                    Frame::Text(text) if text == r#"{"topic":"room:lobby","event":"ping"}"# => {
                        assert_eq!(result, Err(DecodeError::MissingField("payload")))
                    }
                    _ => {
                        let msg = result
                            .unwrap_or_else(|err| panic!("{file} seq {seq}: client frame: {err}"));
                        // A client re-encoding what it decoded gives the same message back.
                        let again = client.encode(&msg).and_then(|f| {
                            server
                                .decode(&f)
                                .map_err(|e| EncodeError::Json(e.to_string()))
                        });
                        assert_eq!(again, Ok(msg), "{file} seq {seq}");
                    }
                }
            }
            _ => {}
        }
    }
    (sent, received)
}

fn check_presence_payload(file: &str, seq: &Value, msg: &Message) {
    let Some(payload) = msg.payload.as_json() else {
        return;
    };
    let text = serde_json::to_string(payload).unwrap_or_default();
    let typed = match msg.event.as_str() {
        "presence_state" => {
            PresenceState::from_payload(payload.clone()).map(|s| serde_json::to_string(&s))
        }
        "presence_diff" => {
            PresenceDiff::from_payload(payload.clone()).map(|d| serde_json::to_string(&d))
        }
        _ => return,
    };
    let typed = typed.unwrap_or_else(|err| panic!("{file} seq {seq}: {err}"));
    assert_eq!(
        typed.ok(),
        Some(text),
        "{file} seq {seq}: typed payload changed on re-encode"
    );
}

#[test]
fn every_recorded_v1_frame_round_trips() {
    let (sent, received) = check_reference("phoenix-1.7.21-frames-v1.jsonl", Serializer::V1);
    assert_eq!((sent, received), (23, 60));
}

#[test]
fn every_recorded_v2_frame_round_trips() {
    let (sent, received) = check_reference("phoenix-1.7.21-frames-v2.jsonl", Serializer::V2);
    assert_eq!((sent, received), (24, 61));
}

#[test]
fn v1_server_frames_use_phoenix_key_order_and_drop_join_ref() {
    let msg = Message::reply(s("3"), s("4"), "room:lobby", "ok", json!({"x": 1}));
    assert_eq!(
        Serializer::V1.encode(&msg),
        Ok(Frame::Text(
            r#"{"event":"phx_reply","payload":{"response":{"x":1},"status":"ok"},"ref":"4","topic":"room:lobby"}"#
                .to_owned()
        ))
    );
    assert_eq!(msg.reply_status(), Some("ok"));
    let close = Message::channel_end(s("3"), "room:lobby", "phx_close", json!({}));
    assert_eq!(
        Serializer::V2.encode(&close),
        Ok(Frame::Text(
            r#"["3","3","room:lobby","phx_close",{}]"#.to_owned()
        ))
    );
}

// ---- one test per decode error ----

fn text(t: &str) -> Frame {
    Frame::Text(t.to_owned())
}

#[test]
fn each_malformed_frame_gets_its_own_error() {
    let v1 = Serializer::V1;
    let v2 = Serializer::V2;
    assert!(matches!(
        v2.decode(&text("[1,")),
        Err(DecodeError::NotJson { .. })
    ));
    assert_eq!(
        v2.decode(&text("{}")),
        Err(DecodeError::WrongShape {
            serializer: "V2",
            expected: "array",
            found: "an object"
        })
    );
    assert_eq!(
        v1.decode(&text("[]")),
        Err(DecodeError::WrongShape {
            serializer: "V1",
            expected: "object",
            found: "an array"
        })
    );
    assert_eq!(
        v2.decode(&text(r#"[null,null,"t","e"]"#)),
        Err(DecodeError::WrongArity { found: 4 })
    );
    assert_eq!(
        v2.decode(&text(r#"[1,null,"t","e",{}]"#)),
        Err(DecodeError::WrongType {
            field: "join_ref",
            expected: "a string or null",
            found: "a number"
        })
    );
    assert_eq!(
        v2.decode(&text(r#"[null,null,"t",["e"],{}]"#)),
        Err(DecodeError::WrongType {
            field: "event",
            expected: "a string",
            found: "an array"
        })
    );
    assert_eq!(
        v1.decode(&text(r#"{"topic":"t","event":"e","payload":{}}"#)),
        Err(DecodeError::MissingField("ref"))
    );
    assert_eq!(
        v1.decode(&Frame::Binary(vec![0])),
        Err(DecodeError::BinaryOnV1)
    );
    assert_eq!(
        v2.decode(&Frame::Binary(vec![])),
        Err(DecodeError::Truncated {
            part: "kind byte",
            needed: 1,
            len: 0
        })
    );
    assert_eq!(
        v2.decode(&Frame::Binary(vec![0, 1, 1])),
        Err(DecodeError::Truncated {
            part: "header",
            needed: 5,
            len: 3
        })
    );
    assert_eq!(
        v2.decode(&Frame::Binary(vec![0, 0, 0, 9, 0, b't'])),
        Err(DecodeError::Truncated {
            part: "topic",
            needed: 14,
            len: 6
        })
    );
    assert_eq!(
        v2.decode(&Frame::Binary(vec![3, 0, 0])),
        Err(DecodeError::UnknownBinaryKind(3))
    );
    assert_eq!(
        v2.decode(&Frame::Binary(vec![2, 0, 0])),
        Err(DecodeError::UnexpectedBinaryKind {
            kind: 2,
            name: "broadcast",
            sender: "client"
        })
    );
    assert_eq!(
        v2.decode(&Frame::Binary(vec![0, 0, 0, 1, 0, 0xff])),
        Err(DecodeError::InvalidUtf8 { field: "topic" })
    );
    assert_eq!(
        Codec::server(v2)
            .with_max_frame_len(4)
            .decode(&Frame::Binary(vec![0; 5])),
        Err(DecodeError::Oversized { len: 5, max: 4 })
    );
    // Phoenix ignores elements after the fifth.
    assert_eq!(
        v2.decode(&text(r#"[null,"1","phoenix","heartbeat",{},"extra"]"#)),
        Ok(Message::new(
            None,
            s("1"),
            "phoenix",
            "heartbeat",
            json!({})
        ))
    );
}

#[test]
fn error_messages_say_what_was_wrong() {
    let err = Serializer::V2
        .decode(&text(r#"["1","2","t"]"#))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("V2 frame must have 5 elements [join_ref, ref, topic, event, payload], found 3")
    );
    let err = Serializer::V2
        .decode(&Frame::Binary(vec![9]))
        .err()
        .map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some("unknown binary frame kind 9"));
}
