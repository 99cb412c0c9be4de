//! `phxsim bench-latency`: cross-node diff latency on the simulator (simulated ms, from the
//! track on the first node to the diff at a browser on the last), over a grid of broadcast
//! periods, cluster sizes, network latencies, loss rates and profiles. Prints a Markdown table
//! (what BENCHMARKS.md holds) and optionally JSON.

use super::sim_report;
use anyhow::Context as _;
use phxsim_sim::latency::{LatencyCase, measure};
use phxsim_sim::scenario::ProfileName;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Broadcast periods (ms), comma-separated.
    #[arg(long, default_value = "50,100,500,1500")]
    pub broadcast_periods: String,
    /// Cluster sizes, comma-separated.
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
    /// Profiles, comma-separated: faithful, eager.
    #[arg(long, default_value = "faithful,eager")]
    pub profiles: String,
    /// Eager window (ms).
    #[arg(long, default_value_t = 5)]
    pub eager_window: u64,
    /// Changes timed per point.
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<Vec<T>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("bad {what}: {p:?}"))
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bps: Vec<u64> = list(&args.broadcast_periods, "broadcast period")?;
    let sizes: Vec<usize> = list(&args.nodes, "cluster size")?;
    let profiles: Vec<ProfileName> = list(&args.profiles, "profile")?;
    let losses: Vec<f64> = list(&args.loss, "loss rate")?;
    if let Some(bad) = losses.iter().find(|l| !(0.0..=1.0).contains(*l)) {
        anyhow::bail!("loss rates are probabilities in [0, 1]; got {bad}");
    }
    if !(1..=60_000).contains(&args.rto) {
        anyhow::bail!("--rto is between 1 and 60000 ms; got {}", args.rto);
    }
    if profiles.contains(&ProfileName::Corrected) {
        anyhow::bail!(
            "profile \"corrected\": faithful or eager (corrected replicates as faithful does)"
        );
    }
    let mut lats = Vec::new();
    for r in args.latency.split(',') {
        let (a, b) = r.split_once('-').context("latency ranges are min-max")?;
        lats.push([a.trim().parse::<u64>()?, b.trim().parse::<u64>()?]);
    }
    println!("| nodes | broadcast_period | latency | loss | profile | changes | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for &n in &sizes {
        for &bp in &bps {
            for (lat, &loss) in lats.iter().flat_map(|l| losses.iter().map(move |x| (l, x))) {
                for profile in &profiles {
                    let case = LatencyCase {
                        nodes: n,
                        broadcast_period_ms: bp,
                        latency_ms: *lat,
                        loss,
                        rto_ms: args.rto,
                        profile: *profile,
                        eager_window_ms: args.eager_window,
                        changes: args.changes,
                        seed: args.seed,
                    };
                    let r = measure(&case);
                    println!(
                        "| {n} | {bp} ms | {}–{} ms | {} % | {profile} | {} | {} ms | {} ms | {} ms |",
                        lat[0],
                        lat[1],
                        loss * 100.0,
                        r.samples.len(),
                        r.p50,
                        r.p99,
                        r.max
                    );
                    rows.push(json!({"nodes": n, "broadcast_period_ms": bp, "latency_ms": lat, "loss": loss, "rto_ms": args.rto, "profile": profile,
                        "samples": r.samples.len(), "p50_ms": r.p50, "p99_ms": r.p99, "max_ms": r.max}));
                }
            }
        }
    }
    if let Some(j) = &args.json {
        sim_report::write_file(j, &serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
