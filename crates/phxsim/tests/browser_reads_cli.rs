//! `--browser-reads`: how population browsers take broadcast diffs is a choice a seed's run
//! depends on, so the commands take it, show it in the knob line when it is not the default,
//! and put it in the replay command they print. Through the binary too, `absorb-and-wake` and
//! `task` are one run byte for byte, through a node's crash and restart (that the absorber
//! takes segments at all, and a planted bug in what it takes, are tested in
//! `phxsim-sim/tests/absorbed_segments.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const SCENARIO: &str = r#"
title = "browsers read or absorb"
nodes = ["a", "b", "c"]
duration_ms = 5000
[tracker]
broadcast_period_ms = 100
down_period_ms = 1500
[[population]]
nodes = ["a", "b", "c"]
count = 45
topics = 3
join_ms = [200, 1200]
leave_ms = [3500, 4200]
[[timeline]]
at_ms = 1500
crash = "b"
[[timeline]]
at_ms = 2000
restart = "b"
"#;

fn phxsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run phxsim")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// The replay's knob line and its transcript (every population frame) after its first line
/// (which holds the knobs).
fn replay(file: &Path, dir: &Path, reads: Option<&str>) -> (String, Vec<u8>) {
    let transcript = dir.join(format!("{}.jsonl", reads.unwrap_or("default")));
    let mut args = vec![
        "replay",
        path(file),
        "--seed",
        "3",
        "--population-frames",
        "--transcript",
        path(&transcript),
    ];
    if let Some(r) = reads {
        args.extend(["--browser-reads", r]);
    }
    let out = phxsim(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("result: pass"), "{stdout}");
    let knobs = stdout.lines().next().unwrap_or_default().to_owned();
    let text = std::fs::read(&transcript).expect("the transcript");
    let body = match text.iter().position(|&b| b == b'\n') {
        Some(end) => text[end + 1..].to_vec(),
        None => Vec::new(),
    };
    (knobs, body)
}

#[test]
fn reading_every_frame_and_absorbing_with_a_wake_are_one_run() {
    let dir = std::env::temp_dir().join(format!("phxsim-reads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reads.toml");
    std::fs::write(&file, SCENARIO).unwrap();

    let (task_knobs, task) = replay(&file, &dir, Some("task"));
    let (wake_knobs, wake) = replay(&file, &dir, Some("absorb-and-wake"));
    let (default_knobs, _) = replay(&file, &dir, None);
    let (absorb_knobs, _) = replay(&file, &dir, Some("absorb"));

    assert!(task.len() > 10_000, "a transcript with every frame");
    assert!(
        task == wake,
        "absorbing and waking the task must be the run of a task that reads everything"
    );
    assert!(task_knobs.contains(" browser_reads=task"), "{task_knobs}");
    assert!(
        wake_knobs.contains(" browser_reads=absorb-and-wake"),
        "{wake_knobs}"
    );
    // the default adds nothing to the knob line: earlier runs' lines stay as they were
    assert!(!default_knobs.contains("browser_reads"), "{default_knobs}");
    assert_eq!(default_knobs, absorb_knobs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_run_prints_a_replay_with_its_choice_and_a_bad_choice_is_bad_input() {
    let out = phxsim(&[
        "run",
        "scenarios/04_owner_connection_dropped_gone_everywhere.toml",
        "--mutate",
        "keep-presences-on-disconnect",
        "--browser-reads",
        "task",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "replay: phxsim replay scenarios/04_owner_connection_dropped_gone_everywhere.toml --seed 1 --browser-reads task"
        ),
        "{stdout}"
    );

    let out = phxsim(&[
        "replay",
        "scenarios/04_owner_connection_dropped_gone_everywhere.toml",
        "--seed",
        "1",
        "--browser-reads",
        "sometimes",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--browser-reads"), "{stderr}");
}
