//! Scenario files: a valid one parses with defaults filled in; each kind of mistake gives an
//! error that names the line and the field.

use phxsim_sim::{Action, Scenario};

const GOOD: &str = r#"
title = "partition 2-1, isolate c, heal before down_period"
nodes = ["a", "b", "c"]
duration_ms = 6000

[tracker]
broadcast_period_ms = 100
max_silent_periods = 2
permdown_period_ms = 5000

[[clients]]
name = "alice"
node = "a"
meta = { name = "Alice" }

[[clients]]
name = "carol"
node = "c"
vsn = "1.0.0"

[[timeline]]
at_ms = 500
join = "alice"

[[timeline]]
at_ms = 400
join = "carol"

[[timeline]]
at_ms = 1500
partition = [["a", "b"], ["c"]]

[[timeline]]
at_ms = 2000
update = "alice"
meta = { status = "away" }

[[timeline]]
at_ms = 2500
heal = true

[expect]
converged_within_ms = 1000
allow = ["duplicate_join"]

[[expect.visible]]
at_ms = 3000
node = "c"
keys = ["alice", "carol"]
"#;

#[test]
fn a_valid_scenario_parses_with_phoenix_defaults() {
    let s = Scenario::parse("good.toml", GOOD).unwrap();
    assert_eq!(s.nodes, ["a", "b", "c"]);
    assert_eq!(
        s.tracker.down_period(),
        400,
        "100 × 2 × 2, as Phoenix derives it"
    );
    assert_eq!(s.tracker.max_delta_sizes, [100, 1000, 10_000]);
    assert_eq!(s.clients[0].user(), "alice");
    assert_eq!(s.clients[0].topic, "room:lobby");
    assert_eq!(s.network.latency_ms, [1, 5]);
    let labels: Vec<_> = s
        .timeline
        .iter()
        .map(|st| (st.at_ms, st.action.label()))
        .collect();
    assert_eq!(labels[0], (400, "join carol".to_string()), "sorted by time");
    assert!(matches!(s.timeline[2].action, Action::Partition(ref g) if g.len() == 2));
    assert_eq!(s.expect.visible[0].keys, ["alice", "carol"]);
}

fn error_of(text: &str) -> String {
    Scenario::parse("bad.toml", text).unwrap_err().to_string()
}

fn replace(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn an_unknown_field_names_its_line() {
    let e = error_of(&replace(
        "duration_ms = 6000",
        "duration_ms = 6000\ncolour = 3",
    ));
    assert!(e.starts_with("bad.toml:5: toml:"), "{e}");
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn a_client_on_an_unknown_node_is_refused_with_its_line() {
    let e = error_of(&replace("node = \"c\"", "node = \"zz\""));
    assert!(e.starts_with("bad.toml:16: clients.node:"), "{e}");
    assert!(e.contains("unknown node \"zz\""), "{e}");
}

/// `clients` is the browsers' host (and the name of their links): a node of that name would
/// be a second host of the same name, which turmoil refuses with a panic.
#[test]
fn a_node_named_clients_is_refused() {
    let e = error_of(&replace(
        "nodes = [\"a\", \"b\", \"c\"]",
        "nodes = [\"a\", \"b\", \"clients\"]",
    ));
    assert!(e.starts_with("bad.toml:"), "{e}");
    assert!(e.contains("nodes:") && e.contains("browsers' host"), "{e}");
}

#[test]
fn a_timeline_entry_needs_exactly_one_action() {
    let e = error_of(&replace(
        "join = \"alice\"",
        "join = \"alice\"\nleave = \"alice\"",
    ));
    assert!(
        e.contains("timeline.action: one action per timeline entry"),
        "{e}"
    );
    let e = error_of(&replace("at_ms = 500\njoin = \"alice\"", "at_ms = 500"));
    assert!(e.contains("timeline.action: no action"), "{e}");
}

#[test]
fn a_timeline_entry_with_an_unknown_client_names_its_line() {
    let e = error_of(&replace("join = \"alice\"", "join = \"mallory\""));
    assert!(e.starts_with("bad.toml:21: timeline.join:"), "{e}");
}

#[test]
fn update_needs_a_meta_table() {
    let e = error_of(&replace("meta = { status = \"away\" }", ""));
    assert!(
        e.contains("timeline.meta: update needs a meta table"),
        "{e}"
    );
}

#[test]
fn a_node_in_two_partition_groups_is_refused() {
    let e = error_of(&replace(
        r#"[["a", "b"], ["c"]]"#,
        r#"[["a", "b"], ["b", "c"]]"#,
    ));
    assert!(e.contains("node \"b\" is in two groups"), "{e}");
}

#[test]
fn a_partition_that_leaves_a_node_out_is_refused() {
    let e = error_of(&replace(r#"[["a", "b"], ["c"]]"#, r#"[["a"], ["c"]]"#));
    assert!(e.starts_with("bad.toml:29: timeline.partition:"), "{e}");
    assert!(e.contains("node \"b\" is in no group"), "{e}");
}

#[test]
fn an_empty_topic_is_refused() {
    let e = error_of(&replace("vsn = \"1.0.0\"", "vsn = \"1.0.0\"\ntopic = \"\""));
    assert!(
        e.starts_with("bad.toml:16: clients.topic: must not be empty"),
        "{e}"
    );
    let e = error_of(&replace(
        "node = \"c\"\nkeys",
        "node = \"c\"\ntopic = \"\"\nkeys",
    ));
    assert!(e.contains("expect.visible.topic: must not be empty"), "{e}");
}

/// `crash` stops a running node and `restart` starts a crashed one; `permdown` is for good.
/// In time order (not file order); a step that would do nothing names its line.
#[test]
fn crash_permdown_and_restart_must_fit_the_node_s_state() {
    let with = |steps: &str| replace("at_ms = 2500\nheal = true", steps);
    let ok = with("at_ms = 2900\nrestart = \"b\"\n[[timeline]]\nat_ms = 2500\ncrash = \"b\"");
    Scenario::parse("ok.toml", &ok).unwrap();
    let e = error_of(&with(
        "at_ms = 2500\npermdown = \"c\"\n[[timeline]]\nat_ms = 2600\nrestart = \"c\"",
    ));
    assert!(
        e.starts_with("bad.toml:41: timeline.restart: node \"c\" left the cluster for good by permdown at 2500 ms"),
        "{e}"
    );
    let e = error_of(&with("at_ms = 2500\nrestart = \"b\""));
    assert!(
        e.starts_with("bad.toml:38: timeline.restart: node \"b\" is running at 2500 ms"),
        "{e}"
    );
    let e = error_of(&with(
        "at_ms = 2500\ncrash = \"b\"\n[[timeline]]\nat_ms = 2600\npermdown = \"b\"",
    ));
    assert!(
        e.starts_with(
            "bad.toml:41: timeline.permdown: node \"b\" is already stopped (by crash at 2500 ms)"
        ),
        "{e}"
    );
}

#[test]
fn tracker_settings_phoenix_would_refuse_are_refused() {
    let e = error_of(&replace(
        "permdown_period_ms = 5000",
        "permdown_period_ms = 300",
    ));
    assert!(e.contains("tracker.permdown_period_ms"), "{e}");
    assert!(e.starts_with("bad.toml:6:"), "{e}");
    let e = error_of(&replace(
        "max_silent_periods = 2",
        "max_silent_periods = 2\ndown_period_ms = 150",
    ));
    assert!(e.contains("tracker.down_period_ms"), "{e}");
}

#[test]
fn an_unknown_expected_finding_is_refused() {
    let e = error_of(&replace(
        "allow = [\"duplicate_join\"]",
        "allow = [\"gremlins\"]",
    ));
    assert!(
        e.contains("expect.allow: unknown finding \"gremlins\""),
        "{e}"
    );
}

#[test]
fn a_step_after_the_end_is_refused() {
    let e = error_of(&replace("at_ms = 2500", "at_ms = 9000"));
    assert!(
        e.contains("timeline.at_ms: 9000 is after duration_ms 6000"),
        "{e}"
    );
}

#[test]
fn not_toml_at_all_is_an_error_not_a_panic() {
    for text in ["\u{0}\u{1}", "[[[", "title = ", "nodes = 3", ""] {
        let e = error_of(text);
        assert!(e.starts_with("bad.toml:"), "{e}");
    }
}

#[test]
fn network_loss_and_retransmission_timeout_are_checked() {
    let lossy = replace(
        "duration_ms = 6000",
        "duration_ms = 6000\n[network]\nloss = 0.02\nrto_ms = 250",
    );
    let s = Scenario::parse("lossy.toml", &lossy).unwrap();
    assert_eq!((s.network.loss, s.network.rto_ms), (0.02, 250));
    assert_eq!(
        Scenario::parse("good.toml", GOOD).unwrap().network.rto_ms,
        200,
        "Linux's minimum RTO by default"
    );
    let e = error_of(&replace(
        "duration_ms = 6000",
        "duration_ms = 6000\n[network]\nloss = 1.5",
    ));
    assert!(e.contains("network.loss: a probability in [0, 1]"), "{e}");
    let e = error_of(&replace(
        "duration_ms = 6000",
        "duration_ms = 6000\n[network]\nrto_ms = 0",
    ));
    assert!(e.contains("network.rto_ms: between 1 and 60000"), "{e}");
}

#[test]
fn a_loss_step_changes_the_rate_and_must_be_a_probability() {
    let s = Scenario::parse(
        "lossy.toml",
        &replace(
            "heal = true",
            "heal = true\n[[timeline]]\nat_ms = 2600\nloss = 0.0",
        ),
    )
    .unwrap();
    assert!(
        s.timeline
            .iter()
            .any(|st| st.at_ms == 2600 && st.action == Action::Loss(0.0))
    );
    let e = error_of(&replace(
        "heal = true",
        "heal = true\n[[timeline]]\nat_ms = 2600\nloss = -0.1",
    ));
    assert!(e.contains("timeline.loss: a probability in [0, 1]"), "{e}");
}

#[test]
fn browser_link_loss_is_a_probability_in_the_network_and_in_a_step() {
    let s = Scenario::parse(
        "lossy.toml",
        &replace(
            "duration_ms = 6000",
            "duration_ms = 6000\n[network]\nclient_loss = 0.05",
        ),
    )
    .unwrap();
    assert_eq!((s.network.loss, s.network.client_loss), (0.0, 0.05));
    let e = error_of(&replace(
        "duration_ms = 6000",
        "duration_ms = 6000\n[network]\nclient_loss = 2",
    ));
    assert!(
        e.contains("network.client_loss: a probability in [0, 1]"),
        "{e}"
    );
    let s = Scenario::parse(
        "lossy.toml",
        &replace(
            "heal = true",
            "heal = true\n[[timeline]]\nat_ms = 2600\nclient_loss = 0.0",
        ),
    )
    .unwrap();
    assert!(
        s.timeline
            .iter()
            .any(|st| st.at_ms == 2600 && st.action == Action::ClientLoss(0.0))
    );
    let e = error_of(&replace(
        "heal = true",
        "heal = true\n[[timeline]]\nat_ms = 2600\nclient_loss = 1.01",
    ));
    assert!(
        e.contains("timeline.client_loss: a probability in [0, 1]"),
        "{e}"
    );
}

#[test]
fn a_link_names_known_nodes_or_the_clients_host() {
    let with_link = |between: &str| {
        replace(
            "duration_ms = 6000",
            &format!(
                "duration_ms = 6000\n[network]\n[[network.links]]\nbetween = {between}\nlatency_ms = [10, 20]"
            ),
        )
    };
    let s = Scenario::parse("link.toml", &with_link(r#"["a", "clients"]"#)).unwrap();
    assert_eq!(s.network.links.len(), 1);
    let e = error_of(&with_link(r#"["a", "d"]"#));
    assert!(
        e.contains(r#"network.links.between: unknown node "d" (nodes: a, b, c;"#),
        "{e}"
    );
    let e = error_of(&with_link(r#"["b", "b"]"#));
    assert!(e.contains("two different nodes"), "{e}");
    let e = error_of(&with_link(r#"["clients", "clients"]"#));
    assert!(e.contains("two different nodes"), "{e}");
}

#[test]
fn huge_numbers_are_errors_not_overflows() {
    // each of these once overflowed a derived period or a timer deadline (a panic)
    let e = error_of(&replace(
        "max_silent_periods = 2",
        "max_silent_periods = 18446744073709551615",
    ));
    assert!(e.contains("tracker.max_silent_periods: at most"), "{e}");
    for (setting, field) in [
        (
            "broadcast_period_ms = 9223372036854775807",
            "tracker.broadcast_period_ms: at most",
        ),
        (
            "broadcast_period_ms = 100\ndown_period_ms = 18446744073709551615",
            "tracker.down_period_ms: at most",
        ),
        (
            "broadcast_period_ms = 100\nclock_sample_periods = 4294967296",
            "tracker.clock_sample_periods: between 1 and",
        ),
        (
            "broadcast_period_ms = 100\nmax_delta_sizes = [0]",
            "tracker.max_delta_sizes: each between 1 and",
        ),
        (
            "broadcast_period_ms = 100\nprofile = \"eager\"\neager_window_ms = 18446744073709551615",
            "tracker.eager_window_ms: at most",
        ),
    ] {
        let e = error_of(&replace("broadcast_period_ms = 100", setting));
        assert!(e.contains(field), "{setting}: {e}");
    }
    let e = error_of(&replace(
        "converged_within_ms = 1000",
        "converged_within_ms = 18446744073709551615",
    ));
    assert!(
        e.contains("expect.converged_within_ms: at most 24 h"),
        "{e}"
    );
}

#[test]
fn a_down_period_shorter_than_the_idle_heartbeat_is_a_warning_not_an_error() {
    assert!(
        Scenario::parse("good.toml", GOOD)
            .unwrap()
            .warnings()
            .is_empty()
    );
    // idle heartbeats every 11 × 100 ms, down after 1 s of silence
    let s = Scenario::parse(
        "flappy.toml",
        &replace(
            "max_silent_periods = 2",
            "max_silent_periods = 10\ndown_period_ms = 1000",
        ),
    )
    .expect("Phoenix accepts it");
    let w = s.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("= 1100 ms"), "{}", w[0]);
}

/// The scale scenarios under `benches/scenarios/` are what BENCHMARKS.md measures: each must
/// stay valid as the format moves, the 160 000-client one included.
#[test]
fn the_bench_scenarios_stay_valid() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("benches/scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "{paths:?}");
    let mut largest = 0;
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let clients = s.clients.len() + s.populations.iter().map(|p| p.count).sum::<usize>();
        assert!(clients > 0, "{name:?}: no clients");
        largest = largest.max(clients);
    }
    assert_eq!(largest, 160_000, "the 16-node target is among them");
}

/// Past the client limit a scenario is refused by its field, not run out of memory.
#[test]
fn a_population_over_the_client_limit_is_refused_by_name() {
    let over = phxsim_sim::capacity::MAX_CLIENTS + 1;
    let text = format!(
        "title = \"t\"\nnodes = [\"a\"]\nduration_ms = 1000\n\
         [[population]]\nnodes = [\"a\"]\ncount = {over}\ntopics = 1\njoin_ms = [0, 10]\n"
    );
    let e = error_of(&text);
    assert!(e.contains("population.count"), "{e}");
    let at_limit = text.replace(&over.to_string(), &(over - 1).to_string());
    Scenario::parse("limit.toml", &at_limit).expect("the limit itself is allowed");
}
