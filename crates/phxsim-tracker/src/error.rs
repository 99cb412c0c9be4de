//! Errors of local operations: each is a refusal, and the state is untouched when one is returned.

use crate::types::{ReplicaRef, ValueKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// `join` of a `{topic, pid, key}` the replica already holds (`Tracker.track` answers
    /// `{:error, {:already_tracked, ...}}`; State itself would corrupt its pid index).
    #[error("already tracked: topic {:?}, pid {:?}, key {:?}", .0.topic, .0.pid, .0.key)]
    AlreadyTracked(ValueKey),
    /// `update` of a presence the replica does not hold (`Tracker.update` answers `:nopresence`).
    #[error("no presence: topic {:?}, pid {:?}, key {:?}", .0.topic, .0.pid, .0.key)]
    NoPresence(ValueKey),
    /// `remove_down` of a replica that is not currently marked down; the shard always downs a
    /// replica before it permdowns it.
    #[error("replica {0} is not marked down")]
    NotDown(ReplicaRef),
    /// An operation that names the state's own replica where a remote one is meant.
    #[error("replica {0} is this state's own replica")]
    OwnReplica(ReplicaRef),
}
