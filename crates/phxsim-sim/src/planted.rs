//! The planted-bug registry: every known way to get a layer wrong that the suite must catch,
//! and what catches it. `run`, `replay`, `explore`, `serve`, `phxsim mutations` and the tests
//! all read this one list; the bugs themselves live in the layer they break (the tracker's
//! [`phxsim_tracker::Mutation`], the shard's [`NodeMutation`], the server's
//! [`ServerMutation`], the client's [`ClientMutation`]).
//!
//! To plant a new bug: add the variant in its layer, then one entry to [`PlantedBug::ALL`] and
//! to the `match`es below (the compiler points at each); the tests in
//! `tests/simulation.rs` then ask for a seed or scenario that proves every catcher.

use crate::fault::FaultKind;
use crate::finding::FindingKind;
use phxsim_runtime::client::ClientMutation;
use phxsim_runtime::server::ServerMutation;
use phxsim_shard::NodeMutation;
use phxsim_tracker::Mutation;
use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// One planted bug, in whichever layer it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlantedBug {
    /// A node bug: the CRDT or the shard.
    Node(NodeMutation),
    /// A Channels server bug.
    Server(ServerMutation),
    /// A phoenix.js client bug.
    Client(ClientMutation),
}

/// The layer a planted bug breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Tracker,
    Shard,
    Server,
    Client,
}

/// What must catch a planted bug: a simulator checker (by the finding kind it reports), or
/// only the wire conformance catalogue (`phxsim conform`), for bugs that no phoenix.js client
/// behaviour, and so no simulated run, can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Catcher {
    Checker(FindingKind),
    Conformance,
}

impl Catcher {
    pub fn name(self) -> &'static str {
        match self {
            Catcher::Checker(k) => k.name(),
            Catcher::Conformance => "conformance",
        }
    }
}

impl fmt::Display for Catcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Catcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

use Catcher::{Checker, Conformance};
use FindingKind as K;

impl PlantedBug {
    /// Every planted bug, in the order `phxsim mutations` lists them.
    pub const ALL: [PlantedBug; 17] = [
        PlantedBug::Node(NodeMutation::Tracker(Mutation::MergeIgnoresClouds)),
        PlantedBug::Node(NodeMutation::Tracker(Mutation::LeaveLosesTombstone)),
        PlantedBug::Node(NodeMutation::Tracker(Mutation::NeverHideDown)),
        PlantedBug::Node(NodeMutation::Tracker(Mutation::UpdateStaysLocal)),
        PlantedBug::Node(NodeMutation::SkipTransfer),
        PlantedBug::Node(NodeMutation::SlowDownDetection),
        PlantedBug::Node(NodeMutation::GenerationChoiceIgnoresGap),
        PlantedBug::Server(ServerMutation::DropPhxRefPrev),
        PlantedBug::Server(ServerMutation::HeartbeatReplyWrongTopic),
        PlantedBug::Server(ServerMutation::NoPresenceState),
        PlantedBug::Server(ServerMutation::StateWithWrongJoinRef),
        PlantedBug::Server(ServerMutation::KeepPresencesOnDisconnect),
        PlantedBug::Server(ServerMutation::DropLeaves),
        PlantedBug::Server(ServerMutation::NoPhxCloseOnLeave),
        PlantedBug::Server(ServerMutation::LeaveWrongRef),
        PlantedBug::Server(ServerMutation::TrackBeforeBookkeeping),
        PlantedBug::Client(ClientMutation::ForgetPendingDiffs),
    ];

    /// The kebab-case name of `--mutate`.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::Node(m) => m.name(),
            PlantedBug::Server(m) => m.name(),
            PlantedBug::Client(m) => m.name(),
        }
    }

    pub fn layer(self) -> Layer {
        match self {
            PlantedBug::Node(NodeMutation::Tracker(_)) => Layer::Tracker,
            PlantedBug::Node(_) => Layer::Shard,
            PlantedBug::Server(_) => Layer::Server,
            PlantedBug::Client(_) => Layer::Client,
        }
    }

    /// What must catch it. Every checker named here has a test that plants the bug and sees
    /// that checker report it (`tests/simulation.rs`); `Conformance` has its proof in
    /// `crates/phxsim-conform/tests/against_phxsim.rs`.
    pub fn caught_by(self) -> &'static [Catcher] {
        match self {
            PlantedBug::Node(NodeMutation::Tracker(m)) => match m {
                Mutation::MergeIgnoresClouds => {
                    &[Checker(K::ClientView), Checker(K::DuplicateJoin)]
                }
                Mutation::LeaveLosesTombstone => &[Checker(K::Ghost)],
                Mutation::NeverHideDown => &[Checker(K::Ghost), Checker(K::Expectation)],
                Mutation::UpdateStaysLocal => &[Checker(K::StaleMeta)],
            },
            PlantedBug::Node(NodeMutation::SkipTransfer) => {
                &[Checker(K::Lost), Checker(K::NoConvergence)]
            }
            PlantedBug::Node(NodeMutation::SlowDownDetection) => {
                &[Checker(K::Ghost), Checker(K::NoConvergence)]
            }
            PlantedBug::Node(NodeMutation::GenerationChoiceIgnoresGap) => &[Checker(K::Lost)],
            PlantedBug::Server(m) => match m {
                ServerMutation::DropPhxRefPrev => &[Checker(K::ClientView)],
                // phoenix.js only notices a missing heartbeat reply after two heartbeat
                // intervals (60 s) and then reconnects cleanly, and it closes a channel on the
                // leave's reply without waiting for phx_close: no simulated run can tell
                ServerMutation::HeartbeatReplyWrongTopic => &[Conformance],
                ServerMutation::NoPhxCloseOnLeave => &[Conformance],
                ServerMutation::NoPresenceState => &[Checker(K::ClientView)],
                ServerMutation::StateWithWrongJoinRef => &[Checker(K::ClientView)],
                ServerMutation::KeepPresencesOnDisconnect => &[Checker(K::Ghost)],
                ServerMutation::DropLeaves => &[Checker(K::ClientView)],
                ServerMutation::LeaveWrongRef => {
                    &[Checker(K::ClientView), Checker(K::DuplicateLeave)]
                }
                // the node still lists the presence, so only the socket truth sees the ghost
                ServerMutation::TrackBeforeBookkeeping => &[Checker(K::Ghost)],
            },
            PlantedBug::Client(ClientMutation::ForgetPendingDiffs) => &[Checker(K::DiffStream)],
        }
    }

    /// Whether only the conformance catalogue can catch it (the simulator refuses it).
    pub fn conformance_only(self) -> bool {
        self.caught_by() == [Conformance]
    }

    /// One line on what the bug does, for `--help` and `phxsim mutations`.
    pub fn about(self) -> &'static str {
        match self {
            PlantedBug::Node(NodeMutation::Tracker(m)) => match m {
                Mutation::MergeIgnoresClouds => "a merge that ignores clouds re-adds known dots",
                Mutation::LeaveLosesTombstone => "a leave's tombstone never reaches the delta",
                Mutation::NeverHideDown => "a down replica's presences are never hidden",
                Mutation::UpdateStaysLocal => "an update never reaches the delta",
            },
            PlantedBug::Node(NodeMutation::SkipTransfer) => "the shard never asks for a transfer",
            PlantedBug::Node(NodeMutation::SlowDownDetection) => {
                "a silent peer is declared down (and permdown) four times late"
            }
            PlantedBug::Node(NodeMutation::GenerationChoiceIgnoresGap) => {
                "a transfer sends a generation not contiguous with the requester's context"
            }
            PlantedBug::Server(m) => match m {
                ServerMutation::DropPhxRefPrev => "metas go out without phx_ref_prev",
                ServerMutation::HeartbeatReplyWrongTopic => {
                    "the heartbeat reply goes out on topic \"heartbeat\""
                }
                ServerMutation::NoPresenceState => "no presence_state after a join",
                ServerMutation::StateWithWrongJoinRef => "presence_state carries a wrong join_ref",
                ServerMutation::KeepPresencesOnDisconnect => {
                    "a closed connection's presences stay tracked"
                }
                ServerMutation::DropLeaves => "presence_diffs go out without their leaves",
                ServerMutation::NoPhxCloseOnLeave => "phx_leave is never followed by phx_close",
                ServerMutation::LeaveWrongRef => "leaves name a phx_ref the client never got",
                ServerMutation::TrackBeforeBookkeeping => {
                    "a join tracks before its channel is kept: a connection lost mid-join leaves a ghost"
                }
            },
            PlantedBug::Client(ClientMutation::ForgetPendingDiffs) => {
                "diffs that come before the state are dropped, not buffered"
            }
        }
    }

    /// The fault kinds `explore --mutate` adds to the ones it draws, for a bug that only they
    /// can show (opt-in kinds: without the bug, a seed's scenario stays what it was).
    pub fn explore_faults(self) -> &'static [FaultKind] {
        match self {
            PlantedBug::Server(ServerMutation::TrackBeforeBookkeeping) => &[FaultKind::DropMidJoin],
            _ => &[],
        }
    }

    /// The node bug, if it is one.
    pub fn node(self) -> Option<NodeMutation> {
        match self {
            PlantedBug::Node(m) => Some(m),
            _ => None,
        }
    }

    /// The server bug, if it is one.
    pub fn server(self) -> Option<ServerMutation> {
        match self {
            PlantedBug::Server(m) => Some(m),
            _ => None,
        }
    }

    /// The client bug, if it is one.
    pub fn client(self) -> Option<ClientMutation> {
        match self {
            PlantedBug::Client(m) => Some(m),
            _ => None,
        }
    }

    /// Every finding kind some planted bug proves (the checkers with a planted bug).
    pub fn proven_kinds() -> Vec<FindingKind> {
        let mut kinds: Vec<FindingKind> = PlantedBug::ALL
            .iter()
            .flat_map(|b| b.caught_by())
            .filter_map(|c| match c {
                Checker(k) => Some(*k),
                Conformance => None,
            })
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name `--mutate` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown planted bug {name:?}; known: {}", known_names())]
pub struct UnknownBug {
    pub name: String,
}

fn known_names() -> String {
    PlantedBug::ALL
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for PlantedBug {
    type Err = UnknownBug;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlantedBug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBug { name: s.to_owned() })
    }
}

/// `--mutate NAME` on the command line: the names and what each does show in `--help`.
impl clap::ValueEnum for PlantedBug {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let catchers: Vec<&str> = self.caught_by().iter().map(|c| c.name()).collect();
        Some(clap::builder::PossibleValue::new(self.name()).help(format!(
                "{} layer: {} (caught by {})",
                serde_json::to_value(self.layer())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                self.about(),
                catchers.join(", ")
            )))
    }
}

/// The `phxsim mutations --json` document.
#[derive(Serialize)]
pub struct Registry {
    /// Every finding kind of the simulator's checkers.
    pub checkers: Vec<FindingKind>,
    pub mutations: Vec<RegistryEntry>,
}

#[derive(Serialize)]
pub struct RegistryEntry {
    pub name: &'static str,
    pub layer: Layer,
    pub caught_by: &'static [Catcher],
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            checkers: FindingKind::ALL.to_vec(),
            mutations: PlantedBug::ALL
                .iter()
                .map(|b| RegistryEntry {
                    name: b.name(),
                    layer: b.layer(),
                    caught_by: b.caught_by(),
                })
                .collect(),
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bug_of_every_layer_is_registered_once() {
        let mut layers: Vec<PlantedBug> = NodeMutation::all()
            .into_iter()
            .map(PlantedBug::Node)
            .chain(ServerMutation::ALL.into_iter().map(PlantedBug::Server))
            .chain(ClientMutation::ALL.into_iter().map(PlantedBug::Client))
            .collect();
        layers.sort();
        let mut registered = PlantedBug::ALL.to_vec();
        registered.sort();
        assert_eq!(registered, layers);
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for b in PlantedBug::ALL {
            assert_eq!(b.name().parse::<PlantedBug>(), Ok(b));
        }
        let err = "nope".parse::<PlantedBug>().unwrap_err().to_string();
        assert!(err.contains("skip-transfer"), "{err}");
    }

    #[test]
    fn every_checker_has_a_planted_bug() {
        assert_eq!(PlantedBug::proven_kinds(), FindingKind::ALL.to_vec());
    }

    #[test]
    fn only_server_bugs_are_left_to_conformance() {
        for b in PlantedBug::ALL.into_iter().filter(|b| b.conformance_only()) {
            assert_eq!(b.layer(), Layer::Server, "{b}");
        }
    }
}
