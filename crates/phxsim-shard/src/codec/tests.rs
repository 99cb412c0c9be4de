use super::*;
use crate::message::{Hello, NodeMessage, ShardMessage, TransferPayload};
use phxsim_tracker::{
    Clouds, Context, Delta, Extract, MetaInterner, ReplicaRef, Tag, TrackedMeta, ValueKey,
};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

fn r(n: &str, v: u64) -> ReplicaRef {
    ReplicaRef::new(n, v)
}

fn sample_delta() -> Delta {
    let mut values = BTreeMap::new();
    values.insert(
        Tag::new(r("a", 7), 3),
        TrackedMeta {
            key: ValueKey::new("lobby", "p1@a", "alice"),
            meta: json!({"phx_ref": "x", "status": "away"}).into(),
        },
    );
    values.insert(
        Tag::new(r("b", 9), 4),
        TrackedMeta {
            key: ValueKey::new("lobby", "p2@b", "bob"),
            meta: json!({"phx_ref": "y", "n": [1, 2.5, null], "é": "ü"}).into(),
        },
    );
    let mut clouds = Clouds::new();
    clouds.insert(r("a", 7), [1, 2, 3].into_iter().collect());
    clouds.insert(r("b", 9), [4].into_iter().collect());
    let start: Context = [(r("a", 7), 0)].into_iter().collect();
    let end: Context = [(r("a", 7), 3)].into_iter().collect();
    Delta {
        values,
        clouds,
        range: (start, end),
    }
}

fn shard(shard: u32, body: ShardMessage) -> Frame {
    Frame::Shard(NodeMessage { shard, body })
}

fn roundtrip(f: &Frame) {
    let bytes = encode_frame(f);
    let (back, used) = decode_frame(&bytes, DEFAULT_MAX_FRAME_LEN)
        .expect("decodes")
        .expect("complete");
    assert_eq!(used, bytes.len());
    assert_eq!(&back, f);
}

fn every_kind() -> Vec<Frame> {
    let ctx: Context = [(r("a", 7), 3), (r("b", 9), 5)].into_iter().collect();
    let d = sample_delta();
    vec![
        Frame::Hello(Hello {
            node: "a".into(),
            vsn: 7,
            pool_size: 8,
        }),
        Frame::Tick,
        shard(
            3,
            ShardMessage::Heartbeat {
                from: r("a", 7),
                delta: Some(sample_delta()),
                clocks: ctx.clone(),
            },
        ),
        shard(
            0,
            ShardMessage::Heartbeat {
                from: r("a", 7),
                delta: None,
                clocks: ctx.clone(),
            },
        ),
        shard(
            0,
            ShardMessage::TransferReq {
                id: 42,
                from: r("b", 9),
                clocks: ctx.clone(),
            },
        ),
        shard(
            0,
            ShardMessage::TransferAck {
                id: 42,
                from: r("a", 7),
                payload: TransferPayload::Delta(sample_delta()),
            },
        ),
        shard(
            1,
            ShardMessage::TransferAck {
                id: u64::MAX,
                from: r("a", 7),
                payload: TransferPayload::Full(Extract {
                    context: ctx,
                    clouds: d.clouds,
                    values: d.values.into_iter().collect(),
                }),
            },
        ),
        shard(u32::MAX, ShardMessage::GracefulPermdown { from: r("b", 9) }),
    ]
}

#[test]
fn every_message_kind_roundtrips() {
    for f in every_kind() {
        roundtrip(&f);
    }
}

#[test]
fn encode_into_appends_to_a_reused_buffer() {
    let mut buf = Vec::with_capacity(4096);
    let frames = every_kind();
    for f in &frames {
        encode_frame_into(f, &mut buf);
    }
    let mut at = 0;
    for f in &frames {
        let (back, used) = decode_frame(&buf[at..], DEFAULT_MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(&back, f);
        at += used;
    }
    assert_eq!(at, buf.len());
}

#[test]
fn partial_input_waits_for_more() {
    for f in every_kind() {
        let bytes = encode_frame(&f);
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..cut], DEFAULT_MAX_FRAME_LEN), Ok(None));
        }
    }
}

#[test]
fn the_debug_dump_names_every_field() {
    let dump = debug_json(&every_kind()[2]);
    let v: serde_json::Value = serde_json::from_str(&dump).expect("JSON");
    let hb = &v["heartbeat"];
    assert_eq!(hb["shard"], 3);
    assert_eq!(hb["replicas"][0], json!({"name": "a", "vsn": 7}));
    assert_eq!(
        hb["delta"]["values"][0],
        json!([0, 3, "lobby", "p1@a", "alice", {"phx_ref": "x", "status": "away"}])
    );
}

/// A body by hand: the version byte, then raw bytes.
fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(VERSION);
    out.extend_from_slice(body);
    out
}

fn err_of(body: &[u8]) -> CodecError {
    decode_frame(&frame_of(body), DEFAULT_MAX_FRAME_LEN).unwrap_err()
}

/// A heartbeat body with a one-replica table `a@1`, from index `from`, with `delta` (raw
/// bytes, or none) and `clocks` (raw bytes).
fn hb(from: u8, delta: Option<&[u8]>, clocks: &[u8]) -> Vec<u8> {
    let mut b = vec![2, 0, 1, 1, b'a', 1, from];
    match delta {
        Some(d) => {
            b.push(1);
            b.extend_from_slice(d);
        }
        None => b.push(0),
    }
    b.extend_from_slice(clocks);
    b
}

/// One value `(index 0, clock)` with topic t, pid p, key `key` and `meta` text.
fn value(clock: u8, key: &str, meta: &str) -> Vec<u8> {
    let mut block = vec![1, key.len() as u8, b'p'];
    block.extend_from_slice(key.as_bytes());
    block.extend_from_slice(meta.as_bytes());
    raw_value(clock, &block)
}

/// One value `(index 0, clock)` with topic t and the presence block `block` as given.
fn raw_value(clock: u8, block: &[u8]) -> Vec<u8> {
    let mut v = vec![0, clock, 1, block.len() as u8, b't'];
    v.extend_from_slice(block);
    v
}

/// A delta body: `values` (count, then raw), `clouds` raw, empty range.
fn delta(values: &[Vec<u8>], clouds: &[u8]) -> Vec<u8> {
    let mut d = vec![values.len() as u8];
    for v in values {
        d.extend_from_slice(v);
    }
    d.extend_from_slice(clouds);
    d.extend_from_slice(&[0, 0]);
    d
}

#[test]
fn the_hand_built_heartbeat_decodes() {
    let body = hb(0, Some(&delta(&[value(1, "k", "{}")], &[1, 0, 1, 1])), &[0]);
    let (f, _) = decode_frame(&frame_of(&body), DEFAULT_MAX_FRAME_LEN)
        .unwrap()
        .unwrap();
    let Frame::Shard(NodeMessage {
        body: ShardMessage::Heartbeat { delta: Some(d), .. },
        ..
    }) = f
    else {
        panic!("{f:?}")
    };
    assert_eq!(d.values.len(), 1);
    assert_eq!(d.clouds[&r("a", 1)].len(), 1);
}

#[test]
fn framing_errors_are_typed() {
    assert_eq!(
        decode_frame(&[0, 0, 0, 0], 10),
        Err(CodecError::Empty),
        "a zero length has no version byte"
    );
    assert_eq!(
        decode_frame(&[0, 0, 1, 0], 10),
        Err(CodecError::TooLarge { len: 256, max: 10 })
    );
    let mut bad_version = frame_of(&[0]);
    bad_version[4] = 1;
    assert_eq!(
        decode_frame(&bad_version, 100),
        Err(CodecError::UnsupportedVersion(1)),
        "the JSON bodies of version 1 are refused before they are read"
    );
    assert_eq!(err_of(b"{oops"), CodecError::UnknownKind(b'{'));
    assert_eq!(err_of(&[]), CodecError::Truncated("message kind"));
    assert_eq!(err_of(&[0, 0]), CodecError::TrailingBytes(1));
    assert_eq!(err_of(&[1, 1, b'a', 0xff]), CodecError::Truncated("vsn"));
    assert_eq!(
        err_of(&[
            1, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 1
        ]),
        CodecError::IntegerTooLarge("vsn")
    );
    assert_eq!(
        err_of(&[1, 1, 0xc3, 1, 1]),
        CodecError::NotUtf8("node name")
    );
    assert_eq!(
        err_of(&[1, 1, b'a', 1, 0x80, 0x80, 0x80, 0x80, 0x10]),
        CodecError::IntegerTooLarge("pool size")
    );
    assert_eq!(
        err_of(&hb(0, None, &[0x80, 0x80, 0x80, 0x80, 0x01])),
        CodecError::CountTooLarge("clock"),
        "a forged count is refused before anything is reserved"
    );
    let mut b = hb(0, None, &[0]);
    let flag = b.len() - 2;
    b[flag] = 7;
    assert_eq!(err_of(&b), CodecError::BadFlag(7, "delta flag"));
}

#[test]
fn semantic_errors_are_typed() {
    assert_eq!(err_of(&hb(1, None, &[0])), CodecError::BadReplicaIndex(1));
    assert_eq!(
        err_of(&[2, 0, 2, 1, b'a', 1, 1, b'a', 1, 0, 0, 0]),
        CodecError::DuplicateReplica(r("a", 1))
    );
    assert_eq!(
        err_of(&hb(0, None, &[2, 0, 1, 0, 2])),
        CodecError::DuplicateReplica(r("a", 1))
    );
    assert_eq!(
        err_of(&hb(0, Some(&delta(&[value(0, "k", "{}")], &[0])), &[0])),
        CodecError::ZeroDot(r("a", 1))
    );
    assert_eq!(
        err_of(&hb(0, Some(&delta(&[], &[1, 0, 1, 0])), &[0])),
        CodecError::ZeroDot(r("a", 1))
    );
    assert_eq!(
        err_of(&hb(0, Some(&delta(&[], &[1, 0, 2, 3, 2])), &[0])),
        CodecError::OutOfOrder("cloud dots")
    );
    assert_eq!(
        err_of(&hb(
            0,
            Some(&delta(&[value(1, "k", "{}"), value(1, "k2", "{}")], &[0])),
            &[0]
        )),
        CodecError::DuplicateTag(Tag::new(r("a", 1), 1))
    );
    assert_eq!(
        err_of(&hb(
            0,
            Some(&delta(&[value(2, "k", "{}"), value(1, "k2", "{}")], &[0])),
            &[0]
        )),
        CodecError::OutOfOrder("values")
    );
    assert_eq!(
        err_of(&hb(0, Some(&delta(&[value(1, "k", "[1]")], &[0])), &[0])),
        CodecError::MetaNotObject(Tag::new(r("a", 1), 1))
    );
    assert!(matches!(
        err_of(&hb(0, Some(&delta(&[value(1, "k", "{oops")], &[0])), &[0])),
        CodecError::MetaNotJson { .. }
    ));
    assert_eq!(err_of(&[1, 0, 1, 1]), CodecError::EmptyNodeName);
}

#[test]
fn a_presence_block_is_kept_whole_and_owned_by_its_value() {
    use phxsim_tracker::Meta;
    let mut values = BTreeMap::new();
    // a block owned by the value (what a row holds), one owned by another presence, one
    // without an owner, and a long non-ASCII pid (two-byte owner lengths)
    let long_pid = "pïd-".repeat(20);
    let metas = [
        (
            "p1",
            "k1",
            Meta::parse_owned("p1", "k1", r#"{"phx_ref":"a"}"#).unwrap(),
        ),
        (
            "p2",
            "k2",
            Meta::parse_owned("x", "y", r#"{"phx_ref":"b"}"#).unwrap(),
        ),
        ("p3", "k3", Meta::parse(r#"{"phx_ref":"c"}"#).unwrap()),
        (
            long_pid.as_str(),
            "ké",
            Meta::parse(r#"{"é":"ü"}"#).unwrap(),
        ),
    ];
    for (i, (pid, key, meta)) in metas.into_iter().enumerate() {
        values.insert(
            Tag::new(r("a", 1), i as u64 + 1),
            TrackedMeta {
                key: ValueKey::new("t", pid, key),
                meta,
            },
        );
    }
    let mut d = Delta::empty_at(Context::new());
    d.values = values;
    let f = shard(
        0,
        ShardMessage::TransferAck {
            id: 1,
            from: r("a", 1),
            payload: TransferPayload::Delta(d),
        },
    );
    roundtrip(&f);
    let bytes = encode_frame(&f);
    let (back, _) = decode_frame(&bytes, DEFAULT_MAX_FRAME_LEN)
        .unwrap()
        .unwrap();
    let Frame::Shard(NodeMessage {
        body:
            ShardMessage::TransferAck {
                payload: TransferPayload::Delta(d),
                ..
            },
        ..
    }) = back
    else {
        panic!("{back:?}")
    };
    for p in d.values.values() {
        assert_eq!(p.meta.owner(), (p.key.pid.as_str(), p.key.key.as_str()));
    }
}

#[test]
fn values_follow_tag_order_whatever_the_table_order() {
    // table [b@1, a@1]: index 1 (a) sorts before index 0 (b)
    let hb2 = |values: &[Vec<u8>]| {
        let mut b = vec![2, 0, 2, 1, b'b', 1, 1, b'a', 1, 0, 1];
        b.extend_from_slice(&delta(values, &[0]));
        b.push(0);
        b
    };
    let at = |index: u8, clock: u8| {
        let mut v = value(clock, "k", "{}");
        v[0] = index;
        v
    };
    let ok = hb2(&[at(1, 5), at(0, 1)]);
    assert!(decode_frame(&frame_of(&ok), DEFAULT_MAX_FRAME_LEN).is_ok());
    assert_eq!(
        err_of(&hb2(&[at(0, 1), at(1, 5)])),
        CodecError::OutOfOrder("values")
    );
    assert_eq!(
        err_of(&hb2(&[at(1, 5), at(1, 5)])),
        CodecError::DuplicateTag(Tag::new(r("a", 1), 5))
    );
    assert_eq!(err_of(&hb2(&[at(2, 5)])), CodecError::BadReplicaIndex(2));
}

#[test]
fn malformed_presence_blocks_are_refused() {
    let bad = |block: &[u8]| err_of(&hb(0, Some(&delta(&[raw_value(1, block)], &[0])), &[0]));
    let tag = Tag::new(r("a", 1), 1);
    // lengths past the block, a length that never ends, a redundant zero byte, non-ASCII
    // length bytes, and a key cut inside a character
    for block in [
        &b"\x05\x00p{}"[..],
        b"\x41",
        b"\x40\x00\x00{}",
        b"\xc1\x80\x00p{}",
        b"\x02\x01p\xc3\xa9{}",
    ] {
        let e = bad(block);
        assert!(
            matches!(e, CodecError::BadOwner(_) | CodecError::NotUtf8(_)),
            "{block:?}: {e:?}"
        );
    }
    assert_eq!(
        bad(b"\x02\x01p\xc3\xa9{}"),
        CodecError::BadOwner(tag.clone())
    );
    assert_eq!(bad(b"\x05\x00p{}"), CodecError::BadOwner(tag.clone()));
    assert_eq!(bad(b"\x40\x00\x00{}"), CodecError::BadOwner(tag.clone()));
    assert_eq!(bad(b"\x01\x00p[1]"), CodecError::MetaNotObject(tag.clone()));
    assert!(matches!(
        bad(b"\x01\x00p{oops"),
        CodecError::MetaNotJson { .. }
    ));
    assert_eq!(bad(b"\x01\x00p\xff{}"), CodecError::NotUtf8("presence"));
}

// ---- fuzzing -------------------------------------------------------------------------------

fn name() -> impl Strategy<Value = String> {
    "[a-zé:@0-9]{0,6}"
}

fn replica() -> impl Strategy<Value = ReplicaRef> {
    (prop::sample::select(vec!["a", "b", "node-3"]), 0u64..3).prop_map(|(n, v)| r(n, v))
}

fn meta() -> impl Strategy<Value = serde_json::Value> {
    (name(), any::<i64>(), prop::option::of(name()))
        .prop_map(|(s, i, o)| json!({"phx_ref": s, "n": i, "prev": o}))
}

fn values() -> impl Strategy<Value = BTreeMap<Tag, TrackedMeta>> {
    prop::collection::btree_map(
        (replica(), 1u64..u64::MAX).prop_map(|(r, c)| Tag::new(r, c)),
        (name(), name(), name(), meta()).prop_map(|(t, p, k, m)| TrackedMeta {
            key: ValueKey::new(t, p, k),
            meta: m.into(),
        }),
        0..12,
    )
}

fn context() -> impl Strategy<Value = Context> {
    prop::collection::btree_map(replica(), any::<u64>(), 0..4)
}

fn clouds() -> impl Strategy<Value = Clouds> {
    prop::collection::btree_map(
        replica(),
        prop::collection::btree_set(1u64..u64::MAX, 0..6),
        0..3,
    )
}

fn delta_strategy() -> impl Strategy<Value = Delta> {
    (values(), clouds(), context(), context()).prop_map(|(values, clouds, s, e)| Delta {
        values,
        clouds,
        range: (s, e),
    })
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    prop_oneof![
        Just(Frame::Tick),
        ("[a-z]{1,8}", any::<u64>(), any::<u32>()).prop_map(|(node, vsn, pool_size)| {
            Frame::Hello(Hello {
                node,
                vsn,
                pool_size,
            })
        }),
        (
            any::<u32>(),
            replica(),
            prop::option::of(delta_strategy()),
            context()
        )
            .prop_map(|(s, from, delta, clocks)| shard(
                s,
                ShardMessage::Heartbeat {
                    from,
                    delta,
                    clocks
                }
            )),
        (any::<u32>(), any::<u64>(), replica(), context()).prop_map(|(s, id, from, clocks)| {
            shard(s, ShardMessage::TransferReq { id, from, clocks })
        }),
        (any::<u32>(), any::<u64>(), replica(), delta_strategy()).prop_map(|(s, id, from, d)| {
            shard(
                s,
                ShardMessage::TransferAck {
                    id,
                    from,
                    payload: TransferPayload::Delta(d),
                },
            )
        }),
        (
            any::<u32>(),
            any::<u64>(),
            replica(),
            context(),
            clouds(),
            values()
        )
            .prop_map(|(s, id, from, context, clouds, values)| shard(
                s,
                ShardMessage::TransferAck {
                    id,
                    from,
                    payload: TransferPayload::Full(Extract {
                        context,
                        clouds,
                        values: values.into_iter().collect(),
                    }),
                }
            )),
        (any::<u32>(), replica())
            .prop_map(|(s, from)| shard(s, ShardMessage::GracefulPermdown { from })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_frame_roundtrips(f in frame_strategy()) {
        let bytes = encode_frame(&f);
        let decoded = decode_frame(&bytes, DEFAULT_MAX_FRAME_LEN);
        prop_assert_eq!(decoded, Ok(Some((f, bytes.len()))));
    }

    /// Through an interner, a frame reads exactly as without one (the same values, and the
    /// same bytes when written again), the first time and when every block is found held; so
    /// does a corrupted frame (the same error, or the same frame).
    #[test]
    fn interned_decoding_reads_as_plain_decoding(
        f in frame_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let mut interner = MetaInterner::new();
        let mut bytes = encode_frame(&f);
        for pass in 0..3 {
            if pass == 2 {
                for (at, b) in &edits {
                    let i = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
                    bytes[i] = *b;
                }
            }
            let body = &bytes[HEADER_LEN..];
            let plain = decode_body(body);
            let interned = decode_body_interned(body, &mut interner);
            prop_assert_eq!(&interned, &plain);
            if let (Ok(a), Ok(b)) = (&interned, &plain) {
                prop_assert_eq!(encode_frame(a), encode_frame(b));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_body(&body);
        let mut with_version = vec![VERSION];
        with_version.extend_from_slice(&body);
        let _ = decode_body(&with_version);
    }

    #[test]
    fn corrupted_frames_never_panic(
        f in frame_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_frame(&f);
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = decode_frame(&bytes, 1 << 20);
        let end = cut.index(bytes.len() + 1);
        let _ = decode_body(&bytes[HEADER_LEN.min(end)..end]);
    }
}
