//! The eager-delta profile: a local change leaves at once (or, in a burst, at the end of the
//! eager window) instead of at the next tick, so a remote node sees it after one network hop;
//! everything else (idle heartbeats, down detection) keeps Phoenix's schedule.

mod common;
use common::*;
use phxsim_shard::{Profile, SimNet, TrackerConfig};
use serde_json::json;

const LATENCY: u64 = 3;

fn config(profile: Profile) -> TrackerConfig {
    TrackerConfig {
        profile,
        // a long period makes the difference plain
        ..TrackerConfig::with_broadcast_period(1_000)
    }
}

/// Milliseconds from a track on a to alice being listed on b.
fn latency_of_track(profile: Profile) -> u64 {
    let cfg = config(profile);
    let mut net = SimNet::new(LATENCY, 0);
    net.add(tracker(&cfg, "a", 1, 0, 0));
    net.add(tracker(&cfg, "b", 1, 0, 100));
    net.connect_all();
    net.run_until_cond(5_000, |n| {
        sees_up(n, "a", &["b"]) && sees_up(n, "b", &["a"])
    })
    .expect("mesh");
    // track well away from a tick: 400 ms after one
    let start = net.now() + 400;
    net.run_until(start);
    net.with("a", |t| t.track("pa", "lobby", "alice", &meta(json!({}))))
        .expect("track");
    let seen = net
        .run_until_cond(start + 3_000, |n| lists_all(n, "b", "lobby", &["alice"]))
        .expect("alice reaches b");
    seen - start
}

#[test]
fn a_lone_eager_change_crosses_in_one_hop() {
    // the window only spaces deltas: it does not delay a change after a quiet spell
    let eager = latency_of_track(Profile::eager(50));
    assert!(eager <= LATENCY + 1, "eager: {eager} ms");
}

#[test]
fn the_faithful_profile_waits_for_the_tick() {
    let faithful = latency_of_track(Profile::faithful());
    assert!(
        faithful >= 500,
        "faithful: {faithful} ms, expected to wait for the next tick"
    );
}

#[test]
fn changes_within_one_window_leave_together() {
    let cfg = config(Profile::eager(20));
    let mut net = SimNet::new(LATENCY, 0);
    net.add(tracker(&cfg, "a", 1, 0, 0));
    net.add(tracker(&cfg, "b", 1, 0, 100));
    net.connect_all();
    net.run_until_cond(5_000, |n| {
        sees_up(n, "a", &["b"]) && sees_up(n, "b", &["a"])
    })
    .expect("mesh");
    let start = net.now() + 400;
    net.run_until(start);
    for (pid, key) in [("p1", "u1"), ("p2", "u2"), ("p3", "u3")] {
        net.with("a", |t| t.track(pid, "lobby", key, &meta(json!({}))))
            .expect("track");
    }
    net.run_until(start + 100);
    let heartbeats = net
        .sent_since(start)
        .into_iter()
        .filter(|(_, from, _, kind)| from == "a" && *kind == "heartbeat")
        .count();
    assert_eq!(heartbeats, 1, "three changes, one eager delta");
    assert!(lists_all(&net, "b", "lobby", &["u1", "u2", "u3"]));
}

#[test]
fn a_burst_costs_one_delta_per_window_and_no_change_waits_longer_than_one() {
    let window = 20;
    let cfg = config(Profile::eager(window));
    let mut net = SimNet::new(LATENCY, 0);
    net.add(tracker(&cfg, "a", 1, 0, 0));
    net.add(tracker(&cfg, "b", 1, 0, 100));
    net.connect_all();
    net.run_until_cond(5_000, |n| {
        sees_up(n, "a", &["b"]) && sees_up(n, "b", &["a"])
    })
    .expect("mesh");
    let start = net.now() + 400;
    // a change every 3 ms for 60 ms
    let keys: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        net.run_until(start + 3 * i as u64);
        net.with("a", |t| {
            t.track(&format!("p{i}"), "lobby", key, &meta(json!({})))
        })
        .expect("track");
    }
    let last_change = start + 3 * 19;
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    let seen = net
        .run_until_cond(last_change + 500, |n| lists_all(n, "b", "lobby", &all))
        .expect("every change reaches b");
    assert!(
        seen <= last_change + window + LATENCY + 1,
        "the last change waited {} ms",
        seen - last_change
    );
    let deltas: Vec<u64> = net
        .sent_since(start)
        .into_iter()
        .filter(|(_, from, _, kind)| from == "a" && *kind == "heartbeat")
        .map(|(t, ..)| t)
        .collect();
    // the first change leaves at once, the rest in window-spaced batches
    assert_eq!(deltas.first(), Some(&start), "{deltas:?}");
    assert!(
        deltas.windows(2).all(|w| w[1] - w[0] >= window),
        "{deltas:?}"
    );
    assert!(deltas.len() <= 5, "{deltas:?}");
}
