//! `phxsim bench-latency`: cross-node diff latency on the simulator (simulated ms, from the
//! track on the first node to the diff at a browser on the last), over a grid of broadcast
//! periods, cluster sizes, network latencies, loss rates and profiles. Prints a Markdown table
//! (what BENCHMARKS.md holds) and optionally JSON.

use super::sim_report;
use super::{bad_input, outln, output};
use phxsim_sim::latency::{LatencyCase, measure, scenario};
use phxsim_sim::scenario::ProfileName;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Broadcast periods (ms), comma-separated.
    #[arg(long, default_value = "50,100,500,1500")]
    pub broadcast_periods: String,
    /// Cluster sizes, comma-separated (2 to 32).
    #[arg(long, default_value = "3")]
    pub nodes: String,
    /// One-way network latency ranges, `min-max` ms, comma-separated.
    #[arg(long, default_value = "1-5")]
    pub latency: String,
    /// Segment loss rates on node-to-node links, comma-separated (0.01 = 1 %); a lost segment
    /// is retransmitted after --rto ms, delaying what follows it on its connection.
    #[arg(long, default_value = "0")]
    pub loss: String,
    /// First retransmission timeout (ms) of a lost segment.
    #[arg(long, default_value_t = 200)]
    pub rto: u64,
    /// Profiles, comma-separated: faithful, corrected, eager.
    #[arg(long, default_value = "faithful,eager")]
    pub profiles: String,
    /// Eager window (ms).
    #[arg(long, default_value_t = 5)]
    pub eager_window: u64,
    /// Changes timed per point (1 to 100 000).
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn list<T: std::str::FromStr>(s: &str, flag: &str) -> anyhow::Result<Vec<T>> {
    s.split(',')
        .map(|p| match p.trim().parse::<T>() {
            Ok(v) => Ok(v),
            Err(_) => bad_input(format!("{flag}: bad value {p:?}")),
        })
        .collect()
}

/// Refuses a flag value outside `range`.
fn within<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    v: T,
    range: std::ops::RangeInclusive<T>,
) -> anyhow::Result<()> {
    if range.contains(&v) {
        Ok(())
    } else {
        bad_input(format!(
            "{flag}: {v} is out of range ({} to {})",
            range.start(),
            range.end()
        ))
    }
}

/// The longest simulated run one grid point may take, as for scenario files.
const MAX_SIMULATED_MS: u64 = 24 * 3_600_000;

/// Every point of the grid, each flag checked before the first point runs: a point the
/// simulator cannot run (an empty latency range, a cluster larger than scenarios allow, more
/// than 24 h of simulated time) is bad input, and a point that would time nothing (no changes,
/// no broadcast) is refused rather than printed as a row of zeros.
fn grid(args: &Args) -> anyhow::Result<Vec<LatencyCase>> {
    let bps: Vec<u64> = list(&args.broadcast_periods, "--broadcast-periods")?;
    for &bp in &bps {
        within("--broadcast-periods", bp, 1..=3_600_000)?;
    }
    let sizes: Vec<usize> = list(&args.nodes, "--nodes")?;
    for &n in &sizes {
        // two: the change starts on the first node and is timed at a browser on the last
        within("--nodes", n, 2..=32)?;
    }
    let profiles: Vec<ProfileName> = args
        .profiles
        .split(',')
        .map(|p| {
            p.trim().parse::<ProfileName>().or_else(|_| {
                bad_input(format!(
                    "--profiles: unknown profile {:?} (faithful, corrected or eager)",
                    p.trim()
                ))
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let losses: Vec<f64> = list(&args.loss, "--loss")?;
    if let Some(bad) = losses.iter().find(|l| !(0.0..=1.0).contains(*l)) {
        return bad_input(format!(
            "--loss: rates are probabilities in [0, 1]; got {bad}"
        ));
    }
    within("--rto", args.rto, 1..=60_000)?;
    within("--eager-window", args.eager_window, 0..=60_000)?;
    within("--changes", args.changes, 1..=100_000)?;
    let mut lats = Vec::new();
    for r in args.latency.split(',') {
        let parsed = r.split_once('-').and_then(|(a, b)| {
            Some([a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?])
        });
        match parsed {
            Some([a, b]) if a <= b && b <= 60_000 => lats.push([a, b]),
            _ => {
                return bad_input(format!(
                    "--latency: {r:?} is not a range MIN-MAX with MIN ≤ MAX ≤ 60000 (ms)"
                ));
            }
        }
    }
    let mut cases = Vec::new();
    for &n in &sizes {
        for &bp in &bps {
            for (lat, &loss) in lats.iter().flat_map(|l| losses.iter().map(move |x| (l, x))) {
                for profile in &profiles {
                    cases.push(LatencyCase {
                        nodes: n,
                        broadcast_period_ms: bp,
                        latency_ms: *lat,
                        loss,
                        rto_ms: args.rto,
                        profile: *profile,
                        eager_window_ms: args.eager_window,
                        changes: args.changes,
                        seed: args.seed,
                    });
                }
            }
        }
    }
    if let Some(long) = cases
        .iter()
        .find(|c| scenario(c).duration_ms > MAX_SIMULATED_MS)
    {
        return bad_input(format!(
            "the point with broadcast period {} ms would simulate more than 24 h: fewer --changes or shorter --broadcast-periods",
            long.broadcast_period_ms
        ));
    }
    Ok(cases)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cases = grid(&args)?;
    output::check_optional("--json", args.json.as_deref())?;
    outln!("| nodes | broadcast_period | latency | loss | profile | changes | p50 | p99 | max |")?;
    outln!("|---|---|---|---|---|---|---|---|---|")?;
    let mut rows = Vec::new();
    for case in &cases {
        let r = measure(case);
        let (n, bp, lat, loss, profile) = (
            case.nodes,
            case.broadcast_period_ms,
            case.latency_ms,
            case.loss,
            &case.profile,
        );
        outln!(
            "| {n} | {bp} ms | {}–{} ms | {} % | {profile} | {} | {} ms | {} ms | {} ms |",
            lat[0],
            lat[1],
            loss * 100.0,
            r.samples.len(),
            r.p50,
            r.p99,
            r.max
        )?;
        rows.push(json!({"nodes": n, "broadcast_period_ms": bp, "latency_ms": lat, "loss": loss, "rto_ms": args.rto, "profile": profile.name(),
            "samples": r.samples.len(), "p50_ms": r.p50, "p99_ms": r.p99, "max_ms": r.max}));
    }
    if let Some(j) = &args.json {
        sim_report::write_file(j, &serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
