//! The simulator end to end: determinism, the catalogue, every checker against its planted bug,
//! and the explorer finding every planted bug within a stated number of seeds.

use phxsim_sim::Scenario;
use phxsim_sim::checkers::FindingKind;
use phxsim_sim::explore::{SwarmConfig, generate};
use phxsim_sim::harness::{self, RunOptions, RunReport, Verdict};
use phxsim_sim::planted::{Catcher, PlantedBug};
use phxsim_sim::scenario::ProfileName;
use std::path::PathBuf;

fn catalogue_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn scenario(prefix: &str) -> Scenario {
    let dir = catalogue_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    assert_eq!(found.len(), 1, "one scenario starting with {prefix}");
    Scenario::load(&found.remove(0)).unwrap_or_else(|e| panic!("{e}"))
}

fn run(s: &Scenario, opts: RunOptions) -> RunReport {
    harness::run(s, &opts)
}

fn with_transcript(seed: u64) -> RunOptions {
    RunOptions {
        seed,
        transcript: true,
        ..RunOptions::default()
    }
}

/// In one process, repeated runs match byte for byte as long as no host crashes: a crash drops
/// the host's tasks in tokio task-id order, and task ids are process-global, so a second crash
/// in the same process tears sockets down in another order. The CLI (one run per process) is
/// byte-identical even with crashes: `crates/phxsim/tests/replay_cli.rs` checks scenario 13.
#[test]
fn one_seed_gives_byte_identical_transcripts() {
    for prefix in ["05_", "07_", "10_"] {
        let s = scenario(prefix);
        let first = run(&s, with_transcript(11)).transcript;
        let second = run(&s, with_transcript(11)).transcript;
        assert!(
            first.len() > 100,
            "{prefix}: a transcript worth comparing ({} lines)",
            first.len()
        );
        assert_eq!(
            first, second,
            "{prefix}: the same seed must replay byte for byte"
        );
        assert!(
            first.iter().any(|l| l.contains("\"ev\":\"frame\"")),
            "client frames are recorded"
        );
        assert!(
            first.iter().any(|l| l.contains("\"ev\":\"node_recv\"")),
            "node messages are recorded"
        );
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let s = scenario("05_");
    assert_ne!(
        run(&s, with_transcript(1)).transcript,
        run(&s, with_transcript(2)).transcript
    );
}

#[test]
fn the_whole_catalogue_passes_in_the_faithful_profile() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(catalogue_dir())
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 12, "a catalogue of at least 12 scenarios");
    for p in paths {
        let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
        let r = run(
            &s,
            RunOptions {
                seed: s.seed.unwrap_or(1),
                ..RunOptions::default()
            },
        );
        assert_eq!(
            r.verdict,
            Verdict::Pass,
            "{}: {:#?}",
            p.display(),
            r.failures
        );
    }
}

#[test]
fn the_reference_duplicate_leave_is_reported_as_an_anomaly() {
    let r = run(
        &scenario("07_"),
        RunOptions {
            seed: 1,
            ..RunOptions::default()
        },
    );
    let dup: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::DuplicateLeave)
        .collect();
    assert!(!dup.is_empty(), "{:#?}", r.findings);
    assert_eq!(
        r.verdict,
        Verdict::Pass,
        "expected by the scenario: {:#?}",
        r.failures
    );
}

fn kinds(r: &RunReport) -> Vec<FindingKind> {
    r.failures.iter().map(|f| f.kind).collect()
}

fn planted(name: &str) -> Option<PlantedBug> {
    Some(name.parse().unwrap_or_else(|e| panic!("{e}")))
}

/// Where each (planted bug, checker) pair of the registry is proven: a catalogue scenario
/// (strict: no anomaly allowed unless it says so) or an explorer seed (the scenario
/// `phxsim explore` draws for that seed, in the faithful profile).
enum Proof {
    Catalogue(&'static str),
    Explorer(u64),
}

/// One row per (bug, finding kind) of `PlantedBug::caught_by`; the first explorer row of a
/// bug is the first failing seed of `phxsim explore --seeds 1..200 --mutate NAME`.
const PROOFS: &[(&str, FindingKind, Proof)] = &[
    // a merge that ignores clouds re-admits known dots: joins of refs already held
    (
        "merge-ignores-clouds",
        FindingKind::DuplicateJoin,
        Proof::Catalogue("02_"),
    ),
    (
        "merge-ignores-clouds",
        FindingKind::ClientView,
        Proof::Explorer(1),
    ),
    // a leave whose tombstone never reaches peers: a ghost on every other node
    (
        "leave-loses-tombstone",
        FindingKind::Ghost,
        Proof::Catalogue("03_"),
    ),
    (
        "leave-loses-tombstone",
        FindingKind::Ghost,
        Proof::Explorer(1),
    ),
    // down replicas never hidden: what should be hidden during the split is listed
    (
        "never-hide-down",
        FindingKind::Expectation,
        Proof::Catalogue("05_"),
    ),
    ("never-hide-down", FindingKind::Ghost, Proof::Explorer(24)),
    // an update that stays local: peers list the old meta where the owner holds the new one
    (
        "update-stays-local",
        FindingKind::StaleMeta,
        Proof::Catalogue("02_"),
    ),
    (
        "update-stays-local",
        FindingKind::StaleMeta,
        Proof::Explorer(UPDATE_STAYS_LOCAL_SEED),
    ),
    // no transfer after a permdown: the presences never come back
    ("skip-transfer", FindingKind::Lost, Proof::Catalogue("06_")),
    (
        "skip-transfer",
        FindingKind::NoConvergence,
        Proof::Catalogue("06_"),
    ),
    ("skip-transfer", FindingKind::Lost, Proof::Explorer(1)),
    // down detected late: the halted node's presences outlive the ghost bound, and the
    // cluster converges only after its bound (the late branch of the convergence checker)
    (
        "slow-down-detection",
        FindingKind::Ghost,
        Proof::Catalogue("09_"),
    ),
    (
        "slow-down-detection",
        FindingKind::NoConvergence,
        Proof::Catalogue("09_"),
    ),
    (
        "slow-down-detection",
        FindingKind::Ghost,
        Proof::Explorer(SLOW_DOWN_SEED),
    ),
    // a transfer answered with a generation that does not reach back to the requester's
    // context: the gap is never filled, so what was in it stays missing (the catalogue's
    // heals are all served by a contiguous generation or the full state)
    (
        "generation-choice-ignores-gap",
        FindingKind::Lost,
        Proof::Explorer(59),
    ),
    (
        "drop-phx-ref-prev",
        FindingKind::ClientView,
        Proof::Explorer(1),
    ),
    (
        "no-presence-state",
        FindingKind::ClientView,
        Proof::Explorer(NO_PRESENCE_STATE_SEED),
    ),
    (
        "state-with-wrong-join-ref",
        FindingKind::ClientView,
        Proof::Explorer(WRONG_JOIN_REF_SEED),
    ),
    // a server that keeps a gone socket's presence: the socket-truth ghost check
    (
        "keep-presences-on-disconnect",
        FindingKind::Ghost,
        Proof::Catalogue("04_"),
    ),
    (
        "keep-presences-on-disconnect",
        FindingKind::Ghost,
        Proof::Explorer(7),
    ),
    // diffs that lose their leaves: clients keep what their node dropped
    (
        "drop-leaves",
        FindingKind::ClientView,
        Proof::Catalogue("03_"),
    ),
    ("drop-leaves", FindingKind::ClientView, Proof::Explorer(1)),
    // leaves of refs never sent: the client keeps the presence, and the leave is of a ref it
    // does not hold (an anomaly the faithful explorer tolerates, a failure in scenario 03)
    (
        "leave-wrong-ref",
        FindingKind::DuplicateLeave,
        Proof::Catalogue("03_"),
    ),
    (
        "leave-wrong-ref",
        FindingKind::ClientView,
        Proof::Explorer(LEAVE_WRONG_REF_SEED),
    ),
    (
        "forget-pending-diffs",
        FindingKind::DiffStream,
        Proof::Explorer(19),
    ),
    // the join's old order: a connection lost mid-join skips the untrack, and the socket
    // truth sees a presence with no socket (`--mutate` brings the `drop_mid_join` fault)
    (
        "track-before-bookkeeping",
        FindingKind::Ghost,
        Proof::Explorer(3),
    ),
];

const UPDATE_STAYS_LOCAL_SEED: u64 = 1;
const SLOW_DOWN_SEED: u64 = 3;
const NO_PRESENCE_STATE_SEED: u64 = 1;
const WRONG_JOIN_REF_SEED: u64 = 1;
const LEAVE_WRONG_REF_SEED: u64 = 1;

#[test]
fn every_pair_of_the_registry_has_a_proof_and_every_bug_an_explorer_seed() {
    let mut want: Vec<(&str, FindingKind)> = PlantedBug::ALL
        .iter()
        .flat_map(|b| {
            b.caught_by().iter().filter_map(move |c| match c {
                Catcher::Checker(k) => Some((b.name(), *k)),
                Catcher::Conformance => None,
            })
        })
        .collect();
    want.sort();
    let mut have: Vec<(&str, FindingKind)> = PROOFS.iter().map(|(b, k, _)| (*b, *k)).collect();
    have.sort();
    have.dedup();
    assert_eq!(have, want, "PROOFS and PlantedBug::caught_by disagree");
    for b in PlantedBug::ALL.iter().filter(|b| !b.conformance_only()) {
        assert!(
            PROOFS
                .iter()
                .any(|(n, _, p)| *n == b.name() && matches!(p, Proof::Explorer(_))),
            "{b}: no explorer seed finds it"
        );
    }
}

#[test]
fn each_checker_catches_the_bugs_it_exists_for_in_the_catalogue() {
    for (name, kind, proof) in PROOFS {
        let Proof::Catalogue(prefix) = proof else {
            continue;
        };
        let opts = RunOptions {
            seed: 1,
            planted: planted(name),
            ..Default::default()
        };
        let r = run(&scenario(prefix), opts);
        assert!(
            kinds(&r).contains(kind),
            "{prefix} with {name}: expected {kind}, got {:#?}",
            r.failures
        );
        assert_ne!(r.verdict, Verdict::Pass);
    }
}

/// The explorer's side: the scenario drawn for the pinned seed fails, and with the checker
/// the registry names (so a bug cannot pass for found because something else broke).
#[test]
fn the_explorer_finds_every_planted_bug_with_the_checker_that_exists_for_it() {
    for (name, kind, proof) in PROOFS {
        let Proof::Explorer(seed) = proof else {
            continue;
        };
        // as `phxsim explore --mutate NAME` draws: with the fault kinds the bug needs
        let mut cfg = SwarmConfig::default();
        cfg.faults
            .extend(planted(name).expect("a bug").explore_faults());
        let opts = RunOptions {
            seed: *seed,
            planted: planted(name),
            ..Default::default()
        };
        let r = harness::run(&generate(*seed, &cfg), &opts);
        assert!(
            kinds(&r).contains(kind),
            "{name} at explorer seed {seed}: expected {kind}, got {:#?}",
            r.failures
        );
    }
}

#[test]
fn the_convergence_checker_reports_a_cluster_that_converges_after_its_bound() {
    let s = scenario("09_");
    let clean = run(
        &s,
        RunOptions {
            seed: 1,
            ..Default::default()
        },
    );
    assert_eq!(clean.verdict, Verdict::Pass, "{:#?}", clean.failures);
    let r = run(
        &s,
        RunOptions {
            seed: 1,
            planted: planted("slow-down-detection"),
            ..Default::default()
        },
    );
    let late: Vec<_> = r
        .failures
        .iter()
        .filter(|f| f.kind == FindingKind::NoConvergence)
        .collect();
    assert!(
        late.iter().any(|f| f.detail.starts_with("converged at")),
        "converged, but after the bound: {:#?}",
        r.failures
    );
}

#[test]
fn a_client_that_forgets_pending_diffs_is_caught_by_the_diff_stream_replay() {
    // seed 19: node c crashes and comes back at the heal; u2 and u5 rejoin it in the same
    // instant and their sessions take turns with the tracker, so one join's presence_state
    // (read when it subscribed) misses the other's join, which reaches it only as a diff that
    // comes before the state: a client that drops such diffs loses that presence
    let s = generate(19, &SwarmConfig::default());
    let clean = run(
        &s,
        RunOptions {
            seed: 19,
            ..Default::default()
        },
    );
    assert_eq!(clean.verdict, Verdict::Pass, "{:#?}", clean.failures);
    let r = run(
        &s,
        RunOptions {
            seed: 19,
            planted: planted("forget-pending-diffs"),
            ..Default::default()
        },
    );
    assert!(
        kinds(&r).contains(&FindingKind::DiffStream),
        "{:#?}",
        r.failures
    );
}

#[test]
fn issue_148_is_reproduced_from_its_scenario_file_and_seed() {
    let s = scenario("10_");
    let r = run(
        &s,
        RunOptions {
            seed: s.seed.expect("the scenario pins its seed"),
            ..Default::default()
        },
    );
    let lost: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Lost && f.subject == "c" && f.detail.contains("alice"))
        .collect();
    assert_eq!(
        lost.len(),
        1,
        "c loses alice after b's stale transfer: {:#?}",
        r.findings
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == FindingKind::NoConvergence)
    );
    assert_eq!(
        r.verdict,
        Verdict::Pass,
        "the scenario expects exactly this: {:#?}",
        r.failures
    );
}

#[test]
fn the_corrected_profile_refuses_the_stale_transfer_of_issue_148() {
    let corrected = scenario("19_");
    assert_eq!(corrected.tracker.profile, ProfileName::Corrected);
    let seed = corrected.seed.expect("pinned");
    let clean = run(
        &corrected,
        RunOptions {
            seed,
            ..Default::default()
        },
    );
    assert_eq!(clean.verdict, Verdict::Pass, "{:#?}", clean.failures);
    assert!(clean.findings.iter().all(|f| f.kind != FindingKind::Lost));
    // the same run in the faithful profile loses alice: the stale transfer does happen here
    let mut faithful = corrected.clone();
    faithful.tracker.profile = ProfileName::Faithful;
    let upstream = run(
        &faithful,
        RunOptions {
            seed,
            ..Default::default()
        },
    );
    assert!(
        upstream
            .failures
            .iter()
            .any(|f| f.kind == FindingKind::Lost && f.detail.contains("alice")),
        "{:#?}",
        upstream.findings
    );
}

/// Every push's round trip (the client's frame with a ref to the `phx_reply` with that ref), in
/// simulated ms, from a transcript of V2 clients.
fn push_round_trips(transcript: &[String]) -> Vec<u64> {
    let mut sent = std::collections::BTreeMap::new();
    let mut trips = Vec::new();
    for line in transcript {
        let e: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let (Some("frame"), Some(data)) = (e["ev"].as_str(), e["data"].as_str()) else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_str(data).expect("V2 frame");
        let key = (e["client"].to_string(), m[1].to_string());
        let t = e["t"].as_u64().expect("time");
        match e["dir"].as_str() {
            Some("out") if !m[1].is_null() => {
                sent.insert(key, t);
            }
            Some("in") if m[3] == "phx_reply" => {
                if let Some(at) = sent.remove(&key) {
                    trips.push(t - at);
                }
            }
            _ => {}
        }
    }
    trips
}

#[test]
fn browser_link_loss_delays_replies_by_a_retransmission_and_loses_nothing() {
    let lossy = scenario("18_");
    assert!(lossy.network.client_loss > 0.0);
    let mut clean = lossy.clone();
    clean.network.client_loss = 0.0;
    let rto = lossy.network.rto_ms;
    let two_hops = 2 * lossy.network.latency_ms[1] + 2;
    let with_loss = run(&lossy, with_transcript(1));
    let without = run(&clean, with_transcript(1));
    for r in [&with_loss, &without] {
        assert_eq!(r.verdict, Verdict::Pass, "{:#?}", r.failures);
    }
    let lossy_trips = push_round_trips(&with_loss.transcript);
    let clean_trips = push_round_trips(&without.transcript);
    // every push is answered either way: late, never lost
    assert_eq!(lossy_trips.len(), clean_trips.len());
    assert!(lossy_trips.len() >= 20, "{lossy_trips:?}");
    assert!(
        clean_trips.iter().all(|&t| t <= two_hops),
        "{clean_trips:?}"
    );
    assert!(
        lossy_trips.iter().any(|&t| t >= rto),
        "a lost segment waits one RTO: {lossy_trips:?}"
    );
    // and the transcript says which segments were lost, on which browser link
    let lost = |r: &RunReport| {
        r.transcript
            .iter()
            .filter(|l| l.contains(r#""ev":"segment_lost""#))
            .count()
    };
    assert_eq!(lost(&without), 0);
    assert!(lost(&with_loss) > 0);
    assert!(
        with_loss
            .transcript
            .iter()
            .filter(|l| l.contains("segment_lost"))
            .all(|l| l.contains(r#""to":"clients""#) || l.contains(r#""sender":"browser""#)),
        "only browser links lose segments here"
    );
}

#[test]
fn shrinking_drops_whole_clients_and_keeps_the_same_failure() {
    let bug = RunOptions {
        seed: 1,
        planted: planted("drop-leaves"),
        ..Default::default()
    };
    let drawn = generate(1, &SwarmConfig::default());
    let first = harness::run(&drawn, &bug);
    assert_eq!(first.verdict, Verdict::Safety, "{:#?}", first.failures);
    let (small, report) = phxsim_sim::explore::shrink(&drawn, &bug, first.verdict, 20);
    assert_eq!(report.verdict, Verdict::Safety);
    assert!(
        report
            .failures
            .iter()
            .any(|f| first.failures.iter().any(|g| g.kind == f.kind)),
        "the same kind of failure: {:#?}",
        report.failures
    );
    // a dropped leave is seen by the client whose meta changed: one client is enough
    assert_eq!(small.clients.len(), 1, "{:#?}", small.clients);
    assert!(small.timeline.len() < drawn.timeline.len());
    let name = &small.clients[0].name;
    assert!(
        small
            .timeline
            .iter()
            .filter_map(|s| s.action.client())
            .all(|c| c == name),
        "no step names a client that is gone"
    );
}

/// Issue 17 in the simulator: a browser whose connection drops somewhere in its join
/// exchange. A correct server leaves no presence behind, wherever the cut falls; the join's
/// old order (track, then the writes, then the bookkeeping) leaves one for a socket that is
/// gone, and the socket-truth ghost check says so.
#[test]
fn a_join_cut_midway_leaves_no_ghost_unless_the_server_tracks_before_its_bookkeeping() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mid_join.toml");
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let bug = planted("track-before-bookkeeping");
    let mut caught = Vec::new();
    for seed in 1..=10 {
        let fine = run(
            &s,
            RunOptions {
                seed,
                ..RunOptions::default()
            },
        );
        assert_eq!(
            fine.verdict,
            Verdict::Pass,
            "seed {seed}: {:#?}",
            fine.failures
        );
        let r = run(
            &s,
            RunOptions {
                seed,
                planted: bug,
                ..RunOptions::default()
            },
        );
        if r.verdict != Verdict::Pass {
            assert_eq!(kinds(&r), [FindingKind::Ghost], "seed {seed}");
            let f = &r.failures[0];
            assert_eq!(f.subject, "a", "the node of the cut client");
            assert!(
                f.detail
                    .contains("alice: 1 presence(s) tracked for 0 joined socket(s)"),
                "{f}"
            );
            caught.push(seed);
        }
    }
    // where the cut falls is drawn from the seed: some seeds cut between the join's arrival
    // and its writes, the only place the old order leaks
    assert_eq!(caught, [5, 8]);
}
