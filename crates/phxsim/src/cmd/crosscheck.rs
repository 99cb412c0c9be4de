//! `phxsim crosscheck SCENARIO... [--seeds N] [--pubsub-ebin DIR | --mix] [--json FILE]`: a
//! scenario's node-level timeline on a real Phoenix.Tracker cluster and on N simulator seeds,
//! compared per node (see `phxsim_crosscheck` and the README's "Crosscheck" section).
//!
//! Exit codes: 0 every scenario agrees, 1 one disagrees, 2 bad input (a scenario that cannot be
//! read or does not map to the tracker level, elixir or phoenix_pubsub missing), 70 internal
//! (the real cluster failed while running), 130 interrupted (Ctrl-C; every process started is
//! stopped first).

use super::output;
use super::sim_report::{EXIT_BAD_INPUT, EXIT_INTERNAL};
use anyhow::Context;
use phxsim_crosscheck::cluster::{self, ClusterError, ClusterOptions, PubsubSource};
use phxsim_crosscheck::{SeedRejoins, plan, report, run_seeds};
use phxsim_sim::Scenario;
use phxsim_sim::planted::PlantedBug;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_DISAGREE: u8 = 1;
/// Ctrl-C, as shells report a SIGINT death (128 + 2).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args)]
#[command(
    after_help = "Tolerance: every real event may fall up to one broadcast_period outside the \
seeds' range of times (--tolerance-ms changes it). A real shard re-arms its tick after the tick's \
work, so real ticks drift against the seeds' by about 1-3.5 ms per period: any event that happens \
at a tick (a remote join or leave, a replica up, down or permdown) can land up to one period apart. \
Events within the last tolerance window of the run are not required on either side. \
Exit codes: 0 agree, 1 disagree, 2 bad input or elixir/phoenix_pubsub missing, 70 internal, \
130 interrupted."
)]
pub struct Args {
    /// Scenario files (each must map to the tracker level: no holds, loss, per-link latency or
    /// non-faithful profile).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// How many simulator seeds to run per scenario.
    #[arg(long, default_value_t = 6)]
    pub seeds: u64,
    /// The first seed (seeds are FIRST, FIRST+1, ...).
    #[arg(long, default_value_t = 1)]
    pub seed_start: u64,
    /// A compiled phoenix_pubsub's ebin folder (here: ../shared/phoenix/phoenix_pubsub-2.2.0/ebin).
    #[arg(long, env = "PHXSIM_PUBSUB_EBIN", conflicts_with = "mix")]
    pub pubsub_ebin: Option<PathBuf>,
    /// Fetch phoenix_pubsub 2.2.0 from Hex with Mix (once, into --mix-cache).
    #[arg(long)]
    pub mix: bool,
    /// Where --mix keeps the compiled phoenix_pubsub.
    #[arg(long, default_value = "target/crosscheck-pubsub")]
    pub mix_cache: PathBuf,
    /// Write the reports as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Override the tolerance (default: one broadcast_period).
    #[arg(long)]
    pub tolerance_ms: Option<u64>,
    /// Write every line the real nodes logged (JSON lines, one scenario after the other) here.
    #[arg(long)]
    pub real_log: Option<PathBuf>,
    /// The private epmd's port (default: a free one).
    #[arg(long)]
    pub epmd_port: Option<u16>,
    /// The nodes' distribution ports, as MIN-MAX (default: the OS picks).
    #[arg(long, value_parser = parse_range)]
    pub dist_ports: Option<(u16, u16)>,
    /// How long the BEAMs may take to boot, in seconds.
    #[arg(long, default_value_t = 60)]
    pub boot_timeout_s: u64,
    /// Plant a known bug in the simulator (`phxsim mutations` lists them): the comparison must
    /// then disagree, which shows that it can.
    #[arg(long, value_name = "NAME")]
    pub mutate: Option<PlantedBug>,
    /// Run the real cluster again (up to this many times) when it disagreed while starved (a
    /// node's timer or a command more than half the tolerance late, or the trackers started
    /// more than a quarter period apart: a loaded machine).
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected MIN-MAX"))?;
    let lo: u16 = lo.parse().map_err(|e| format!("{lo:?}: {e}"))?;
    let hi: u16 = hi.parse().map_err(|e| format!("{hi:?}: {e}"))?;
    if lo > hi {
        return Err(format!("{s:?}: MIN above MAX"));
    }
    Ok((lo, hi))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.seeds == 0 {
        eprintln!("phxsim: crosscheck: --seeds must be at least 1");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let mut base = phxsim_sim::harness::RunOptions::default();
    match super::run::simulated_bug(args.mutate) {
        Ok(planted) => base.planted = planted,
        Err(e) => {
            eprintln!("phxsim: crosscheck: {e:#}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    }
    output::check_optional("--json", args.json.as_deref())?;
    output::check_optional("--real-log", args.real_log.as_deref())?;
    let pubsub = match (&args.pubsub_ebin, args.mix) {
        (Some(dir), false) => PubsubSource::Ebin(dir.clone()),
        (None, true) => PubsubSource::Mix(args.mix_cache.clone()),
        _ => {
            eprintln!(
                "phxsim: crosscheck: say where phoenix_pubsub comes from: --pubsub-ebin DIR \
                 (the ebin folder of a compiled phoenix_pubsub 2.2) or --mix (Hex)"
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let mut scenarios = Vec::new();
    for file in &args.files {
        let s = match Scenario::load(file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("phxsim: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        };
        let why = plan::unmappable(&s);
        if !why.is_empty() {
            eprintln!(
                "phxsim: crosscheck: {} does not map to the tracker level:\n  {}",
                file.display(),
                why.join("\n  ")
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        scenarios.push((file.display().to_string(), s));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // prerequisites first, so that a missing elixir is said before any simulation runs
    let ebin = match runtime.block_on(async {
        let ebin = cluster::pubsub_ebin(&pubsub).await?;
        cluster::elixir_version().await?;
        Ok::<_, ClusterError>(ebin)
    }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("phxsim: crosscheck: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let opts = ClusterOptions {
        pubsub: PubsubSource::Ebin(ebin.clone()),
        epmd_port: args.epmd_port,
        dist_ports: args.dist_ports,
        boot_timeout: Duration::from_secs(args.boot_timeout_s),
    };
    // Ctrl-C outside a real run (while the simulator runs) ends the command at once: nothing
    // else is running then. During a real run, `cluster::run` stops its processes first.
    runtime.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() && !cluster::is_running() {
            eprintln!("phxsim: crosscheck: interrupted (Ctrl-C)");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    });
    let seeds: Vec<u64> = (args.seed_start..args.seed_start.saturating_add(args.seeds)).collect();
    let mut reports = Vec::new();
    let mut real_log = Vec::new();
    for (file, s) in &scenarios {
        eprintln!("phxsim: crosscheck {file}: {} simulator seeds", seeds.len());
        let seed_runs = run_seeds(s, &seeds, &base);
        let plan = plan::plan(
            s,
            &SeedRejoins {
                scenario: s,
                seeds: &seed_runs,
            },
        );
        eprintln!(
            "phxsim: crosscheck {file}: real cluster of {} nodes for {} ms",
            plan.nodes.len(),
            plan.duration_ms
        );
        let mut attempt = 0;
        let r = loop {
            let real = match runtime.block_on(cluster::run(s, &plan, &opts)) {
                Ok(r) => r,
                Err(e @ ClusterError::Interrupted) => {
                    eprintln!("phxsim: crosscheck: {e}");
                    return Ok(ExitCode::from(EXIT_INTERRUPTED));
                }
                Err(e @ ClusterError::Missing { .. }) => {
                    eprintln!("phxsim: crosscheck: {e}");
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
                Err(e) => {
                    eprintln!("phxsim: crosscheck {file}: the real cluster failed: {e}");
                    return Ok(ExitCode::from(EXIT_INTERNAL));
                }
            };
            real_log.extend(real.log.iter().cloned());
            let mut r = phxsim_crosscheck::report(
                file,
                s,
                &seed_runs,
                &plan,
                &real,
                &ebin.display().to_string(),
                args.tolerance_ms,
            );
            r.planted_bug = args.mutate.map(|b| b.to_string());
            if r.agrees || !r.real.starved || attempt >= args.retries {
                break r;
            }
            attempt += 1;
            eprintln!(
                "phxsim: crosscheck {file}: disagreed while the real nodes were starved (timer {} ms, \
                 command {} ms late, trackers {} ms apart): running the real cluster again ({attempt} of {})",
                r.real.max_lag_ms, r.real.max_send_lag_ms, r.real.start_skew_ms, args.retries
            );
        };
        super::outln!("{}", report::table(&r))?;
        reports.push(r);
    }
    let agrees = reports.iter().all(|r| r.agrees);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({"agrees": agrees, "reports": reports});
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.real_log {
        let text: String = real_log.iter().map(|j| format!("{j}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if reports.len() > 1 {
        super::outln!(
            "crosscheck: {} of {} scenarios agree",
            reports.iter().filter(|r| r.agrees).count(),
            reports.len()
        )?;
    }
    Ok(ExitCode::from(if agrees { 0 } else { EXIT_DISAGREE }))
}
