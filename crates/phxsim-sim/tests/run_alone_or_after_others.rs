//! One seed reproduces a run whatever the process ran before it. A crash drops the host's
//! tokio tasks in an order that follows process-wide task ids (see `task_ids.rs`): without
//! the alignment each run makes, a crash scenario run after other work in the same process
//! (the catalogue, the explorer) differed from the same seed run alone.
//!
//! This file holds one test so that no other test of its binary spawns tasks meanwhile.

use phxsim_sim::Scenario;
use phxsim_sim::harness::{self, RunOptions};

fn run(s: &Scenario) -> Vec<String> {
    harness::run(
        s,
        &RunOptions {
            seed: 1,
            transcript: true,
            ..RunOptions::default()
        },
    )
    .transcript
}

#[test]
fn a_crash_run_is_the_same_after_other_tasks_of_the_process() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scenarios/13_node_b_restarts_as_a_new_replica.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let s = Scenario::parse(path, &text).unwrap();
    let alone = run(&s);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for shift in 1..4 {
        for _ in 0..shift {
            drop(rt.spawn(async {}));
        }
        assert!(
            run(&s) == alone,
            "the run after {shift} more task(s) differs from the run alone"
        );
    }
}
