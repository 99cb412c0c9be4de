//! tokio drivers for phxsim.
pub mod node;
