//! Every case against an in-process phxsim server (the same `Server` that `phxsim serve`
//! runs), V1 and V2; then the same catalogue against servers with planted bugs, each of which
//! must fail the cases that check what it breaks.

mod common;

use common::*;
use phxsim_conform::cases::DEFAULT_TOPIC_PREFIX;
use phxsim_conform::{CaseResult, Verdict, catalogue, run_all};
use phxsim_runtime::server::ServerMutation;
use phxsim_wire::Serializer;

async fn run(vsn: Serializer, mutation: Option<ServerMutation>, seed: u64) -> Vec<CaseResult> {
    let url = serve(mutation, seed).await;
    let scripts = catalogue(vsn, DEFAULT_TOPIC_PREFIX).expect("catalogue builds");
    run_all(&run_config(url), &scripts, |_| {})
        .await
        .expect("valid URL")
}

fn summary(results: &[CaseResult]) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_v2() {
    let results = run(Serializer::V2, None, 7).await;
    println!("{}", summary(&results));
    for r in &results {
        println!(
            "=== {}\n{}",
            r.script.case.name(),
            r.comparison.actual.render()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_mutations() {
    let mut handles = Vec::new();
    for vsn in [Serializer::V1, Serializer::V2] {
        handles.push(tokio::spawn(
            async move { (vsn, None, run(vsn, None, 3).await) },
        ));
        for m in ServerMutation::ALL {
            handles.push(tokio::spawn(async move {
                (vsn, Some(m), run(vsn, Some(m), 3).await)
            }));
        }
    }
    for h in handles {
        let (vsn, m, results) = h.await.unwrap();
        let failed: Vec<String> = results
            .iter()
            .filter(|r| r.comparison.verdict.failed())
            .map(|r| r.script.case.name())
            .collect();
        println!("{vsn:?} {m:?}: {failed:?}");
    }
}
