//! `phxsim tracker-ops`: stdin op lines → stdout result lines (`crates/phxsim/docs/tracker-ops.md`).
//! Bad lines, invalid UTF-8 included, are answered with an error line and the stream goes on.
//! A closed stdout (`phxsim tracker-ops | head`) ends it quietly with exit 0.

use anyhow::Context as _;
use phxsim_tracker::ops::Driver;
use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    let mut stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut driver = Driver::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = stdin.read_until(b'\n', &mut buf).context("reading stdin")?;
        if n == 0 {
            break;
        }
        let result = match std::str::from_utf8(&buf) {
            Ok(line) => driver.line(line),
            Err(e) => Some(driver.unreadable_line(&e.to_string())),
        };
        if let Some(result) = result {
            // as an io::Error, so that a closed stdout is recognised (see main)
            serde_json::to_writer(&mut out, &result).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
