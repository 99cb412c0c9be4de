//! One module per subcommand.

pub mod bench_latency;
pub mod bench_load;
pub mod bench_tracker;
pub mod bench_ws;
pub mod conform;
pub mod crosscheck;
pub mod explore;
pub mod mutations;
pub mod output;
pub mod presence_sync;
pub mod replay;
pub mod run;
pub mod serve;
pub mod serve_frames;
pub mod sim_report;
pub mod tracker_ops;

/// Exit code for an internal error (a bug in phxsim itself).
pub const EXIT_INTERNAL: u8 = sim_report::EXIT_INTERNAL;
/// Exit code for bad input: flags, files, paths, an unreachable server.
pub const EXIT_BAD_INPUT: u8 = sim_report::EXIT_BAD_INPUT;

/// Bad input found by a command: `main` prints the message and exits with
/// [`EXIT_BAD_INPUT`], not as an internal error.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// `Err(BadInput)` with this message, for `?` in a command.
pub fn bad_input<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(BadInput(message.into()).into())
}

/// `println!` that returns the write error instead of panicking, so that a reader that goes
/// away (`phxsim run | head`) ends the command through `main`'s broken-pipe rule.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}
pub(crate) use outln;
