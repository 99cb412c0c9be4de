//! Planted bugs. Each is a known way to get the tracker wrong; the property tests and the
//! simulator's checkers must catch every one of them. Selectable only from tests and the CLI's
//! `--mutate`; a `State` built with `State::new` has none.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutation {
    /// A merge that ignores clouds: no tombstones are seen, known-but-gapped dots are re-added.
    MergeIgnoresClouds,
    /// A local remove whose tombstone never reaches the pending delta, the family of
    /// phoenix_pubsub #175 (fixed in 2.1.3): peers that learn by delta keep the value forever,
    /// and their context says they are up to date, so no transfer repairs it.
    LeaveLosesTombstone,
    /// `replica_down` never hides the down replica's values.
    NeverHideDown,
    /// A local update that never reaches the pending delta (neither the new value nor the old
    /// one's tombstone), though its dots do: peers that learn by delta keep the old meta
    /// forever, and their context says they are up to date.
    UpdateStaysLocal,
}

impl Mutation {
    pub const ALL: [Mutation; 4] = [
        Mutation::MergeIgnoresClouds,
        Mutation::LeaveLosesTombstone,
        Mutation::NeverHideDown,
        Mutation::UpdateStaysLocal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutation::MergeIgnoresClouds => "merge-ignores-clouds",
            Mutation::LeaveLosesTombstone => "leave-loses-tombstone",
            Mutation::NeverHideDown => "never-hide-down",
            Mutation::UpdateStaysLocal => "update-stays-local",
        }
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
