//! Tracker options (`Phoenix.Tracker` §4.2) and the behaviour profile.
//!
//! Every Phoenix default is the default here, so a node built with `TrackerConfig::default()`
//! predicts what a stock Phoenix cluster does. The places where the reference misbehaves are not
//! hard-coded: each is a named switch in [`Profile`], so a corrected profile is the same code
//! with different switches and a scenario can show the difference.

use phxsim_tracker::DEFAULT_MAX_DELTA_SIZES;
use serde::{Deserialize, Serialize};

/// Which of the reference's anomalies (tracker.md, "Known anomalies") a node reproduces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Anomalies 1 and 2. Phoenix reports every join and leave a merge finds, including those of
    /// values whose replica is marked down here: a tombstone relayed by a third node gives a
    /// second leave for a presence already reported gone at `replica_down` (anomaly 1), and a
    /// transfer that brings a down replica's values reports them as joins although `list` hides
    /// them, then `replica_up` reports them again (anomaly 2). When false, a merge reports
    /// nothing about down replicas: their leaves were reported at down time and their joins are
    /// reported at up time, so a consumer sees each transition once.
    pub merge_reports_down_replicas: bool,
    /// Anomaly 3. Phoenix answers a transfer request passing the requester's bare node name
    /// where a replica ref is expected, so "do not send the requester its own entries" never
    /// applies and its own values travel back (the merge drops them). When true the requester's
    /// own values are left out of full-state answers only. A delta generation must keep them:
    /// its clouds still list their dots, and a dot in a delta's clouds without its value is a
    /// tombstone, so the requester would store "removed" for its own live presences in its
    /// generations and later hand that to third nodes, which then drop those presences. (Found
    /// by the replayed reference run; Phoenix is protected from it only by this very quirk.)
    pub transfer_excludes_requester: bool,
    /// `graceful_permdown` from a replica that is already marked down: Phoenix downs it again,
    /// which reports every one of its values as a leave a second time. When false, a replica
    /// already down is only permdowned.
    pub graceful_permdown_redowns: bool,
    /// phoenix_pubsub #148 (open upstream). Phoenix admits a remote value whose dot it has not
    /// seen even when it holds a newer row of the same replica for the same presence, so a
    /// lagging node's full transfer overwrites a newer meta, and the presence is later lost or
    /// left as a ghost. When true such a stale value is refused
    /// ([`phxsim_tracker::State::with_superseded_guard`]).
    #[serde(default)]
    pub refuse_superseded_values: bool,
    /// The second convergence failure the CRDT property found (no upstream issue known).
    /// Phoenix's merge deletes a removed remote value's dot from its clouds, so a full transfer
    /// from this node carries the later dot of the remove but not the removed one, and a
    /// receiver still holding the value advances over the remove and keeps a ghost for good.
    /// When true the removed dot stays in the cloud and the transfer carries the remove
    /// ([`phxsim_tracker::State::with_removed_dots_kept`]).
    #[serde(default)]
    pub keep_removed_dots: bool,
    /// The eager-delta extension (not Phoenix): a local change is broadcast at once if no delta
    /// left in the last this-many ms, else at the end of that window together with every
    /// change made meanwhile, instead of waiting for the next tick; so cross-node latency is
    /// one network hop for a lone change and at most one window more in a burst. Regular
    /// ticks (heartbeats, transfer decisions, down detection) keep their schedule. `None`,
    /// the default, is faithful.
    #[serde(default)]
    pub eager_window: Option<u64>,
}

impl Profile {
    /// What phoenix_pubsub 2.2 does, anomalies included. The default.
    pub fn faithful() -> Self {
        Self {
            merge_reports_down_replicas: true,
            transfer_excludes_requester: false,
            graceful_permdown_redowns: true,
            refuse_superseded_values: false,
            keep_removed_dots: false,
            eager_window: None,
        }
    }

    /// Every anomaly above fixed.
    pub fn corrected() -> Self {
        Self {
            merge_reports_down_replicas: false,
            transfer_excludes_requester: true,
            graceful_permdown_redowns: false,
            refuse_superseded_values: true,
            keep_removed_dots: true,
            eager_window: None,
        }
    }

    /// Faithful in every respect but one: deltas leave as soon as a change is made, at most
    /// one per `window` ms.
    pub fn eager(window: u64) -> Self {
        Self {
            eager_window: Some(window),
            ..Self::faithful()
        }
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::faithful()
    }
}

/// When a shard's ticks come.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TickModel {
    /// The textbook cadence: each tick exactly `broadcast_period` after the previous one ran,
    /// the first one `0..=first_tick_jitter` ms after the start.
    #[default]
    Exact,
    /// What a real shard does (`crates/phxsim/docs/phoenix-races.md`): `Process.send_after` re-arms
    /// the tick after the tick's work, so every period overruns a little and each node's tick
    /// phase drifts against the others'; and nodes started together start ticking tens of ms
    /// apart. Every draw comes from the node's seed.
    Drift(TickDrift),
}

/// The calibration of [`TickModel::Drift`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickDrift {
    /// Each node's mean overrun of a tick past `broadcast_period`, drawn once per shard from
    /// this range in µs. Measured idle: silent heartbeats every 561–567 ms at bp 50 and every
    /// 1 111–1 139 ms at bp 100, i.e. 11 ticks of bp + 1–3.5 ms depending on the node and run.
    pub overrun_us: [u64; 2],
    /// Each tick varies around its shard's mean by up to this many µs either way. Sub-ms parts
    /// accumulate, so the mean drift is kept exactly.
    pub tick_jitter_us: u64,
    /// More overrun under load: µs per presence value the shard sent or merged since its last
    /// tick (an estimate: a tick that flushes or follows a few hundred values runs about a
    /// millisecond longer).
    pub load_us_per_value: u64,
    /// Each node's tracker starts ticking a random `0..=start_offset_ms` ms late, on top of
    /// Phoenix's own first-tick jitter (measured: nodes started together begin ticking 16–70 ms
    /// apart on a loaded 2-core machine).
    pub start_offset_ms: u64,
}

impl TickDrift {
    /// The calibration measured on real phoenix_pubsub 2.2.0 clusters on loopback.
    pub fn calibrated() -> Self {
        Self {
            overrun_us: [1_000, 3_500],
            tick_jitter_us: 250,
            load_us_per_value: 3,
            start_offset_ms: 50,
        }
    }
}

/// The options of one tracker (all shards of a node share them). Times are milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerConfig {
    /// How often a shard ticks (heartbeat, transfer decisions, down detection).
    pub broadcast_period: u64,
    /// Idle ticks between empty heartbeats: an idle shard broadcasts every
    /// `max_silent_periods + 1` ticks.
    pub max_silent_periods: u32,
    /// Silence after which a peer replica is marked down. `None` means Phoenix's derived default
    /// `broadcast_period × max_silent_periods × 2`, recomputed when the period changes.
    pub down_period: Option<u64>,
    /// Silence after which a peer replica is removed for good.
    pub permdown_period: u64,
    /// Ticks between two transfer decisions.
    pub clock_sample_periods: u32,
    /// One delta generation per entry, smallest first.
    pub max_delta_sizes: Vec<usize>,
    /// Number of shards; topics are hashed over them (see [`crate::pool::shard_for_topic`]).
    pub pool_size: u32,
    /// The first tick of a shard comes a random `0..=first_tick_jitter` ms after it starts
    /// (Phoenix: ⌊0.25 × broadcast_period⌋), so that shards started together do not tick
    /// together. `None` means that derived default.
    pub first_tick_jitter: Option<u64>,
    /// When ticks come: exactly every period (the default of this sans-IO crate, which its
    /// exact-time tests rely on), or drifting as on a real BEAM (the simulator's default).
    #[serde(default)]
    pub tick_model: TickModel,
    pub profile: Profile,
    /// A planted bug (tests and `--mutate` only): the simulator's checkers must catch it.
    #[serde(skip)]
    pub mutation: Option<NodeMutation>,
}

/// Known ways to get a node wrong, planted on purpose to prove that the checkers notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeMutation {
    /// A bug in the CRDT (see [`phxsim_tracker::Mutation`]).
    Tracker(phxsim_tracker::Mutation),
    /// The shard never asks for a transfer: gaps left by lost heartbeats are never filled.
    SkipTransfer,
    /// A silent peer is declared down (and permdown) four times late: the cluster still
    /// converges after a crash, but later than its bound allows, and the crashed node's
    /// presences outlive the ghost bound.
    SlowDownDetection,
    /// A transfer answers with the smallest generation that tells the requester anything,
    /// without checking that it is contiguous with the requester's context (that the context
    /// reaches the generation's start): the gap before it is never filled.
    GenerationChoiceIgnoresGap,
}

impl NodeMutation {
    /// Every node mutation, in a stable order.
    pub fn all() -> Vec<NodeMutation> {
        let mut out: Vec<NodeMutation> = phxsim_tracker::Mutation::ALL
            .iter()
            .map(|m| NodeMutation::Tracker(*m))
            .collect();
        out.push(NodeMutation::SkipTransfer);
        out.push(NodeMutation::SlowDownDetection);
        out.push(NodeMutation::GenerationChoiceIgnoresGap);
        out
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeMutation::Tracker(m) => m.name(),
            NodeMutation::SkipTransfer => "skip-transfer",
            NodeMutation::SlowDownDetection => "slow-down-detection",
            NodeMutation::GenerationChoiceIgnoresGap => "generation-choice-ignores-gap",
        }
    }

    /// The tracker part, if this is a CRDT bug.
    pub fn tracker(self) -> Option<phxsim_tracker::Mutation> {
        match self {
            NodeMutation::Tracker(m) => Some(m),
            _ => None,
        }
    }
}

impl std::fmt::Display for NodeMutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            broadcast_period: 1_500,
            max_silent_periods: 10,
            down_period: None,
            permdown_period: 1_200_000,
            clock_sample_periods: 2,
            max_delta_sizes: DEFAULT_MAX_DELTA_SIZES.to_vec(),
            pool_size: 1,
            first_tick_jitter: None,
            tick_model: TickModel::Exact,
            profile: Profile::faithful(),
            mutation: None,
        }
    }
}

/// Options Phoenix refuses at start (shard_test.exs), plus the ones that would make the state
/// machine divide by zero or never tick.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Phoenix: a peer could be declared down between two of its heartbeats.
    #[error("down_period must be at least twice as large as the broadcast_period")]
    DownPeriodTooShort,
    /// Phoenix: permdown must come after down.
    #[error("permdown_period must be at least larger than the down_period")]
    PermdownPeriodTooShort,
    /// A zero period would make a shard tick forever at the same instant.
    #[error("broadcast_period must be positive")]
    ZeroBroadcastPeriod,
    /// Topics are hashed modulo the pool size.
    #[error("pool_size must be positive")]
    ZeroPoolSize,
    /// The sampling countdown starts at this value and decides when it reaches 1.
    #[error("clock_sample_periods must be positive")]
    ZeroClockSamplePeriods,
    /// Generations are tried smallest first; an unsorted list would never pick the big ones.
    #[error("max_delta_sizes must be non-empty and ascending")]
    BadDeltaSizes,
}

impl TrackerConfig {
    /// Phoenix defaults with another broadcast period; the derived down period follows it.
    pub fn with_broadcast_period(broadcast_period: u64) -> Self {
        Self {
            broadcast_period,
            ..Self::default()
        }
    }

    /// The effective down period.
    pub fn down_period(&self) -> u64 {
        self.down_period.unwrap_or(
            self.broadcast_period
                .saturating_mul(u64::from(self.max_silent_periods))
                .saturating_mul(2),
        )
    }

    /// The effective bound of the first tick's random delay.
    pub fn first_tick_jitter(&self) -> u64 {
        self.first_tick_jitter.unwrap_or(self.broadcast_period / 4)
    }

    /// Checks the options the way `Phoenix.Tracker.Shard.init/1` does, plus the degenerate
    /// values a state machine cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.broadcast_period == 0 {
            return Err(ConfigError::ZeroBroadcastPeriod);
        }
        if self.down_period() < self.broadcast_period.saturating_mul(2) {
            return Err(ConfigError::DownPeriodTooShort);
        }
        if self.permdown_period <= self.down_period() {
            return Err(ConfigError::PermdownPeriodTooShort);
        }
        if self.pool_size == 0 {
            return Err(ConfigError::ZeroPoolSize);
        }
        if self.clock_sample_periods == 0 {
            return Err(ConfigError::ZeroClockSamplePeriods);
        }
        if self.max_delta_sizes.is_empty() || !self.max_delta_sizes.is_sorted() {
            return Err(ConfigError::BadDeltaSizes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_phoenix_defaults() {
        let c = TrackerConfig::default();
        assert_eq!(c.broadcast_period, 1_500);
        assert_eq!(c.down_period(), 30_000);
        assert_eq!(c.permdown_period, 1_200_000);
        assert_eq!(c.clock_sample_periods, 2);
        assert_eq!(c.max_delta_sizes, vec![100, 1_000, 10_000]);
        assert_eq!(c.pool_size, 1);
        assert_eq!(c.first_tick_jitter(), 375);
        assert_eq!(c.profile, Profile::faithful());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn derived_down_period_follows_the_broadcast_period() {
        let c = TrackerConfig::with_broadcast_period(100);
        assert_eq!(c.down_period(), 2_000);
        let c = TrackerConfig {
            max_silent_periods: 2,
            ..TrackerConfig::with_broadcast_period(100)
        };
        assert_eq!(c.down_period(), 400);
    }

    // shard_test.exs 1: "validates down_period".
    #[test]
    fn down_period_shorter_than_two_periods_is_refused() {
        let c = TrackerConfig {
            down_period: Some(1),
            ..TrackerConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert_eq!(err, ConfigError::DownPeriodTooShort);
        assert_eq!(
            err.to_string(),
            "down_period must be at least twice as large as the broadcast_period"
        );
    }

    // shard_test.exs 2: "validates permdown_period".
    #[test]
    fn permdown_period_not_above_down_period_is_refused() {
        let c = TrackerConfig {
            down_period: Some(1_200_000),
            permdown_period: 120_000,
            ..TrackerConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert_eq!(err, ConfigError::PermdownPeriodTooShort);
        assert_eq!(
            err.to_string(),
            "permdown_period must be at least larger than the down_period"
        );
        let equal = TrackerConfig {
            down_period: Some(5_000),
            permdown_period: 5_000,
            ..TrackerConfig::default()
        };
        assert_eq!(equal.validate(), Err(ConfigError::PermdownPeriodTooShort));
    }

    #[test]
    fn degenerate_values_are_refused() {
        let zero = |f: fn(&mut TrackerConfig)| {
            let mut c = TrackerConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(
            zero(|c| c.broadcast_period = 0),
            ConfigError::ZeroBroadcastPeriod
        );
        assert_eq!(zero(|c| c.pool_size = 0), ConfigError::ZeroPoolSize);
        assert_eq!(
            zero(|c| c.clock_sample_periods = 0),
            ConfigError::ZeroClockSamplePeriods
        );
        assert_eq!(
            zero(|c| c.max_delta_sizes = vec![]),
            ConfigError::BadDeltaSizes
        );
        assert_eq!(
            zero(|c| c.max_delta_sizes = vec![10, 5]),
            ConfigError::BadDeltaSizes
        );
    }
}
