//! Every stream in `tests/data/tracker/` (copied from the recorded vectors) through the driver; every line must equal what
//! real Phoenix.Tracker.State printed (as JSON values; for error lines only the fact of an
//! error is compared, per the spec).

use phxsim_tracker::ops::Driver;
use serde_json::Value;
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn streams() -> Vec<PathBuf> {
    let dir = data_dir().join("tracker");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".jsonl") && !name.ends_with(".expected.jsonl")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_shared_tracker_vector_matches_the_reference() {
    let files = streams();
    assert_eq!(files.len(), 32, "the spec lists 32 shared streams");
    let mut failures = Vec::new();
    let mut lines_checked = 0;
    for input in &files {
        let expected_path = input.with_extension("").with_extension("expected.jsonl");
        let expected: Vec<Value> = std::fs::read_to_string(&expected_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut driver = Driver::new();
        let got: Vec<Value> = std::fs::read_to_string(input)
            .unwrap()
            .lines()
            .filter_map(|l| driver.line(l))
            .collect();
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        if got.len() != expected.len() {
            failures.push(format!(
                "{name}: {} lines, expected {}",
                got.len(),
                expected.len()
            ));
            continue;
        }
        for (g, e) in got.iter().zip(&expected) {
            lines_checked += 1;
            let same = match (g.get("error"), e.get("error")) {
                (Some(_), Some(_)) => g["step"] == e["step"],
                (None, None) => g == e,
                _ => false,
            };
            if !same {
                failures.push(format!("{name}:\n  got      {g}\n  expected {e}"));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(lines_checked, 2016, "the spec counts 2 016 ops");
}

#[test]
fn e08_has_exactly_thirteen_error_lines() {
    let input = data_dir().join("tracker/e08_errors_and_redundant.jsonl");
    let mut driver = Driver::new();
    let errors = std::fs::read_to_string(input)
        .unwrap()
        .lines()
        .filter_map(|l| driver.line(l))
        .filter(|v| v.get("error").is_some())
        .count();
    assert_eq!(errors, 13);
}
