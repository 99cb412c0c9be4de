//! The `phxsim tracker-ops` contract end to end through the built binary: one output line per
//! op line, error lines for bad input, the stream goes on, never a panic.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn run(input: &[u8]) -> (Vec<Value>, String, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .arg("tracker-ops")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn phxsim");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every output line is JSON"))
        .collect();
    (
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[test]
fn a_shared_vector_streams_through_the_binary() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../phxsim-tracker/tests/data/tracker");
    let input = std::fs::read(dir.join("e04_down_merge_up.jsonl")).unwrap();
    let expected: Vec<Value> =
        std::fs::read_to_string(dir.join("e04_down_merge_up.expected.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let (got, stderr, ok) = run(&input);
    assert!(ok, "{stderr}");
    assert_eq!(got, expected);
}

#[test]
fn hostile_input_gives_error_lines_and_the_stream_goes_on() {
    let input = concat!(
        "{\"op\":\"new\",\"at\":\"a\"}\n",
        "\n# comment\n",
        "\u{0}\u{1}garbage\n",
        "{\"op\":\"join\",\"at\":\"a\",\"pid\":\"p\",\"topic\":\"t\",\"key\":\"k\",\"meta\":{\"x\":1e400}}\n",
        "{\"op\":\"join\",\"at\":\"a\",\"pid\":\"p\",\"topic\":\"t\",\"key\":\"k\",\"meta\":{}}\n",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
        "{\"op\":\"flush\"}\n",
        "{\"op\":\"join\",\"at\":\"a\",\"pid\":\"p\",\"topic\":\"t\",\"key\":\"k2\",\"meta\":{}}\n",
    );
    let (got, stderr, ok) = run(input.as_bytes());
    assert!(ok, "{stderr}");
    let steps: Vec<(u64, bool)> = got
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v.get("error").is_some()))
        .collect();
    assert_eq!(
        steps,
        [
            (1, false),
            (2, true),
            (3, true),
            (4, false),
            (5, true),
            (6, true),
            (7, false)
        ]
    );
    assert_eq!(
        got[6]["replicas"]["a"]["online"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn invalid_utf8_is_an_error_not_a_crash() {
    let (got, stderr, ok) =
        run(b"{\"op\":\"new\",\"at\":\"a\"}\n\xff\xfe\n{\"op\":\"new\",\"at\":\"b\"}\n");
    assert!(ok, "{stderr}");
    assert_eq!(got.len(), 3);
    assert!(got[1].get("error").is_some());
    assert_eq!(got[2]["step"], 3);
}
