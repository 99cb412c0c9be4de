//! A drawn scenario written as a file reads back as the same scenario, so a shrunk failure
//! replays exactly; and the same seed always draws the same scenario.

use phxsim_sim::Scenario;
use phxsim_sim::explore::{SwarmConfig, generate};

fn to_toml(s: &Scenario) -> String {
    s.to_toml().expect("a scenario serializes")
}

#[test]
fn every_drawn_scenario_round_trips_through_its_file() {
    for seed in 0..200 {
        let s = generate(seed, &SwarmConfig::default());
        let text = to_toml(&s);
        let back = Scenario::parse("drawn.toml", &text)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        assert_eq!(back, s, "seed {seed}:\n{text}");
    }
}

#[test]
fn a_seed_draws_the_same_scenario_every_time_and_seeds_differ() {
    let cfg = SwarmConfig::default();
    assert_eq!(generate(42, &cfg), generate(42, &cfg));
    assert_ne!(to_toml(&generate(42, &cfg)), to_toml(&generate(43, &cfg)));
}

#[test]
fn the_fault_selection_limits_what_is_drawn() {
    let cfg = SwarmConfig {
        faults: [phxsim_sim::explore::FaultKind::Hold].into(),
        ..SwarmConfig::default()
    };
    for seed in 0..50 {
        let text = to_toml(&generate(seed, &cfg));
        for other in [
            "partition =",
            "cut =",
            "cut_oneway =",
            "crash =",
            "permdown =",
            "disconnect =",
        ] {
            assert!(!text.contains(other), "seed {seed} drew {other}");
        }
    }
}

#[test]
fn loss_is_drawn_only_when_asked_for_and_leaves_the_rest_of_the_draw_alone() {
    use phxsim_sim::Action;
    let plain = SwarmConfig::default();
    for kind in ["loss", "client-loss"] {
        let mut lossy = SwarmConfig::default();
        lossy.faults.insert(kind.parse().expect("a fault kind"));
        for seed in 0..50 {
            let a = generate(seed, &plain);
            let b = generate(seed, &lossy);
            let (on, off) = if kind == "loss" {
                (b.network.loss, b.network.client_loss)
            } else {
                (b.network.client_loss, b.network.loss)
            };
            assert_eq!((a.network.loss, a.network.client_loss), (0.0, 0.0));
            assert!((0.005..=0.02).contains(&on), "{kind} seed {seed}");
            assert_eq!(off, 0.0, "{kind} seed {seed}");
            // the loss ends with the heal, in a step of its own; nothing else differs
            let is_loss = |a: &Action| matches!(a, Action::Loss(_) | Action::ClientLoss(_));
            let ends: Vec<_> = b
                .timeline
                .iter()
                .filter(|s| is_loss(&s.action) && !s.action.is_fault())
                .collect();
            assert_eq!(ends.len(), 1, "{kind} seed {seed}");
            let mut b_without = b.clone();
            b_without.timeline.retain(|s| !is_loss(&s.action));
            assert_eq!(b_without.timeline, a.timeline, "{kind} seed {seed}");
            let text = to_toml(&b);
            let back = Scenario::parse("drawn.toml", &text)
                .unwrap_or_else(|e| panic!("{kind} seed {seed}: {e}\n{text}"));
            assert_eq!(back, b, "{kind} seed {seed}:\n{text}");
        }
    }
}

#[test]
fn a_node_leaves_a_scenario_with_its_clients_and_every_fault_that_names_it() {
    use phxsim_sim::Action;
    let s = Scenario::parse(
        "four.toml",
        r#"
title = "four nodes"
nodes = ["a", "b", "c", "d"]
duration_ms = 5000
[[clients]]
name = "ann"
node = "a"
[[clients]]
name = "cid"
node = "c"
[[timeline]]
at_ms = 100
join = "ann"
[[timeline]]
at_ms = 100
join = "cid"
[[timeline]]
at_ms = 200
partition = [["a", "c"], ["b", "d"]]
[[timeline]]
at_ms = 300
partition = [["a", "b", "d"], ["c"]]
[[timeline]]
at_ms = 400
cut = [["a", "c"], ["b", "d"]]
[[timeline]]
at_ms = 500
hold = [["c", "d"]]
[[timeline]]
at_ms = 600
crash = "c"
[[timeline]]
at_ms = 700
crash = "d"
[[timeline]]
at_ms = 800
heal = true
[[timeline]]
at_ms = 800
restart = "c"
"#,
    )
    .unwrap();
    let small = phxsim_sim::explore::without_node(&s, "c").expect("four nodes");
    assert_eq!(small.nodes, ["a", "b", "d"]);
    assert_eq!(small.clients.len(), 1);
    let actions: Vec<&Action> = small.timeline.iter().map(|st| &st.action).collect();
    assert_eq!(
        actions,
        [
            &Action::Join("ann".into()),
            &Action::Partition(vec![vec!["a".into()], vec!["b".into(), "d".into()]]),
            &Action::Cut(vec![("b".into(), "d".into())]),
            &Action::Crash("d".into()),
            &Action::Heal,
        ]
    );
    // what is left is still a valid scenario file
    let text = to_toml(&small);
    assert_eq!(Scenario::parse("small.toml", &text).unwrap(), small);
    // two nodes are the least a netsplit needs
    let two = phxsim_sim::explore::without_node(&small, "d")
        .and_then(|s| phxsim_sim::explore::without_node(&s, "b"));
    assert!(two.is_none());
}

#[test]
fn a_drawn_population_varies_the_scale_and_nothing_else() {
    let plain = SwarmConfig::default();
    let scaled = SwarmConfig {
        population_max: 80,
        ..SwarmConfig::default()
    };
    let mut sizes = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let (a, b) = (generate(seed, &plain), generate(seed, &scaled));
        assert!(a.populations.is_empty());
        assert_eq!(b.populations.len(), 1);
        let pop = &b.populations[0];
        assert!((1..=80).contains(&pop.count), "seed {seed}");
        assert!(pop.nodes.iter().all(|n| b.nodes.contains(n)));
        sizes.insert(pop.count);
        // the rest of the seed's scenario is the one it always drew
        let mut without = b.clone();
        without.populations.clear();
        assert_eq!(without, a, "seed {seed}");
        // the written file reads back, population included
        let text = b.to_toml().expect("toml");
        assert_eq!(Scenario::parse("seed.toml", &text).expect("parses"), b);
        // dropping a node keeps the population on the others
        if let Some(smaller) = phxsim_sim::explore::without_node(&b, &b.nodes[0]) {
            assert!(
                smaller
                    .populations
                    .iter()
                    .all(|p| p.nodes.iter().all(|n| smaller.nodes.contains(n)))
            );
        }
    }
    assert!(sizes.len() > 10, "sizes vary: {sizes:?}");
}
