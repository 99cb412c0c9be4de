//! `phxsim presence-sync`: stdin → `phxsim_wire::sync_driver` → stdout, one line at a time
//! (format: `crates/phxsim/docs/presence-sync.md`). Malformed lines are reported in the output and the
//! stream goes on, so a bad line never costs the lines after it.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use phxsim_wire::sync_driver::{SyncDriver, SyncMode};

/// Which phoenix.js API to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Presence.syncState` / `Presence.syncDiff` applied directly to one state.
    Static,
    /// `new Presence(channel)`: diffs buffered until a state for the current join_ref.
    Instance,
}

#[derive(clap::Args)]
pub struct Args {
    /// `static` applies syncState/syncDiff to one state; `instance` behaves like `new Presence(channel)`.
    #[arg(long, value_enum, default_value = "static")]
    pub mode: Mode,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mode = match args.mode {
        Mode::Static => SyncMode::Static,
        Mode::Instance => SyncMode::Instance,
    };
    let mut driver = SyncDriver::new(mode);
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut raw = Vec::new();
    for number in 1.. {
        raw.clear();
        let read = stdin
            .read_until(b'\n', &mut raw)
            .with_context(|| format!("reading stdin line {number}"))?;
        if read == 0 {
            break;
        }
        // A line that is not UTF-8 is still a line: it becomes an error line, not the end.
        let line = String::from_utf8_lossy(&raw);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(output) = driver.process_line(line) {
            writeln!(stdout, "{output}").context("writing stdout")?;
        }
    }
    stdout.flush().context("writing stdout")?;
    Ok(ExitCode::SUCCESS)
}
