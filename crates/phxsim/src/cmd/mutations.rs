//! `phxsim mutations [--json]`: every planted bug, its layer and what catches it (a checker's
//! finding kind, or the conformance catalogue), from the one registry in
//! `phxsim_sim::planted`.

use phxsim_sim::planted::{PlantedBug, Registry};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Print `{"checkers": [...], "mutations": [{"name", "layer", "caught_by"}]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Registry::new())?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<30} {:<8} caught by", "name", "layer");
    for b in PlantedBug::ALL {
        let layer = serde_json::to_value(b.layer())?;
        let catchers: Vec<&str> = b.caught_by().iter().map(|c| c.name()).collect();
        println!(
            "{:<30} {:<8} {}",
            b.name(),
            layer.as_str().unwrap_or_default(),
            catchers.join(", ")
        );
        println!("    {}", b.about());
    }
    Ok(ExitCode::SUCCESS)
}
