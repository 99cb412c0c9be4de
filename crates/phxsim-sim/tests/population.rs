//! `[[population]]` end to end: a population runs and passes, one seed gives one transcript,
//! the transcript summarises the population (its frames on request), and the checkers catch
//! planted bugs in population clients: the replayed sample's message streams and every
//! client's end state.

use phxsim_runtime::server::ServerMutation;
use phxsim_sim::Scenario;
use phxsim_sim::checkers::FindingKind;
use phxsim_sim::harness::{self, RunOptions, Verdict};
use phxsim_sim::planted::PlantedBug;
use phxsim_sim::population::{REPLAYED_PER_POPULATION, population_of};

fn scenario() -> Scenario {
    let text = r#"
title = "a population joins and leaves"
nodes = ["a", "b", "c"]
duration_ms = 5000
[tracker]
broadcast_period_ms = 100
[[clients]]
name = "alice"
node = "a"
topic = "room:pop-0"
[[population]]
nodes = ["a", "b", "c"]
count = 60
topics = 2
join_ms = [200, 800]
leave_ms = [2000, 2500]
meta = { device = "web" }
user = "guest-"
[[population]]
nodes = ["c", "b"]
count = 30
topics = 2
join_ms = [300, 900]
[[timeline]]
at_ms = 100
join = "alice"
"#;
    Scenario::parse("pop.toml", text).unwrap()
}

fn opts(seed: u64) -> RunOptions {
    RunOptions {
        seed,
        transcript: true,
        ..RunOptions::default()
    }
}

#[test]
fn a_population_passes_deterministically_with_a_summary() {
    let s = scenario();
    let r = harness::run(&s, &opts(3));
    assert_eq!(r.verdict, Verdict::Pass, "{:#?}", r.failures);
    assert_eq!(r.transcript, harness::run(&s, &opts(3)).transcript);
    let summary: Vec<&String> = r
        .transcript
        .iter()
        .filter(|l| l.contains(r#""ev":"population""#))
        .collect();
    assert_eq!(summary.len(), 2);
    assert!(summary[0].contains(r#""count":60"#), "{}", summary[0]);
    // frames: alice's and the replayed sample's only, unless asked for every client's
    let framed = |t: &[String]| {
        let mut clients: Vec<String> = t
            .iter()
            .filter(|l| l.contains(r#""ev":"frame""#))
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(v["client"].as_str()?.to_owned())
            })
            .collect();
        clients.sort();
        clients.dedup();
        clients.len()
    };
    assert_eq!(framed(&r.transcript), 1 + 2 * REPLAYED_PER_POPULATION);
    let all = harness::run(
        &s,
        &RunOptions {
            population_frames: true,
            ..opts(3)
        },
    );
    assert_eq!(framed(&all.transcript), 91);
}

#[test]
fn planted_bugs_in_population_clients_are_caught() {
    let s = scenario();
    // wrong refs in leaves: the replayed sample sees leaves of refs it never held
    let r = harness::run(
        &s,
        &RunOptions {
            planted: Some(PlantedBug::Server(ServerMutation::LeaveWrongRef)),
            ..opts(1)
        },
    );
    assert!(
        r.failures
            .iter()
            .any(|f| f.kind == FindingKind::DuplicateLeave
                && population_of(&f.subject, &s.populations).is_some()),
        "{:#?}",
        r.failures
    );
    // leaves never sent: the staying population's end states show it, replayed or not
    let r = harness::run(
        &s,
        &RunOptions {
            planted: Some(PlantedBug::Server(ServerMutation::DropLeaves)),
            ..opts(1)
        },
    );
    let views: Vec<&str> = r
        .failures
        .iter()
        .filter(|f| f.kind == FindingKind::ClientView)
        .map(|f| f.subject.as_str())
        .collect();
    let replayed = phxsim_sim::population::replayed(&s, 1).unwrap();
    assert!(
        views
            .iter()
            .any(|c| population_of(c, &s.populations) == Some(1) && !replayed.contains(*c)),
        "a client outside the replayed sample is checked too: {views:?}"
    );
}

/// Six browsers, three per node, two to a browsers' host: three hosts. A scenario's `clients`
/// names every one of them, so a slow link `a`–`clients` slows every browser of node `a`,
/// whichever host it runs on, and the run still passes.
#[test]
fn clients_names_every_browsers_host() {
    let mut text = String::from(
        "title = \"three browsers' hosts\"\nnodes = [\"a\", \"b\"]\nduration_ms = 4000\n\
         [tracker]\nbroadcast_period_ms = 100\n\
         [[network.links]]\nbetween = [\"a\", \"clients\"]\nlatency_ms = [300, 300]\n",
    );
    let names = ["a0", "b0", "a1", "b1", "a2", "b2"];
    for name in names {
        text += &format!(
            "[[clients]]\nname = \"{name}\"\nnode = \"{}\"\n",
            &name[..1]
        );
    }
    for name in names {
        text += &format!("[[timeline]]\nat_ms = 1000\njoin = \"{name}\"\n");
    }
    let s = Scenario::parse("hosts.toml", &text).unwrap();
    let r = harness::run(
        &s,
        &RunOptions {
            clients_per_host: Some(2),
            ..opts(1)
        },
    );
    assert_eq!(r.verdict, Verdict::Pass, "{:#?}", r.failures);
    let mut connected_at = std::collections::BTreeMap::new();
    for line in &r.transcript {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["ev"] == "connected" {
            let client = v["client"].as_str().unwrap().to_owned();
            connected_at
                .entry(client)
                .or_insert(v["t"].as_u64().unwrap());
        }
    }
    assert_eq!(connected_at.len(), names.len(), "{connected_at:?}");
    for (client, t) in &connected_at {
        if client.starts_with('a') {
            // at least the SYN, its answer and the upgrade request cross the slow link
            assert!(
                *t >= 900,
                "{client} connected at {t} across a 300 ms link: {connected_at:?}"
            );
        } else {
            assert!(*t < 100, "{client} connected only at {t}");
        }
    }
    // one host, as before, runs the same scenario
    let one = harness::run(&s, &opts(1));
    assert_eq!(one.verdict, Verdict::Pass, "{:#?}", one.failures);
}

/// A population over each transport, with a slow link between node `a` and its browsers and a
/// crash and restart of `b` while every browser is joined.
fn transports(transport: &str) -> Scenario {
    let text = format!(
        r#"
title = "a population over {transport} links"
nodes = ["a", "b", "c"]
duration_ms = 9000
[tracker]
broadcast_period_ms = 100
[[network.links]]
between = ["a", "clients"]
latency_ms = [300, 300]
[[population]]
nodes = ["a", "b", "c"]
count = 30
topics = 2
join_ms = [1000, 1500]
transport = "{transport}"
[[timeline]]
at_ms = 3000
crash = "b"
[[timeline]]
at_ms = 4000
restart = "b"
"#
    );
    Scenario::parse("transport.toml", &text).unwrap()
}

/// When each client first connected, and when each was first disconnected.
fn lifecycle(transcript: &[String], ev: &str) -> std::collections::BTreeMap<String, u64> {
    let mut at = std::collections::BTreeMap::new();
    for line in transcript {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["ev"] == ev {
            let client = v["client"].as_str().unwrap().to_owned();
            at.entry(client).or_insert(v["t"].as_u64().unwrap());
        }
    }
    at
}

/// In-memory browser links behave as turmoil's TCP does where a browser can tell: a connect
/// crosses the node's own link once (the SYN; turmoil answers it at once), then the upgrade
/// request and its answer cross it before `connected`, a crashed node's browsers see their
/// streams end one crossing later, they reconnect to its next incarnation, and the run ends with every browser's list
/// equal to its node's, over either transport.
#[test]
fn memory_links_connect_crash_and_converge_as_tcp_does() {
    for transport in ["memory", "tcp"] {
        let s = transports(transport);
        let r = harness::run(&s, &opts(5));
        assert_eq!(r.verdict, Verdict::Pass, "{transport}: {:#?}", r.failures);
        // every browser connected at the start, and b's tried again until b was back
        if transport == "memory" {
            assert!(r.memory_connections >= 30 + 10, "{}", r.memory_connections);
        } else {
            assert_eq!(r.memory_connections, 0);
        }
        let summary = r
            .transcript
            .iter()
            .find(|l| l.contains(r#""ev":"population""#))
            .unwrap();
        assert!(
            summary.contains(&format!(r#""transport":"{transport}""#)),
            "{summary}"
        );
        let connected = lifecycle(&r.transcript, "connected");
        assert_eq!(connected.len(), 30, "{transport}: {connected:?}");
        for (client, t) in &connected {
            let i: usize = client["pop0-".len()..].parse().unwrap();
            // browsers connect when the run starts; node a's cross its 300 ms link three times
            if i.is_multiple_of(3) {
                assert!(
                    (900..1000).contains(t),
                    "{transport}: {client} connected at {t}"
                );
            } else {
                assert!(*t < 100, "{transport}: {client} connected only at {t}");
            }
        }
        // b's browsers (i mod 3 = 1) lose their connections when b crashes, and only they
        let lost = lifecycle(&r.transcript, "disconnected");
        let on_b: Vec<&String> = connected
            .keys()
            .filter(|c| c["pop0-".len()..].parse::<usize>().unwrap() % 3 == 1)
            .collect();
        assert_eq!(lost.len(), on_b.len(), "{transport}: {lost:?}");
        for c in on_b {
            let t = lost[c];
            assert!((3000..=3010).contains(&t), "{transport}: {c} lost at {t}");
        }
    }
}
