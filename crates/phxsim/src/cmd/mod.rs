//! One module per subcommand.

pub mod bench_ws;
pub mod presence_sync;
pub mod run;
pub mod serve;
pub mod tracker_ops;

/// Exit code for bad input (unreadable or invalid files, bad flags).
#[allow(dead_code)]
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for an internal error (a bug in phxsim itself).
pub const EXIT_INTERNAL: u8 = 70;
