//! `phxsim run`: the main job. Until the simulator lands it runs the conformance of the
//! tracker core against the reference vectors in `shared/vectors/tracker/` (what real
//! Phoenix.Tracker.State printed) and prints a table; a mismatch fails the run.

use anyhow::{Context as _, bail};
use phxsim_tracker::ops::Driver;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Scenario files; default: every file of the `scenarios/` catalogue.
    pub paths: Vec<PathBuf>,
    /// Where the shared reference material lives.
    #[arg(long, env = "PHXSIM_SHARED", default_value = "../shared")]
    pub shared: PathBuf,
}

/// Exit code when an output differs from the reference.
const EXIT_MISMATCH: u8 = 1;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.paths.is_empty() {
        bail!("scenario files need the simulator, which is not built yet");
    }
    let dir = args.shared.join("vectors/tracker");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} (set --shared)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".jsonl") && !n.ends_with(".expected.jsonl")
        })
        .collect();
    inputs.sort();
    println!("{:<36} {:>6}  result", "tracker vector", "ops");
    let mut failed = 0;
    for input in &inputs {
        let (ops, outcome) = check(input)?;
        let name = input.file_name().unwrap_or_default().to_string_lossy();
        match &outcome {
            None => println!("{name:<36} {ops:>6}  pass"),
            Some(why) => {
                failed += 1;
                println!("{name:<36} {ops:>6}  FAIL {why}");
            }
        }
    }
    println!("{} passed, {} failed", inputs.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}

/// Runs one stream; `None` when every line equals the reference.
fn check(input: &Path) -> anyhow::Result<(usize, Option<String>)> {
    let expected_path = input.with_extension("").with_extension("expected.jsonl");
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let expected = std::fs::read_to_string(&expected_path)
        .with_context(|| format!("reading {}", expected_path.display()))?;
    let mut driver = Driver::new();
    let got: Vec<Value> = text.lines().filter_map(|l| driver.line(l)).collect();
    for (i, line) in expected.lines().enumerate() {
        let want: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", expected_path.display(), i + 1))?;
        let Some(have) = got.get(i) else {
            return Ok((
                got.len(),
                Some(format!("missing output for step {}", i + 1)),
            ));
        };
        let same = match (have.get("error"), want.get("error")) {
            (Some(_), Some(_)) => true,
            (None, None) => have == &want,
            _ => false,
        };
        if !same {
            return Ok((got.len(), Some(format!("step {} differs", i + 1))));
        }
    }
    Ok((got.len(), None))
}
