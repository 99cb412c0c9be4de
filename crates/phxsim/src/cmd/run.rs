//! `phxsim run`: being written.
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Scenario files; default: every file of the `scenarios/` catalogue.
    pub paths: Vec<std::path::PathBuf>,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("run is not built yet")
}
