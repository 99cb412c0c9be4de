//! The comparison of one real run with N simulated seeds, per node. Pure.
//!
//! Events are matched by identity: node, kind (replica up/down/permdown, join, leave), subject
//! (the remote node, or `topic/key`), meta, and occurrence (the 2nd leave of the same presence
//! on the same node is a different event from the 1st). For each identity:
//! - a real event must fall inside the seeds' range of times for it, widened by the tolerance
//!   on both sides;
//! - a real event no seed has is missing in the simulator;
//! - an event every seed has and the real run lacks is missing in the real run (an event only
//!   some seeds have is not required: the seeds themselves disagree about it);
//! - events in the last tolerance window of the run are not required on either side (the other
//!   side may simply not have reached them when the run stopped).
//!
//! At the end each node's real list must equal the list of at least one seed.

use phxsim_sim::node_trace::{TraceEvent, TraceKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// A node's final lists: `topic/key` → sorted canonical metas.
pub type Lists = BTreeMap<String, Vec<String>>;

/// One run's events and final lists (a seed, or the real cluster).
#[derive(Clone, Debug, Default)]
pub struct RunTrace {
    pub events: Vec<TraceEvent>,
    /// Live nodes only.
    pub lists: BTreeMap<String, Lists>,
}

/// Which event of a run: everything but the time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Identity {
    pub node: String,
    pub kind: TraceKind,
    pub subject: String,
    pub meta: Option<String>,
    /// 1 for the first such event on the node, 2 for the second, …
    pub n: u32,
}

fn by_identity(events: &[TraceEvent]) -> BTreeMap<Identity, u64> {
    let mut sorted: Vec<&TraceEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.t_ms); // stable: same-time events keep their order
    let mut count: BTreeMap<(String, TraceKind, String, Option<String>), u32> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for e in sorted {
        let n = count
            .entry((e.node.clone(), e.kind, e.subject.clone(), e.meta.clone()))
            .or_default();
        *n += 1;
        out.insert(
            Identity {
                node: e.node.clone(),
                kind: e.kind,
                subject: e.subject.clone(),
                meta: e.meta.clone(),
                n: *n,
            },
            e.t_ms,
        );
    }
    out
}

/// How one event compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventVerdict {
    /// The real time is inside the seeds' range.
    Inside,
    /// Outside the seeds' range but within the tolerance.
    WithinTolerance,
    /// Further from the seeds' range than the tolerance.
    Outside,
    /// The real cluster had it, no seed did.
    MissingInSim,
    /// Every seed had it, the real cluster did not.
    MissingInReal,
    /// Some seeds had it, the real cluster did not: allowed.
    SomeSeedsOnly,
    /// Only in the last tolerance window of the run, on one side: not required.
    AtTheEnd,
}

impl EventVerdict {
    pub fn agrees(self) -> bool {
        !matches!(
            self,
            EventVerdict::Outside | EventVerdict::MissingInSim | EventVerdict::MissingInReal
        )
    }
}

/// One row of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct EventRow {
    #[serde(flatten)]
    pub id: Identity,
    pub real_ms: Option<u64>,
    pub seed_min_ms: Option<u64>,
    pub seed_max_ms: Option<u64>,
    /// How many seeds had it.
    pub seeds_with: usize,
    /// How far outside the seeds' range the real time is (0 inside).
    pub off_by_ms: u64,
    pub verdict: EventVerdict,
}

/// One node's final list.
#[derive(Clone, Debug, Serialize)]
pub struct ListRow {
    pub node: String,
    /// `None`: the node is down at the end (in the real run).
    pub real: Option<Lists>,
    /// How many seeds ended with exactly this list on this node.
    pub seeds_equal: usize,
    pub seeds: usize,
    pub agrees: bool,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub tolerance_ms: u64,
    pub events: Vec<EventRow>,
    pub lists: Vec<ListRow>,
}

impl Comparison {
    pub fn agrees(&self) -> bool {
        self.events.iter().all(|e| e.verdict.agrees()) && self.lists.iter().all(|l| l.agrees)
    }
}

/// Compares `real` with `seeds` (at least one) for a run of `duration_ms`.
pub fn compare(
    real: &RunTrace,
    seeds: &[RunTrace],
    tolerance_ms: u64,
    duration_ms: u64,
) -> Comparison {
    let real_ids = by_identity(&real.events);
    let seed_ids: Vec<BTreeMap<Identity, u64>> =
        seeds.iter().map(|s| by_identity(&s.events)).collect();
    let mut all: Vec<&Identity> = real_ids.keys().collect();
    for s in &seed_ids {
        all.extend(s.keys());
    }
    all.sort();
    all.dedup();
    let late = duration_ms.saturating_sub(tolerance_ms);
    let events = all
        .into_iter()
        .map(|id| {
            let times: Vec<u64> = seed_ids.iter().filter_map(|s| s.get(id).copied()).collect();
            let (min, max) = (times.iter().min().copied(), times.iter().max().copied());
            let real_ms = real_ids.get(id).copied();
            let (verdict, off) = match (real_ms, min, max) {
                (Some(r), Some(lo), Some(hi)) => {
                    let off = lo.saturating_sub(r).max(r.saturating_sub(hi));
                    let v = if off == 0 {
                        EventVerdict::Inside
                    } else if off <= tolerance_ms {
                        EventVerdict::WithinTolerance
                    } else {
                        EventVerdict::Outside
                    };
                    (v, off)
                }
                (Some(r), _, _) if r >= late => (EventVerdict::AtTheEnd, 0),
                (Some(_), _, _) => (EventVerdict::MissingInSim, 0),
                (None, Some(lo), _) if lo >= late => (EventVerdict::AtTheEnd, 0),
                (None, _, _) if times.len() == seeds.len() => (EventVerdict::MissingInReal, 0),
                (None, _, _) => (EventVerdict::SomeSeedsOnly, 0),
            };
            EventRow {
                id: id.clone(),
                real_ms,
                seed_min_ms: min,
                seed_max_ms: max,
                seeds_with: times.len(),
                off_by_ms: off,
                verdict,
            }
        })
        .collect();
    let mut nodes: Vec<&String> = real.lists.keys().collect();
    for s in seeds {
        nodes.extend(s.lists.keys());
    }
    nodes.sort();
    nodes.dedup();
    let lists = nodes
        .into_iter()
        .map(|node| {
            let real_list = real.lists.get(node);
            let seeds_equal = seeds
                .iter()
                .filter(|s| s.lists.get(node) == real_list)
                .count();
            ListRow {
                node: node.clone(),
                real: real_list.cloned(),
                seeds_equal,
                seeds: seeds.len(),
                agrees: seeds_equal > 0,
            }
        })
        .collect();
    Comparison {
        tolerance_ms,
        events,
        lists,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, node: &str, kind: TraceKind, subject: &str) -> TraceEvent {
        TraceEvent {
            t_ms: t,
            node: node.into(),
            kind,
            subject: subject.into(),
            meta: None,
        }
    }

    fn run(events: Vec<TraceEvent>) -> RunTrace {
        RunTrace {
            events,
            lists: BTreeMap::new(),
        }
    }

    #[test]
    fn a_real_event_inside_or_near_the_seed_range_agrees_and_far_off_does_not() {
        let seeds = vec![
            run(vec![ev(1000, "a", TraceKind::ReplicaDown, "c")]),
            run(vec![ev(1300, "a", TraceKind::ReplicaDown, "c")]),
        ];
        let at = |t| {
            compare(
                &run(vec![ev(t, "a", TraceKind::ReplicaDown, "c")]),
                &seeds,
                100,
                10_000,
            )
        };
        assert_eq!(at(1200).events[0].verdict, EventVerdict::Inside);
        assert_eq!(at(1390).events[0].verdict, EventVerdict::WithinTolerance);
        let far = at(1401);
        assert_eq!(far.events[0].verdict, EventVerdict::Outside);
        assert_eq!(far.events[0].off_by_ms, 101);
        assert!(!far.agrees());
        assert_eq!(at(850).events[0].verdict, EventVerdict::Outside);
    }

    #[test]
    fn missing_events_are_found_on_both_sides_and_occurrences_count() {
        let seeds = vec![
            run(vec![
                ev(100, "a", TraceKind::ReplicaUp, "b"),
                ev(900, "a", TraceKind::ReplicaUp, "b"),
            ]),
            run(vec![ev(120, "a", TraceKind::ReplicaUp, "b")]),
        ];
        // the 2nd up is in one seed only: not required of the real run
        let c = compare(
            &run(vec![ev(110, "a", TraceKind::ReplicaUp, "b")]),
            &seeds,
            100,
            10_000,
        );
        assert!(c.agrees(), "{c:?}");
        assert_eq!(c.events[1].verdict, EventVerdict::SomeSeedsOnly);
        // a real event no seed has
        let c = compare(
            &run(vec![
                ev(110, "a", TraceKind::ReplicaUp, "b"),
                ev(500, "a", TraceKind::ReplicaDown, "b"),
            ]),
            &seeds,
            100,
            10_000,
        );
        assert!(!c.agrees());
        assert!(
            c.events
                .iter()
                .any(|e| e.verdict == EventVerdict::MissingInSim)
        );
        // an event every seed has and the real run lacks
        let c = compare(&run(vec![]), &seeds, 100, 10_000);
        assert_eq!(c.events[0].verdict, EventVerdict::MissingInReal);
        assert!(!c.agrees());
        // ... unless it comes in the last tolerance window
        let c = compare(&run(vec![]), &seeds, 100, 200);
        assert!(c.agrees(), "{c:?}");
    }

    #[test]
    fn final_lists_must_equal_one_seeds_list() {
        let list = |keys: &[&str]| -> Lists {
            keys.iter()
                .map(|k| (k.to_string(), vec!["{}".into()]))
                .collect()
        };
        let with = |l: Lists| RunTrace {
            events: vec![],
            lists: [("a".to_string(), l)].into_iter().collect(),
        };
        let seeds = vec![with(list(&["x"])), with(list(&["x", "y"]))];
        assert!(compare(&with(list(&["x", "y"])), &seeds, 100, 1000).agrees());
        let c = compare(&with(list(&["y"])), &seeds, 100, 1000);
        assert!(!c.agrees());
        assert_eq!(c.lists[0].seeds_equal, 0);
    }
}
