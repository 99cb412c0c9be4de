//! Declarative scenario files (TOML): the cluster, tracker settings, network, a timeline of
//! client actions and faults at simulated times, and what must (or must not) happen.
//!
//! ```toml
//! title = "partition 2-1, isolate c, heal before down_period"
//! nodes = ["a", "b", "c"]
//! duration_ms = 6000
//! [tracker]
//! broadcast_period_ms = 100
//! [[clients]]
//! name = "alice"
//! node = "a"
//! [[timeline]]
//! at_ms = 500
//! join = "alice"
//! [[timeline]]
//! at_ms = 1500
//! partition = [["a", "b"], ["c"]]
//! [[timeline]]
//! at_ms = 2500
//! heal = true
//! [expect]
//! converged_within_ms = 1000
//! ```
//!
//! Every error names the file, the line and the field.

pub mod population;
pub mod rolling;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

/// The most clients (named and of populations) a scenario may have. Browsers are spread over
/// hosts of their own (at most `crate::clients::CLIENTS_PER_HOST` each), so ports no longer bound
/// them; memory does: up to about 100 KB per client at 16 nodes (BENCHMARKS.md), so this many
/// need about 20 GB. A larger run is refused when the file is read rather than ending out of
/// memory.
pub const MAX_CLIENTS: usize = 200_000;
use std::path::Path;
use toml::Spanned;

/// A scenario file that could not be used: where, and why. Line 0 means the file as a whole
/// (it could not be read), shown as `file: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.located())]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl ScenarioError {
    fn located(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file, self.message)
        } else {
            format!(
                "{}:{}: {}: {}",
                self.file, self.line, self.field, self.message
            )
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    seed: Option<u64>,
    duration_ms: Spanned<u64>,
    nodes: Spanned<Vec<String>>,
    #[serde(default)]
    tracker: Option<Spanned<TrackerSettings>>,
    #[serde(default)]
    network: Option<Spanned<NetworkSettings>>,
    #[serde(default)]
    clients: Vec<Spanned<ClientSpec>>,
    #[serde(default)]
    population: Vec<Spanned<population::PopulationSpec>>,
    #[serde(default)]
    timeline: Vec<Spanned<RawStep>>,
    #[serde(default)]
    expect: RawExpect,
}

/// Tracker options of every node; missing ones take Phoenix's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerSettings {
    #[serde(default = "default_broadcast_period")]
    pub broadcast_period_ms: u64,
    #[serde(default = "default_max_silent_periods")]
    pub max_silent_periods: u64,
    /// Default: broadcast_period × max_silent_periods × 2, as Phoenix derives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_period_ms: Option<u64>,
    #[serde(default = "default_permdown_period")]
    pub permdown_period_ms: u64,
    #[serde(default = "default_clock_sample_periods")]
    pub clock_sample_periods: u64,
    #[serde(default = "default_max_delta_sizes")]
    pub max_delta_sizes: Vec<usize>,
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default)]
    pub profile: ProfileName,
    /// `eager` profile only: how long a change waits for others to ride along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eager_window_ms: Option<u64>,
    /// `drift` (the default) times nodes as real clusters do: each tick comes after the
    /// previous tick's work (broadcast_period + 1–3.5 ms at a rate drawn per node, more under load), each node
    /// starts ticking a random 0–50 ms late, and after a heal a broken link is dialled again
    /// 2–46 ms later, all drawn from the seed. `exact` is the textbook cadence: every tick
    /// exactly one period after the last, links redialled on their own schedule.
    #[serde(default)]
    pub tick_model: TickModelName,
}

fn default_broadcast_period() -> u64 {
    1500
}
fn default_max_silent_periods() -> u64 {
    10
}
fn default_permdown_period() -> u64 {
    1_200_000
}
fn default_clock_sample_periods() -> u64 {
    2
}
fn default_max_delta_sizes() -> Vec<usize> {
    vec![100, 1000, 10_000]
}
fn default_pool_size() -> u32 {
    1
}

/// The tracker profile of a run, by its one name (scenario files, `--profile`, reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    /// phoenix_pubsub 2.2 as it is, its anomalies and open bugs included.
    #[default]
    Faithful,
    /// Faithful with the anomalies and CRDT bugs fixed that phxsim knows how to fix.
    Corrected,
    /// Faithful, but a delta goes out as soon as something changes.
    Eager,
}

impl ProfileName {
    pub fn name(self) -> &'static str {
        match self {
            ProfileName::Faithful => "faithful",
            ProfileName::Corrected => "corrected",
            ProfileName::Eager => "eager",
        }
    }
}

impl std::str::FromStr for ProfileName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ProfileName::Faithful,
            ProfileName::Corrected,
            ProfileName::Eager,
        ]
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| format!("unknown profile {s:?}: faithful, corrected or eager"))
    }
}

impl std::fmt::Display for ProfileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
/// How the simulator times each node's ticks, by its one name (`[tracker] tick_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TickModelName {
    /// As real clusters do: ticks after the previous tick's work, drifting per node.
    #[default]
    Drift,
    /// The textbook cadence: every tick exactly one broadcast period after the last.
    Exact,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            broadcast_period_ms: default_broadcast_period(),
            max_silent_periods: default_max_silent_periods(),
            down_period_ms: None,
            permdown_period_ms: default_permdown_period(),
            clock_sample_periods: default_clock_sample_periods(),
            max_delta_sizes: default_max_delta_sizes(),
            pool_size: default_pool_size(),
            profile: ProfileName::Faithful,
            eager_window_ms: None,
            tick_model: TickModelName::Drift,
        }
    }
}

impl TrackerSettings {
    pub fn down_period(&self) -> u64 {
        self.down_period_ms
            .unwrap_or(self.broadcast_period_ms * self.max_silent_periods * 2)
    }

    /// How often an idle shard broadcasts: its silent counter starts at `max_silent_periods`
    /// and an empty heartbeat goes out once it reaches it, every `max_silent_periods + 1` ticks.
    pub fn idle_heartbeat_interval(&self) -> u64 {
        (self.max_silent_periods + 1) * self.broadcast_period_ms
    }

    /// How long after the last fault or action a healthy cluster must agree: a silent
    /// heartbeat cycle, a down period for a false down to clear, and transfers.
    pub fn convergence_bound(&self, max_latency_ms: u64) -> u64 {
        let bp = self.broadcast_period_ms;
        self.down_period() + (self.max_silent_periods + 4) * bp + 8 * max_latency_ms
    }
}

/// Link behaviour between every pair of hosts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// One-way latency range `[min, max]` in ms.
    #[serde(default = "default_latency")]
    pub latency_ms: [u64; 2],
    /// Probability (0.0–1.0) that a TCP segment (one write) on a node-to-node link is lost.
    /// TCP retransmits it `rto_ms` later (doubling on each repeated loss), and everything
    /// written after it on that connection waits behind it: loss shows as delay, never as
    /// missing data (see [`crate::lossy`]).
    #[serde(default)]
    pub loss: f64,
    /// The same for browser links (between a node and its clients), both directions: a lost
    /// frame of a socket reaches the other side one or more RTOs late, with every frame
    /// written after it on that socket.
    #[serde(default)]
    pub client_loss: f64,
    /// The first retransmission timeout of a lost segment, in ms (Linux's minimum RTO).
    #[serde(default = "default_rto")]
    pub rto_ms: u64,
    /// Simulation step in ms: the resolution of time and latency. 1 ms is exact; a coarser step
    /// runs faster (turmoil polls every host once per step).
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    /// Links with their own latency (a slow WAN link between two nodes, or slow browsers:
    /// `between = ["a", "clients"]` is the link between node a and its clients).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkSettings>,
}

impl NetworkSettings {
    /// The highest one-way latency of any link (the default range or a `[[network.links]]`).
    pub fn slowest_ms(&self) -> u64 {
        self.links
            .iter()
            .map(|l| l.latency_ms[1])
            .fold(self.latency_ms[1], u64::max)
    }
}

/// One link's own one-way latency range.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    pub between: [String; 2],
    pub latency_ms: [u64; 2],
}

fn default_latency() -> [u64; 2] {
    [1, 5]
}

fn default_tick() -> u64 {
    1
}

fn default_rto() -> u64 {
    200
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            latency_ms: default_latency(),
            loss: 0.0,
            client_loss: 0.0,
            rto_ms: default_rto(),
            tick_ms: default_tick(),
            links: Vec::new(),
        }
    }
}

/// A browser: one socket to one node, one room.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub name: String,
    pub node: String,
    /// The socket's `user_id`, which is the presence key. Default: the client's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// The meta it joins with: shared by the clients of one population (a run holds one
    /// spec per browser, up to 200 000, and a `Json` is 80 bytes before its contents).
    #[serde(default = "empty_shared_object", with = "shared_json")]
    pub meta: Arc<Json>,
    #[serde(default = "default_vsn")]
    pub vsn: String,
}

fn empty_shared_object() -> Arc<Json> {
    Arc::new(empty_object())
}

/// A shared JSON value in a scenario file: written and read as the value itself.
mod shared_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value as Json;
    use std::sync::Arc;

    pub(super) fn serialize<S: Serializer>(v: &Arc<Json>, s: S) -> Result<S::Ok, S::Error> {
        Json::serialize(v, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Json>, D::Error> {
        Json::deserialize(d).map(Arc::new)
    }
}

fn default_topic() -> String {
    "room:lobby".into()
}
fn empty_object() -> Json {
    Json::Object(Default::default())
}
fn default_vsn() -> String {
    "2.0.0".into()
}

impl ClientSpec {
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at_ms: u64,
    join: Option<String>,
    leave: Option<String>,
    update: Option<String>,
    meta: Option<Json>,
    disconnect: Option<String>,
    drop_mid_join: Option<String>,
    reconnect: Option<String>,
    crash_channel: Option<String>,
    partition: Option<Vec<Vec<String>>>,
    cut: Option<Vec<[String; 2]>>,
    cut_oneway: Option<Vec<[String; 2]>>,
    heal: Option<bool>,
    repair: Option<Vec<[String; 2]>>,
    crash: Option<String>,
    restart: Option<String>,
    permdown: Option<String>,
    hold: Option<Vec<[String; 2]>>,
    release: Option<Vec<[String; 2]>>,
    loss: Option<f64>,
    client_loss: Option<f64>,
    /// A rolling deploy ([`rolling`]), with its `interval_ms` and `down_ms`.
    rolling_restart: Option<Vec<String>>,
    interval_ms: Option<u64>,
    down_ms: Option<u64>,
}

/// What happens at one instant of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The client connects if needed and joins its room.
    Join(String),
    /// `phx_leave`.
    Leave(String),
    /// `update_meta` with this meta (boxed: a `Json` would make every step of a timeline,
    /// one join per browser and more, 80 bytes larger).
    Update(String, Box<Json>),
    /// The client's TCP connection drops without a close frame.
    Disconnect(String),
    /// The client joins on a fresh connection (rejoins, if it was joined), and that
    /// connection drops without a close frame at a point of the join exchange drawn from the
    /// run's seed; it stays away until `reconnect`.
    DropMidJoin(String),
    /// The client reconnects and rejoins.
    Reconnect(String),
    /// The client's channel crashes (`crash` event).
    CrashChannel(String),
    /// Only hosts in the same group reach each other (clients follow their node).
    Partition(Vec<Vec<String>>),
    /// These node pairs cannot reach each other, both ways.
    Cut(Vec<(String, String)>),
    /// Messages from the first node to the second are dropped.
    CutOneway(Vec<(String, String)>),
    /// Every cut, partition and hold ends.
    Heal,
    /// These cut node pairs reach each other again (both ways); other cuts stay.
    Repair(Vec<(String, String)>),
    /// The node stops at once (peers and its clients see the connections reset).
    Crash(String),
    /// A crashed node starts again as a new replica (new vsn).
    Restart(String),
    /// `graceful_permdown` of the node's tracker, then it stops.
    Permdown(String),
    /// Messages on these links are delayed until released.
    Hold(Vec<(String, String)>),
    Release(Vec<(String, String)>),
    /// Every node link loses segments at this rate from now on (0.0 ends the loss).
    Loss(f64),
    /// Every browser link loses segments at this rate from now on (0.0 ends the loss).
    ClientLoss(f64),
}

impl Action {
    /// Does this action disturb the cluster (as opposed to a client's ordinary use)?
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            Action::Join(_)
                | Action::Leave(_)
                | Action::Update(..)
                | Action::Heal
                | Action::Repair(_)
        ) && !matches!(self, Action::Loss(r) | Action::ClientLoss(r) if *r == 0.0)
    }

    /// Does this action reopen node links that may have stalled (so heartbeats resume only
    /// after the links recover)? [`crate::checkers::step_reopens_links`] reads the same from
    /// the label.
    pub fn reopens_links(&self) -> bool {
        matches!(
            self,
            Action::Heal | Action::Repair(_) | Action::Release(_) | Action::Restart(_)
        )
    }

    /// The client this action drives, if it is a client's action.
    pub fn client(&self) -> Option<&str> {
        match self {
            Action::Join(c)
            | Action::Leave(c)
            | Action::Update(c, _)
            | Action::Disconnect(c)
            | Action::DropMidJoin(c)
            | Action::Reconnect(c)
            | Action::CrashChannel(c) => Some(c),
            _ => None,
        }
    }

    /// A short label for tables and transcripts.
    pub fn label(&self) -> String {
        match self {
            Action::Join(c) => format!("join {c}"),
            Action::Leave(c) => format!("leave {c}"),
            Action::Update(c, m) => format!("update {c} {m}"),
            Action::Disconnect(c) => format!("disconnect {c}"),
            Action::DropMidJoin(c) => format!("drop_mid_join {c}"),
            Action::Reconnect(c) => format!("reconnect {c}"),
            Action::CrashChannel(c) => format!("crash_channel {c}"),
            Action::Partition(g) => format!("partition {g:?}"),
            Action::Cut(l) => format!("cut {l:?}"),
            Action::CutOneway(l) => format!("cut_oneway {l:?}"),
            Action::Heal => "heal".into(),
            Action::Repair(l) => format!("repair {l:?}"),
            Action::Crash(n) => format!("crash {n}"),
            Action::Restart(n) => format!("restart {n}"),
            Action::Permdown(n) => format!("permdown {n}"),
            Action::Hold(l) => format!("hold {l:?}"),
            Action::Release(l) => format!("release {l:?}"),
            Action::Loss(r) => format!("loss {r}"),
            Action::ClientLoss(r) => format!("client_loss {r}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at_ms: u64,
    pub action: Action,
}

/// A step as a `[[timeline]]` table: `at_ms`, then the action's key (and `meta` for an update).
impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let pairs = |l: &[(String, String)]| -> Vec<[String; 2]> {
            l.iter().map(|(x, y)| [x.clone(), y.clone()]).collect()
        };
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("at_ms", &self.at_ms)?;
        match &self.action {
            Action::Join(c) => m.serialize_entry("join", c)?,
            Action::Leave(c) => m.serialize_entry("leave", c)?,
            Action::Update(c, meta) => {
                m.serialize_entry("update", c)?;
                m.serialize_entry("meta", meta)?;
            }
            Action::Disconnect(c) => m.serialize_entry("disconnect", c)?,
            Action::DropMidJoin(c) => m.serialize_entry("drop_mid_join", c)?,
            Action::Reconnect(c) => m.serialize_entry("reconnect", c)?,
            Action::CrashChannel(c) => m.serialize_entry("crash_channel", c)?,
            Action::Partition(groups) => m.serialize_entry("partition", groups)?,
            Action::Cut(l) => m.serialize_entry("cut", &pairs(l))?,
            Action::CutOneway(l) => m.serialize_entry("cut_oneway", &pairs(l))?,
            Action::Heal => m.serialize_entry("heal", &true)?,
            Action::Repair(l) => m.serialize_entry("repair", &pairs(l))?,
            Action::Crash(n) => m.serialize_entry("crash", n)?,
            Action::Restart(n) => m.serialize_entry("restart", n)?,
            Action::Permdown(n) => m.serialize_entry("permdown", n)?,
            Action::Hold(l) => m.serialize_entry("hold", &pairs(l))?,
            Action::Release(l) => m.serialize_entry("release", &pairs(l))?,
            Action::Loss(r) => m.serialize_entry("loss", r)?,
            Action::ClientLoss(r) => m.serialize_entry("client_loss", r)?,
        }
        m.end()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    converged_within_ms: Option<u64>,
    #[serde(default)]
    anomalies: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    visible: Vec<Spanned<VisibleExpectation>>,
}

/// "At `at_ms` (or within `within_ms` after it), `node` lists exactly these keys of `topic`",
/// optionally with a meta whose fields include `meta`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VisibleExpectation {
    pub at_ms: u64,
    #[serde(default)]
    pub within_ms: u64,
    pub node: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<BTreeMap<String, Json>>,
    /// Whose meta `meta` must match; default: every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_of: Option<String>,
}

/// Names of the findings a scenario may expect or allow: every checker's but the
/// expectations' own.
pub fn finding_names() -> Vec<&'static str> {
    crate::finding::FindingKind::ALL
        .into_iter()
        .filter(|k| *k != crate::finding::FindingKind::Expectation)
        .map(|k| k.name())
        .collect()
}

/// What the run must show.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Expectations {
    /// Bound on convergence after the last step; default from the tracker settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converged_within_ms: Option<u64>,
    /// Findings that must occur (e.g. the reference's duplicate leave).
    pub anomalies: BTreeSet<String>,
    /// Findings tolerated without being required (e.g. a known upstream bug's ghost).
    pub allow: BTreeSet<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub visible: Vec<VisibleExpectation>,
}

/// A validated scenario. It serializes to the file format [`Scenario::parse`] reads
/// ([`Scenario::to_toml`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub duration_ms: u64,
    pub nodes: Vec<String>,
    pub tracker: TrackerSettings,
    pub network: NetworkSettings,
    pub clients: Vec<ClientSpec>,
    /// `[[population]]` blocks, turned into clients and steps when a run starts
    /// ([`crate::population::expand`]).
    #[serde(rename = "population", skip_serializing_if = "Vec::is_empty")]
    pub populations: Vec<population::PopulationSpec>,
    pub timeline: Vec<Step>,
    pub expect: Expectations,
}

/// Maps byte offsets to 1-based line numbers.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn at(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

impl Scenario {
    /// The scenario as a file [`Scenario::parse`] reads back to an equal scenario. A meta
    /// holding a JSON `null` has no TOML form and is refused.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Settings that are valid (Phoenix accepts them) but make a healthy cluster misbehave, so
    /// that a run's findings are not mistaken for bugs of the code under test.
    pub fn warnings(&self) -> Vec<String> {
        let t = &self.tracker;
        let mut out = Vec::new();
        if t.down_period() <= t.idle_heartbeat_interval() {
            out.push(format!(
                "tracker.down_period_ms ({}) is not longer than an idle node's heartbeat interval \
                 ((max_silent_periods + 1) × broadcast_period_ms = {} ms): idle replicas are \
                 marked down between heartbeats and their presences vanish (Phoenix accepts \
                 this; expect lost presences)",
                t.down_period(),
                t.idle_heartbeat_interval()
            ));
        }
        out
    }

    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 0,
            field: "-".into(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(&file, &text)
    }

    /// Parses and validates scenario text; `file` only labels errors.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let lines = Lines(text);
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError {
            file: file.into(),
            line: e.span().map(|s| lines.at(s)).unwrap_or(0),
            field: "toml".into(),
            message: e.message().to_string(),
        })?;
        let err = |span: Range<usize>, field: &str, message: String| ScenarioError {
            file: file.into(),
            line: lines.at(span),
            field: field.into(),
            message,
        };

        let nodes = raw.nodes.get_ref().clone();
        let nodes_span = raw.nodes.span();
        if nodes.is_empty() || nodes.len() > 32 {
            return Err(err(nodes_span, "nodes", "between 1 and 32 nodes".into()));
        }
        let node_set: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
        if node_set.len() != nodes.len() {
            return Err(err(nodes_span, "nodes", "node names must be unique".into()));
        }
        if nodes
            .iter()
            .any(|n| n.is_empty() || n.contains(char::is_whitespace))
        {
            return Err(err(
                nodes_span,
                "nodes",
                "node names must be non-empty words".into(),
            ));
        }
        if nodes.iter().any(|n| n == "clients") {
            return Err(err(
                nodes_span,
                "nodes",
                "\"clients\" names the browsers' host (and their links); pick another node name"
                    .into(),
            ));
        }
        let duration_ms = *raw.duration_ms.get_ref();
        if duration_ms == 0 || duration_ms > MAX_DURATION_MS {
            return Err(err(
                raw.duration_ms.span(),
                "duration_ms",
                "between 1 ms and 24 h".into(),
            ));
        }
        let tracker_span = raw.tracker.as_ref().map(|t| t.span()).unwrap_or(0..0);
        let tracker = raw
            .tracker
            .as_ref()
            .map(|t| t.get_ref().clone())
            .unwrap_or_default();
        validate_tracker(&tracker)
            .map_err(|(field, m)| err(tracker_span, &format!("tracker.{field}"), m))?;
        let network_span = raw.network.as_ref().map(|n| n.span()).unwrap_or(0..0);
        let network = raw
            .network
            .as_ref()
            .map(|n| n.get_ref().clone())
            .unwrap_or_default();
        if network.latency_ms[0] > network.latency_ms[1] || network.latency_ms[1] > 60_000 {
            return Err(err(
                network_span.clone(),
                "network.latency_ms",
                "[min, max] with min ≤ max ≤ 60000".into(),
            ));
        }
        for l in &network.links {
            let [x, y] = &l.between;
            let known = |n: &str| node_set.contains(n) || n == "clients";
            if let Some(unknown) = [x, y].into_iter().find(|n| !known(n)) {
                return Err(err(
                    network_span.clone(),
                    "network.links.between",
                    format!(
                        "unknown node {unknown:?} (nodes: {}; \"clients\" is the browsers' host)",
                        nodes.join(", ")
                    ),
                ));
            }
            if x == y {
                return Err(err(
                    network_span.clone(),
                    "network.links.between",
                    format!(
                        "two different nodes, or a node and \"clients\"; got {:?}",
                        l.between
                    ),
                ));
            }
            if l.latency_ms[0] > l.latency_ms[1] || l.latency_ms[1] > 60_000 {
                return Err(err(
                    network_span.clone(),
                    "network.links.latency_ms",
                    "[min, max] with min ≤ max ≤ 60000".into(),
                ));
            }
        }
        if network.tick_ms == 0 || network.tick_ms > 100 {
            return Err(err(
                network_span.clone(),
                "network.tick_ms",
                "between 1 and 100".into(),
            ));
        }
        for (field, rate) in [
            ("network.loss", network.loss),
            ("network.client_loss", network.client_loss),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(err(
                    network_span.clone(),
                    field,
                    "a probability in [0, 1]".into(),
                ));
            }
        }
        if network.rto_ms == 0 || network.rto_ms > 60_000 {
            return Err(err(
                network_span,
                "network.rto_ms",
                "between 1 and 60000".into(),
            ));
        }

        let mut clients = Vec::new();
        let mut client_names = BTreeSet::new();
        for c in &raw.clients {
            let spec = c.get_ref();
            if !node_set.contains(spec.node.as_str()) {
                return Err(err(
                    c.span(),
                    "clients.node",
                    format!("unknown node {:?} (nodes: {})", spec.node, nodes.join(", ")),
                ));
            }
            if !client_names.insert(spec.name.clone()) {
                return Err(err(
                    c.span(),
                    "clients.name",
                    format!("duplicate client {:?}", spec.name),
                ));
            }
            if !spec.meta.is_object() {
                return Err(err(c.span(), "clients.meta", "must be a table".into()));
            }
            if spec.vsn != "1.0.0" && spec.vsn != "2.0.0" {
                return Err(err(
                    c.span(),
                    "clients.vsn",
                    "\"1.0.0\" or \"2.0.0\"".into(),
                ));
            }
            if spec.user().is_empty() {
                return Err(err(c.span(), "clients.user", "must not be empty".into()));
            }
            if spec.topic.is_empty() {
                return Err(err(
                    c.span(),
                    "clients.topic",
                    "must not be empty (default: \"room:lobby\")".into(),
                ));
            }
            clients.push(spec.clone());
        }

        let mut populations = Vec::new();
        for pop in &raw.population {
            pop.get_ref()
                .validate(&node_set, duration_ms)
                .map_err(|(field, m)| err(pop.span(), &format!("population.{field}"), m))?;
            populations.push(pop.get_ref().clone());
        }
        for c in &raw.clients {
            if population::population_of(&c.get_ref().name, &populations).is_some() {
                return Err(err(
                    c.span(),
                    "clients.name",
                    format!(
                        "{:?} names a client of a [[population]] (pop<P>-<i>)",
                        c.get_ref().name
                    ),
                ));
            }
        }
        let population_clients: usize = populations.iter().map(|p| p.count).sum();
        if clients.len() + population_clients > MAX_CLIENTS {
            return Err(err(
                raw.population
                    .first()
                    .map(|p| p.span())
                    .unwrap_or_else(|| raw.clients[MAX_CLIENTS].span()),
                "clients",
                format!(
                    "at most {} clients (a simulated client takes up to about 100 KB); got {}",
                    MAX_CLIENTS,
                    clients.len() + population_clients
                ),
            ));
        }

        // the file's steps may name population clients too
        for (p, pop) in populations.iter().enumerate() {
            client_names.extend((0..pop.count).map(|i| population::client_name(p, i)));
        }

        let mut timeline = Vec::new();
        for s in &raw.timeline {
            let steps = to_steps(s.get_ref(), &node_set, &client_names)
                .map_err(|(field, m)| err(s.span(), &format!("timeline.{field}"), m))?;
            for step in steps {
                if step.at_ms > duration_ms {
                    return Err(err(
                        s.span(),
                        "timeline.at_ms",
                        format!("{} is after duration_ms {duration_ms}", step.at_ms),
                    ));
                }
                timeline.push((step, s.span()));
            }
        }
        // stable: steps at the same time keep file order
        timeline.sort_by_key(|(s, _)| s.at_ms);
        let (timeline, spans): (Vec<Step>, Vec<Range<usize>>) = timeline.into_iter().unzip();
        if let Some(p) = lifecycle_problem(&timeline) {
            return Err(err(
                spans[p.step].clone(),
                &format!("timeline.{}", p.field),
                p.message,
            ));
        }

        if let Some(c) = raw
            .expect
            .converged_within_ms
            .filter(|&c| c > MAX_DURATION_MS)
        {
            return Err(err(
                0..0,
                "expect.converged_within_ms",
                format!("at most 24 h ({MAX_DURATION_MS}); got {c}"),
            ));
        }
        let mut expect = Expectations {
            converged_within_ms: raw.expect.converged_within_ms,
            ..Default::default()
        };
        for (list, field, out) in [
            (
                &raw.expect.anomalies,
                "expect.anomalies",
                &mut expect.anomalies,
            ),
            (&raw.expect.allow, "expect.allow", &mut expect.allow),
        ] {
            for a in list {
                if !finding_names().contains(&a.get_ref().as_str()) {
                    return Err(err(
                        a.span(),
                        field,
                        format!(
                            "unknown finding {:?} (known: {})",
                            a.get_ref(),
                            finding_names().join(", ")
                        ),
                    ));
                }
                out.insert(a.get_ref().clone());
            }
        }
        for v in &raw.expect.visible {
            let vis = v.get_ref();
            if !node_set.contains(vis.node.as_str()) {
                return Err(err(
                    v.span(),
                    "expect.visible.node",
                    format!("unknown node {:?}", vis.node),
                ));
            }
            if vis.topic.is_empty() {
                return Err(err(
                    v.span(),
                    "expect.visible.topic",
                    "must not be empty (default: \"room:lobby\")".into(),
                ));
            }
            if vis.at_ms > duration_ms {
                return Err(err(
                    v.span(),
                    "expect.visible.at_ms",
                    "after duration_ms".into(),
                ));
            }
            expect.visible.push(vis.clone());
        }

        Ok(Scenario {
            title: raw.title,
            description: raw.description,
            seed: raw.seed,
            duration_ms,
            nodes,
            tracker,
            network,
            clients,
            populations,
            timeline,
            expect,
        })
    }

    pub fn client(&self, name: &str) -> Option<&ClientSpec> {
        self.clients.iter().find(|c| c.name == name)
    }
}

/// The largest value each tracker duration or count may take: far beyond any real setting, and
/// small enough that the derived periods and bounds cannot overflow.
const MAX_DURATION_MS: u64 = 24 * 3_600_000;
const MAX_BROADCAST_PERIOD_MS: u64 = 3_600_000;
const MAX_SILENT_PERIODS: u64 = 10_000;
const MAX_PERIOD_MS: u64 = 30 * 24 * 3_600_000;
const MAX_CLOCK_SAMPLE_PERIODS: u64 = 10_000;
const MAX_DELTA_SIZE: usize = 10_000_000;
const MAX_EAGER_WINDOW_MS: u64 = 60_000;

fn validate_tracker(t: &TrackerSettings) -> Result<(), (&'static str, String)> {
    if t.broadcast_period_ms == 0 {
        return Err(("broadcast_period_ms", "must be positive".into()));
    }
    let at_most = |field: &'static str, value: u64, max: u64| {
        if value > max {
            Err((field, format!("at most {max}; got {value}")))
        } else {
            Ok(())
        }
    };
    at_most(
        "broadcast_period_ms",
        t.broadcast_period_ms,
        MAX_BROADCAST_PERIOD_MS,
    )?;
    at_most(
        "max_silent_periods",
        t.max_silent_periods,
        MAX_SILENT_PERIODS,
    )?;
    if let Some(d) = t.down_period_ms {
        at_most("down_period_ms", d, MAX_PERIOD_MS)?;
    }
    at_most("permdown_period_ms", t.permdown_period_ms, MAX_PERIOD_MS)?;
    if t.clock_sample_periods == 0 || t.clock_sample_periods > MAX_CLOCK_SAMPLE_PERIODS {
        return Err((
            "clock_sample_periods",
            format!("between 1 and {MAX_CLOCK_SAMPLE_PERIODS}"),
        ));
    }
    if t.max_delta_sizes
        .iter()
        .any(|&n| n == 0 || n > MAX_DELTA_SIZE)
    {
        return Err((
            "max_delta_sizes",
            format!("each between 1 and {MAX_DELTA_SIZE}"),
        ));
    }
    if let Some(w) = t.eager_window_ms {
        at_most("eager_window_ms", w, MAX_EAGER_WINDOW_MS)?;
    }
    if t.down_period() < 2 * t.broadcast_period_ms {
        return Err((
            "down_period_ms",
            "must be at least twice the broadcast_period (as Phoenix requires)".into(),
        ));
    }
    if t.permdown_period_ms <= t.down_period() {
        return Err((
            "permdown_period_ms",
            "must be larger than the down_period".into(),
        ));
    }
    if t.max_delta_sizes.is_empty() {
        return Err(("max_delta_sizes", "at least one size".into()));
    }
    if t.pool_size == 0 || t.pool_size > 1024 {
        return Err(("pool_size", "between 1 and 1024".into()));
    }
    Ok(())
}

/// A timeline step that does not fit the state its node is in at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleProblem {
    /// Index of the step in the (time-ordered) timeline.
    pub step: usize,
    /// The step's field: `crash`, `permdown` or `restart`.
    pub field: &'static str,
    pub message: String,
}

/// Walks the time-ordered timeline with each node's state: `crash` stops a running node and
/// `restart` starts it again as a new replica; `permdown` makes a running node leave the
/// cluster for good. Anything else (a second crash, a restart of a running or permdowned node)
/// would silently do nothing in the simulator, so it is refused.
pub fn lifecycle_problem(timeline: &[Step]) -> Option<LifecycleProblem> {
    // node → (the stopping action, its time)
    let mut stopped: BTreeMap<&str, (&'static str, u64)> = BTreeMap::new();
    for (i, step) in timeline.iter().enumerate() {
        let problem = |field: &'static str, message: String| {
            Some(LifecycleProblem {
                step: i,
                field,
                message,
            })
        };
        match &step.action {
            Action::Crash(n) | Action::Permdown(n) => {
                let field = if matches!(step.action, Action::Crash(_)) {
                    "crash"
                } else {
                    "permdown"
                };
                if let Some((how, at)) = stopped.get(n.as_str()) {
                    return problem(
                        field,
                        format!("node {n:?} is already stopped (by {how} at {at} ms)"),
                    );
                }
                stopped.insert(n, (field, step.at_ms));
            }
            Action::Restart(n) => match stopped.remove(n.as_str()) {
                Some(("crash", _)) => {}
                Some((_, at)) => {
                    return problem(
                        "restart",
                        format!(
                            "node {n:?} left the cluster for good by permdown at {at} ms; only a crashed node restarts"
                        ),
                    );
                }
                None => {
                    return problem(
                        "restart",
                        format!(
                            "node {n:?} is running at {} ms; only a crashed node restarts",
                            step.at_ms
                        ),
                    );
                }
            },
            _ => {}
        }
    }
    None
}

/// The steps of one `[[timeline]]` table: one, or a rolling restart's crashes and restarts.
fn to_steps(
    s: &RawStep,
    nodes: &BTreeSet<&str>,
    clients: &BTreeSet<String>,
) -> Result<Vec<Step>, (&'static str, String)> {
    let Some(rolled) = &s.rolling_restart else {
        if s.interval_ms.is_some() || s.down_ms.is_some() {
            return Err((
                "interval_ms",
                "interval_ms and down_ms only go with rolling_restart".into(),
            ));
        }
        return Ok(vec![to_step(s, nodes, clients)?]);
    };
    if let Some(n) = rolled.iter().find(|n| !nodes.contains(n.as_str())) {
        return Err(("rolling_restart", format!("unknown node {n:?}")));
    }
    let interval = s.interval_ms.unwrap_or(rolling::DEFAULT_INTERVAL_MS);
    let down = s.down_ms.unwrap_or(rolling::DEFAULT_DOWN_MS);
    rolling::validate(rolled, interval, down)?;
    let alone = RawStep {
        at_ms: s.at_ms,
        rolling_restart: None,
        interval_ms: None,
        down_ms: None,
        ..s.clone()
    };
    if to_step(&alone, nodes, clients).is_ok() {
        return Err(("action", "one action per timeline entry".into()));
    }
    Ok(rolling::steps(s.at_ms, rolled, interval, down))
}

fn to_step(
    s: &RawStep,
    nodes: &BTreeSet<&str>,
    clients: &BTreeSet<String>,
) -> Result<Step, (&'static str, String)> {
    let client = |field: &'static str, c: &str| {
        if clients.contains(c) {
            Ok(c.to_owned())
        } else {
            Err((field, format!("unknown client {c:?}")))
        }
    };
    let node = |field: &'static str, n: &str| {
        if nodes.contains(n) {
            Ok(n.to_owned())
        } else {
            Err((field, format!("unknown node {n:?}")))
        }
    };
    let links = |field: &'static str, ls: &[[String; 2]]| {
        ls.iter()
            .map(|[x, y]| {
                if x == y {
                    return Err((
                        field,
                        format!("a link needs two different nodes, got {x:?} twice"),
                    ));
                }
                Ok((node(field, x)?, node(field, y)?))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let mut actions = Vec::new();
    if let Some(c) = &s.join {
        actions.push(Action::Join(client("join", c)?));
    }
    if let Some(c) = &s.leave {
        actions.push(Action::Leave(client("leave", c)?));
    }
    if let Some(c) = &s.update {
        let meta = s
            .meta
            .clone()
            .ok_or(("meta", "update needs a meta table".to_string()))?;
        if !meta.is_object() {
            return Err(("meta", "must be a table".into()));
        }
        actions.push(Action::Update(client("update", c)?, Box::new(meta)));
    } else if s.meta.is_some() {
        return Err(("meta", "only goes with update".into()));
    }
    if let Some(c) = &s.disconnect {
        actions.push(Action::Disconnect(client("disconnect", c)?));
    }
    if let Some(c) = &s.drop_mid_join {
        actions.push(Action::DropMidJoin(client("drop_mid_join", c)?));
    }
    if let Some(c) = &s.reconnect {
        actions.push(Action::Reconnect(client("reconnect", c)?));
    }
    if let Some(c) = &s.crash_channel {
        actions.push(Action::CrashChannel(client("crash_channel", c)?));
    }
    if let Some(groups) = &s.partition {
        let mut seen = BTreeSet::new();
        for g in groups {
            for n in g {
                node("partition", n)?;
                if !seen.insert(n.clone()) {
                    return Err(("partition", format!("node {n:?} is in two groups")));
                }
            }
        }
        if groups.len() < 2 {
            return Err(("partition", "at least two groups".into()));
        }
        // A node left out would keep reaching every group (a bridge), which is rarely what the
        // author meant; `cut` says that explicitly.
        if let Some(left_out) = nodes.iter().find(|n| !seen.contains(**n)) {
            return Err((
                "partition",
                format!(
                    "node {left_out:?} is in no group: list every node (a group of its own, \
                     [{left_out:?}], isolates it; `cut` separates single links)"
                ),
            ));
        }
        actions.push(Action::Partition(groups.clone()));
    }
    if let Some(l) = &s.cut {
        actions.push(Action::Cut(links("cut", l)?));
    }
    if let Some(l) = &s.cut_oneway {
        actions.push(Action::CutOneway(links("cut_oneway", l)?));
    }
    match s.heal {
        Some(true) => actions.push(Action::Heal),
        Some(false) => return Err(("heal", "write `heal = true` or leave it out".into())),
        None => {}
    }
    if let Some(l) = &s.repair {
        actions.push(Action::Repair(links("repair", l)?));
    }
    if let Some(n) = &s.crash {
        actions.push(Action::Crash(node("crash", n)?));
    }
    if let Some(n) = &s.restart {
        actions.push(Action::Restart(node("restart", n)?));
    }
    if let Some(n) = &s.permdown {
        actions.push(Action::Permdown(node("permdown", n)?));
    }
    if let Some(l) = &s.hold {
        actions.push(Action::Hold(links("hold", l)?));
    }
    if let Some(l) = &s.release {
        actions.push(Action::Release(links("release", l)?));
    }
    if let Some(r) = s.loss {
        if !(0.0..=1.0).contains(&r) {
            return Err(("loss", "a probability in [0, 1]".into()));
        }
        actions.push(Action::Loss(r));
    }
    if let Some(r) = s.client_loss {
        if !(0.0..=1.0).contains(&r) {
            return Err(("client_loss", "a probability in [0, 1]".into()));
        }
        actions.push(Action::ClientLoss(r));
    }
    match actions.len() {
        1 => Ok(Step {
            at_ms: s.at_ms,
            action: actions.pop().expect("one action"),
        }),
        0 => Err((
            "action",
            "no action: set one of join, leave, update, disconnect, reconnect, crash_channel, partition, cut, cut_oneway, heal, repair, crash, restart, permdown, rolling_restart, hold, release, loss, client_loss".into(),
        )),
        _ => Err(("action", "one action per timeline entry".into())),
    }
}
