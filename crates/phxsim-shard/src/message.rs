//! What nodes say to each other: the four shard messages of `Phoenix.Tracker.Shard` (§4.9),
//! addressed to one shard of the pool, plus the link greeting. These are the decoded, typed
//! forms; [`crate::codec`] turns them into bytes and back.

use phxsim_tracker::{Context, Delta, Extract, ReplicaRef};

/// One message between two shards with the same pool index on different nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardMessage {
    /// Broadcast every tick that has something to say: the pending delta (or nothing, for an
    /// idle heartbeat) and the sender's clocks, which exclude replicas it considers down.
    Heartbeat {
        from: ReplicaRef,
        delta: Option<Delta>,
        clocks: Context,
    },
    /// Sent to one node whose clock shows this shard is behind.
    TransferReq {
        id: u64,
        from: ReplicaRef,
        clocks: Context,
    },
    /// The answer: a delta generation covering the gap, or the entire state.
    TransferAck {
        id: u64,
        from: ReplicaRef,
        payload: TransferPayload,
    },
    /// Broadcast by a shard stopping on purpose: peers drop its presences at once.
    GracefulPermdown { from: ReplicaRef },
}

impl ShardMessage {
    /// The replica that sent it.
    pub fn from(&self) -> &ReplicaRef {
        match self {
            ShardMessage::Heartbeat { from, .. }
            | ShardMessage::TransferReq { from, .. }
            | ShardMessage::TransferAck { from, .. }
            | ShardMessage::GracefulPermdown { from } => from,
        }
    }

    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            ShardMessage::Heartbeat { delta: None, .. } => "heartbeat_empty",
            ShardMessage::Heartbeat { .. } => "heartbeat",
            ShardMessage::TransferReq { .. } => "transfer_req",
            ShardMessage::TransferAck { .. } => "transfer_ack",
            ShardMessage::GracefulPermdown { .. } => "graceful_permdown",
        }
    }
}

/// What a transfer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferPayload {
    Delta(Delta),
    Full(Extract),
}

/// A shard message and the pool index of the shard it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMessage {
    pub shard: u32,
    pub body: ShardMessage,
}

/// The first frame each side of a link sends: who it is, and the pool size, which must match
/// (Phoenix replicates shard `n` only with shard `n`, so differing pools would split topics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub node: String,
    pub vsn: u64,
    pub pool_size: u32,
}

/// Everything that travels on a node-to-node link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Shard(NodeMessage),
    /// Link keepalive, sent when nothing else was written for a while, so that a link whose
    /// bytes stopped arriving (a half-open connection, a network that drops segments) is
    /// detected and closed, as Erlang distribution's net_ticktime does.
    Tick,
}
