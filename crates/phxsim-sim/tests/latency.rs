//! The eager profile against the faithful one, on the simulator: the same changes, the same
//! seed; eager diffs cross in about one node-to-node hop (plus the browser hops on both ends),
//! faithful ones wait for the sender's next tick.

use phxsim_sim::latency::{LatencyCase, measure};

fn case(profile: &str) -> LatencyCase {
    LatencyCase {
        nodes: 3,
        broadcast_period_ms: 200,
        latency_ms: [2, 4],
        profile: profile.into(),
        eager_window_ms: 5,
        changes: 20,
        seed: 3,
    }
}

#[test]
fn eager_deltas_arrive_within_the_window_plus_three_hops() {
    let r = measure(&case("eager"));
    assert_eq!(r.samples.len(), 20, "every change timed");
    // browser → node a, node a → node c, node c → browser: three hops of at most 4 ms, plus
    // the 5 ms window and a tick of the simulation per hop
    assert!(r.p99 <= 5 + 3 * 4 + 3, "eager p99 {} ms", r.p99);
}

#[test]
fn faithful_deltas_wait_for_the_tick() {
    let faithful = measure(&case("faithful"));
    let eager = measure(&case("eager"));
    assert_eq!(faithful.samples.len(), 20);
    assert!(
        faithful.p50 > eager.p50 + 40,
        "faithful p50 {} vs eager {}",
        faithful.p50,
        eager.p50
    );
    assert!(
        faithful.max <= 200 + 3 * 4 + 3,
        "never more than a period plus the hops: {}",
        faithful.max
    );
}
