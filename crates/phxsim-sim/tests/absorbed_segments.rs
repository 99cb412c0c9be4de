//! Segments absorbed as they arrive (`phxsim_runtime::client::Absorber`: a population
//! browser's cached broadcast diffs handed to its machine without waking its task) change
//! nothing a run shows: the same transcript, findings and verdict as a run whose browsers read
//! every segment themselves, over joins, leaves, both serializers, lossy browser links, a
//! node's crash and restart (reconnects, fresh states) and a split and heal.

use phxsim_sim::Scenario;
use phxsim_sim::harness::{self, BrowserReads, RunOptions, RunReport, Verdict};
use std::sync::Mutex;

fn scenario() -> Scenario {
    let text = r#"
title = "absorbed segments change nothing"
nodes = ["a", "b", "c"]
duration_ms = 7000
[tracker]
broadcast_period_ms = 100
down_period_ms = 1500
[network]
client_loss = 0.02
rto_ms = 200
[[network.links]]
between = ["a", "clients"]
latency_ms = [1, 80]
[[network.links]]
between = ["c", "clients"]
latency_ms = [1, 30]
[[clients]]
name = "alice"
node = "a"
topic = "room:pop-0"
[[population]]
nodes = ["a", "b", "c"]
count = 90
topics = 3
join_ms = [200, 1500]
leave_ms = [4500, 5500]
meta = { device = "web" }
[[population]]
nodes = ["c", "b"]
count = 40
topics = 2
join_ms = [300, 1200]
vsn = "1.0.0"
user = "v1-"
[[timeline]]
at_ms = 100
join = "alice"
[[timeline]]
at_ms = 1800
crash = "b"
[[timeline]]
at_ms = 2300
restart = "b"
[[timeline]]
at_ms = 3200
partition = [["a"], ["b", "c"]]
[[timeline]]
at_ms = 4000
heal = true
"#;
    Scenario::parse("absorbed.toml", text).unwrap()
}

/// The scenario crashes a node, and a crashed host's tasks are torn down in an order that
/// depends on tokio's process-wide task ids: runs in one process must not overlap.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(s: &Scenario, seed: u64, browser_reads: BrowserReads) -> RunReport {
    let _alone = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    harness::run(
        s,
        &RunOptions {
            seed,
            transcript: true,
            browser_reads,
            ..RunOptions::default()
        },
    )
}

/// The absorber hands a browser's machine what its task would have: with the tasks still
/// woken (so that every host runs its tasks in the same turns), a run is byte for byte the
/// run of browsers that read every segment themselves.
#[test]
fn absorbing_with_the_same_wake_ups_changes_no_byte_of_a_run() {
    let s = scenario();
    for seed in [1, 2] {
        let absorbing = run(&s, seed, BrowserReads::AbsorbAndWake);
        let reading = run(&s, seed, BrowserReads::Task);
        assert_eq!(reading.absorbed_segments, 0);
        // the absorber ran, and took most diffs
        assert!(
            absorbing.absorbed_segments > 1000,
            "seed {seed}: only {} segments absorbed",
            absorbing.absorbed_segments
        );
        assert_eq!(
            absorbing.verdict,
            Verdict::Pass,
            "{:#?}",
            absorbing.failures
        );
        assert_eq!(absorbing.findings, reading.findings, "seed {seed}");
        assert_eq!(absorbing.converged_at_ms, reading.converged_at_ms);
        assert_eq!(absorbing.memory_connections, reading.memory_connections);
        // the first line is the run's knobs, which name the choice
        let (a_run, a_rest) = absorbing.transcript.split_first().expect("a run line");
        let (r_run, r_rest) = reading.transcript.split_first().expect("a run line");
        assert_eq!(
            a_run.replace(r#","browser_reads":"absorb-and-wake""#, ""),
            r_run.replace(r#","browser_reads":"task""#, ""),
            "seed {seed}: the run lines differ in more than the choice"
        );
        assert!(
            a_rest == r_rest,
            "seed {seed}: the transcripts differ from line {:?}",
            a_rest
                .iter()
                .zip(r_rest)
                .position(|(a, b)| a != b)
                .map(|i| i + 1)
        );
    }
}

/// Without those wake-ups (the default) a host runs its tasks in other turns, so the run
/// differs in its details; it passes every checker, each browser's end state included, and
/// one seed still gives one transcript.
#[test]
fn absorbing_without_the_wake_ups_passes_and_is_deterministic() {
    let s = scenario();
    for seed in [1, 2] {
        let absorbing = run(&s, seed, BrowserReads::Absorb);
        assert!(absorbing.absorbed_segments > 1000);
        assert_eq!(
            absorbing.verdict,
            Verdict::Pass,
            "{:#?}",
            absorbing.failures
        );
        assert!(absorbing.findings.is_empty(), "{:#?}", absorbing.findings);
        assert!(absorbing.transcript == run(&s, seed, BrowserReads::Absorb).transcript);
    }
}
