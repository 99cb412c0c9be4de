//! One module per subcommand.

pub mod bench_latency;
pub mod bench_ws;
pub mod conform;
pub mod explore;
pub mod mutations;
pub mod presence_sync;
pub mod replay;
pub mod run;
pub mod serve;
pub mod serve_frames;
pub mod sim_report;
pub mod tracker_ops;

/// Exit code for an internal error (a bug in phxsim itself).
pub const EXIT_INTERNAL: u8 = sim_report::EXIT_INTERNAL;
