//! `phxsim run [PATH...] [--seed N] [--transcript FILE]`: runs scenario files (default: the
//! whole `scenarios/` catalogue) on the deterministic simulator and prints a table; the exit
//! code says the worst outcome (see `sim_report`).

use super::sim_report::{self, EXIT_BAD_INPUT};
use super::{bad_input, outln, output};
use phxsim_sim::Scenario;
use phxsim_sim::harness::{self, BrowserReads, RunOptions, RunReport};
use phxsim_sim::planted::PlantedBug;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Scenario files; default: every `*.toml` of the `scenarios/` catalogue.
    pub paths: Vec<PathBuf>,
    /// Seed of every run (default: each scenario's own `seed`, else 1).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the transcript (JSON lines) here; with several scenarios, one file per scenario
    /// with the scenario's name appended.
    #[arg(long)]
    pub transcript: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Plant a known bug in every node, server or client (`phxsim mutations` lists them
    /// with their catchers).
    #[arg(long, value_name = "NAME")]
    pub mutate: Option<PlantedBug>,
    /// The catalogue folder used when no path is given.
    #[arg(long, default_value = "scenarios")]
    pub catalogue: PathBuf,
    /// How population browsers on in-memory links take broadcast diffs: `absorb` (default:
    /// a cached diff that arrives while a browser waits goes to its presence list without
    /// waking its task), `task` (its task reads every frame; the runs of phxsim before the
    /// absorber), or `absorb-and-wake` (absorbed and the task woken too: the same run as
    /// `task`). A seed replays the same run only with the same choice.
    #[arg(long, value_enum, default_value_t = BrowserReads::Absorb, value_name = "HOW")]
    pub browser_reads: BrowserReads,
    /// Print every scenario's settings (seed, tracker and network knobs) to stderr before it
    /// runs, e.g. to see which scenario a stuck run is in: the global `-v`/`--verbose`.
    #[arg(skip)]
    pub verbose: bool,
}

/// The planted bug of a simulated run (run, replay, explore): a bug that only the
/// conformance catalogue can catch is refused, since no simulated run could show it.
pub fn simulated_bug(bug: Option<PlantedBug>) -> anyhow::Result<Option<PlantedBug>> {
    if let Some(b) = bug
        && b.conformance_only()
    {
        anyhow::bail!(
            "--mutate {b}: only the conformance catalogue catches this {} bug (no phoenix.js \
             client behaviour shows it, so no simulated run can); try \
             `phxsim serve --mutate {b}` with `phxsim conform`",
            serde_json::to_value(b.layer())?
                .as_str()
                .unwrap_or_default()
        );
    }
    Ok(bug)
}

/// The `*.toml` files of a folder, sorted. A folder that cannot be read, or holds no scenario,
/// is bad input: a run that tests nothing must not pass.
pub fn catalogue(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return bad_input(format!(
                "cannot read the scenario folder {}: {e} (run from the repository root, or pass --catalogue DIR or scenario files)",
                dir.display()
            ));
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    if paths.is_empty() {
        return bad_input(format!(
            "no scenario files (*.toml) in {}: nothing to run",
            dir.display()
        ));
    }
    paths.sort();
    Ok(paths)
}

/// The transcript file of scenario `name`: `t` itself for a single scenario, else `t` with
/// the scenario's name appended.
fn transcript_file(t: &Path, name: &str, several: bool) -> PathBuf {
    if several {
        t.with_file_name(format!(
            "{}.{name}.jsonl",
            t.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ))
    } else {
        t.to_path_buf()
    }
}

fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let planted = match simulated_bug(args.mutate) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("phxsim: {e:#}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let paths = if args.paths.is_empty() {
        catalogue(&args.catalogue)?
    } else {
        // a folder given as a path runs its catalogue
        let mut paths = Vec::new();
        for p in &args.paths {
            if p.is_dir() {
                paths.extend(catalogue(p)?);
            } else {
                paths.push(p.clone());
            }
        }
        paths
    };
    let base = RunOptions {
        transcript: args.transcript.is_some(),
        planted,
        browser_reads: args.browser_reads,
        ..RunOptions::default()
    };
    // validate every file before running anything: bad input is its own exit code
    let mut scenarios = Vec::new();
    for p in &paths {
        match Scenario::load(p) {
            Ok(s) => {
                for w in s.warnings() {
                    eprintln!("phxsim: warning: {}: {w}", p.display());
                }
                scenarios.push((p.display().to_string(), s))
            }
            Err(e) => {
                eprintln!("phxsim: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        }
    }
    // every output file is checked before the first run
    let several = scenarios.len() > 1;
    if let Some(t) = &args.transcript {
        for (path, _) in &scenarios {
            output::check_file("--transcript", &transcript_file(t, &stem(path), several))?;
        }
    }
    output::check_optional("--json", args.json.as_deref())?;
    output::check_optional("--junit", args.junit.as_deref())?;
    let mut runs: Vec<(String, RunReport)> = Vec::new();
    outln!(
        "{:<62} {:>6} {:>10}  result",
        "scenario",
        "seed",
        "converged"
    )?;
    for (path, s) in &scenarios {
        let seed = args.seed.or(s.seed).unwrap_or(1);
        let opts = RunOptions {
            seed,
            ..base.clone()
        };
        if args.verbose {
            // before the run, so that even a run that never returns can be replayed
            let knob_line: Vec<String> = harness::knobs(s, &opts)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            eprintln!("# {path}: {}", knob_line.join(" "));
        }
        let report = harness::run(s, &opts);
        let name = stem(path);
        outln!(
            "{:<62} {:>6} {:>10}  {}",
            truncate(&name, 62),
            seed,
            report
                .converged_at_ms
                .map(|t| format!("{t} ms"))
                .unwrap_or_else(|| "-".into()),
            sim_report::verdict_name(report.verdict)
        )?;
        for f in &report.failures {
            outln!("    {f}")?;
        }
        if report.verdict != harness::Verdict::Pass {
            outln!("    replay: {}", sim_report::replay_command(path, &report))?;
        }
        if let Some(t) = &args.transcript {
            sim_report::write_transcript(&transcript_file(t, &name, several), &report)?;
        }
        runs.push((path.clone(), report));
    }
    let failed = runs
        .iter()
        .filter(|(_, r)| r.verdict != harness::Verdict::Pass)
        .count();
    outln!(
        "scenarios: {} passed, {} failed",
        runs.len() - failed,
        failed
    )?;
    if let Some(j) = &args.json {
        let doc: Vec<_> = runs
            .iter()
            .map(|(p, r)| sim_report::to_json(p, r))
            .collect();
        sim_report::write_file(j, &serde_json::to_string_pretty(&doc)?)?;
    }
    if let Some(j) = &args.junit {
        sim_report::write_file(j, &sim_report::to_junit("phxsim run", &runs))?;
    }
    Ok(ExitCode::from(sim_report::exit_code(sim_report::worst(
        runs.iter().map(|(_, r)| r.verdict),
    ))))
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
