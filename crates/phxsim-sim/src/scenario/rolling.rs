//! Rolling deploys: the nodes restart one after another, each as a new replica, the classic
//! trigger of zombie presences in Phoenix clusters.
//!
//! ```toml
//! [[timeline]]
//! at_ms = 3000
//! rolling_restart = ["a", "b", "c"]  # in this order
//! interval_ms = 2000                 # from one node's stop to the next one's (default 2000)
//! down_ms = 500                      # how long each node stays down (default 500)
//! ```
//!
//! Node k (0-based, in list order) stops abruptly at `at_ms + k × interval_ms`, as a deploy
//! that kills the VM does (peers see the connection drop; no graceful permdown), and starts
//! again `down_ms` later as a new replica: a new incarnation with a new `vsn`, an empty
//! tracker, and its clients reconnecting to it. So the step is exactly the `crash` and
//! `restart` steps it stands for ([`steps`]), and everything the timeline checks of a crash
//! (a node may not be stopped twice, a permdowned node never restarts) holds for each node.

use super::{Action, Step};

/// Default pause between two nodes' stops.
pub const DEFAULT_INTERVAL_MS: u64 = 2_000;
/// Default time each node stays down.
pub const DEFAULT_DOWN_MS: u64 = 500;

/// The `crash` and `restart` steps of a rolling restart of `nodes` starting at `at_ms`.
pub fn steps(at_ms: u64, nodes: &[String], interval_ms: u64, down_ms: u64) -> Vec<Step> {
    nodes
        .iter()
        .enumerate()
        .flat_map(|(k, n)| {
            let stop = at_ms + k as u64 * interval_ms;
            [
                Step {
                    at_ms: stop,
                    action: Action::Crash(n.clone()),
                },
                Step {
                    at_ms: stop + down_ms,
                    action: Action::Restart(n.clone()),
                },
            ]
        })
        .collect()
}

/// When the last node of a rolling restart is up again.
pub fn end_ms(at_ms: u64, nodes: usize, interval_ms: u64, down_ms: u64) -> u64 {
    at_ms + (nodes.saturating_sub(1) as u64) * interval_ms + down_ms
}

/// Checks a rolling restart's settings; errors name the field.
pub fn validate(
    nodes: &[String],
    interval_ms: u64,
    down_ms: u64,
) -> Result<(), (&'static str, String)> {
    if nodes.is_empty() {
        return Err(("rolling_restart", "at least one node".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(n) = nodes.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(("rolling_restart", format!("node {n:?} is listed twice")));
    }
    if interval_ms == 0 || interval_ms > 3_600_000 {
        return Err(("interval_ms", "between 1 and 3600000".into()));
    }
    if down_ms >= interval_ms {
        return Err((
            "down_ms",
            format!("less than interval_ms ({interval_ms}): one node is down at a time"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scenario;

    #[test]
    fn each_node_stops_then_starts_as_a_new_replica_in_turn() {
        let nodes = vec!["a".to_string(), "b".into(), "c".into()];
        let s = steps(1000, &nodes, 2000, 300);
        let got: Vec<(u64, String)> = s.iter().map(|s| (s.at_ms, s.action.label())).collect();
        assert_eq!(
            got,
            [
                (1000, "crash a".to_string()),
                (1300, "restart a".into()),
                (3000, "crash b".into()),
                (3300, "restart b".into()),
                (5000, "crash c".into()),
                (5300, "restart c".into()),
            ]
        );
        assert_eq!(end_ms(1000, 3, 2000, 300), 5300);
    }
    fn parse(step: &str) -> Result<Scenario, String> {
        let text = format!(
            "title = \"r\"\nnodes = [\"a\", \"b\", \"c\"]\nduration_ms = 10000\n[[timeline]]\n{step}"
        );
        Scenario::parse("r.toml", &text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_step_becomes_its_crashes_and_restarts() {
        let s = parse("at_ms = 1000\nrolling_restart = [\"c\", \"a\"]\n").unwrap();
        let labels: Vec<String> = s.timeline.iter().map(|s| s.action.label()).collect();
        assert_eq!(labels, ["crash c", "restart c", "crash a", "restart a"]);
        assert_eq!(
            s.timeline[3].at_ms,
            1000 + DEFAULT_INTERVAL_MS + DEFAULT_DOWN_MS
        );
    }

    #[test]
    fn bad_rolling_restarts_name_their_line_and_field() {
        let e = parse("at_ms = 1000\nrolling_restart = [\"a\", \"x\"]\n").unwrap_err();
        assert!(
            e.starts_with("r.toml:4: timeline.rolling_restart: unknown node \"x\""),
            "{e}"
        );
        let e = parse("at_ms = 1000\nrolling_restart = [\"a\", \"a\"]\n").unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e =
            parse("at_ms = 1000\nrolling_restart = [\"a\"]\ninterval_ms = 100\ndown_ms = 100\n")
                .unwrap_err();
        assert!(e.contains("timeline.down_ms: less than interval_ms"), "{e}");
        let e = parse("at_ms = 9000\nrolling_restart = [\"a\", \"b\"]\n").unwrap_err();
        assert!(e.contains("timeline.at_ms"), "{e}");
        let e = parse("at_ms = 1000\ninterval_ms = 100\n").unwrap_err();
        assert!(e.contains("only go with rolling_restart"), "{e}");
        // a node crashed before the deploy reaches it is stopped twice
        let text = "title = \"r\"\nnodes = [\"a\", \"b\"]\nduration_ms = 10000\n\
                    [[timeline]]\nat_ms = 500\ncrash = \"b\"\n\
                    [[timeline]]\nat_ms = 1000\nrolling_restart = [\"a\", \"b\"]\n";
        let e = Scenario::parse("r.toml", text).unwrap_err().to_string();
        assert!(e.contains("r.toml:7: timeline.crash"), "{e}");
    }
}
