//! `phxsim presence-sync` against the streams phoenix.js 1.8.16 printed
//! (`tests/data/presence-sync/`), both modes, line by line as JSON values: object key order
//! does not matter, array order (`keys`, `list`, `events`) does (presence-sync.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/presence-sync")
}

fn run_phxsim(mode: &str, input: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .args(["presence-sync", "--mode", mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start phxsim: {err}"));
    // The vectors are small enough to fit the pipe buffer, so writing before reading is safe.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|err| panic!("cannot write to phxsim: {err}"));
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|err| panic!("phxsim did not finish: {err}"));
    assert!(
        output.status.success(),
        "phxsim presence-sync --mode {mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// JSON equality as JavaScript sees numbers (`1` and `1.0` are one value) with unordered objects.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn parse_lines(what: &str, text: &str) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{what} line {}: not JSON ({err}): {line}", i + 1))
        })
        .collect()
}

#[test]
fn every_vector_matches_phoenix_js_in_both_modes() {
    let dir = vectors_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".jsonl").map(str::to_owned))
        .collect();
    names.sort();
    assert!(
        names.len() >= 11,
        "expected the 11 shared vectors, found {names:?}"
    );

    let mut checked_lines = 0;
    for name in &names {
        let input = std::fs::read_to_string(dir.join(format!("{name}.jsonl")))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        for mode in ["static", "instance"] {
            let expected_path = dir.join(format!("{name}.{mode}.expected"));
            let expected = std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|err| panic!("{}: {err}", expected_path.display()));
            let expected = parse_lines(&format!("{name}.{mode}.expected"), &expected);
            let actual = parse_lines(
                &format!("phxsim on {name} ({mode})"),
                &run_phxsim(mode, &input),
            );
            assert_eq!(
                actual.len(),
                expected.len(),
                "{name} ({mode}): number of output lines"
            );
            for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
                assert!(
                    same_json(a, e),
                    "{name} ({mode}) output line {}:\n  phxsim:     {a}\n  phoenix.js: {e}",
                    i + 1
                );
                checked_lines += 1;
            }
        }
    }
    assert!(checked_lines > 80, "only {checked_lines} lines compared");
}

#[test]
fn comparison_distinguishes_key_order_and_ref_types() {
    // The checker must fail where phoenix.js would differ: `keys` order, "1" vs 1; and must not
    // fail where JavaScript cannot tell the difference: 1 vs 1.0, object member order.
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    assert!(!same_json(
        &parse(r#"{"keys":["2","10"]}"#),
        &parse(r#"{"keys":["10","2"]}"#)
    ));
    assert!(!same_json(
        &parse(r#"{"phx_ref":"1"}"#),
        &parse(r#"{"phx_ref":1}"#)
    ));
    assert!(!same_json(
        &parse(r#"{"a":1}"#),
        &parse(r#"{"a":1,"b":null}"#)
    ));
    assert!(same_json(
        &parse(r#"{"phx_ref":1}"#),
        &parse(r#"{"phx_ref":1.0}"#)
    ));
    assert!(same_json(
        &parse(r#"{"a":1,"b":2}"#),
        &parse(r#"{"b":2,"a":1}"#)
    ));
}
