//! Reference timing in the scenario catalogue: the scenarios that mirror a phase of the real
//! Phoenix.Tracker cluster run (3 nodes on loopback, broadcast_period 100, down 2 000,
//! permdown 5 000; `spec/tracker.md`, "Reference timings") must show their events within a
//! window that the real cluster's own timings fall in, instead of only matching a snapshot
//! the simulator recorded itself.
//!
//! The real timings are read from the recorded run's timeline (copied into the repository as
//! `crates/phxsim-shard/tests/data/tracker-cluster-run2/timeline.txt`), not typed in. Each
//! window is what the mechanism allows whatever the phase of the tracker's ticks, and the test
//! first checks that every real timing lies in its window:
//! - a change reaches a peer with the owner's next broadcast: within one broadcast period
//!   (plus a few milliseconds of link and processing time);
//! - a silent peer is marked down `down_period` after it was last heard, and it was last heard
//!   at most one idle heartbeat interval before the silence began (`max_silent_periods`
//!   ticks, each handled 1 ms late on the BEAM: 11 × 101 = 1 111 ms in this run); likewise
//!   for permdown;
//! - a graceful permdown is seen at once.
//!
//! Not pinned here, and why: the three concurrent tracks (P1), since the reference's
//! controller issued them one after another over 47 ms, so its delays mix in controller time;
//! and the heals (P5_heal, P6_heal, P7_heal), since the real controller reconnected the nodes
//! at once with `Node.connect` while the simulator's links redial on their own backoff
//! schedule, so the time to visibility after a heal measures the redial, not the tracker.
//! `phxsim crosscheck` compares those against a live cluster.

use phxsim_sim::Scenario;
use phxsim_sim::harness::{self, RunOptions};
use phxsim_sim::node_trace::{TraceEvent, TraceKind};
use phxsim_sim::planted::PlantedBug;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The tracker settings of the reference run (its `ctl.jsonl` header).
const BROADCAST_MS: u64 = 100;
const MAX_SILENT_PERIODS: u64 = 10;
const DOWN_MS: u64 = 2_000;
const PERMDOWN_MS: u64 = 5_000;
/// Link and processing time on top of a broadcast period: loopback, or the simulator's
/// 1–5 ms links, and a client's push to its node.
const SLACK_MS: u64 = 10;

/// What a row measures: its window follows from the mechanism.
#[derive(Clone, Copy, Debug)]
enum Mechanism {
    /// A change carried by the owner's next broadcast.
    Broadcast,
    /// A peer marked down after silence.
    Down,
    /// A peer marked permdown after silence.
    Permdown,
    /// A graceful permdown, announced at once.
    Graceful,
}

impl Mechanism {
    fn window(self) -> (u64, u64) {
        let idle_heartbeat = MAX_SILENT_PERIODS * (BROADCAST_MS + 1);
        match self {
            Mechanism::Broadcast => (0, BROADCAST_MS + SLACK_MS),
            Mechanism::Down => (DOWN_MS - idle_heartbeat, DOWN_MS + BROADCAST_MS + SLACK_MS),
            Mechanism::Permdown => (
                PERMDOWN_MS - idle_heartbeat,
                PERMDOWN_MS + BROADCAST_MS + SLACK_MS,
            ),
            Mechanism::Graceful => (0, SLACK_MS),
        }
    }
}

/// One timing of one phase: the event on `node` (a `handle_diff` join or leave of `key`, or a
/// replica event about `key`) after the phase's action, and the catalogue scenario that
/// mirrors the phase, with the label of its step that stands for the action.
struct Row {
    phase: &'static str,
    mechanism: Mechanism,
    node: &'static str,
    event: &'static str,
    key: &'static str,
    scenario: &'static str,
    step: &'static str,
}

/// One row a line: phase, mechanism, node, event, key, scenario prefix, and the step (the
/// start of its label).
const TABLE: &str = "
P2_update              broadcast b join             alice 02_ update alice
P2_update              broadcast c join             alice 02_ update alice
P3_untrack             broadcast a leave            bob   03_ leave bob
P3_untrack             broadcast c leave            bob   03_ leave bob
P4_pid_exit            broadcast a leave            carol 04_ disconnect carol
P4_pid_exit            broadcast b leave            carol 04_ disconnect carol
P5_partition_c_short   down      a replica_down     c     05_ partition
P5_partition_c_short   down      b replica_down     c     05_ partition
P5_partition_c_short   down      c replica_down     a     05_ partition
P6_partition_c_long    down      a replica_down     c     06_ partition
P6_partition_c_long    permdown  a replica_permdown c     06_ partition
P6_partition_c_long    permdown  b replica_permdown c     06_ partition
P7_partition_a_c_only  down      a replica_down     c     07_ cut
P8_graceful_permdown_b graceful  a replica_down     b     08_ permdown b
P8_graceful_permdown_b graceful  c replica_down     b     08_ permdown b
P9_kill_node_c         down      a replica_down     c     09_ partition
P9_kill_node_c         permdown  a replica_permdown c     09_ partition
";

fn rows() -> impl Iterator<Item = Row> {
    TABLE.lines().filter(|l| !l.trim().is_empty()).map(|line| {
        let f: Vec<&'static str> = line.split_whitespace().collect();
        let mechanism = match f[1] {
            "broadcast" => Mechanism::Broadcast,
            "down" => Mechanism::Down,
            "permdown" => Mechanism::Permdown,
            "graceful" => Mechanism::Graceful,
            other => panic!("unknown mechanism {other}"),
        };
        let step_at = line.find(f[5]).expect("the scenario field") + f[5].len();
        Row {
            phase: f[0],
            mechanism,
            node: f[2],
            event: f[3],
            key: f[4],
            scenario: f[5],
            step: line[step_at..].trim(),
        }
    })
}

/// The recorded run's events: phase → `(ms after the phase began, node, event, detail)`.
fn reference() -> BTreeMap<String, Vec<(u64, String, String, String)>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../phxsim-shard/tests/data/tracker-cluster-run2/timeline.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut phases: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut phase = String::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("=== ")
            .and_then(|l| l.strip_suffix(" ==="))
        {
            phase = name.to_owned();
            continue;
        }
        // `+  1795ms   a replica_down {"remote": "c"}`
        let Some(rest) = line.strip_prefix('+') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(ms), Some(node), Some(event)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Some(ms) = ms.strip_suffix("ms").and_then(|m| m.parse().ok()) else {
            continue;
        };
        let detail = words.collect::<Vec<_>>().join(" ");
        phases.entry(phase.clone()).or_default().push((
            ms,
            node.to_owned(),
            event.to_owned(),
            detail,
        ));
    }
    phases
}

/// The real cluster's time for a row: its first matching event in the phase.
fn real_ms(phases: &BTreeMap<String, Vec<(u64, String, String, String)>>, r: &Row) -> u64 {
    let events = phases
        .get(r.phase)
        .unwrap_or_else(|| panic!("phase {} not in the reference", r.phase));
    let found = events.iter().find(|(_, node, event, detail)| {
        node == r.node
            && match r.event {
                // `handle_diff lobby joins=["alice{...}"] leaves=['alice']`
                "join" => {
                    event == "handle_diff"
                        && detail
                            .split(" leaves=")
                            .next()
                            .is_some_and(|joins| joins.contains(&format!("\"{}{{", r.key)))
                }
                "leave" => {
                    event == "handle_diff"
                        && detail
                            .split(" leaves=")
                            .nth(1)
                            .is_some_and(|l| l.contains(&format!("'{}'", r.key)))
                }
                replica => event == replica && detail.contains(&format!("\"{}\"", r.key)),
            }
    });
    found
        .unwrap_or_else(|| {
            panic!(
                "{} {} {} of {}: no such event",
                r.phase, r.node, r.event, r.key
            )
        })
        .0
}

/// The simulator's time for a row: its first matching tracker event after the step.
fn simulated_ms(trace: &[TraceEvent], step_ms: u64, r: &Row) -> Option<u64> {
    let kind = match r.event {
        "join" => TraceKind::Join,
        "leave" => TraceKind::Leave,
        "replica_down" => TraceKind::ReplicaDown,
        "replica_permdown" => TraceKind::ReplicaPermdown,
        other => panic!("unknown event {other}"),
    };
    let subject = match kind {
        TraceKind::Join | TraceKind::Leave => format!("room:lobby/{}", r.key),
        _ => r.key.to_owned(),
    };
    trace
        .iter()
        .find(|e| e.t_ms >= step_ms && e.node == r.node && e.kind == kind && e.subject == subject)
        .map(|e| e.t_ms - step_ms)
}

fn scenario(prefix: &str) -> Scenario {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let path = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no scenario {prefix}"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_real_timing_lies_in_the_window_its_mechanism_allows() {
    let phases = reference();
    for r in rows() {
        let (lo, hi) = r.mechanism.window();
        let real = real_ms(&phases, &r);
        assert!(
            (lo..=hi).contains(&real),
            "{} {} {} {}: the real cluster took {real} ms, outside [{lo}, {hi}]",
            r.phase,
            r.node,
            r.event,
            r.key
        );
    }
}

/// The rows of one scenario, run with `seed` (and a planted bug): what fell outside its
/// window, as messages.
fn outside_the_windows(prefix: &str, seed: u64, planted: Option<PlantedBug>) -> Vec<String> {
    let s = scenario(prefix);
    // the same tracker settings as the real run, or the windows would not apply
    assert_eq!(
        (
            s.tracker.broadcast_period_ms,
            s.tracker.down_period_ms,
            s.tracker.permdown_period_ms
        ),
        (BROADCAST_MS, Some(DOWN_MS), PERMDOWN_MS),
        "{prefix}"
    );
    let report = harness::run(
        &s,
        &RunOptions {
            seed,
            planted,
            node_trace: true,
            ..RunOptions::default()
        },
    );
    let mut out = Vec::new();
    for r in rows().filter(|r| r.scenario == prefix) {
        let step = s
            .timeline
            .iter()
            .find(|st| st.action.label().starts_with(r.step))
            .unwrap_or_else(|| panic!("{prefix}: no step {:?}", r.step));
        let (lo, hi) = r.mechanism.window();
        let got = simulated_ms(&report.node_trace, step.at_ms, &r);
        if !got.is_some_and(|ms| (lo..=hi).contains(&ms)) {
            out.push(format!(
                "{prefix} seed {seed}: {} {} of {} after {:?} took {got:?} ms; the real \
                 cluster's window ({}) is [{lo}, {hi}]",
                r.node, r.event, r.key, r.step, r.phase
            ));
        }
    }
    out
}

#[test]
fn the_scenarios_that_mirror_a_reference_phase_keep_its_timing() {
    let mut prefixes: Vec<&str> = rows().map(|r| r.scenario).collect();
    prefixes.dedup();
    for prefix in prefixes {
        for seed in [1, 2] {
            let outside = outside_the_windows(prefix, seed, None);
            assert!(outside.is_empty(), "{outside:#?}");
        }
    }
}

/// The windows catch timing bugs the snapshots alone would only show as a moved transcript:
/// down detection four times late, and an update that never leaves its node.
#[test]
fn a_late_down_detection_or_a_lost_update_falls_outside_the_real_windows() {
    let slow: PlantedBug = "slow-down-detection".parse().expect("a planted bug");
    let outside = outside_the_windows("05_", 1, Some(slow));
    assert!(
        outside.iter().any(|o| o.contains("replica_down of c")),
        "{outside:#?}"
    );
    let local: PlantedBug = "update-stays-local".parse().expect("a planted bug");
    let outside = outside_the_windows("02_", 1, Some(local));
    assert_eq!(outside.len(), 2, "{outside:#?}");
}
