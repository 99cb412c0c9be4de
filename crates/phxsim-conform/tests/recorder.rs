//! The recorder, against an in-process phxsim server standing in for Phoenix: what it writes
//! parses as a recording, holds the cases' steps, and the cases built from it pass against the
//! server it was recorded from (and fail against one with a planted bug).

mod common;

use common::*;
use phxsim_conform::authored::{CASES_TEXT, parse};
use phxsim_conform::cases::{CaseScript, all_cases, case_topic};
use phxsim_conform::recorder::record;
use phxsim_conform::recording::Recording;
use phxsim_conform::{RunConfig, Verdict, compare, run_case};
use phxsim_runtime::server::{PhoenixRules, ServerMutation};
use phxsim_wire::Serializer;
use std::time::Duration;

/// Two sockets of one user, an update storm and a binary ping: presences, refs, races U and
/// binary frames.
const CASES: [u8; 3] = [26, 31, 70];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_cases_replay_against_the_server_they_were_recorded_from() {
    // The recorder listens for a quiet period after every action, so a watcher stays silent
    // longer than the test servers' 1.5 s idle timeout: record from a patient server.
    let patient = |m, seed| serve_with(PhoenixRules::V1_7_21, m, seed, Duration::from_secs(60));
    let url = patient(None, 5).await;
    let authored: Vec<_> = parse(CASES_TEXT)
        .unwrap()
        .into_iter()
        .filter(|c| CASES.contains(&c.id))
        .collect();
    for vsn in [Serializer::V1, Serializer::V2] {
        // phxsim serves one endpoint; it stands in for /short too.
        let text = record(&url, &url, &authored, vsn).await.unwrap();
        let rec = Recording::parse("recorded in the test", &text).unwrap();
        assert_eq!(rec.vsn, vsn);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["seq"].is_u64() && v["t_ms"].is_f64(), "{line}");
        }
        let bugged = patient(Some(ServerMutation::DropPhxRefPrev), 6).await;
        for case in all_cases().unwrap() {
            if !CASES.contains(&case.id) || !case.applies_to(vsn) {
                continue;
            }
            let topic = case_topic("room:recorder-test", case, vsn);
            let script = CaseScript::build(case, &rec, &topic).unwrap();
            let cfg = RunConfig {
                idle_timeout: Duration::from_secs(60),
                ..run_config(url.clone())
            };
            let run = run_case(&cfg, &script).await.unwrap();
            let verdict = compare(&script, &run.transcript).verdict;
            assert_eq!(verdict, Verdict::Pass, "{vsn:?} {}", case.name());
            // The update storm checks phx_ref_prev: a server that drops it fails.
            if case.id == 31 {
                let cfg = RunConfig {
                    url: bugged.clone(),
                    timeout: Duration::from_secs(1),
                    ..cfg
                };
                let run = run_case(&cfg, &script).await.unwrap();
                let verdict = compare(&script, &run.transcript).verdict;
                assert!(verdict.failed(), "{vsn:?}: {verdict:?}");
            }
        }
    }
}
