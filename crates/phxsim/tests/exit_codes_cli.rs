//! The exit codes users script against (0 pass, 1 safety violation, 2 bad input, 3 no
//! convergence, 70 internal error), through the built binary: every kind of bad input a
//! newcomer typed is exit 2 with a message that says what to do, found before any work starts,
//! and never a panic.

// Real processes, real ports and the wall clock: nothing here runs inside the simulator.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::{arg, phxsim, run, run_within, scratch};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_run_that_tests_nothing_is_bad_input() {
    let empty = scratch("empty-catalogue");
    run(&["run", "--catalogue", arg(&empty)]).expect(2, &["no scenario files", arg(&empty)]);
    // the same for a folder given as a path
    run(&["run", arg(&empty)]).expect(2, &["no scenario files"]);
}

#[test]
fn run_without_a_catalogue_is_bad_input_with_a_hint() {
    let elsewhere = scratch("no-scenarios-here");
    let mut cmd = phxsim(&["run"]);
    cmd.current_dir(&elsewhere);
    run_within(cmd, Duration::from_secs(30)).expect(
        2,
        &[
            "cannot read the scenario folder scenarios",
            "run from the repository root, or pass --catalogue",
        ],
    );
    run(&["run", "--catalogue", "/nope"]).expect(2, &["/nope", "--catalogue"]);
}

#[test]
fn bench_latency_refuses_a_grid_it_cannot_run_before_running_any_of_it() {
    for (flags, says) in [
        (&["--latency", "5-1"][..], "--latency: \"5-1\""),
        (&["--latency", "1-x"][..], "--latency"),
        (
            &["--nodes", "100"][..],
            "--nodes: 100 is out of range (2 to 32)",
        ),
        (&["--nodes", "0"][..], "--nodes: 0 is out of range"),
        (&["--broadcast-periods", "0"][..], "--broadcast-periods: 0"),
        (&["--changes", "0"][..], "--changes: 0"),
        (&["--profiles", "fast"][..], "unknown profile \"fast\""),
        (&["--loss", "2"][..], "--loss"),
        (
            &["--broadcast-periods", "3600000", "--changes", "100"][..],
            "more than 24 h",
        ),
    ] {
        let mut args = vec!["bench-latency"];
        args.extend_from_slice(flags);
        let done = run(&args);
        done.expect(2, &[says]);
        assert!(
            done.stdout.is_empty(),
            "no table for a refused grid: {done:#?}"
        );
    }
}

#[test]
fn bench_latency_measures_the_corrected_profile_like_the_others() {
    let done = run(&[
        "bench-latency",
        "--profiles",
        "corrected",
        "--nodes",
        "2",
        "--broadcast-periods",
        "50",
        "--changes",
        "4",
    ]);
    done.expect(0, &[]);
    let row = done
        .stdout
        .lines()
        .find(|l| l.contains("corrected"))
        .unwrap_or_else(|| panic!("a row for the corrected profile: {done:#?}"));
    // four changes timed, not a row of zeros
    assert!(row.contains("| corrected | 4 |"), "{row}");
}

#[test]
fn conform_against_a_closed_port_is_bad_input_within_seconds() {
    // a port that was free a moment ago: nothing listens there now
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("ws://127.0.0.1:{port}/socket/websocket");
    let done = run(&["conform", "--url", &url]);
    done.expect(2, &[&format!("cannot reach {url}"), "os error"]);
    assert!(done.took < Duration::from_secs(10), "{done:#?}");
    assert!(done.stdout.is_empty(), "no report for no server: {done:#?}");
}

#[test]
fn output_paths_that_cannot_be_written_are_refused_before_anything_runs() {
    let dir = scratch("unwritable");
    let missing = dir.join("missing");
    let in_missing = |name: &str| missing.join(name).display().to_string();
    let a_file = dir.join("a-file");
    std::fs::write(&a_file, "").unwrap();
    let under_a_file = a_file.join("out").display().to_string();
    let scenario = "scenarios/01_three_concurrent_tracks_visible_everywhere.toml";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), "--json".into(), in_missing("x.json")],
            "--json",
        ),
        (
            vec!["run".into(), "--junit".into(), in_missing("x.xml")],
            "--junit",
        ),
        (
            vec![
                "run".into(),
                scenario.into(),
                "--transcript".into(),
                in_missing("t.jsonl"),
            ],
            "--transcript",
        ),
        (
            vec![
                "replay".into(),
                scenario.into(),
                "--seed".into(),
                "1".into(),
                "--transcript".into(),
                in_missing("t.jsonl"),
            ],
            "--transcript",
        ),
        (
            vec![
                "replay".into(),
                scenario.into(),
                "--seed".into(),
                "1".into(),
                "--trace".into(),
                arg(&dir).into(),
            ],
            "is a folder",
        ),
        (
            vec![
                "explore".into(),
                "--seeds".into(),
                "0..1".into(),
                "--out".into(),
                under_a_file,
            ],
            "--out",
        ),
        (
            vec![
                "explore".into(),
                "--seeds".into(),
                "0..1".into(),
                "--json".into(),
                in_missing("e.json"),
            ],
            "--json",
        ),
        (
            vec![
                "bench-latency".into(),
                "--json".into(),
                in_missing("b.json"),
            ],
            "--json",
        ),
        (
            vec![
                "conform".into(),
                "--url".into(),
                "ws://127.0.0.1:1/socket/websocket".into(),
                "--junit".into(),
                in_missing("c.xml"),
            ],
            "--junit",
        ),
        (
            vec![
                "serve".into(),
                "--port".into(),
                "41990".into(),
                "--frames".into(),
                in_missing("f.jsonl"),
            ],
            "--frames",
        ),
    ];
    for (args, flag) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let done = run(&args);
        done.expect(2, &[flag]);
        assert!(
            !done.stdout.contains("scenario ") && !done.stdout.contains("| nodes"),
            "refused before the run: {done:#?}"
        );
    }
    assert!(
        !missing.exists(),
        "phxsim creates no folders for report files"
    );
    // a report file in a folder that exists is written
    let report = dir.join("report.json");
    run(&["run", scenario, "--json", arg(&report)]).expect(0, &[]);
    assert!(
        std::fs::read_to_string(&report)
            .unwrap()
            .contains("\"verdict\"")
    );
}

#[test]
fn serve_on_a_port_in_use_is_bad_input() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().unwrap().port().to_string();
    let done = run_within(
        phxsim(&["serve", "--nodes", "1", "--port", &port]),
        Duration::from_secs(30),
    );
    done.expect(
        2,
        &[&format!("cannot listen on 127.0.0.1:{port}"), "--port"],
    );
    drop(taken);
}

#[test]
fn serve_refuses_an_idle_timeout_of_zero() {
    run(&["serve", "--port", "41991", "--idle-timeout", "0"]).expect(2, &["--idle-timeout"]);
}

/// `phxsim CMD | head -1`: the reader goes away after one line; the command must end quietly
/// (exit 0, nothing on stderr) instead of "Broken pipe" and exit 70, or a panic.
#[test]
fn a_reader_that_goes_away_ends_the_stream_commands_quietly() {
    let many_ops: String = std::iter::once("{\"op\":\"new\",\"at\":\"a\"}\n".to_owned())
        .chain((0..20_000).map(|i| {
            format!("{{\"op\":\"join\",\"at\":\"a\",\"pid\":\"p{i}\",\"topic\":\"t\",\"key\":\"k{i}\",\"meta\":{{}}}}\n")
        }))
        .collect();
    let many_states: String = (0..20_000)
        .map(|i| format!("{{\"op\":\"state\",\"payload\":{{\"u{i}\":{{\"metas\":[{{\"phx_ref\":\"r{i}\"}}]}}}}}}\n"))
        .collect();
    for (args, input) in [
        (vec!["tracker-ops"], many_ops),
        (vec!["presence-sync"], many_states),
    ] {
        let mut child = phxsim(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn phxsim");
        let mut stdin = child.stdin.take().unwrap();
        // the writer gets EPIPE once phxsim is gone: that is expected
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?} wrote a line");
        // the reader is gone: stdout is closed
        let out = child.wait_with_output().unwrap();
        let _ = feeder.join();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} ends quietly: {stderr}");
    }
    // a command that prints a table, with its stdout closed before it starts
    let mut child = phxsim(&[
        "run",
        "scenarios/01_three_concurrent_tracks_visible_everywhere.toml",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

/// Steps that would silently do nothing in the simulator, and a topic no channel has.
#[test]
fn scenario_files_with_impossible_steps_are_bad_input_with_line_and_field() {
    let dir = scratch("impossible-steps");
    let head = "title = \"t\"\nnodes = [\"a\", \"b\", \"c\"]\nduration_ms = 5000\n[[clients]]\nname = \"x\"\nnode = \"a\"\n";
    for (name, tail, says) in [
        (
            "restart_running",
            "[[timeline]]\nat_ms = 100\nrestart = \"b\"\n",
            ":7: timeline.restart: node \"b\" is running at 100 ms",
        ),
        (
            "crash_twice",
            "[[timeline]]\nat_ms = 100\ncrash = \"b\"\n[[timeline]]\nat_ms = 200\ncrash = \"b\"\n",
            ":10: timeline.crash: node \"b\" is already stopped (by crash at 100 ms)",
        ),
        (
            "partition_leaves_c_out",
            "[[timeline]]\nat_ms = 100\npartition = [[\"a\"], [\"b\"]]\n",
            ":7: timeline.partition: node \"c\" is in no group",
        ),
    ] {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, format!("{head}{tail}")).unwrap();
        let done = run(&["run", arg(&file)]);
        done.expect(2, &[&format!("{}{says}", file.display())]);
    }
    let file = dir.join("empty_topic.toml");
    std::fs::write(
        &file,
        head.replace("node = \"a\"\n", "node = \"a\"\ntopic = \"\"\n"),
    )
    .unwrap();
    run(&["run", arg(&file)]).expect(
        2,
        &[&format!(
            "{}:4: clients.topic: must not be empty",
            file.display()
        )],
    );
    let missing = dir.join("missing.toml");
    run(&["run", arg(&missing)]).expect(2, &[&format!("{}: cannot read", missing.display())]);
    // a crash, then its restart, is fine, in any file order
    let file = dir.join("crash_restart.toml");
    std::fs::write(
        &file,
        format!("{head}[[timeline]]\nat_ms = 300\nrestart = \"b\"\n[[timeline]]\nat_ms = 100\ncrash = \"b\"\n"),
    )
    .unwrap();
    run(&["run", arg(&file)]).expect(0, &[]);
}
