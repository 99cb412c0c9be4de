//! The eager profile against the faithful one, on the simulator: the same changes, the same
//! seed; eager diffs reach the browser on another node in two network hops (node → node →
//! browser), faithful ones wait for the sender's next tick; loss delays both by retransmissions.

use phxsim_sim::latency::{LatencyCase, measure};
use phxsim_sim::scenario::ProfileName;

fn case(profile: &str) -> LatencyCase {
    let profile: ProfileName = profile.parse().expect("a profile");
    LatencyCase {
        nodes: 3,
        broadcast_period_ms: 200,
        latency_ms: [2, 4],
        loss: 0.0,
        rto_ms: 200,
        profile,
        eager_window_ms: 5,
        changes: 20,
        seed: 3,
    }
}

#[test]
fn eager_deltas_arrive_within_two_hops() {
    let r = measure(&case("eager"));
    assert_eq!(r.samples.len(), 20, "every change timed");
    // node a → node c, node c → browser: two hops of at most 4 ms, plus a tick of the
    // simulation per hop (changes are spaced wider than the window, so none waits for it)
    assert!(r.max <= 2 * 4 + 2, "eager max {} ms", r.max);
}

#[test]
fn loss_delays_diffs_by_retransmissions_but_loses_none() {
    let lossy = measure(&LatencyCase {
        // low enough that no link idles out behind repeated retransmissions
        loss: 0.05,
        changes: 40,
        ..case("eager")
    });
    assert_eq!(lossy.samples.len(), 40, "every change still arrives");
    // some changes wait behind a retransmission on the node link (of their own segment, or
    // of an earlier one they queue behind), which never happens without loss
    let lossless = measure(&LatencyCase {
        changes: 40,
        ..case("eager")
    });
    assert!(
        lossless.max <= 2 * 4 + 2,
        "lossless max {} ms",
        lossless.max
    );
    assert!(lossy.max > 2 * 4 + 2, "lossy max {} ms", lossy.max);
    assert!(
        lossy.p50 <= 2 * 4 + 2,
        "most are not lost: p50 {} ms",
        lossy.p50
    );
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
        faithful.max <= 200 + 2 * 4 + 2,
        "never more than a period plus the hops: {}",
        faithful.max
    );
}
