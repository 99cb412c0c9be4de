//! The replication runtime of Phoenix.Tracker and the Presence layer of one node, as sans-IO
//! state machines: events and an explicit `now` go in, messages to send and diffs for local
//! subscribers come out. No tasks, no sockets, no clock; `phxsim-runtime` drives these over real
//! or simulated streams, and [`sim::SimNet`] drives them over a scripted in-memory network.
//!
//! Layers, bottom up:
//! - [`shard::Shard`]: `Phoenix.Tracker.Shard` (heartbeats, silent periods, down/permdown,
//!   clock sampling, transfers, delta generations, graceful permdown);
//! - [`tracker::Tracker`]: the pool of shards of one node and the Presence API (`track`,
//!   `untrack`, `update`, `list`, `get_by_key`, `presence_diff`s);
//! - [`message`] and [`codec`]: what nodes say to each other and its versioned byte form.
//!
//! Behaviour follows phoenix_pubsub 2.2 by default, anomalies included; each deviation a
//! corrected node may want is a switch of [`config::Profile`].

pub mod codec;
pub mod config;
pub mod message;
pub mod pool;
pub mod presence;
pub mod shard;
pub mod sim;
pub mod tracker;

pub use codec::{CodecError, decode_body, decode_frame, decode_header, encode_frame};
pub use config::{ConfigError, NodeMutation, Profile, TickDrift, TickModel, TrackerConfig};
pub use message::{Frame, Hello, NodeMessage, ShardMessage, TransferPayload};
pub use pool::shard_for_topic;
pub use presence::{RefSource, SeededRefs, TrackerDiff, TrackerList};
pub use shard::{Destination, PeerView, Shard, ShardError, ShardEvent, Transmit};
pub use sim::SimNet;
pub use tracker::{InboundError, NodeTransmit, PresenceError, Tracker, TrackerEvent};
