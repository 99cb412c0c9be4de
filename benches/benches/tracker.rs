//! Cost of the tracker CRDT as the state grows: merging a k-value delta into an n-value state,
//! extracting the full state for a transfer, and compacting a cloud of n dots. n up to 100 000
//! presences over 100 topics.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use phxsim_tracker::{ReplicaRef, State, ValueKey};
use serde_json::json;

const TOPICS: usize = 100;

/// A receiver holding `n` presences of replica `a` (all merged), and `a` itself.
fn populated(n: usize) -> (State, State) {
    let mut a = State::new(ReplicaRef::new("a", 1));
    let mut b = State::new(ReplicaRef::new("b", 1));
    a.replica_up(b.replica()).unwrap();
    b.replica_up(a.replica()).unwrap();
    for i in 0..n {
        let key = ValueKey::new(
            format!("room:{}", i % TOPICS),
            format!("a.p{i}"),
            format!("user{i}"),
        );
        a.join(key, json!({"online_at": i, "device": "web"}))
            .unwrap();
    }
    b.merge_delta(a.delta());
    a.flush();
    (a, b)
}

fn merge_delta(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker/merge_delta");
    group.sample_size(20);
    for &n in &[1_000usize, 10_000, 100_000] {
        let (mut a, b) = populated(n);
        for &k in &[1usize, 100, 1_000] {
            // k changes on a: half joins, half updates of existing presences
            let mut a2 = a.clone();
            for j in 0..k {
                if j % 2 == 0 {
                    let key = ValueKey::new(
                        format!("room:{}", j % TOPICS),
                        format!("a.new{j}"),
                        format!("new{j}"),
                    );
                    a2.join(key, json!({"device": "ios"})).unwrap();
                } else {
                    let key = ValueKey::new(
                        format!("room:{}", j % TOPICS),
                        format!("a.p{j}"),
                        format!("user{j}"),
                    );
                    a2.update(&key, json!({"device": "web", "away": true}))
                        .unwrap();
                }
            }
            let delta = a2.delta().clone();
            group.throughput(Throughput::Elements(k as u64));
            group.bench_with_input(BenchmarkId::new(format!("n={n}"), k), &k, |bench, _| {
                bench.iter_batched(
                    || b.clone(),
                    |mut receiver| {
                        // return the state so its drop is not timed
                        let diff = receiver.merge_delta(&delta);
                        (receiver, diff)
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        a.flush();
    }
    group.finish();
}

fn extract(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker/extract_full");
    group.sample_size(10);
    for &n in &[1_000usize, 10_000, 100_000] {
        let (_a, b) = populated(n);
        let fresh = State::new(ReplicaRef::new("c", 1));
        let mut ctx = fresh.clocks();
        ctx.insert(ReplicaRef::new("a", 1), 0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| b.extract(fresh.replica(), &ctx))
        });
    }
    group.finish();
}

fn merge_full(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker/merge_extract");
    group.sample_size(10);
    for &n in &[1_000usize, 10_000, 100_000] {
        let (a, _b) = populated(n);
        let mut fresh = State::new(ReplicaRef::new("c", 1));
        fresh.replica_up(a.replica()).unwrap();
        let ex = a.extract(fresh.replica(), &fresh.clocks());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter_batched(
                || fresh.clone(),
                |mut receiver| {
                    let diff = receiver.merge_extract(&ex);
                    (receiver, diff)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// A receiver that missed `a`'s first delta (one presence, dot 1) and merged the next one (`n`
/// presences, dots 2..=n+1): those `n` dots wait in its cloud behind the gap. Also returns
/// the missed delta.
fn gapped(n: usize) -> (State, phxsim_tracker::Delta) {
    let mut a = State::new(ReplicaRef::new("a", 1));
    let mut b = State::new(ReplicaRef::new("b", 1));
    a.replica_up(b.replica()).unwrap();
    b.replica_up(a.replica()).unwrap();
    a.join(ValueKey::new("room:0", "a.p", "first"), json!({}))
        .unwrap();
    let missed = a.flush().expect("a delta");
    for i in 0..n {
        let key = ValueKey::new(
            format!("room:{}", i % TOPICS),
            format!("a.p{i}"),
            format!("user{i}"),
        );
        a.join(key, json!({"online_at": i})).unwrap();
    }
    b.merge_delta(a.delta());
    let cloud = b.clouds().get(a.replica()).map_or(0, |c| c.len());
    assert_eq!(cloud, n, "the dots wait behind the gap");
    (b, missed)
}

/// `compact` (every heartbeat's bookkeeping): with a gap it walks the whole cloud and keeps it;
/// the merge that fills the gap folds all of it into the context.
fn compact(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker/compact");
    group.sample_size(10);
    for &n in &[1_000usize, 10_000, 100_000] {
        let (b, missed) = gapped(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("gap_kept", n), &n, |bench, _| {
            bench.iter_batched(
                || b.clone(),
                |mut s| {
                    s.compact();
                    s
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("gap_filled", n), &n, |bench, _| {
            bench.iter_batched(
                || b.clone(),
                |mut s| {
                    let diff = s.merge_delta(&missed);
                    debug_assert!(s.clouds().is_empty());
                    (s, diff)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, merge_delta, extract, merge_full, compact);
criterion_main!(benches);
