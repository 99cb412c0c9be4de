//! The simulator's tick models end to end: with `tick_model = "drift"` (the default) a healed
//! link is dialled again 2–46 ms after the heal, as distributed Erlang reconnects; with
//! `"exact"` it waits for the dialler's own schedule (a stalled dial times out first).

use phxsim_sim::Scenario;
use phxsim_sim::harness::{self, RunOptions};

fn scenario(tick_model: &str) -> Scenario {
    let text = format!(
        r#"title = "a 3 s split of two nodes, then a heal"
nodes = ["a", "b"]
duration_ms = 6000
[tracker]
broadcast_period_ms = 100
down_period_ms = 2000
permdown_period_ms = 5000
tick_model = "{tick_model}"
[[timeline]]
at_ms = 1000
partition = [["a"], ["b"]]
[[timeline]]
at_ms = 4000
heal = true
"#
    );
    Scenario::parse("heal.toml", &text).expect("valid")
}

/// When the link came back after the heal at 4 000 ms, seen from a.
fn reconnect_delay(s: &Scenario, seed: u64) -> u64 {
    let r = harness::run(
        s,
        &RunOptions {
            seed,
            transcript: true,
            ..RunOptions::default()
        },
    );
    r.transcript
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["ev"] == "link_up" && j["node"] == "a")
        .filter_map(|j| j["t"].as_u64())
        .find(|&t| t >= 4000)
        .expect("the link comes back")
        - 4000
}

#[test]
fn a_healed_link_comes_back_within_the_measured_2_to_46_ms() {
    let s = scenario("drift");
    for seed in 1..=8 {
        let d = reconnect_delay(&s, seed);
        // the drawn delay, then a TCP connect and the greetings over 1–5 ms links
        assert!((2..=46 + 20).contains(&d), "seed {seed}: {d} ms");
    }
}

#[test]
fn with_exact_ticks_a_healed_link_waits_for_the_diallers_schedule() {
    let s = scenario("exact");
    let delays: Vec<u64> = (1..=8).map(|seed| reconnect_delay(&s, seed)).collect();
    assert!(delays.iter().any(|&d| d > 66), "{delays:?}");
}
