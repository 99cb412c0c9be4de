//! The fault kinds the explorer draws, each named as the timeline action it adds. A module of
//! its own so that the planted-bug registry (which names the faults a bug needs) and the
//! explorer (which draws them) both depend on it and not on each other.

use std::collections::BTreeSet;

/// A kind of fault the explorer may draw, named as the timeline action it adds (`--faults`
/// also takes the older names `oneway` and `client-loss`).
///
/// Declared in the alphabetical order of the names the explorer first drew with (`oneway`
/// between `hold` and `partition`): a seed indexes the selected kinds in this order, so it
/// keeps drawing the scenario it always drew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Crash,
    Cut,
    Disconnect,
    Hold,
    CutOneway,
    Partition,
    Permdown,
    /// Every node link loses 0.5–2 % of its segments (retransmitted, see [`crate::lossy`])
    /// until the heal. Opt-in.
    Loss,
    /// The same on every browser link (node to its clients, both ways). Opt-in.
    ClientLoss,
    /// A rolling deploy ([`crate::scenario::rolling`]): every node that no other fault stops restarts
    /// in turn, each as a new replica. Opt-in.
    RollingRestart,
    /// One to three clients join on a fresh connection that drops in the middle of the join
    /// exchange ([`crate::Action::DropMidJoin`]), and come back with the heal. Opt-in.
    DropMidJoin,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Partition,
        FaultKind::Cut,
        FaultKind::CutOneway,
        FaultKind::Hold,
        FaultKind::Crash,
        FaultKind::Permdown,
        FaultKind::Disconnect,
        FaultKind::Loss,
        FaultKind::ClientLoss,
        FaultKind::RollingRestart,
        FaultKind::DropMidJoin,
    ];

    /// The timeline action's key in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Cut => "cut",
            FaultKind::CutOneway => "cut_oneway",
            FaultKind::Hold => "hold",
            FaultKind::Crash => "crash",
            FaultKind::Permdown => "permdown",
            FaultKind::Disconnect => "disconnect",
            FaultKind::Loss => "loss",
            FaultKind::ClientLoss => "client_loss",
            FaultKind::RollingRestart => "rolling_restart",
            FaultKind::DropMidJoin => "drop_mid_join",
        }
    }

    /// Drawn only when asked for, so that the default set, and so every seed's scenario,
    /// stays as it was before these kinds existed.
    pub fn is_opt_in(self) -> bool {
        matches!(
            self,
            FaultKind::Loss
                | FaultKind::ClientLoss
                | FaultKind::RollingRestart
                | FaultKind::DropMidJoin
        )
    }

    /// The kinds drawn by default.
    pub fn defaults() -> BTreeSet<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|k| !k.is_opt_in())
            .collect()
    }

    /// The label of the random stream a loss rate is drawn from (the older names: a seed
    /// keeps its rates).
    pub(crate) fn stream(self) -> String {
        let old = match self {
            FaultKind::CutOneway => "oneway",
            FaultKind::ClientLoss => "client-loss",
            other => other.name(),
        };
        format!("explore/{old}")
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = match s {
            "oneway" => "cut_oneway",
            "client-loss" => "client_loss",
            s => s,
        };
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {s:?}; known: {}", known.join(", "))
            })
    }
}
