//! Human logs: `-v`/`RUST_LOG` bring the runtime's and the simulator's `tracing` lines to
//! stderr, the default stays quiet, and no log line ever reaches stdout (a run's report is
//! the same with and without them).

// Real processes on the real clock: nothing here runs inside the simulator.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::{Done, phxsim, run_within};
use std::time::Duration;

const SCENARIO: &str = "scenarios/01_three_concurrent_tracks_visible_everywhere.toml";

fn run_with(args: &[&str], rust_log: Option<&str>) -> Done {
    let mut cmd = phxsim(args);
    cmd.env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    run_within(cmd, Duration::from_secs(60))
}

#[test]
fn the_default_is_quiet_and_v_brings_the_runtime_and_simulator_logs_to_stderr_only() {
    let quiet = run_with(&["run", SCENARIO], None);
    quiet.expect(0, &[]);
    assert_eq!(quiet.stderr, "", "{quiet:#?}");

    let loud = run_with(&["-vv", "run", SCENARIO], None);
    loud.expect(
        0,
        &[
            // the simulator, the node links and the Channels server and client
            "phxsim_sim::harness: step",
            "phxsim_runtime::node::driver: link up",
            "phxsim_runtime::server::socket: socket connected",
            // -v still prints the scenario's settings, as `run --verbose` did
            "# scenarios/01_three_concurrent_tracks_visible_everywhere.toml: seed=1",
        ],
    );
    assert_eq!(loud.stdout, quiet.stdout, "logs never reach stdout");
    // the global flag may stand after the subcommand too
    let after = run_with(&["run", "-vv", SCENARIO], None);
    assert!(after.stderr.contains("link up"), "{after:#?}");
}

#[test]
fn rust_log_chooses_the_filter_and_a_bad_one_is_said_not_fatal() {
    let server_only = run_with(&["run", SCENARIO], Some("phxsim_runtime::server=debug"));
    server_only.expect(0, &["socket connected"]);
    assert!(
        !server_only.stderr.contains("phxsim_sim"),
        "{server_only:#?}"
    );

    let bad = run_with(&["run", SCENARIO], Some("phxsim_runtime=[nope"));
    bad.expect(
        0,
        &[
            "RUST_LOG=\"phxsim_runtime=[nope\" is not a log filter",
            "using warn",
        ],
    );
}
