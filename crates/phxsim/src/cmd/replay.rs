//! `phxsim replay FILE --seed N [--transcript FILE] [--population-frames] [--browser-reads HOW]`: one scenario, one
//! seed, every finding.

use super::sim_report::{self, EXIT_BAD_INPUT};
use super::{outln, output};
use phxsim_sim::Scenario;
use phxsim_sim::harness::{self, BrowserReads, RunOptions};
use phxsim_sim::planted::PlantedBug;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    pub file: PathBuf,
    #[arg(long)]
    pub seed: u64,
    /// Write the transcript (JSON lines) here.
    #[arg(long)]
    pub transcript: Option<PathBuf>,
    /// Plant a known bug (`phxsim mutations` lists them with their catchers).
    #[arg(long, value_name = "NAME")]
    pub mutate: Option<PlantedBug>,
    /// Write a Chrome/Perfetto trace (JSON) of the run here: open it in ui.perfetto.dev.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Put every frame of every `[[population]]` client into the transcript and trace (by
    /// default only the replayed sample's frames and one summary line per population).
    #[arg(long)]
    pub population_frames: bool,
    /// How population browsers on in-memory links take broadcast diffs: `absorb` (default:
    /// a cached diff that arrives while a browser waits goes to its presence list without
    /// waking its task), `task` (its task reads every frame; the runs of phxsim before the
    /// absorber), or `absorb-and-wake` (absorbed and the task woken too: the same run as
    /// `task`). A seed replays the same run only with the same choice.
    #[arg(long, value_enum, default_value_t = BrowserReads::Absorb, value_name = "HOW")]
    pub browser_reads: BrowserReads,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let planted = match super::run::simulated_bug(args.mutate) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("phxsim: {e:#}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let scenario = match Scenario::load(&args.file) {
        Ok(s) => {
            for w in s.warnings() {
                eprintln!("phxsim: warning: {}: {w}", args.file.display());
            }
            s
        }
        Err(e) => {
            eprintln!("phxsim: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let opts = RunOptions {
        seed: args.seed,
        transcript: args.transcript.is_some() || args.trace.is_some(),
        planted,
        node_trace: false,
        population_frames: args.population_frames,
        browser_reads: args.browser_reads,
        ..RunOptions::default()
    };
    output::check_optional("--transcript", args.transcript.as_deref())?;
    output::check_optional("--trace", args.trace.as_deref())?;
    let knobs: Vec<String> = harness::knobs(&scenario, &opts)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    outln!("{}", knobs.join(" "))?;
    let report = harness::run(&scenario, &opts);
    outln!("{}", scenario.title)?;
    for f in &report.findings {
        let mark = if report.failures.contains(f) {
            "FAIL"
        } else {
            "ok  "
        };
        outln!("  {mark} {f}")?;
    }
    for f in report
        .failures
        .iter()
        .filter(|f| !report.findings.contains(f))
    {
        outln!("  FAIL {f}")?;
    }
    outln!(
        "converged: {}; node messages: {}; simulated: {} ms",
        report
            .converged_at_ms
            .map(|t| format!("at {t} ms"))
            .unwrap_or_else(|| "no".into()),
        report.node_messages,
        report.simulated_ms
    )?;
    outln!("result: {}", sim_report::verdict_name(report.verdict))?;
    if let Some(t) = &args.transcript {
        sim_report::write_transcript(t, &report)?;
    }
    if let Some(t) = &args.trace {
        let doc = phxsim_sim::trace::chrome_trace(report.transcript.iter().map(String::as_str));
        sim_report::write_file(t, &serde_json::to_string(&doc)?)?;
    }
    Ok(ExitCode::from(sim_report::exit_code(report.verdict)))
}
