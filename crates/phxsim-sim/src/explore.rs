//! Swarm testing: a seed draws a whole scenario (cluster size, tracker timing, latency, clients,
//! a workload and a fault schedule), runs it, and judges it; a failing schedule is shrunk to a
//! minimal one that still fails the same way, and written as a scenario file.

use crate::checkers::FindingKind;
pub use crate::fault::FaultKind;
use crate::harness::{self, RunOptions, RunReport, Verdict};
use crate::population::{PopulationSpec, Transport};
use crate::scenario::{
    Action, ClientSpec, Expectations, NetworkSettings, ProfileName, Scenario, Step,
    TrackerSettings, lifecycle_problem,
};
use crate::world::derive_seed;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::BTreeSet;

/// What a drawn scenario may contain.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    pub faults: BTreeSet<FaultKind>,
    pub profile: ProfileName,
    /// Also draw a `[[population]]` of up to this many clients per seed (0: none), so that
    /// swarm testing varies the scale as well; at most [`MAX_SWARM_POPULATION`].
    pub population_max: usize,
}

/// The largest population the explorer draws: the explorer must stay at 300 or more seeds a
/// minute (measured in BENCHMARKS.md), and a run's cost grows with the square of the clients
/// in one topic.
pub const MAX_SWARM_POPULATION: usize = 100;

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            faults: FaultKind::defaults(),
            profile: ProfileName::Faithful,
            population_max: 0,
        }
    }
}

/// Draws the scenario of one seed.
pub fn generate(seed: u64, cfg: &SwarmConfig) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "explore"));
    let n_nodes = rng.gen_range(2..=4usize);
    let nodes: Vec<String> = (0..n_nodes)
        .map(|i| ((b'a' + i as u8) as char).to_string())
        .collect();
    let bp = *[50u64, 100, 200].choose(&mut rng).expect("non-empty");
    let max_silent = rng.gen_range(2..=5u64);
    let down = bp * max_silent * 2;
    let tracker = TrackerSettings {
        broadcast_period_ms: bp,
        max_silent_periods: max_silent,
        down_period_ms: None,
        permdown_period_ms: down * rng.gen_range(2..=4u64),
        profile: cfg.profile,
        ..TrackerSettings::default()
    };
    let lat_max = rng.gen_range(1..=20u64);
    // drawn from a stream of its own, so that asking for loss changes nothing else
    let loss_rate = |kind: FaultKind| {
        if cfg.faults.contains(&kind) {
            let stream = derive_seed(seed, &kind.stream());
            let mut lrng = ChaCha8Rng::seed_from_u64(stream);
            *[0.005, 0.01, 0.02].choose(&mut lrng).expect("non-empty")
        } else {
            0.0
        }
    };
    let loss = loss_rate(FaultKind::Loss);
    let client_loss = loss_rate(FaultKind::ClientLoss);
    let network = NetworkSettings {
        latency_ms: [rng.gen_range(1..=lat_max), lat_max],
        loss,
        client_loss,
        rto_ms: 200,
        tick_ms: 1,
        links: Vec::new(),
    };
    let topics = ["room:lobby", "room:1"];
    let n_clients = rng.gen_range(2..=6usize);
    let clients: Vec<ClientSpec> = (0..n_clients)
        .map(|i| ClientSpec {
            name: format!("u{i}"),
            node: nodes[rng.gen_range(0..n_nodes)].clone(),
            // sometimes two devices of one user
            user: if i > 0 && rng.gen_bool(0.2) {
                Some("u0".into())
            } else {
                None
            },
            topic: topics[rng.gen_range(0..topics.len())].to_string(),
            meta: std::sync::Arc::new(
                json!({"device": if rng.gen_bool(0.5) { "web" } else { "ios" }}),
            ),
            vsn: if rng.gen_bool(0.3) {
                "1.0.0".into()
            } else {
                "2.0.0".into()
            },
        })
        .collect();

    // phase 1: workload and faults; phase 2: heal, then a quiet tail for convergence
    let fault_end = 1_000 + down * rng.gen_range(1..=3u64);
    let mut timeline = Vec::new();
    for c in &clients {
        timeline.push(Step {
            at_ms: rng.gen_range(200..800),
            action: Action::Join(c.name.clone()),
        });
    }
    let faults: Vec<FaultKind> = cfg
        .faults
        .iter()
        .copied()
        .filter(|f| !f.is_opt_in())
        .collect();
    let n_events = rng.gen_range(2..=8usize);
    let mut crashed: BTreeSet<String> = BTreeSet::new();
    // left for good: never restarted (a restart brings back only a crashed node)
    let mut permdowned: BTreeSet<String> = BTreeSet::new();
    for _ in 0..n_events {
        let at = rng.gen_range(900..fault_end);
        let c = &clients[rng.gen_range(0..clients.len())].name;
        let pick = rng.gen_range(0..10);
        let action = if pick < 4 || faults.is_empty() {
            match rng.gen_range(0..3) {
                0 => Action::Update(
                    c.clone(),
                    Box::new(json!({"status": format!("s{}", rng.gen_range(0..100))})),
                ),
                1 => Action::Leave(c.clone()),
                _ => Action::Join(c.clone()),
            }
        } else {
            let x = nodes[rng.gen_range(0..n_nodes)].clone();
            let others: Vec<&String> = nodes.iter().filter(|n| **n != x).collect();
            let y = (*others.choose(&mut rng).expect("two nodes")).clone();
            match faults[rng.gen_range(0..faults.len())] {
                FaultKind::Partition => {
                    let mut shuffled = nodes.clone();
                    shuffled.shuffle(&mut rng);
                    let cut_at = rng.gen_range(1..n_nodes);
                    Action::Partition(vec![
                        shuffled[..cut_at].to_vec(),
                        shuffled[cut_at..].to_vec(),
                    ])
                }
                FaultKind::Cut => Action::Cut(vec![(x, y)]),
                FaultKind::CutOneway => Action::CutOneway(vec![(x, y)]),
                FaultKind::Hold => Action::Hold(vec![(x, y)]),
                FaultKind::Crash if !crashed.contains(&x) => {
                    crashed.insert(x.clone());
                    Action::Crash(x)
                }
                FaultKind::Permdown if !crashed.contains(&x) => {
                    crashed.insert(x.clone());
                    permdowned.insert(x.clone());
                    Action::Permdown(x)
                }
                _ => Action::Disconnect(c.clone()),
            }
        };
        timeline.push(Step { at_ms: at, action });
    }
    // restart what crashed, heal everything, rejoin every client: the cluster must settle
    let heal_at = fault_end + rng.gen_range(0..down);
    // a rolling deploy of the nodes no other fault stops, drawn from a stream of its own so
    // that asking for it changes nothing else of the seed's scenario
    let mut settled_from = heal_at;
    if cfg.faults.contains(&FaultKind::RollingRestart) {
        let mut rrng =
            ChaCha8Rng::seed_from_u64(derive_seed(seed, &FaultKind::RollingRestart.stream()));
        let mut rolled: Vec<String> = nodes
            .iter()
            .filter(|n| !crashed.contains(*n) && !permdowned.contains(*n))
            .cloned()
            .collect();
        rolled.shuffle(&mut rrng);
        if !rolled.is_empty() {
            let at = rrng.gen_range(900..fault_end);
            let down_ms = rrng.gen_range(10..=1_000u64);
            let interval_ms = down_ms + rrng.gen_range(100..=3_000u64);
            timeline.extend(crate::scenario::rolling::steps(
                at,
                &rolled,
                interval_ms,
                down_ms,
            ));
            let end = crate::scenario::rolling::end_ms(at, rolled.len(), interval_ms, down_ms);
            settled_from = settled_from.max(end);
        }
    }
    // clients cut in the middle of a join, drawn from a stream of their own like the rolling
    // deploy; they come back with everyone else's reconnect below
    if cfg.faults.contains(&FaultKind::DropMidJoin) {
        let mut drng =
            ChaCha8Rng::seed_from_u64(derive_seed(seed, &FaultKind::DropMidJoin.stream()));
        for _ in 0..drng.gen_range(1..=3) {
            let c = &clients[drng.gen_range(0..clients.len())].name;
            timeline.push(Step {
                at_ms: drng.gen_range(900..fault_end),
                action: Action::DropMidJoin(c.clone()),
            });
        }
    }
    timeline.push(Step {
        at_ms: heal_at,
        action: Action::Heal,
    });
    if loss > 0.0 {
        timeline.push(Step {
            at_ms: heal_at,
            action: Action::Loss(0.0),
        });
    }
    if client_loss > 0.0 {
        timeline.push(Step {
            at_ms: heal_at,
            action: Action::ClientLoss(0.0),
        });
    }
    for n in crashed.difference(&permdowned) {
        timeline.push(Step {
            at_ms: heal_at,
            action: Action::Restart(n.clone()),
        });
    }
    for c in &clients {
        timeline.push(Step {
            at_ms: heal_at + 10,
            action: Action::Reconnect(c.name.clone()),
        });
    }
    timeline.sort_by_key(|s| s.at_ms);
    // the loss ends with the heal, but segments lost just before it are still on their way
    let retransmits = if loss > 0.0 || client_loss > 0.0 {
        3 * network.rto_ms
    } else {
        0
    };
    let bound = tracker.convergence_bound(lat_max) + harness::link_recovery_ms(bp) + retransmits;
    let nodes_for_population = nodes.clone();
    Scenario {
        title: format!("explore seed {seed}"),
        description: "drawn by phxsim explore".into(),
        seed: Some(seed),
        duration_ms: settled_from + 10 + bound + 500,
        nodes,
        tracker,
        network,
        clients,
        populations: draw_population(seed, cfg, &nodes_for_population),
        timeline,
        expect: Expectations {
            // the reference's own anomalies are tolerated in the faithful profile
            allow: if cfg.profile != ProfileName::Corrected {
                ["duplicate_leave", "duplicate_join"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                BTreeSet::new()
            },
            ..Expectations::default()
        },
    }
}

/// The population of a seed when `cfg.population_max` asks for one: its size, nodes, topics
/// and times from a stream of its own, so that the rest of the seed's scenario is the same.
/// Every client joins in the workload phase and stays, so the end state must list them all.
fn draw_population(seed: u64, cfg: &SwarmConfig, nodes: &[String]) -> Vec<PopulationSpec> {
    let max = cfg.population_max.min(MAX_SWARM_POPULATION);
    if max == 0 {
        return Vec::new();
    }
    let mut prng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "explore/population"));
    let count = prng.gen_range(1..=max);
    let mut on: Vec<String> = nodes.to_vec();
    on.shuffle(&mut prng);
    on.truncate(prng.gen_range(1..=nodes.len()));
    vec![PopulationSpec {
        nodes: on,
        count,
        topics: prng.gen_range(1..=count.min(3)),
        join_ms: [200, 800],
        leave_ms: None,
        meta: json!({"device": "web"}),
        vsn: "2.0.0".into(),
        user: None,
        // from a stream of its own, so that the draws above are the ones they always were
        transport: if ChaCha8Rng::seed_from_u64(derive_seed(seed, "explore/transport"))
            .gen_bool(0.5)
        {
            Transport::Tcp
        } else {
            Transport::Memory
        },
    }]
}

/// Shrinks a failing scenario while the run still fails the same way (the same verdict, with
/// at least one finding of a kind the original run had): first whole nodes go (down to two),
/// with their clients and every step that names them, then whole clients with their steps,
/// then timeline steps (faults and workload) one at a time, until nothing more can go or the
/// budget of runs is spent. Heals, restarts, reconnects and the end of loss
/// stay: they are what lets a healthy cluster settle, so dropping them would trade the bug for
/// a run that merely never converges.
pub fn shrink(
    scenario: &Scenario,
    opts: &RunOptions,
    verdict: Verdict,
    budget: usize,
) -> (Scenario, RunReport) {
    let first = harness::run(scenario, opts);
    let kinds: BTreeSet<FindingKind> = first.failures.iter().map(|f| f.kind).collect();
    let mut s = Shrinker {
        best: scenario.clone(),
        best_report: first,
        runs: 1,
        budget,
        opts,
        verdict,
        kinds,
    };
    let mut n = s.best.nodes.len();
    while n > 0 && s.runs < budget {
        n -= 1;
        let candidate = s
            .best
            .nodes
            .get(n)
            .and_then(|node| without_node(&s.best, node));
        if let Some(candidate) = candidate {
            s.attempt(candidate);
        }
    }
    // whole clients, last first (the first client's name is often another's user)
    let mut c = s.best.clients.len();
    while c > 0 && s.runs < budget && s.best.clients.len() > 1 {
        c -= 1;
        let Some(name) = s.best.clients.get(c).map(|spec| spec.name.clone()) else {
            continue;
        };
        let mut candidate = s.best.clone();
        candidate.clients.remove(c);
        candidate
            .timeline
            .retain(|st| st.action.client() != Some(name.as_str()));
        s.attempt(candidate);
    }
    let mut i = 0;
    while i < s.best.timeline.len() && s.runs < budget {
        let mut candidate = s.best.clone();
        let removed = candidate.timeline.remove(i);
        // a restart needs its crash (or permdown): they go together
        if let Action::Crash(n) | Action::Permdown(n) = &removed.action
            && let Some(r) = candidate.timeline[i..]
                .iter()
                .position(|st| st.action == Action::Restart(n.clone()))
        {
            candidate.timeline.remove(i + r);
        }
        let settles = matches!(
            removed.action,
            Action::Heal
                | Action::Restart(_)
                | Action::Reconnect(_)
                | Action::Loss(_)
                | Action::ClientLoss(_)
        );
        if settles || !s.attempt(candidate) {
            i += 1;
        }
    }
    (s.best, s.best_report)
}

/// The state of one shrink: the smallest scenario that still fails the same way so far.
struct Shrinker<'a> {
    best: Scenario,
    best_report: RunReport,
    runs: usize,
    budget: usize,
    opts: &'a RunOptions,
    verdict: Verdict,
    /// The kinds of finding the original run failed with.
    kinds: BTreeSet<FindingKind>,
}

impl Shrinker<'_> {
    /// Runs `candidate` (if the budget allows) and keeps it if it fails the same way: the same
    /// verdict, with a finding of a kind the original run had.
    fn attempt(&mut self, candidate: Scenario) -> bool {
        if self.runs >= self.budget || lifecycle_problem(&candidate.timeline).is_some() {
            return false;
        }
        let report = harness::run(&candidate, self.opts);
        self.runs += 1;
        let same = report.verdict == self.verdict
            && (self.kinds.is_empty()
                || report.failures.iter().any(|f| self.kinds.contains(&f.kind)));
        if same {
            self.best = candidate;
            self.best_report = report;
        }
        same
    }
}

/// The scenario without `node`: its clients and their steps go, faults keep only the links
/// and groups that do not involve it, and a step left with nothing to do goes. `None` when
/// only two nodes are left (a cluster of one has no netsplit to find).
pub fn without_node(s: &Scenario, node: &str) -> Option<Scenario> {
    if s.nodes.len() <= 2 || !s.nodes.iter().any(|n| n == node) {
        return None;
    }
    let mut out = s.clone();
    out.nodes.retain(|n| n != node);
    let gone: BTreeSet<String> = s
        .clients
        .iter()
        .filter(|c| c.node == node)
        .map(|c| c.name.clone())
        .collect();
    out.clients.retain(|c| c.node != node);
    // a population keeps its other nodes (its clients spread over them instead)
    for pop in &mut out.populations {
        pop.nodes.retain(|n| n != node);
    }
    out.populations.retain(|p| !p.nodes.is_empty());
    out.network
        .links
        .retain(|l| l.between[0] != node && l.between[1] != node);
    out.expect.visible.retain(|v| v.node != node);
    let pairs = |l: &[(String, String)]| -> Vec<(String, String)> {
        l.iter()
            .filter(|(x, y)| x != node && y != node)
            .cloned()
            .collect()
    };
    out.timeline = s
        .timeline
        .iter()
        .filter_map(|st| {
            let action = match &st.action {
                a if a.client().is_some_and(|c| gone.contains(c)) => return None,
                Action::Partition(groups) => {
                    let groups: Vec<Vec<String>> = groups
                        .iter()
                        .map(|g| g.iter().filter(|n| *n != node).cloned().collect())
                        .filter(|g: &Vec<String>| !g.is_empty())
                        .collect();
                    if groups.len() < 2 {
                        return None;
                    }
                    Action::Partition(groups)
                }
                Action::Cut(l) => Action::Cut(pairs(l)),
                Action::CutOneway(l) => Action::CutOneway(pairs(l)),
                Action::Repair(l) => Action::Repair(pairs(l)),
                Action::Hold(l) => Action::Hold(pairs(l)),
                Action::Release(l) => Action::Release(pairs(l)),
                Action::Crash(n) | Action::Restart(n) | Action::Permdown(n) if n == node => {
                    return None;
                }
                other => other.clone(),
            };
            let empty = matches!(
                &action,
                Action::Cut(l) | Action::CutOneway(l) | Action::Repair(l) | Action::Hold(l)
                    | Action::Release(l) if l.is_empty()
            );
            (!empty).then(|| Step {
                at_ms: st.at_ms,
                action,
            })
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Action, Step};

    #[test]
    fn the_explorer_draws_a_rolling_deploy_only_when_asked_and_changes_nothing_else() {
        let plain = SwarmConfig::default();
        let mut rolling = SwarmConfig::default();
        rolling.faults.insert(FaultKind::RollingRestart);
        let mut drawn = 0;
        for seed in 1..=20 {
            let a = generate(seed, &plain);
            let b = generate(seed, &rolling);
            // the seed's other steps stay; the deploy only adds crash/restart pairs
            let extra: Vec<&Step> = b
                .timeline
                .iter()
                .filter(|s| !a.timeline.contains(s))
                .collect();
            assert_eq!(a.clients, b.clients);
            assert!(extra.len().is_multiple_of(2), "seed {seed}");
            for pair in extra.chunks(2) {
                assert!(matches!(pair[0].action, Action::Crash(_)), "seed {seed}");
            }
            if !extra.is_empty() {
                drawn += 1;
                assert!(b.duration_ms >= a.duration_ms);
                assert!(
                    crate::scenario::lifecycle_problem(&b.timeline).is_none(),
                    "seed {seed}"
                );
                // one node down at a time
                let restarts = extra
                    .iter()
                    .filter(|s| matches!(s.action, Action::Restart(_)));
                assert_eq!(restarts.count(), extra.len() / 2);
            }
        }
        assert!(drawn >= 15, "a deploy in most seeds: {drawn}");
    }
}
