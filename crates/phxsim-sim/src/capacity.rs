//! turmoil's fixed limits, sized from the scenario so that no scenario a user can write makes
//! turmoil panic.
//!
//! turmoil 0.7 has two limits that end a run with a panic instead of an error:
//! - a listener's backlog (`tcp_capacity`, 64 by default): a SYN that arrives while 64 others
//!   wait to be accepted panics with `server socket buffer full`. Every host here accepts in a
//!   loop, so SYNs only pile up when many arrive within one step: a crowd of browsers joining
//!   at once, or every SYN a `hold` kept back, delivered at its `release`;
//! - a host's ephemeral ports (49152..=65535): a browsers' host opens one port per live
//!   connection and panics with `ports exhausted` when none is left.
//!
//! [`TurmoilLimits::of`] bounds the number of SYNs that can ever wait at one listener from the
//! scenario (every client and every dialling node, each with the most attempts it can have in
//! flight at once: within the largest latency, or within the whole run if a `hold` can keep
//! them back) and the ports from the number of clients of one browsers' host
//! ([`crate::clients::clients_per_host`], at most [`crate::clients::CLIENTS_PER_HOST`]). `tcp_capacity` is also the window of
//! every stream (segments in flight), so it stays at turmoil's 64 unless the bound is larger:
//! small scenarios run exactly as before. What no limit can hold is refused when the scenario
//! is read ([`MAX_CLIENTS`]).

use crate::scenario::{Action, Scenario};

/// turmoil's default listener backlog and stream window.
pub const TURMOIL_DEFAULT_TCP_CAPACITY: usize = 64;

/// The most clients a scenario may have; the scenario refuses more when it is read.
pub use crate::scenario::MAX_CLIENTS;

/// A browser's connection attempt lasts this long at least unless it is answered (the client's
/// `timeout` in `clients::client_host`): the most attempts one client can have in flight.
const CLIENT_ATTEMPT_MS: u64 = 10_000;

/// A node's dial of a peer lasts at least its timeout plus the pause before the next one
/// (`harness::DIAL_TIMEOUT_MS + REDIAL_MS`).
const NODE_DIAL_MS: u64 = 600;

/// The default range of ephemeral ports of a turmoil host.
const DEFAULT_EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// The limits one run gives turmoil.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurmoilLimits {
    /// Listener backlog and stream window.
    pub tcp_capacity: usize,
    /// The ports a host dials from.
    pub ephemeral_ports: std::ops::RangeInclusive<u16>,
}

impl TurmoilLimits {
    /// Limits for `s`: turmoil's defaults when they hold, larger ones when the scenario could
    /// exceed them.
    pub fn of(s: &Scenario) -> TurmoilLimits {
        // A SYN waits in flight for at most the largest latency, unless a `hold` keeps it
        // back; a released hold delivers what it kept in one step, so across a pair that is
        // ever held every attempt of the run (which is stepped past its duration, see
        // `harness::run`) may arrive at once.
        let held: Vec<(&str, &str)> = s
            .timeline
            .iter()
            .filter_map(|st| match &st.action {
                Action::Hold(links) => Some(links),
                _ => None,
            })
            .flatten()
            .map(|(x, y)| (x.as_str(), y.as_str()))
            .collect();
        let is_held = |x: &str, y: &str| held.iter().any(|&h| h == (x, y) || h == (y, x));
        let latency_ms = s.network.slowest_ms();
        let attempts = |held: bool, attempt_ms: u64| {
            let in_flight_ms = if held {
                s.duration_ms + 10_000
            } else {
                latency_ms
            };
            (in_flight_ms / attempt_ms + 2) as usize
        };
        let restarts = s
            .timeline
            .iter()
            .filter(|st| matches!(st.action, Action::Restart(_)))
            .count();
        let node_of: std::collections::BTreeMap<&str, &str> = s
            .clients
            .iter()
            .map(|c| (c.name.as_str(), c.node.as_str()))
            .collect();
        let mut browsers: std::collections::BTreeMap<&str, usize> = Default::default();
        for c in &s.clients {
            *browsers.entry(c.node.as_str()).or_default() += 1;
        }
        let mut client_steps: std::collections::BTreeMap<&str, usize> = Default::default();
        for st in &s.timeline {
            if let Some(node) = st.action.client().and_then(|c| node_of.get(c)) {
                *client_steps.entry(node).or_default() += 1;
            }
        }
        let mut worst = 0usize;
        for (i, node) in s.nodes.iter().enumerate() {
            let browsers = browsers.get(node.as_str()).copied().unwrap_or_default();
            let client_steps = client_steps.get(node.as_str()).copied().unwrap_or_default();
            // a browser may also be told to connect again while an attempt is in flight
            let browser_held = is_held(node, crate::clients::CLIENTS_HOST);
            let ws = browsers * attempts(browser_held, CLIENT_ATTEMPT_MS) + client_steps;
            // every node named after this one dials it; a restarted node dials afresh
            let dialers = s.nodes[i + 1..]
                .iter()
                .map(|d| attempts(is_held(node, d), NODE_DIAL_MS))
                .sum::<usize>();
            let links = dialers + restarts * attempts(!held.is_empty(), NODE_DIAL_MS);
            worst = worst.max(ws).max(links);
        }
        let tcp_capacity = if worst < TURMOIL_DEFAULT_TCP_CAPACITY {
            TURMOIL_DEFAULT_TCP_CAPACITY
        } else {
            // the backlog is full at `capacity` waiting SYNs: one more keeps the bound itself
            worst + 1
        };
        let default_ports =
            usize::from(DEFAULT_EPHEMERAL_PORTS.end() - DEFAULT_EPHEMERAL_PORTS.start());
        // ports are a host's own: the busiest browsers' host has the most clients of one host
        let per_host = crate::clients::clients_per_host(s.clients.len(), s.nodes.len());
        let ephemeral_ports = if per_host + 1_000 < default_ports {
            DEFAULT_EPHEMERAL_PORTS
        } else {
            1024..=65535
        };
        TurmoilLimits {
            tcp_capacity,
            ephemeral_ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crowd(clients: usize, duration_ms: u64) -> Scenario {
        crowd_of(&["a", "b"], clients, duration_ms)
    }

    /// `clients` browsers, all on the first of `nodes`.
    fn crowd_of(nodes: &[&str], clients: usize, duration_ms: u64) -> Scenario {
        let mut s = format!("title = \"t\"\nnodes = {nodes:?}\n");
        s += &format!("duration_ms = {duration_ms}\n");
        for i in 0..clients {
            s += &format!("[[clients]]\nname = \"c{i}\"\nnode = \"{}\"\n", nodes[0]);
        }
        Scenario::parse("t.toml", &s).unwrap()
    }

    #[test]
    fn every_catalogue_scenario_keeps_turmoils_defaults() {
        // so that sizing the limits moves no snapshot of the catalogue
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::load(&path).unwrap();
                let l = TurmoilLimits::of(&s);
                assert_eq!(l.tcp_capacity, TURMOIL_DEFAULT_TCP_CAPACITY, "{path:?}");
                assert_eq!(l.ephemeral_ports, DEFAULT_EPHEMERAL_PORTS, "{path:?}");
                seen += 1;
            }
        }
        assert!(seen >= 10);
    }

    #[test]
    fn a_crowd_gets_a_backlog_for_every_attempt_it_can_make() {
        // 200 browsers on a, latency at most 5 ms: each may have 2 attempts in flight
        let l = TurmoilLimits::of(&crowd(200, 3_000));
        assert_eq!(l.tcp_capacity, 401);
        // a hold keeps SYNs back for the whole run: (3000 + 10000) / 10000 + 2 = 3 per browser
        let mut held = crowd(200, 3_000);
        held.timeline.push(crate::scenario::Step {
            at_ms: 0,
            action: Action::Hold(vec![("clients".into(), "a".into())]),
        });
        assert_eq!(TurmoilLimits::of(&held).tcp_capacity, 601);
        // a hold between the nodes keeps back only b's dials of a: (13000 / 600 + 2) = 23
        let mut nodes_held = crowd(10, 3_000);
        nodes_held.timeline.push(crate::scenario::Step {
            at_ms: 0,
            action: Action::Hold(vec![("a".into(), "b".into())]),
        });
        assert_eq!(TurmoilLimits::of(&nodes_held).tcp_capacity, 64);
    }

    #[test]
    fn many_browsers_on_one_host_get_more_ports() {
        assert_eq!(
            TurmoilLimits::of(&crowd(10_000, 1_000)).ephemeral_ports,
            DEFAULT_EPHEMERAL_PORTS
        );
        // two nodes: 20 000 browsers go to 16 hosts of 1 250
        assert_eq!(
            TurmoilLimits::of(&crowd(20_000, 1_000)).ephemeral_ports,
            DEFAULT_EPHEMERAL_PORTS
        );
        // 17 nodes: 16 384 browsers on one host, which needs more ports than the default
        let nodes: Vec<String> = (0..17).map(|i| format!("n{i}")).collect();
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        assert_eq!(
            TurmoilLimits::of(&crowd_of(&nodes, 16_384, 1_000)).ephemeral_ports,
            1024..=65535
        );
    }
}
