//! `phxsim bench-tracker` keeps the output contract of perf-workload.md: one `RUST <op> <n>
//! <median> min=<min> max=<max>` line per op and n, every other line a `#` comment.

use std::process::Command;

const OPS: [&str; 19] = [
    "join_burst_per_op",
    "join_flush1000_per_op",
    "flush_after_burst",
    "transfer_extract",
    "transfer_merge",
    "transfer_frame_encode",
    "transfer_frame_decode",
    "transfer_frame_bytes",
    "k1000_local_changes",
    "hb_k1000_frame_encode",
    "hb_k1000_frame_decode",
    "hb_k1000_frame_bytes",
    "hb_k1000_merge",
    "sender_flush_after_k",
    "hb_1update_merge",
    "get_by_topic",
    "online_list",
    "mem_state_bytes",
    "mem_pending_delta_bytes",
];

fn three_decimals(s: &str) -> bool {
    s.split_once('.').is_some_and(|(i, f)| {
        !i.is_empty() && f.len() == 3 && s.replace('.', "").bytes().all(|b| b.is_ascii_digit())
    })
}

#[test]
fn prints_every_op_in_the_contract_shape() {
    let out = Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .args(["bench-tracker", "--n", "1000,2000", "--runs", "1"])
        .output()
        .expect("phxsim runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let mut seen = Vec::new();
    for line in stdout.lines() {
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 6, "{line}");
        assert_eq!(f[0], "RUST", "{line}");
        assert!(three_decimals(f[3]), "{line}");
        let min = f[4].strip_prefix("min=").expect("min=");
        let max = f[5].strip_prefix("max=").expect("max=");
        assert!(three_decimals(min) && three_decimals(max), "{line}");
        let (lo, mid, hi): (f64, f64, f64) = (
            min.parse().unwrap(),
            f[3].parse().unwrap(),
            max.parse().unwrap(),
        );
        assert!(lo <= mid && mid <= hi, "{line}");
        seen.push((f[1].to_owned(), f[2].to_owned()));
    }
    let want: Vec<(String, String)> = ["1000", "2000"]
        .iter()
        .flat_map(|n| OPS.iter().map(move |op| (op.to_string(), n.to_string())))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn refuses_bad_arguments() {
    for args in [["--n", "10"], ["--n", "x"], ["--runs", "0"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_phxsim"))
            .arg("bench-tracker")
            .args(args)
            .output()
            .expect("phxsim runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: bad input is exit 2");
        assert!(out.stdout.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("RUST"));
    }
}
