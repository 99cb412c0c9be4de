//! A `[[population]]` block as the scenario file holds it, and the names its clients get;
//! the runtime part (expanding a population into clients and steps) is
//! [`crate::population`]. It lives under the scenario so that parsing a file needs nothing
//! above it.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeSet;

/// One `[[population]]` block, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationSpec {
    pub nodes: Vec<String>,
    pub count: usize,
    #[serde(default = "one")]
    pub topics: usize,
    pub join_ms: [u64; 2],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave_ms: Option<[u64; 2]>,
    #[serde(default = "empty_object")]
    pub meta: Json,
    #[serde(default = "default_vsn")]
    pub vsn: String,
    /// Prefix of every client's user (`<user><i>`); default: the client's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// What the browsers talk to their nodes over (default: `memory`).
    #[serde(default, skip_serializing_if = "Transport::is_memory")]
    pub transport: Transport,
}

/// A population browser's link to its node.
///
/// Both carry the same bytes (the WebSocket upgrade and frames, written and read by the same
/// server and client code) with TCP's in-order delivery and the run's latencies and client
/// loss. `memory` (`crate::pipe`) keeps each connection as two in-memory queues and costs a
/// small fraction of turmoil's TCP stream in time and bytes, so that populations of tens of
/// thousands run faster than real time; `tcp` gives every browser a turmoil TCP stream, as
/// named `[[clients]]` always have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Memory,
    Tcp,
}

impl Transport {
    fn is_memory(&self) -> bool {
        *self == Transport::Memory
    }
}

fn one() -> usize {
    1
}
fn empty_object() -> Json {
    Json::Object(Default::default())
}
fn default_vsn() -> String {
    "2.0.0".into()
}

/// The name of client `i` of population `p`.
pub fn client_name(p: usize, i: usize) -> String {
    format!("pop{p}-{i}")
}

/// The topic client `i` of a population with `topics` topics joins.
pub fn topic(i: usize, topics: usize) -> String {
    format!("room:pop-{}", i % topics)
}

/// If `name` is the name of a client of one of `pops`, which population it belongs to.
pub fn population_of(name: &str, pops: &[PopulationSpec]) -> Option<usize> {
    let rest = name.strip_prefix("pop")?;
    let (p, i) = rest.split_once('-')?;
    let (p, i): (usize, usize) = (p.parse().ok()?, i.parse().ok()?);
    // only the canonical spelling ("pop01-2" is nobody's name)
    (client_name(p, i) == name && pops.get(p).is_some_and(|pop| i < pop.count)).then_some(p)
}

impl PopulationSpec {
    /// Checks one block against the scenario's nodes and duration; errors name the field.
    pub fn validate(
        &self,
        nodes: &BTreeSet<&str>,
        duration_ms: u64,
    ) -> Result<(), (&'static str, String)> {
        if self.nodes.is_empty() {
            return Err(("nodes", "at least one node".into()));
        }
        if let Some(n) = self.nodes.iter().find(|n| !nodes.contains(n.as_str())) {
            let known: Vec<&str> = nodes.iter().copied().collect();
            return Err((
                "nodes",
                format!("unknown node {n:?} (nodes: {})", known.join(", ")),
            ));
        }
        if self.count == 0 || self.count > super::MAX_CLIENTS {
            return Err(("count", format!("between 1 and {}", super::MAX_CLIENTS)));
        }
        if self.topics == 0 || self.topics > self.count {
            return Err(("topics", format!("between 1 and count ({})", self.count)));
        }
        let [j0, j1] = self.join_ms;
        if j0 > j1 || j1 > duration_ms {
            return Err((
                "join_ms",
                format!("[min, max] with min ≤ max ≤ duration_ms ({duration_ms})"),
            ));
        }
        if let Some([l0, l1]) = self.leave_ms
            && (l0 > l1 || l1 > duration_ms || l0 < j1)
        {
            return Err((
                "leave_ms",
                format!(
                    "[min, max] with join_ms's max ({j1}) ≤ min ≤ max ≤ duration_ms ({duration_ms})"
                ),
            ));
        }
        if !self.meta.is_object() {
            return Err(("meta", "must be a table".into()));
        }
        if self.vsn != "1.0.0" && self.vsn != "2.0.0" {
            return Err(("vsn", "\"1.0.0\" or \"2.0.0\"".into()));
        }
        if self.user.as_deref().is_some_and(str::is_empty) {
            return Err(("user", "must not be empty".into()));
        }
        Ok(())
    }
}
