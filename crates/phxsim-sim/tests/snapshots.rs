//! Wire snapshots of every catalogue scenario: the normalized transcript (client frames both
//! ways, steps, replica changes, findings) under `snapshots/scenarios/` at the top of the repo.
//! `cargo insta review` updates them; CI (CI=true) fails on any unreviewed change.

use phxsim_sim::Scenario;
use phxsim_sim::harness::{self, RunOptions};
use phxsim_sim::normalize::wire_snapshot;
use std::path::PathBuf;

#[test]
fn every_catalogue_scenario_has_a_reviewed_wire_snapshot() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("scenarios"))
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root.join("snapshots/scenarios"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        for p in paths {
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            let seed = s.seed.unwrap_or(1);
            let r = harness::run(
                &s,
                &RunOptions {
                    seed,
                    transcript: true,
                    ..RunOptions::default()
                },
            );
            let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            let text = wire_snapshot(&r.transcript, s.tracker.broadcast_period_ms);
            insta::with_settings!({ description => format!("{} (seed {seed})", s.title) }, {
                insta::assert_snapshot!(name, text);
            });
        }
    });
}

#[test]
fn normalizing_replaces_refs_in_order_and_rounds_times() {
    let lines = vec![
        r#"{"t":123,"ev":"frame","client":"a","dir":"in","data":"[null,null,\"room:lobby\",\"presence_diff\",{\"joins\":{\"a\":{\"metas\":[{\"phx_ref\":\"XYZabc123456789_\"}]}},\"leaves\":{}}]"}"#.to_string(),
        r#"{"t":250,"ev":"node_send","from":"a","to":"b","kind":"heartbeat"}"#.to_string(),
        r#"{"t":251,"ev":"frame","client":"a","dir":"in","data":"{\"phx_ref\":\"Q2\",\"phx_ref_prev\":\"XYZabc123456789_\"}"}"#.to_string(),
    ];
    let out = wire_snapshot(&lines, 100);
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 2, "node chatter is left out");
    assert!(got[0].starts_with(r#"{"t":100,"#), "{}", got[0]);
    assert!(
        got[0].contains("<ref1>") && !got[0].contains("XYZ"),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains(r#"phx_ref\":\"<ref2>\",\"phx_ref_prev\":\"<ref1>"#),
        "{}",
        got[1]
    );
}
