//! `phxsim tracker-ops`: being written.
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!("tracker-ops is not built yet")
}
