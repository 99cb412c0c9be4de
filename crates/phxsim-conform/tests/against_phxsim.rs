//! Every case against an in-process phxsim server (the `Server` that `phxsim serve` runs) on
//! an ephemeral loopback port, V1 and V2, with the transcripts snapshotted under
//! `snapshots/conform/phxsim/`; then the catalogue against servers with each planted bug
//! (`ServerMutation`), each of which must fail the cases that check what it breaks.

mod common;

use common::*;
use phxsim_conform::authored::PhoenixVersion;
use phxsim_conform::cases::DEFAULT_TOPIC_PREFIX;
use phxsim_conform::cases::catalogue_for;
use phxsim_conform::{CaseResult, RunConfig, Verdict, catalogue, compare, run_all, run_case};
use phxsim_runtime::server::{PhoenixRules, ServerMutation};
use phxsim_wire::Serializer;
use std::collections::BTreeSet;
use std::time::Duration;

/// Cases phxsim fails today because of a server bug, with the bug. The test requires them to
/// fail, so that fixing the bug makes it say to remove the entry (and review the snapshot).
const KNOWN_SERVER_BUGS: &[(u8, &str)] = &[];

/// Cases whose close code phxsim chooses differently from Bandit (1007 for a malformed frame,
/// 1001 for the idle timeout, the client's own code echoed in the close reply): non-strict by
/// design.
const NON_STRICT: &[u8] = &[19, 20, 24, 48, 61, 75, 76];

/// The cases that describe Phoenix 1.7.21 only (numeric refs, a stale push answered, no
/// channel cap): a server following 1.8 must fail each of them.
const ONLY_1_7_21: &[u8] = &[41, 43, 78];

async fn run(
    vsn: Serializer,
    mutation: Option<ServerMutation>,
    seed: u64,
    cfg: impl FnOnce(String) -> RunConfig,
) -> Vec<CaseResult> {
    let url = serve(mutation, seed).await;
    let scripts = catalogue(vsn, DEFAULT_TOPIC_PREFIX).expect("catalogue builds");
    run_all(&cfg(url), &scripts, |_| {})
        .await
        .expect("valid URL")
}

/// The idle timeout of the servers that run every case at once.
const CONCURRENT_IDLE: Duration = Duration::from_secs(8);

/// Like [`run`], but every case on its own task: cases use their own topics, so they are
/// independent, and a planted bug then costs one timeout in total instead of one per case.
async fn run_concurrently(
    vsn: Serializer,
    mutation: ServerMutation,
    cfg: RunConfig,
) -> Vec<CaseResult> {
    // Some eighty cases at once keep a loaded machine busy for seconds: a socket that waits
    // for its next exchange must not idle out, so these servers wait longer than [`IDLE`].
    let url = serve_with(PhoenixRules::V1_7_21, Some(mutation), 11, CONCURRENT_IDLE).await;
    let cfg = RunConfig {
        url,
        idle_timeout: CONCURRENT_IDLE,
        ..cfg
    };
    let scripts = catalogue(vsn, DEFAULT_TOPIC_PREFIX).expect("catalogue builds");
    let tasks: Vec<_> = scripts
        .into_iter()
        .map(|script| {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let run = run_case(&cfg, &script).await.expect("valid URL");
                CaseResult {
                    comparison: compare(&script, &run.transcript),
                    script,
                    elapsed: run.elapsed,
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("case task"));
    }
    out
}

fn vtag(vsn: Serializer) -> &'static str {
    match vsn {
        Serializer::V1 => "v1",
        Serializer::V2 => "v2",
    }
}

fn failed_ids(results: &[CaseResult]) -> BTreeSet<u8> {
    results
        .iter()
        .filter(|r| r.comparison.verdict.failed())
        .map(|r| r.script.case.id)
        .collect()
}

fn describe(results: &[CaseResult]) -> String {
    results
        .iter()
        .map(|r| {
            let extra = match &r.comparison.verdict {
                Verdict::Fail(d) => format!(": {}", d.describe()),
                Verdict::NonStrict { deviations, .. } => format!(": {}", deviations.join("; ")),
                Verdict::Pass => String::new(),
            };
            format!(
                "{} {}{extra}",
                r.script.case.name(),
                r.comparison.verdict.label()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn every_case_conforms(vsn: Serializer) {
    let results = run(vsn, None, 7, run_config).await;
    let all = describe(&results);
    for r in &results {
        let id = r.script.case.id;
        let want = if KNOWN_SERVER_BUGS.iter().any(|(k, _)| *k == id) {
            "fail"
        } else if NON_STRICT.contains(&id) {
            "non-strict"
        } else {
            "pass"
        };
        assert_eq!(
            r.comparison.verdict.label(),
            want,
            "{vsn:?} {}: if a known server bug was fixed, remove it from KNOWN_SERVER_BUGS\n{all}",
            r.script.case.name()
        );
    }
    let settings = insta_settings("phxsim");
    for r in &results {
        let name = format!("{}-{}", vtag(vsn), r.script.case.name());
        // The aligned transcript: phxsim, like Phoenix, sends a joiner's own diff and its
        // state in either order, so the order notes vary from run to run and are left out.
        let text = r.comparison.actual_canonical.render();
        settings.bind(|| insta::assert_snapshot!(name, text));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_conforms_v1() {
    every_case_conforms(Serializer::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_conforms_v2() {
    every_case_conforms(Serializer::V2).await;
}

/// `phxsim serve --phoenix 1.8` against the catalogue of 1.8 (the 1.7.21-only cases left
/// out): everything conforms; and against the 1.7.21 catalogue, exactly the 1.7.21-only cases
/// fail, so each of them checks the version difference it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_1_8_rules_conform_to_the_1_8_catalogue_only() {
    for vsn in [Serializer::V1, Serializer::V2] {
        let url = serve_as(PhoenixRules::V1_8, None, 9).await;
        let cfg = run_config(url);
        let scripts = catalogue_for(vsn, PhoenixVersion::V1_8, DEFAULT_TOPIC_PREFIX).unwrap();
        assert!(scripts.iter().all(|s| !ONLY_1_7_21.contains(&s.case.id)));
        let results = run_all(&cfg, &scripts, |_| {}).await.unwrap();
        assert!(
            failed_ids(&results).is_empty(),
            "{vsn:?}\n{}",
            describe(&results)
        );
        let old: Vec<_> = catalogue(vsn, DEFAULT_TOPIC_PREFIX)
            .unwrap()
            .into_iter()
            .filter(|s| ONLY_1_7_21.contains(&s.case.id))
            .collect();
        let quick = RunConfig {
            timeout: Duration::from_secs(1),
            ..cfg
        };
        let results = run_all(&quick, &old, |_| {}).await.unwrap();
        // V1 frames carry no join_ref, so a stale one (case 43) cannot be told apart there.
        let want: BTreeSet<u8> = ONLY_1_7_21
            .iter()
            .copied()
            .filter(|id| vsn == Serializer::V2 || *id != 43)
            .collect();
        assert_eq!(
            failed_ids(&results),
            want,
            "{vsn:?}\n{}",
            describe(&results)
        );
    }
}

/// The cases each planted bug must fail. (Others fail too where a prelude goes through the
/// broken behaviour; that is expected and not pinned.)
fn must_fail(m: ServerMutation, vsn: Serializer) -> &'static [u8] {
    match (m, vsn) {
        (ServerMutation::DropPhxRefPrev, _) => &[3, 8, 12],
        (ServerMutation::HeartbeatReplyWrongTopic, _) => &[4, 7],
        (ServerMutation::NoPresenceState, _) => &[1, 2],
        // V1 frames carry no join_ref at all: only the V2 socket of the mixed case shows it.
        (ServerMutation::StateWithWrongJoinRef, Serializer::V1) => &[46],
        (ServerMutation::StateWithWrongJoinRef, Serializer::V2) => &[1, 2, 15],
        (ServerMutation::KeepPresencesOnDisconnect, _) => &[16, 19, 20, 24, 25],
        (ServerMutation::DropLeaves, _) => &[3, 14],
        (ServerMutation::NoPhxCloseOnLeave, _) => &[14],
        (ServerMutation::LeaveWrongRef, _) => &[3, 14],
        // only a connection lost in the middle of a join shows it (the simulator's
        // `drop_mid_join`); a conformance client always reads the join through
        (ServerMutation::TrackBeforeBookkeeping, _) => &[],
    }
}

/// Runs each mutation on its own server, V1 and V2 at once, every case concurrently. Where a bug shows on the wire the
/// per-exchange timeout is short (the servers are in-process on loopback, and a late frame only
/// adds failures, which this test does not pin); where it cannot show, the usual timeout, since
/// that run must match a correct server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_planted_server_bug_fails_the_cases_that_check_it() {
    let mut mutated = Vec::new();
    for m in ServerMutation::ALL {
        let mut pair = Vec::new();
        for vsn in [Serializer::V1, Serializer::V2] {
            let visible = !must_fail(m, vsn).is_empty();
            let base = run_config(String::new());
            let cfg = RunConfig {
                timeout: if visible {
                    Duration::from_secs(2)
                } else {
                    base.timeout
                },
                ..base
            };
            pair.push(tokio::spawn(async move {
                (vsn, m, run_concurrently(vsn, m, cfg).await)
            }));
        }
        for run in pair {
            mutated.push(run.await.expect("run task"));
        }
    }
    let known: BTreeSet<u8> = KNOWN_SERVER_BUGS.iter().map(|(id, _)| *id).collect();
    for (vsn, m, results) in mutated {
        let failed = failed_ids(&results);
        let want: BTreeSet<u8> = must_fail(m, vsn).iter().copied().collect();
        assert!(
            want.is_subset(&failed),
            "{vsn:?} {m}: cases {:?} should fail\n{}",
            want.difference(&failed).collect::<Vec<_>>(),
            describe(&results)
        );
        if want.is_empty() {
            assert_eq!(
                failed,
                known,
                "{vsn:?} {m}: invisible on this wire, so only the known server bugs may fail\n{}",
                describe(&results)
            );
        }
        // The first listed case fails in the step it tests, not in its prelude.
        if let Some(first) = want.first() {
            let r = results
                .iter()
                .find(|r| r.script.case.id == *first)
                .expect("case ran");
            let Verdict::Fail(d) = &r.comparison.verdict else {
                unreachable!("checked above");
            };
            assert!(!d.prelude, "{vsn:?} {m}: {}", d.describe());
        }
    }
}
