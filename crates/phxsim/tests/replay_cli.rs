//! `phxsim replay` as users run it: one seed, two processes, byte-identical transcripts, even
//! through a node crash and restart; another seed, another run; and the exit codes.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn replay(scenario: &str, seed: u64, out: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .current_dir(root())
        .args([
            "replay",
            scenario,
            "--seed",
            &seed.to_string(),
            "--transcript",
        ])
        .arg(out)
        .output()
        .expect("run phxsim")
}

#[test]
fn a_seed_replays_byte_for_byte_across_processes_even_through_a_crash() {
    let dir = std::env::temp_dir().join(format!("phxsim-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = "scenarios/13_node_b_restarts_as_a_new_replica.toml";
    let (a, b, c) = (
        dir.join("a.jsonl"),
        dir.join("b.jsonl"),
        dir.join("c.jsonl"),
    );
    for (file, seed) in [(&a, 11), (&b, 11), (&c, 12)] {
        let out = replay(scenario, seed, file);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with(&format!("seed={seed} ")),
            "the knobs come first: {stdout}"
        );
    }
    let (ta, tb, tc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert!(ta.len() > 10_000);
    assert_eq!(ta, tb, "seed 11 twice");
    assert_ne!(ta, tc, "seed 12 is another run");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_scenario_file_is_exit_code_2_with_line_and_field() {
    let dir = std::env::temp_dir().join(format!("phxsim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "title = \"x\"\nnodes = [\"a\"]\nduration_ms = 10\n[[clients]]\nname = \"c\"\nnode = \"zz\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .args(["run"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4: clients.node: unknown node \"zz\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_planted_bug_fails_the_run_with_the_safety_exit_code_and_a_replay_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .current_dir(root())
        .args([
            "run",
            "scenarios/04_owner_connection_dropped_gone_everywhere.toml",
            "--mutate",
            "keep-presences-on-disconnect",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ghost"), "{stdout}");
    assert!(stdout.contains("replay: phxsim replay scenarios/04_owner_connection_dropped_gone_everywhere.toml --seed 1"), "{stdout}");
}
