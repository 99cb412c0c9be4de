//! `phxsim crosscheck`'s bad-input paths, which need no Elixir: every one is exit code 2 with a
//! message that says what is wrong and what to do. (The live comparison against a real
//! cluster runs from `ci/crosscheck-live`, which alone may reach `../shared`.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crosscheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .current_dir(root())
        .arg("crosscheck")
        .args(args)
        .env_remove("PHXSIM_PUBSUB_EBIN")
        .output()
        .expect("run phxsim")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn without_a_phoenix_pubsub_source_it_says_which_flags_to_give() {
    let o = crosscheck(&["scenarios/01_three_concurrent_tracks_visible_everywhere.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--pubsub-ebin DIR"), "{}", stderr(&o));
}

#[test]
fn an_ebin_folder_without_phoenix_pubsub_is_bad_input() {
    let empty = std::env::temp_dir().join(format!("phxsim-xc-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = crosscheck(&[
        "scenarios/01_three_concurrent_tracks_visible_everywhere.toml",
        "--pubsub-ebin",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Elixir.Phoenix.Tracker.beam"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn scenarios_that_do_not_map_to_the_tracker_level_are_refused_with_the_reason() {
    for (file, reason) in [
        (
            "scenarios/15_held_link_delays_then_releases.toml",
            "held link",
        ),
        (
            "scenarios/17_lossy_links_delay_but_lose_nothing.toml",
            "loses no segments",
        ),
        (
            "scenarios/19_issue_148_corrected_profile_keeps_alice.toml",
            "faithful profile",
        ),
    ] {
        let o = crosscheck(&[file, "--pubsub-ebin", "/nonexistent"]);
        assert_eq!(o.status.code(), Some(2), "{file}: {}", stderr(&o));
        assert!(stderr(&o).contains(reason), "{file}: {}", stderr(&o));
    }
}

#[test]
fn a_missing_scenario_file_is_bad_input() {
    let o = crosscheck(&["scenarios/nope.toml", "--pubsub-ebin", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn an_unwritable_json_path_is_refused_before_any_work() {
    let o = crosscheck(&[
        "scenarios/01_three_concurrent_tracks_visible_everywhere.toml",
        "--pubsub-ebin",
        "/nonexistent",
        "--json",
        "/nonexistent-folder/report.json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--json"), "{}", stderr(&o));
}
