//! Diff latency experiments on the simulator: how long after a presence is tracked on one node
//! a browser on another node gets the `presence_diff`, in simulated milliseconds, as a function
//! of broadcast_period, cluster size, network latency, loss and profile. The numbers come from
//! the same harness and transcript as every other run, so they are reproducible from their seed.
//!
//! The actor's browser sits on a 0 ms link to the first node, so the timeline step that joins
//! or leaves it is the moment that node tracks or untracks it; the path measured is then node →
//! node → browser: two network hops.

use crate::event::{Event, FrameBody, Line};
use crate::harness::{self, RunOptions};
use crate::scenario::{
    Action, ClientSpec, Expectations, LinkSettings, NetworkSettings, ProfileName, Scenario, Step,
    TrackerSettings,
};
use crate::world::derive_seed;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value as Json, json};

/// One point of the experiment grid.
#[derive(Clone, Debug)]
pub struct LatencyCase {
    pub nodes: usize,
    pub broadcast_period_ms: u64,
    pub latency_ms: [u64; 2],
    /// Segment loss on node-to-node links (retransmitted after `rto_ms`, see
    /// [`crate::lossy`]).
    pub loss: f64,
    pub rto_ms: u64,
    /// `faithful` or `eager`.
    pub profile: ProfileName,
    pub eager_window_ms: u64,
    /// How many changes (alternating joins and leaves) to time.
    pub changes: usize,
    pub seed: u64,
}

/// Per-change latencies and their summary.
#[derive(Clone, Debug)]
pub struct LatencyResult {
    pub samples: Vec<u64>,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    /// Simulated time of the run.
    pub simulated_ms: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The scenario of a case: an actor on the first node joins and leaves at seeded, irregular
/// times (so changes land at every phase of the tick), a watcher on the last node listens.
pub fn scenario(case: &LatencyCase) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(case.seed, "latency"));
    let nodes: Vec<String> = (0..case.nodes.max(2)).map(|i| format!("n{i}")).collect();
    let bp = case.broadcast_period_ms;
    let tracker = TrackerSettings {
        broadcast_period_ms: bp,
        max_silent_periods: 10,
        down_period_ms: None,
        permdown_period_ms: bp * 10 * 2 * 4,
        profile: case.profile,
        eager_window_ms: Some(case.eager_window_ms),
        ..TrackerSettings::default()
    };
    let clients = vec![
        ClientSpec {
            name: "watcher".into(),
            node: nodes[nodes.len() - 1].clone(),
            user: None,
            topic: "room:lobby".into(),
            meta: std::sync::Arc::new(json!({})),
            vsn: "2.0.0".into(),
        },
        ClientSpec {
            name: "actor".into(),
            node: nodes[0].clone(),
            user: None,
            topic: "room:lobby".into(),
            meta: std::sync::Arc::new(json!({})),
            vsn: "2.0.0".into(),
        },
    ];
    // the mesh is up after the first idle heartbeats
    let mut t = 12 * bp + 1_000;
    let mut timeline = vec![Step {
        at_ms: 500,
        action: Action::Join("watcher".into()),
    }];
    for i in 0..case.changes {
        let action = if i % 2 == 0 {
            Action::Join("actor".into())
        } else {
            Action::Leave("actor".into())
        };
        timeline.push(Step { at_ms: t, action });
        // far enough apart that a change is delivered before the next one is made, even
        // behind a retransmission
        let retransmit = if case.loss > 0.0 { 4 * case.rto_ms } else { 0 };
        t += 2 * bp + rng.gen_range(0..bp.max(1)) + 4 * case.latency_ms[1] + 20 + retransmit;
    }
    let nodes_for_links = nodes.clone();
    Scenario {
        title: format!("latency {} nodes bp {bp} {}", nodes.len(), case.profile),
        description: String::new(),
        seed: Some(case.seed),
        duration_ms: t + 2 * bp,
        nodes,
        tracker,
        network: NetworkSettings {
            latency_ms: case.latency_ms,
            loss: case.loss,
            // the actor's link must stay exact: its join step is the moment of the track
            client_loss: 0.0,
            rto_ms: case.rto_ms,
            tick_ms: 1,
            links: vec![LinkSettings {
                between: [nodes_for_links[0].clone(), "clients".into()],
                latency_ms: [0, 0],
            }],
        },
        clients,
        populations: Vec::new(),
        timeline,
        expect: Expectations::default(),
    }
}

/// Runs a case and times every change from its step to the watcher's diff carrying it.
pub fn measure(case: &LatencyCase) -> LatencyResult {
    let s = scenario(case);
    let report = harness::run(
        &s,
        &RunOptions {
            seed: case.seed,
            transcript: true,
            ..RunOptions::default()
        },
    );
    let mut pending: Vec<(u64, bool)> = Vec::new(); // (step time, is join)
    let mut samples = Vec::new();
    for text in &report.transcript {
        let Some(line) = Line::parse(text) else {
            continue;
        };
        let t = line.t;
        match line.event {
            Event::Step { action } => match action.as_str() {
                "join actor" => pending.push((t, true)),
                "leave actor" => pending.push((t, false)),
                _ => {}
            },
            Event::Frame {
                client,
                dir,
                body:
                    FrameBody::Text {
                        event: Some(event),
                        data,
                    },
            } if client == "watcher" && dir == "in" && event == "presence_diff" => {
                let Ok(frame) = serde_json::from_str::<Json>(&data) else {
                    continue;
                };
                let payload = &frame[4];
                let joined = payload["joins"].get("actor").is_some();
                let left = payload["leaves"].get("actor").is_some();
                if let Some(pos) = pending
                    .iter()
                    .position(|(_, is_join)| (*is_join && joined) || (!*is_join && left))
                {
                    let (at, _) = pending.remove(pos);
                    samples.push(t.saturating_sub(at));
                }
            }
            _ => {}
        }
    }
    let mut sorted = samples.clone();
    sorted.sort_unstable();
    LatencyResult {
        p50: percentile(&sorted, 50.0),
        p99: percentile(&sorted, 99.0),
        max: sorted.last().copied().unwrap_or(0),
        samples,
        simulated_ms: report.simulated_ms,
    }
}
