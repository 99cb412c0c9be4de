//! Wire codec and presence sync speed: `cargo bench -p phxsim-benches --bench wire`.
//!
//! - `wire/{encode,decode}_presence_state_1000/{v1,v2}`: a `presence_state` push of 1 000
//!   presences (one to three metas each, ~110 bytes per meta) through the server encoder, and
//!   the client decoder plus the typed payload reader.
//! - `sync/sync_diff_into_10k/*`: phoenix.js `syncDiff` on a client state of 10 000 presences.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use phxsim_wire::sync::{self, SyncState};
use phxsim_wire::{
    Codec, Frame, Message, Meta, Payload, Presence, PresenceDiff, PresenceState, Presences,
    Serializer,
};
use serde_json::{Map, Value, json};

fn meta(user: usize, device: usize) -> Meta {
    let fields = json!({
        "name": format!("User {user}"),
        "status": if user.is_multiple_of(3) { "away" } else { "online" },
        "online_at": format!("{}", 1_750_000_000 + user * 7 + device),
        "device": format!("device-{device}"),
    });
    let fields: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
    Meta::new(format!("GOwk{user:08}{device:04}"), fields)
}

fn presences(count: usize) -> Presences {
    (0..count)
        .map(|user| {
            let devices = 1 + user % 3;
            let metas = (0..devices).map(|device| meta(user, device)).collect();
            (format!("user:{user}"), Presence::new(metas))
        })
        .collect()
}

fn codec_benches(c: &mut Criterion) {
    let state = PresenceState {
        presences: presences(1_000),
    };
    let message = Message::push(
        Some("3".to_owned()),
        "room:lobby",
        "presence_state",
        state.to_payload(),
    );
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1_000));
    for serializer in [Serializer::V1, Serializer::V2] {
        let name = format!("{serializer:?}").to_lowercase();
        let server = Codec::server(serializer);
        let client = Codec::client(serializer);
        let frame = match server.encode(&message) {
            Ok(frame) => frame,
            Err(err) => panic!("encode failed: {err}"),
        };
        if let Frame::Text(text) = &frame {
            eprintln!(
                "presence_state of 1000 presences, {name}: {} bytes",
                text.len()
            );
        }
        group.bench_function(format!("encode_presence_state_1000/{name}"), |b| {
            b.iter(|| black_box(server.encode(black_box(&message))))
        });
        group.bench_function(format!("encode_typed_presence_state_1000/{name}"), |b| {
            // From the typed state (handed over by the caller) to the frame.
            b.iter_batched(
                || state.clone(),
                |state| {
                    let payload = state.into_payload();
                    server.encode(&Message::push(
                        Some("3".to_owned()),
                        "room:lobby",
                        "presence_state",
                        payload,
                    ))
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("decode_presence_state_1000/{name}"), |b| {
            b.iter(|| {
                let msg = client.decode(black_box(&frame)).ok()?;
                let Payload::Json(payload) = msg.payload else {
                    return None;
                };
                PresenceState::from_payload(payload).ok()
            })
        });
    }
    group.finish();
}

fn entry(key: &str, metas: Vec<Meta>) -> Presences {
    std::iter::once((key.to_owned(), Presence::new(metas))).collect()
}

fn sync_benches(c: &mut Criterion) {
    let mut state = SyncState::new();
    sync::sync_state(
        &mut state,
        PresenceState {
            presences: presences(10_000),
        },
        &mut (),
    );
    let mut group = c.benchmark_group("sync/sync_diff_into_10k");

    // Presence.update of one key and back: one join + one leave per diff, two diffs per iteration.
    let key = "user:5000";
    let (old, new) = (
        meta(5000, 0),
        Meta::updated("GOwkNEW", "GOwk000050000000", Map::new()),
    );
    let forth = PresenceDiff {
        joins: entry(key, vec![new.clone()]),
        leaves: entry(key, vec![old.clone()]),
    };
    let back = PresenceDiff {
        joins: entry(key, vec![old]),
        leaves: entry(key, vec![new]),
    };
    group.throughput(Throughput::Elements(2));
    group.bench_function("update_one_key_and_back", |b| {
        let mut state = state.clone();
        b.iter(|| {
            sync::sync_diff(&mut state, forth.clone(), &mut ());
            sync::sync_diff(&mut state, back.clone(), &mut ());
            black_box(state.len())
        })
    });

    // Leave the first key and re-join it: JavaScript moves it to the end, and keeping that
    // order makes the delete shift the whole map (the worst case of the order-keeping map).
    group.bench_function("leave_first_key_and_rejoin", |b| {
        let mut state = state.clone();
        b.iter(|| {
            let (key, presence) = match state.iter().next() {
                Some((k, p)) => (k.to_owned(), p.clone()),
                None => return,
            };
            let leave = PresenceDiff {
                joins: Presences::new(),
                leaves: entry(&key, presence.metas.clone()),
            };
            let join = PresenceDiff {
                joins: entry(&key, presence.metas),
                leaves: Presences::new(),
            };
            sync::sync_diff(&mut state, leave, &mut ());
            sync::sync_diff(&mut state, join, &mut ());
            black_box(state.len());
        })
    });

    // One heartbeat's worth of remote changes: 100 new keys join, then the same 100 leave.
    let joins: Presences = (0..100)
        .map(|i| {
            (
                format!("remote:{i}"),
                Presence::new(vec![meta(20_000 + i, 0)]),
            )
        })
        .collect();
    let join_batch = PresenceDiff {
        joins: joins.clone(),
        leaves: Presences::new(),
    };
    let leave_batch = PresenceDiff {
        joins: Presences::new(),
        leaves: joins,
    };
    group.throughput(Throughput::Elements(200));
    group.bench_function("batch_of_100_joins_then_100_leaves", |b| {
        let mut state = state.clone();
        b.iter(|| {
            sync::sync_diff(&mut state, join_batch.clone(), &mut ());
            sync::sync_diff(&mut state, leave_batch.clone(), &mut ());
            black_box(state.len())
        })
    });

    // A reconnect: syncState with an identical 10k-presence state (nothing joins or leaves).
    let same = PresenceState {
        presences: state
            .iter()
            .map(|(k, p)| (k.to_owned(), p.clone()))
            .collect(),
    };
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("sync_state_unchanged_10k", |b| {
        b.iter_batched(
            || (state.clone(), same.clone()),
            |(mut state, same)| {
                sync::sync_state(&mut state, same, &mut ());
                state
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = codec_benches, sync_benches
}
criterion_main!(benches);
