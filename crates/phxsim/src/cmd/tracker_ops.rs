//! `phxsim tracker-ops`: stdin op lines → stdout result lines (`shared/spec/tracker-ops.md`).
//! Bad lines are answered with an error line and the stream goes on.

use anyhow::Context as _;
use phxsim_tracker::ops::Driver;
use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut driver = Driver::new();
    for (n, line) in stdin.lines().enumerate() {
        let line = line.with_context(|| format!("reading stdin line {}", n + 1))?;
        if let Some(result) = driver.line(&line) {
            serde_json::to_writer(&mut out, &result)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
