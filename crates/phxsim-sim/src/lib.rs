//! The deterministic simulator: real phxsim nodes and clients in one process on turmoil, under
//! partitions, delays, loss and crashes, observed by checkers; one `u64` seed reproduces a run
//! byte for byte.

pub mod capacity;
pub mod checkers;
mod clients;
pub mod event;
pub mod explore;
pub mod fault;
pub mod finding;
pub mod harness;
pub mod latency;
mod lossy;
pub mod node_trace;
pub mod normalize;
mod pipe;
pub mod planted;
pub mod population;
mod sampler;
pub mod scenario;
pub mod snapshot;
mod stream;
mod task_ids;
pub mod trace;
mod world;

pub use scenario::rolling;
pub use scenario::{Action, ClientSpec, Scenario, ScenarioError, Step};
