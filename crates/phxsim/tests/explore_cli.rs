//! `phxsim explore` as CI runs it: exit codes, the shrunk scenario files, their replay commands
//! and the JUnit report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn explore(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .arg("explore")
        .args(args)
        .args(["--quiet", "--out"])
        .arg(dir)
        .arg("--junit")
        .arg(dir.join("report.xml"))
        .output()
        .expect("run phxsim")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phxsim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_planted_bug_fails_with_a_junit_case_per_seed_and_a_replay_that_reproduces_it() {
    let dir = temp("explore-bug");
    let out = explore(
        &dir,
        &["--seeds", "0..3", "--mutate", "drop-leaves", "--keep-going"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "safety exit code: {stderr}");
    let xml = std::fs::read_to_string(dir.join("report.xml")).expect("JUnit report");
    assert!(xml.contains(r#"tests="3""#), "{xml}");
    for seed in 0..3 {
        assert!(xml.contains(&format!(r#"name="seed {seed}""#)), "{xml}");
    }
    // every failure names its shrunk file, and the planted bug, in its replay command
    let failed: Vec<u64> = (0..3)
        .filter(|s| dir.join(format!("seed-{s}.toml")).exists())
        .collect();
    assert!(!failed.is_empty(), "{stderr}");
    assert!(
        xml.contains(&format!(r#"failures="{}""#, failed.len())),
        "{xml}"
    );
    for seed in &failed {
        let file = dir.join(format!("seed-{seed}.toml"));
        let replay = format!(
            "replay: phxsim replay {} --seed {seed} --mutate drop-leaves",
            file.display()
        );
        assert!(xml.contains(&replay), "{replay} in {xml}");
        let again = Command::new(env!("CARGO_BIN_EXE_phxsim"))
            .arg("replay")
            .arg(&file)
            .args(["--seed", &seed.to_string(), "--mutate", "drop-leaves"])
            .output()
            .expect("run phxsim replay");
        assert_eq!(again.status.code(), Some(1), "seed {seed} reproduces");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clean_seeds_pass_and_bad_arguments_are_exit_code_2() {
    let dir = temp("explore-clean");
    let out = explore(&dir, &["--seeds", "0..2"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = std::fs::read_to_string(dir.join("report.xml")).expect("JUnit report");
    assert!(xml.contains(r#"tests="2" failures="0""#), "{xml}");
    for bad in [
        &["--seeds", "5..5"][..],
        &["--seeds", "0..2", "--faults", "meteor"],
        &["--seeds", "0..2", "--shard", "3/2"],
    ] {
        let out = explore(&dir, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty(), "{bad:?} says why");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
