//! `phxsim conform --url ws://HOST:PORT/socket/websocket [--vsn 1.0.0|2.0.0]`: the wire
//! conformance catalogue (crate `phxsim-conform`) against any server that exposes the
//! reference channel: a Phoenix app with that channel, or `phxsim serve`.
//!
//! Prints one line per case as it finishes (stderr), then the table (stdout); writes the JSON,
//! JUnit and HTML reports when asked. Exit code 0 when no case fails, 1 when one does, 2 for
//! bad flags, an unwritable report path or a server that does not accept connections.

use super::output;
use anyhow::Context as _;
use phxsim_conform::authored::PhoenixVersion;
use phxsim_conform::cases::{DEFAULT_TOPIC_PREFIX, all_cases, catalogue_for};
use phxsim_conform::report::{
    render_html, render_json, render_junit, render_table, vsn_label, vsn_number,
};
use phxsim_conform::runner::{check_reachable, check_url};
use phxsim_conform::{Report, RunConfig, VsnRun, run_all};
use phxsim_wire::Serializer;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code when at least one case fails.
const EXIT_FAIL: u8 = 1;
/// Exit code for bad flags and an unreachable server.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's WebSocket endpoint, e.g. ws://127.0.0.1:4000/socket/websocket. The
    /// recorded connect query (vsn, user_id) is appended.
    #[arg(long)]
    pub url: String,
    /// Protocol version to test (default: both, V1 then V2).
    #[arg(long, value_parser = ["1.0.0", "2.0.0"])]
    pub vsn: Option<String>,
    /// The Phoenix version whose behaviour to expect: 1.7.21 (the recorded reference, the
    /// default) or 1.8 (the newer rules `phxsim serve --phoenix 1.8` follows). Cases that
    /// describe only the other version are left out.
    #[arg(long, default_value = "1.7.21", value_parser = ["1.7.21", "1.8"])]
    pub phoenix: String,
    /// Run only these case numbers (repeatable).
    #[arg(long = "case")]
    pub cases: Vec<u8>,
    /// Where the idle-timeout cases' idle sockets (and case 47's heartbeating one) connect,
    /// if not --url: another endpoint of the same server, serving the same channel and
    /// presences, whose idle timeout is short (the Phoenix reference server's /short: 1500 ms);
    /// give that timeout as --idle-timeout-ms.
    #[arg(long = "idle-url")]
    pub idle_url: Option<String>,
    /// How long to wait for one exchange's frames, in ms.
    #[arg(long = "timeout-ms", default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// The server's idle timeout in ms (Phoenix: 60 000): the idle cases wait this long.
    #[arg(long = "idle-timeout-ms", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// How long to listen for stray frames after each case, in ms.
    #[arg(long = "settle-ms", default_value_t = 200)]
    pub settle_ms: u64,
    /// Each case runs on topic PREFIX-v<1|2>-<case>; the prefix must be routed to the
    /// reference channel (room:*).
    #[arg(long = "topic-prefix", default_value = DEFAULT_TOPIC_PREFIX)]
    pub topic_prefix: String,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write an HTML report (Autobahn style) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bad = |msg: String| {
        eprintln!("phxsim conform: {msg}");
        Ok(ExitCode::from(EXIT_BAD_INPUT))
    };
    for url in std::iter::once(&args.url).chain(args.idle_url.as_ref()) {
        if let Err(e) = check_url(url) {
            return bad(e.to_string());
        }
    }
    let cases = all_cases()?;
    if let Some(unknown) = args
        .cases
        .iter()
        .find(|id| !cases.iter().any(|c| c.id == **id))
    {
        let last = cases.iter().map(|c| c.id).max().unwrap_or(0);
        return bad(format!("no case {unknown}; cases are 1 to {last}"));
    }
    let phoenix: PhoenixVersion = match args.phoenix.parse() {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let vsns = match args.vsn.as_deref() {
        Some("1.0.0") => vec![Serializer::V1],
        Some("2.0.0") => vec![Serializer::V2],
        Some(other) => return bad(format!("unknown --vsn {other}")),
        None => vec![Serializer::V1, Serializer::V2],
    };
    for (flag, path) in [
        ("--json", &args.json),
        ("--junit", &args.junit),
        ("--html", &args.html),
    ] {
        if let Err(e) = output::check_optional(flag, path.as_deref()) {
            return bad(e.to_string());
        }
    }
    let cfg = RunConfig {
        url: args.url.clone(),
        idle_url: args.idle_url.clone(),
        timeout: Duration::from_millis(args.timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        settle: Duration::from_millis(args.settle_ms),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // a server that is not there is bad input, found in seconds rather than after every case
    let probe = Duration::from_secs(5);
    for url in std::iter::once(&args.url).chain(args.idle_url.as_ref()) {
        if let Err(e) = runtime.block_on(check_reachable(url, probe)) {
            return bad(e.to_string());
        }
    }
    let mut runs = Vec::new();
    for vsn in vsns {
        let scripts: Vec<_> = catalogue_for(vsn, phoenix, &args.topic_prefix)?
            .into_iter()
            .filter(|s| args.cases.is_empty() || args.cases.contains(&s.case.id))
            .collect();
        if scripts.iter().any(|s| s.idles()) {
            eprintln!(
                "phxsim conform: {}: the idle-timeout case waits up to {} ms (--idle-timeout-ms)",
                vsn_label(vsn),
                args.idle_timeout_ms
            );
        }
        let results = runtime.block_on(run_all(&cfg, &scripts, |r| {
            eprintln!(
                "{} {:<32} {:<10} {} ms",
                vsn_label(vsn),
                r.script.case.name(),
                r.comparison.verdict.label(),
                r.elapsed.as_millis()
            );
        }))?;
        if results.is_empty() {
            eprintln!(
                "phxsim conform: no selected case applies to vsn {}",
                vsn_number(vsn)
            );
        }
        runs.push(VsnRun { vsn, results });
    }
    let report = Report {
        url: args.url.clone(),
        runs,
    };
    print!("{}", render_table(&report));
    write(args.json.as_deref(), &render_json(&report))?;
    write(args.junit.as_deref(), &render_junit(&report))?;
    write(args.html.as_deref(), &render_html(&report))?;
    Ok(if report.failed() {
        ExitCode::from(EXIT_FAIL)
    } else {
        ExitCode::SUCCESS
    })
}

fn write(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
