//! Shared output of the simulation commands (`run`, `replay`, `explore`): knob lines, the
//! result table, JSON and JUnit reports, and exit codes.

use anyhow::Context as _;
use phxsim_conform::junit::{self, Failure, Suite, TestCase};
use phxsim_sim::harness::{RunReport, Verdict};
use serde_json::json;
use std::path::Path;

/// A safety property or an expectation failed.
pub const EXIT_SAFETY: u8 = 1;
/// Bad input: unreadable or invalid scenario files, bad flags.
pub const EXIT_BAD_INPUT: u8 = 2;
/// The cluster did not converge within its bound.
pub const EXIT_NO_CONVERGENCE: u8 = 3;
/// The simulator itself failed.
pub const EXIT_INTERNAL: u8 = 70;

pub fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Pass => 0,
        Verdict::Safety => EXIT_SAFETY,
        Verdict::NoConvergence => EXIT_NO_CONVERGENCE,
        Verdict::Internal => EXIT_INTERNAL,
    }
}

/// The worst of several verdicts (internal > safety > no convergence > pass).
pub fn worst(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    verdicts.into_iter().max().unwrap_or(Verdict::Pass)
}

pub fn knob_line(report: &RunReport) -> String {
    let parts: Vec<String> = report
        .knobs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.join(" ")
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Safety => "FAIL safety",
        Verdict::NoConvergence => "FAIL no convergence",
        Verdict::Internal => "FAIL internal",
    }
}

/// One scenario's report as JSON.
pub fn to_json(path: &str, r: &RunReport) -> serde_json::Value {
    json!({
        "scenario": path,
        "title": r.title,
        "seed": r.seed,
        "verdict": r.verdict,
        "converged_at_ms": r.converged_at_ms,
        "simulated_ms": r.simulated_ms,
        "node_messages": r.node_messages,
        "knobs": r.knobs.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "findings": r.findings,
        "failures": r.failures,
        "replay": replay_command(path, r),
    })
}

/// The command that replays `r`'s run of the scenario at `path`: its seed, and how browsers
/// read when that was not the default (the `browser_reads` knob), since a seed replays the
/// same run only with the same choice.
pub fn replay_command(path: &str, r: &RunReport) -> String {
    let seed = r.seed;
    let reads = r
        .knobs
        .iter()
        .find(|(k, _)| k == "browser_reads")
        .map(|(_, v)| format!(" --browser-reads {v}"))
        .unwrap_or_default();
    format!("phxsim replay {path} --seed {seed}{reads}")
}

/// A JUnit XML document with one test case per scenario run.
pub fn to_junit(suite: &str, runs: &[(String, RunReport)]) -> String {
    let cases: Vec<JunitCase<'_>> = runs
        .iter()
        .map(|(path, r)| JunitCase {
            name: format!("{path} (seed {})", r.seed),
            replay: replay_command(path, r),
            report: r,
        })
        .collect();
    junit_of(suite, &cases)
}

/// One test case of a JUnit report: a run, its name, and the command that replays it.
pub struct JunitCase<'a> {
    pub name: String,
    pub replay: String,
    pub report: &'a RunReport,
}

/// A JUnit XML document of these cases (one suite named `suite`, written by the one JUnit
/// writer); a failing run carries its findings and its replay.
pub fn junit_of(suite: &str, cases: &[JunitCase<'_>]) -> String {
    let cases = cases
        .iter()
        .map(|c| {
            let r = c.report;
            let failure = (r.verdict != Verdict::Pass).then(|| {
                let body: Vec<String> = r.failures.iter().map(|f| f.to_string()).collect();
                Failure {
                    message: verdict_name(r.verdict).to_owned(),
                    kind: None,
                    text: format!("{}\nreplay: {}", body.join("\n"), c.replay),
                }
            });
            TestCase {
                classname: suite.to_owned(),
                name: c.name.clone(),
                time_ms: r.simulated_ms,
                failure,
                ..TestCase::default()
            }
        })
        .collect();
    junit::render_suite(&Suite {
        name: suite.to_owned(),
        properties: Vec::new(),
        cases,
    })
}

/// Writes a report file; its folder must exist (see `output`, which checks before the run).
pub fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn write_transcript(path: &Path, r: &RunReport) -> anyhow::Result<()> {
    let mut text = r.transcript.join("\n");
    text.push('\n');
    write_file(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phxsim_sim::checkers::{Finding, FindingKind};

    fn report(seed: u64, verdict: Verdict, failures: Vec<Finding>) -> RunReport {
        RunReport {
            title: "t".into(),
            seed,
            knobs: Vec::new(),
            findings: failures.clone(),
            failures,
            converged_at_ms: None,
            verdict,
            transcript: Vec::new(),
            simulated_ms: 12_345,
            node_messages: 0,
            memory_connections: 0,
            absorbed_segments: 0,
            node_trace: Vec::new(),
            final_lists: Default::default(),
        }
    }

    #[test]
    fn a_run_report_is_one_suite_and_a_failure_carries_its_findings_escaped_and_its_replay() {
        let ghost = Finding {
            at_ms: 7,
            kind: FindingKind::Ghost,
            subject: "a".into(),
            detail: "<bob>\u{7}".into(),
        };
        let runs = [
            ("s.toml".to_string(), report(1, Verdict::Pass, Vec::new())),
            (
                "s.toml".to_string(),
                report(2, Verdict::Safety, vec![ghost]),
            ),
        ];
        assert_eq!(
            to_junit("phxsim run", &runs),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <testsuite name=\"phxsim run\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"24.690\">\n  \
             <testcase classname=\"phxsim run\" name=\"s.toml (seed 1)\" time=\"12.345\"/>\n  \
             <testcase classname=\"phxsim run\" name=\"s.toml (seed 2)\" time=\"12.345\">\n    \
             <failure message=\"FAIL safety\">[7 ms] ghost at a: &lt;bob&gt;\\u{7}\n\
             replay: phxsim replay s.toml --seed 2</failure>\n  \
             </testcase>\n\
             </testsuite>\n"
        );
    }
}
