//! `phxsim mutations [--json]` and the `--mutate` flag of run, replay, explore and serve: one
//! registry, the same names everywhere, and conformance-only bugs refused by the simulator.

use serde_json::Value as Json;
use std::process::{Command, Output};

fn phxsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .args(args)
        .output()
        .expect("run phxsim")
}

fn registry() -> Json {
    let out = phxsim(&["mutations", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn names(doc: &Json) -> Vec<String> {
    doc["mutations"]
        .as_array()
        .expect("mutations")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn the_json_lists_every_checker_and_every_bug_with_its_catchers() {
    let doc = registry();
    let checkers: Vec<&str> = doc["checkers"]
        .as_array()
        .expect("checkers")
        .iter()
        .map(|c| c.as_str().expect("a kind"))
        .collect();
    assert_eq!(
        checkers,
        [
            "no_convergence",
            "client_view",
            "ghost",
            "lost",
            "stale_meta",
            "diff_stream",
            "duplicate_leave",
            "duplicate_join",
            "expectation"
        ]
    );
    let mut proven = std::collections::BTreeSet::new();
    for m in doc["mutations"].as_array().expect("mutations") {
        let obj = m.as_object().expect("an object");
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys, ["name", "layer", "caught_by"], "{m}");
        assert!(
            ["tracker", "shard", "server", "client"].contains(&m["layer"].as_str().unwrap()),
            "{m}"
        );
        let by = m["caught_by"].as_array().expect("caught_by");
        assert!(!by.is_empty(), "{m}");
        for c in by {
            let c = c.as_str().expect("a name");
            assert!(c == "conformance" || checkers.contains(&c), "{m}");
            proven.insert(c.to_owned());
        }
    }
    for c in &checkers {
        assert!(proven.contains(*c), "no planted bug for the {c} checker");
    }
    let names = names(&doc);
    for known in [
        "merge-ignores-clouds",
        "skip-transfer",
        "drop-leaves",
        "heartbeat-reply-wrong-topic",
        "no-phx-close-on-leave",
        "forget-pending-diffs",
    ] {
        assert!(names.iter().any(|n| n == known), "{known} in {names:?}");
    }
}

#[test]
fn every_name_is_in_the_help_of_every_command_that_plants_bugs() {
    let names = names(&registry());
    for cmd in ["run", "replay", "explore", "serve"] {
        let out = phxsim(&[cmd, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        for n in &names {
            assert!(
                help.contains(n.as_str()),
                "{cmd} --help misses {n}:\n{help}"
            );
        }
    }
}

#[test]
fn the_simulator_refuses_bugs_only_conformance_can_catch() {
    for name in ["heartbeat-reply-wrong-topic", "no-phx-close-on-leave"] {
        for args in [
            vec!["run", "--mutate", name],
            vec!["replay", "any.toml", "--seed", "1", "--mutate", name],
            vec!["explore", "--seeds", "1..2", "--quiet", "--mutate", name],
        ] {
            let out = phxsim(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("only the conformance catalogue"), "{err}");
            assert!(out.stdout.is_empty(), "nothing ran: {args:?}");
        }
    }
}

#[test]
fn serve_refuses_a_bug_outside_the_server_and_unknown_names_are_exit_code_2() {
    let out = phxsim(&["serve", "--port", "42990", "--mutate", "skip-transfer"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a server bug"));
    let out = phxsim(&["run", "--mutate", "no-such-bug"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("merge-ignores-clouds"));
}
