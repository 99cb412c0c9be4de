//! Phoenix.Tracker's delta-CRDT (phoenix_pubsub 2.2), operation for operation, as plain data.
//!
//! This crate knows nothing of sockets, tasks or clocks: time-dependent logic takes `now` as an
//! argument, and every collection iterates in a defined order, so the same code runs in the
//! simulator, on a real network, in benchmarks and under proptest. The faithful behaviour
//! includes the reference's anomalies (see `phoenix-protocol.md` §4 and §6.1).

mod chunked;
pub mod clock;
pub mod delta;
pub mod error;
pub mod generations;
pub mod interner;
mod json_check;
pub mod mutation;
pub mod ops;
pub mod peers;
pub mod shared;
pub mod state;
mod table;
pub mod types;
pub mod values;

pub use clock::{ClockSet, Context};
pub use delta::{Clouds, Delta, NotContiguous};
pub use error::TrackerError;
pub use generations::{Catchup, DEFAULT_MAX_DELTA_SIZES, Generations};
pub use interner::MetaInterner;
pub use mutation::Mutation;
pub use peers::{Peer, PeerStatus, Peers};
pub use shared::{Block, Meta, MetaError, Name};
pub use state::{Extract, State, Status};
pub use table::warm_metas;
pub use types::{Diff, ReplicaRef, Tag, TrackedMeta, Value, ValueKey};
pub use values::{NotSorted, TagValues};
