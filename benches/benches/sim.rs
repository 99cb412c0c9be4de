//! Simulation speed: wall time to simulate 60 s of a 3-node cluster with 30 churning clients at
//! broadcast_period 100 ms (`benches/scenarios/speed_3_nodes_30_clients.toml`), with turmoil
//! stepping 1 ms (the default, exact to the millisecond) and 5 ms (`[network] tick_ms = 5`).
//! Simulated seconds per wall second = 60 / the time per iteration. Also the explorer's
//! throughput (`explore`).

use criterion::{Criterion, criterion_group, criterion_main};

/// The allocator of the `phxsim` binary, so that this measures what `phxsim run` does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use phxsim_sim::Scenario;
use phxsim_sim::explore::{SwarmConfig, generate};
use phxsim_sim::harness::{self, RunOptions, Verdict};
use std::path::PathBuf;

fn speed(c: &mut Criterion) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/speed_3_nodes_30_clients.toml");
    let scenario = Scenario::load(&path).expect("speed scenario");
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    for tick_ms in [1, 5] {
        let mut scenario = scenario.clone();
        scenario.network.tick_ms = tick_ms;
        let name = format!("3_nodes_30_clients_60s_bp100_tick{tick_ms}ms");
        group.bench_function(name, |b| {
            b.iter(|| {
                let r = harness::run(
                    &scenario,
                    &RunOptions {
                        seed: 1,
                        ..RunOptions::default()
                    },
                );
                assert_eq!(r.verdict, Verdict::Pass, "{:#?}", r.failures);
                r.simulated_ms
            })
        });
    }
    group.finish();
}

/// Explorer throughput: the first 20 seeds of `phxsim explore` (scenario drawn from the seed,
/// run, judged; no shrinking since all pass), one core. Seeds per minute = 20 × 60 / the time
/// per iteration.
fn explore(c: &mut Criterion) {
    let cfg = SwarmConfig::default();
    let mut group = c.benchmark_group("explore");
    group.sample_size(10);
    group.bench_function("20_seeds_faithful", |b| {
        b.iter(|| {
            for seed in 0..20 {
                let r = harness::run(
                    &generate(seed, &cfg),
                    &RunOptions {
                        seed,
                        ..RunOptions::default()
                    },
                );
                assert_eq!(r.verdict, Verdict::Pass, "seed {seed}: {:#?}", r.failures);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, speed, explore);
criterion_main!(benches);
