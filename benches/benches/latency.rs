//! Cross-node diff latency in **simulated** time: from a track (or untrack) on the first node
//! to the `presence_diff` at a browser on the last node (two network hops), with
//! `phxsim_sim::latency`. criterion's "time per iteration" here is simulated milliseconds per
//! change, not wall time: `iter_custom` runs a simulation of as many changes as criterion asks
//! for and returns their summed latency, each call on a seed of its own. The percentile grid
//! (p50/p99/max over 3–16 nodes, 50 ms–1.5 s periods, latency and loss) is
//! `phxsim bench-latency`; see BENCHMARKS.md.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use phxsim_sim::latency::{LatencyCase, measure};
use std::cell::Cell;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn case(nodes: usize, bp: u64, profile: &str, loss: f64) -> LatencyCase {
    LatencyCase {
        nodes,
        broadcast_period_ms: bp,
        latency_ms: [1, 5],
        loss,
        rto_ms: 200,
        profile: profile.parse().expect("a profile"),
        eager_window_ms: 5,
        changes: 0,
        seed: 1,
    }
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("diff_latency_simulated");
    group.sample_size(10);
    // simulated seconds: criterion sizes its runs by the duration we report
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let points = [
        case(3, 100, "faithful", 0.0),
        case(3, 100, "eager", 0.0),
        case(16, 100, "faithful", 0.0),
        case(16, 100, "eager", 0.0),
        case(3, 1_500, "faithful", 0.0),
        case(3, 100, "eager", 0.01),
    ];
    for point in points {
        let id = format!(
            "{}_nodes_bp{}_{}_loss{}",
            point.nodes,
            point.broadcast_period_ms,
            point.profile,
            point.loss * 100.0
        );
        let seed = Cell::new(0u64);
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter_custom(|iters| {
                seed.set(seed.get() + 1);
                let run = LatencyCase {
                    changes: iters as usize,
                    seed: seed.get(),
                    ..point.clone()
                };
                let r = measure(&run);
                assert!(!r.samples.is_empty(), "no change was delivered");
                // every change is delivered in a healthy run; scale in case one is not
                let total: u64 = r.samples.iter().sum();
                Duration::from_millis(total * iters / r.samples.len() as u64)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, latency);
criterion_main!(benches);
