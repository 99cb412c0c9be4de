//! tokio drivers for phxsim. Everything here is a thin shell over the pure state machines of
//! `phxsim-shard`: it moves bytes and reads `tokio::time`, and decides nothing.
//!
//! - [`node`]: a cluster node (shard pool + Presence layer) over node-to-node links.
//!
//! Further drivers (the Channels server and client) live in their own modules beside `node`.

pub mod client;
mod encoded;
pub mod node;
mod prefixed;
pub mod server;
mod state_frame;

pub use node::{
    Coalesce, Diffs, LinkError, LinkHandle, ListsChange, Node, NodeConfig, NodeError, NodeEvent,
    NodeLists, OwnerLease, PresenceUpdate, RefList, Refs, SampledEntry, SampledList, SampledTopic,
    SharedInterner, Subscription, TopicSnapshot, TopicState, Update,
};
