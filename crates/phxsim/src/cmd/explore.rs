//! `phxsim explore --seeds A..B [--shard K/N] [--faults ...]`: swarm testing. Every seed draws
//! a scenario; a failure is shrunk to a minimal fault schedule, written as a scenario file, and
//! printed with the command that replays it.

use super::sim_report::{self, EXIT_BAD_INPUT};
use super::{outln, output};
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use phxsim_sim::explore::{self, FaultKind, SwarmConfig};
use phxsim_sim::harness::{self, BrowserReads, RunOptions, Verdict};
use phxsim_sim::planted::PlantedBug;
use phxsim_sim::scenario::ProfileName;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Seeds to try, `A..B` (B excluded).
    #[arg(long)]
    pub seeds: String,
    /// Run only this shard of the seeds, `K/N` (1-based): seeds with `seed % N == K - 1`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Fault kinds to draw, comma-separated, named as their timeline actions (default: all
    /// of partition, cut, cut_oneway, hold, crash, permdown, disconnect; `none` for none).
    /// `loss` (0.5–2 % segment loss on node links, retransmitted) and `client_loss` (the same
    /// on browser links) are drawn only when named: `--faults loss,partition,cut,...`, and
    /// so is `rolling_restart` (a rolling deploy: every node no other fault stops restarts in
    /// turn as a new replica) and `drop_mid_join` (a client's connection drops in the middle
    /// of its join; `--mutate` of a bug only it shows adds it). The older names `oneway` and
    /// `client-loss` are accepted.
    #[arg(long)]
    pub faults: Option<String>,
    /// `faithful` (default), `corrected` or `eager`.
    #[arg(long, value_enum, default_value_t = ProfileName::Faithful)]
    pub profile: ProfileName,
    /// Plant a known bug (`phxsim mutations` lists them with their catchers).
    #[arg(long, value_name = "NAME")]
    pub mutate: Option<PlantedBug>,
    /// Folder for the shrunk failing scenarios (`seed-N.toml`), relative to the current
    /// folder; created if missing.
    #[arg(long, default_value = "target/explore")]
    pub out: PathBuf,
    /// Go on after the first failure.
    #[arg(long)]
    pub keep_going: bool,
    /// Runs allowed for shrinking one failure.
    #[arg(long, default_value_t = 40)]
    pub shrink_budget: usize,
    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
    /// Also draw a `[[population]]` of 1 to N clients per seed (swarm testing of scale);
    /// at most 100, so that the explorer stays at 300 or more seeds a minute.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=100))]
    pub population: u16,
    /// Write a JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// How population browsers on in-memory links take broadcast diffs: `absorb` (default:
    /// a cached diff that arrives while a browser waits goes to its presence list without
    /// waking its task), `task` (its task reads every frame; the runs of phxsim before the
    /// absorber), or `absorb-and-wake` (absorbed and the task woken too: the same run as
    /// `task`). A seed replays the same run only with the same choice.
    #[arg(long, value_enum, default_value_t = BrowserReads::Absorb, value_name = "HOW")]
    pub browser_reads: BrowserReads,
    /// Write a JUnit XML report here: a test case per seed; a failing one carries the shrunk
    /// run's findings and the command that replays it.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s.split_once("..").context("--seeds takes A..B")?;
    let (a, b): (u64, u64) = (
        a.trim().parse().context("seed range start")?,
        b.trim().parse().context("seed range end")?,
    );
    anyhow::ensure!(a < b, "--seeds {a}..{b} is empty");
    Ok((a, b))
}

fn parse_shard(s: &str) -> anyhow::Result<(u64, u64)> {
    let (k, n) = s.split_once('/').context("--shard takes K/N")?;
    let (k, n): (u64, u64) = (k.parse().context("shard K")?, n.parse().context("shard N")?);
    anyhow::ensure!(
        n >= 1 && (1..=n).contains(&k),
        "--shard {k}/{n}: need 1 ≤ K ≤ N"
    );
    Ok((k, n))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let parsed = (|| -> anyhow::Result<_> {
        let (a, b) = parse_range(&args.seeds)?;
        let (k, n) = args
            .shard
            .as_deref()
            .map(parse_shard)
            .transpose()?
            .unwrap_or((1, 1));
        let mut faults: BTreeSet<FaultKind> = match args.faults.as_deref() {
            None => FaultKind::defaults(),
            Some("none") => BTreeSet::new(),
            Some(list) => list
                .split(',')
                .map(|s| s.trim().parse::<FaultKind>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?,
        };
        let base = RunOptions {
            planted: super::run::simulated_bug(args.mutate)?,
            browser_reads: args.browser_reads,
            ..RunOptions::default()
        };
        // a bug only a fault kind shows brings it along (`drop_mid_join` for a join's ghost)
        if let Some(bug) = base.planted {
            faults.extend(bug.explore_faults());
        }
        Ok((a, b, k, n, faults, base))
    })();
    let (a, b, k, n, faults, base) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("phxsim: {e:#}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    // the output places first: a shrunk failure must not be lost to a bad path at the end
    output::prepare_dir("--out", &args.out)?;
    output::check_optional("--json", args.json.as_deref())?;
    output::check_optional("--junit", args.junit.as_deref())?;
    let cfg = SwarmConfig {
        faults,
        profile: args.profile,
        population_max: usize::from(args.population),
    };
    let seeds: Vec<u64> = (a..b).filter(|s| s % n == k - 1).collect();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(seeds.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} seeds {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut worst = Verdict::Pass;
    let mut failures = Vec::new();
    let mut results = Vec::new();
    // (seed, the run to report, its replay command when it failed)
    let mut cases: Vec<(u64, harness::RunReport, String)> = Vec::new();
    for seed in seeds {
        let scenario = explore::generate(seed, &cfg);
        let opts = RunOptions {
            seed,
            ..base.clone()
        };
        let report = harness::run(&scenario, &opts);
        bar.inc(1);
        results.push(serde_json::json!({"seed": seed, "verdict": report.verdict, "converged_at_ms": report.converged_at_ms}));
        if report.verdict == Verdict::Pass {
            if args.junit.is_some() {
                cases.push((seed, report, String::new()));
            }
            continue;
        }
        bar.suspend(|| {
            eprintln!(
                "seed {seed}: {} ({})",
                sim_report::verdict_name(report.verdict),
                sim_report::knob_line(&report)
            );
            for f in &report.failures {
                eprintln!("    {f}");
            }
        });
        let (small, small_report) =
            explore::shrink(&scenario, &opts, report.verdict, args.shrink_budget);
        let file = args.out.join(format!("seed-{seed}.toml"));
        sim_report::write_file(
            &file,
            &small
                .to_toml()
                .context("writing the shrunk scenario as TOML")?,
        )?;
        let mutate = args
            .mutate
            .as_ref()
            .map(|m| format!(" --mutate {m}"))
            .unwrap_or_default();
        let replay = format!(
            "{}{mutate}",
            sim_report::replay_command(&file.display().to_string(), &small_report)
        );
        bar.suspend(|| {
            let size = |s: &phxsim_sim::Scenario| {
                format!(
                    "{} nodes, {} clients, {} steps",
                    s.nodes.len(),
                    s.clients.len(),
                    s.timeline.len()
                )
            };
            eprintln!(
                "    shrunk from {} to {}: {}",
                size(&scenario),
                size(&small),
                sim_report::verdict_name(small_report.verdict)
            );
            eprintln!("    replay: {replay}");
        });
        // A run in this process follows others; tokio task ids are process-global and a
        // crash tears a host down in task-id order. Prove the failure with a fresh process,
        // exactly as the printed command will run it.
        let fresh = std::env::current_exe().ok().and_then(|exe| {
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["replay"])
                .arg(&file)
                .args(["--seed", &seed.to_string()]);
            if let Some(m) = &args.mutate {
                cmd.args(["--mutate", m.name()]);
            }
            if args.browser_reads != BrowserReads::default() {
                cmd.args(["--browser-reads", args.browser_reads.name()]);
            }
            cmd.output().ok()
        });
        let expected = i32::from(sim_report::exit_code(small_report.verdict));
        bar.suspend(|| match fresh.and_then(|o| o.status.code()) {
            Some(code) if code == expected => eprintln!("    reproduced by a fresh replay"),
            Some(code) => eprintln!(
                "    WARNING: a fresh replay exits {code}, not {expected}: the failure depends on the runs before it in this process"
            ),
            None => eprintln!("    could not run a fresh replay"),
        });
        worst = worst.max(report.verdict);
        failures.push(seed);
        if args.junit.is_some() {
            // the shrunk run is what the replay command reproduces
            cases.push((seed, small_report, replay));
        }
        if !args.keep_going {
            break;
        }
    }
    bar.finish_and_clear();
    outln!(
        "explored {} seeds: {} passed, {} failed",
        results.len(),
        results.len() - failures.len(),
        failures.len()
    )?;
    if let Some(j) = &args.json {
        sim_report::write_file(j, &serde_json::to_string_pretty(&results)?)?;
    }
    if let Some(j) = &args.junit {
        let cases: Vec<sim_report::JunitCase<'_>> = cases
            .iter()
            .map(|(seed, report, replay)| sim_report::JunitCase {
                name: format!("seed {seed}"),
                replay: replay.clone(),
                report,
            })
            .collect();
        sim_report::write_file(j, &sim_report::junit_of("phxsim explore", &cases))?;
    }
    Ok(ExitCode::from(sim_report::exit_code(worst)))
}
