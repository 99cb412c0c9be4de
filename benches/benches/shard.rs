//! The shard's hot paths: one tick that broadcasts a 1 000-change delta to 8 peers, and a
//! transfer of a 100 000-presence state (answer, encode, decode, merge). Figures in
//! BENCHMARKS.md, section "Shard".

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use phxsim_shard::codec::{DEFAULT_MAX_FRAME_LEN, decode_frame, encode_frame};
use phxsim_shard::{
    Frame, NodeMessage, SeededRefs, ShardMessage, Tracker, TrackerConfig, TransferPayload,
};
use serde_json::{Map, Value as Json, json};
use std::hint::black_box;
use std::time::Duration;

fn node(name: &str, seed: u64) -> Tracker {
    Tracker::with_parts(
        TrackerConfig::default(),
        name,
        1,
        0,
        vec![0],
        Box::new(SeededRefs::new(seed)),
    )
    .expect("valid config")
}

fn meta(i: usize) -> Map<String, Json> {
    json!({"online_at": 1_750_000_000 + i, "device": "browser"})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn drain(t: &mut Tracker) {
    while t.poll_event().is_some() {}
    while t.poll_transmit().is_some() {}
}

/// A node that knows 8 peers (one idle heartbeat from each) and has `changes` pending joins.
fn loaded(changes: usize) -> Tracker {
    let mut a = node("a", 1);
    for p in 0..8 {
        let peer = node(&format!("peer{p}"), 100 + p);
        let hb = NodeMessage {
            shard: 0,
            body: ShardMessage::Heartbeat {
                from: phxsim_tracker::ReplicaRef::new(peer.node(), 1),
                delta: None,
                clocks: Default::default(),
            },
        };
        a.handle_message(0, peer.node(), hb).expect("heartbeat");
    }
    for i in 0..changes {
        a.track(
            &format!("socket{i}"),
            &format!("room:{}", i % 50),
            &format!("user{i}"),
            &meta(i),
        )
        .expect("track");
    }
    drain(&mut a);
    a
}

fn tick_with_delta(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("tick_1000_change_delta_8_peers", |b| {
        b.iter_batched(
            || loaded(1_000),
            |mut a| {
                // The tick, then what the driver does with its output: encode the heartbeat
                // once and hand the same bytes to each of the 8 links.
                a.handle_timeout(0);
                let mut bytes = 0;
                while let Some(t) = a.poll_transmit() {
                    let frame = std::sync::Arc::new(encode_frame(&Frame::Shard(t.msg)));
                    for _ in 0..8 {
                        bytes += black_box(std::sync::Arc::clone(&frame)).len();
                    }
                }
                bytes
            },
            BatchSize::LargeInput,
        );
    });
    // The receiving side of that heartbeat on one peer: decode and merge 1 000 joins.
    let mut a = loaded(1_000);
    a.handle_timeout(0);
    let hb = a.poll_transmit().expect("heartbeat").msg;
    let bytes = encode_frame(&Frame::Shard(hb));
    let mut receiver = node("peer0", 100);
    let hello = NodeMessage {
        shard: 0,
        body: ShardMessage::Heartbeat {
            from: phxsim_tracker::ReplicaRef::new("a", 1),
            delta: None,
            clocks: Default::default(),
        },
    };
    receiver.handle_message(0, "a", hello).expect("up");
    drain(&mut receiver);
    g.bench_function("receive_1000_change_heartbeat", |b| {
        b.iter_batched(
            || receiver.fork(Box::new(SeededRefs::new(0))),
            |mut r| {
                let Some((Frame::Shard(m), _)) =
                    decode_frame(&bytes, DEFAULT_MAX_FRAME_LEN).ok().flatten()
                else {
                    unreachable!("valid frame")
                };
                r.handle_message(1, "a", m).expect("merge");
                r
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

fn transfer_100k(c: &mut Criterion) {
    const N: usize = 100_000;
    let mut a = loaded(N);
    a.handle_timeout(0);
    drain(&mut a);
    // A fresh node that has just heard a's heartbeat asks for everything.
    let mut req = node("b", 2);
    let hb = NodeMessage {
        shard: 0,
        body: ShardMessage::Heartbeat {
            from: phxsim_tracker::ReplicaRef::new("a", 1),
            delta: None,
            clocks: Default::default(),
        },
    };
    req.handle_message(0, "a", hb).expect("up");
    drain(&mut req);
    let ask = NodeMessage {
        shard: 0,
        body: ShardMessage::TransferReq {
            id: 1,
            from: phxsim_tracker::ReplicaRef::new("b", 1),
            clocks: req.shards()[0].state().clocks(),
        },
    };
    let mut g = c.benchmark_group("shard");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("transfer_100k_answer_and_encode", |b| {
        b.iter(|| {
            a.handle_message(1, "b", ask.clone()).expect("answer");
            let t = a.poll_transmit().expect("ack");
            encode_frame(&Frame::Shard(t.msg)).len()
        });
    });
    a.handle_message(1, "b", ask.clone()).expect("answer");
    let ack = a.poll_transmit().expect("ack").msg;
    if let ShardMessage::TransferAck { payload, .. } = &ack.body {
        let (kind, n) = match payload {
            TransferPayload::Delta(d) => ("delta generation", d.values.len()),
            TransferPayload::Full(e) => ("full state", e.values.len()),
        };
        eprintln!("transfer payload: {kind} with {n} presences");
    }
    let bytes = encode_frame(&Frame::Shard(ack));
    eprintln!("transfer frame: {} bytes", bytes.len());
    g.bench_function("transfer_100k_decode_and_merge", |b| {
        b.iter_batched(
            || req.fork(Box::new(SeededRefs::new(0))),
            |mut r| {
                let Some((Frame::Shard(m), _)) =
                    decode_frame(&bytes, DEFAULT_MAX_FRAME_LEN).ok().flatten()
                else {
                    unreachable!("valid frame")
                };
                r.handle_message(2, "a", m).expect("merge");
                assert_eq!(r.shards()[0].state().len(), N);
                r
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, tick_with_delta, transfer_100k);
criterion_main!(benches);
