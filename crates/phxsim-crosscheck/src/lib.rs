//! `phxsim crosscheck`: runs a scenario's node-level timeline on a real Phoenix.Tracker cluster
//! (phoenix_pubsub on distributed Erlang, one BEAM per node, driven by `elixir/node.exs`) and
//! on N seeds of the simulator, and says per node whether every real event falls inside the
//! seeds' range of times (within a tolerance), whether an event is missing on either side, and
//! whether the final lists are equal.
//!
//! - [`plan`]: the scenario as commands for the real nodes (pure; says what does not map);
//! - [`cluster`]: the real cluster (processes, I/O);
//! - [`compare`]: the comparison (pure);
//! - [`report`]: the table and the JSON.

pub mod cluster;
pub mod compare;
pub mod plan;
pub mod report;

use compare::{Comparison, RunTrace};
use phxsim_sim::Scenario;
use phxsim_sim::harness::{self, RunOptions};
use phxsim_sim::node_trace::TraceKind;
use plan::{Plan, Rejoin, RejoinTimes};
use serde::Serialize;

/// One simulated seed's part.
#[derive(Clone, Debug)]
pub struct SeedRun {
    pub seed: u64,
    pub verdict: harness::Verdict,
    pub trace: RunTrace,
}

/// Runs the scenario on the simulator with each seed, keeping every node's tracker events.
/// `base` may plant a bug (`--mutate`), to show that the comparison notices a wrong simulator.
pub fn run_seeds(s: &Scenario, seeds: &[u64], base: &RunOptions) -> Vec<SeedRun> {
    seeds
        .iter()
        .map(|&seed| {
            let r = harness::run(
                s,
                &RunOptions {
                    seed,
                    node_trace: true,
                    transcript: false,
                    ..base.clone()
                },
            );
            SeedRun {
                seed,
                verdict: r.verdict,
                trace: RunTrace {
                    events: r.node_trace,
                    lists: r.final_lists,
                },
            }
        })
        .collect()
}

/// Places automatic rejoins where the seeds saw them: the median over the seeds of the first
/// join of the client's presence on its node at or after the step that caused it.
pub struct SeedRejoins<'a> {
    pub scenario: &'a Scenario,
    pub seeds: &'a [SeedRun],
}

impl RejoinTimes for SeedRejoins<'_> {
    fn rejoin_at(&self, r: &Rejoin) -> Option<u64> {
        let c = self.scenario.client(&r.client)?;
        let subject = format!("{}/{}", c.topic, c.user());
        let mut times: Vec<u64> = self
            .seeds
            .iter()
            .filter_map(|s| {
                s.trace
                    .events
                    .iter()
                    .filter(|e| {
                        e.kind == TraceKind::Join
                            && e.node == r.node
                            && e.subject == subject
                            && e.t_ms >= r.after_ms
                    })
                    .map(|e| e.t_ms)
                    .min()
            })
            .collect();
        times.sort_unstable();
        times.get(times.len() / 2).copied()
    }
}

/// A tolerance the comparison applies, and why it is needed.
#[derive(Clone, Debug, Serialize)]
pub struct Tolerance {
    pub name: &'static str,
    pub ms: u64,
    pub why: String,
}

/// The tolerances of a scenario: one broadcast period on every event time.
pub fn tolerances(s: &Scenario, override_ms: Option<u64>) -> Vec<Tolerance> {
    let bp = s.tracker.broadcast_period_ms;
    vec![Tolerance {
        name: "tick phase",
        ms: override_ms.unwrap_or(bp),
        why: format!(
            "every remote event (a join or leave carried by a heartbeat or a transfer, a replica \
             up at a heartbeat, a down or permdown found by a tick) happens at some node's tick. A \
             real shard re-arms its tick after the tick's work (every {bp} ms + about 1-3.5 ms), \
             so the phase of each node's ticks drifts against the seeds' and against the \
             timeline: the same event can land up to one broadcast period ({bp} ms) earlier or \
             later than in any seed without either side being wrong{}",
            match override_ms {
                Some(ms) if ms != bp => format!(" (set to {ms} ms by --tolerance-ms)"),
                _ => String::new(),
            }
        ),
    }]
}

/// Everything one crosscheck found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub title: String,
    pub seeds: Vec<u64>,
    /// Seeds whose simulated run did not pass its own expectations (reported, not judged).
    pub seed_verdicts: Vec<(u64, harness::Verdict)>,
    pub tolerances: Vec<Tolerance>,
    pub real: RealInfo,
    /// Automatic rejoins and where they were placed.
    pub rejoins: Vec<RejoinInfo>,
    pub comparison: Comparison,
    pub agrees: bool,
    /// A bug planted in the simulator (`--mutate`), if any.
    pub planted_bug: Option<String>,
}

/// The real side of a report.
#[derive(Clone, Debug, Serialize)]
pub struct RealInfo {
    pub nodes: Vec<String>,
    pub pubsub_ebin: String,
    pub otp: String,
    pub elixir: String,
    pub one_way_filter: bool,
    pub log_lines: usize,
    /// The longest a real node's timer woke late, and the longest a command left late (ms).
    pub max_lag_ms: u64,
    pub max_send_lag_ms: u64,
    /// How far apart the real trackers started (ms).
    pub start_skew_ms: u64,
    /// Whether either lag exceeded half the tolerance, or the trackers started further apart
    /// than Phoenix's first-tick jitter (a quarter period): the machine was too loaded for the
    /// real timings to mean anything.
    pub starved: bool,
}

/// One automatic rejoin.
#[derive(Clone, Debug, Serialize)]
pub struct RejoinInfo {
    pub client: String,
    pub node: String,
    pub cause: String,
    pub after_ms: u64,
    pub placed_at_ms: Option<u64>,
}

/// Assembles the report of a finished real run.
pub fn report(
    file: &str,
    s: &Scenario,
    seeds: &[SeedRun],
    plan: &Plan,
    real: &cluster::RealRun,
    ebin: &str,
    tolerance_override: Option<u64>,
) -> Report {
    let tolerances = tolerances(s, tolerance_override);
    let starved_over = tolerances[0].ms;
    let traces: Vec<RunTrace> = seeds.iter().map(|s| s.trace.clone()).collect();
    let comparison = compare::compare(&real.trace, &traces, tolerances[0].ms, s.duration_ms);
    Report {
        scenario: file.to_owned(),
        title: s.title.clone(),
        seeds: seeds.iter().map(|s| s.seed).collect(),
        seed_verdicts: seeds
            .iter()
            .filter(|s| s.verdict != harness::Verdict::Pass)
            .map(|s| (s.seed, s.verdict))
            .collect(),
        tolerances,
        real: RealInfo {
            nodes: plan.nodes.clone(),
            pubsub_ebin: ebin.to_owned(),
            otp: real.otp.clone(),
            elixir: real.elixir.clone(),
            one_way_filter: plan.needs_filter,
            log_lines: real.log.len(),
            max_lag_ms: real.max_lag_ms,
            max_send_lag_ms: real.max_send_lag_ms,
            start_skew_ms: real.start_skew_ms,
            starved: real.max_lag_ms.max(real.max_send_lag_ms) * 2 > starved_over
                || real.start_skew_ms * 4 > s.tracker.broadcast_period_ms,
        },
        rejoins: plan
            .rejoins
            .iter()
            .map(|(r, at)| RejoinInfo {
                client: r.client.clone(),
                node: r.node.clone(),
                cause: format!("{:?}", r.cause),
                after_ms: r.after_ms,
                placed_at_ms: *at,
            })
            .collect(),
        agrees: comparison.agrees(),
        comparison,
        planted_bug: None,
    }
}
