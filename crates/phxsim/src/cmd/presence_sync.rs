//! `phxsim presence-sync`: being written.
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// `static` applies syncState/syncDiff to one state; `instance` behaves like `new Presence(channel)`.
    #[arg(long, default_value = "static")]
    pub mode: String,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("presence-sync is not built yet")
}
