//! `phxsim`: the command-line face of the suite. Each subcommand lives in `cmd/` and is a thin
//! adapter from stdin/stdout/files to the pure crates; the formats are contracts
//! (`crates/phxsim/docs/tracker-ops.md`, `crates/phxsim/docs/presence-sync.md`), so change them only compatibly.

mod alloc_counter;
mod cmd;
mod logging;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The simulator allocates and frees small maps and strings at a high rate (every frame,
/// diff and sample); mimalloc's thread-local free lists cut that cost well below glibc's
/// (see BENCHMARKS.md, simulator speed). Nothing reads addresses, so output is unchanged.
/// The wrapper counts live bytes only while `bench-tracker` measures memory; otherwise it
/// adds one relaxed load of a flag per allocation.
#[global_allocator]
static GLOBAL: alloc_counter::CountingAlloc = alloc_counter::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "phxsim",
    version,
    about = "Simulation and conformance test suite for Phoenix Presence"
)]
struct Cli {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (`RUST_LOG`, when set, is
    /// the filter instead). With `run`, -v also prints every scenario's settings first.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive tracker CRDT replicas from a JSON-lines op stream on stdin (format: crates/phxsim/docs/tracker-ops.md).
    TrackerOps,
    /// Apply presence_state / presence_diff messages like phoenix.js (format: crates/phxsim/docs/presence-sync.md).
    PresenceSync(cmd::presence_sync::Args),
    /// Run scenario files (default: the whole `scenarios/` catalogue).
    Run(cmd::run::Args),
    /// Run a real local cluster of Channels servers for real clients (phoenix.js, browsers).
    Serve(cmd::serve::Args),
    /// WebSocket fan-out benchmark: one node, N clients on one topic, diff latency and memory.
    BenchWs(cmd::bench_ws::Args),
    /// Load generator for any Phoenix-protocol server: N sockets on one topic, churn, diff
    /// latency, server memory per socket, and a check that no ghost presence is left.
    BenchLoad(cmd::bench_load::Args),
    /// Replay one scenario with one seed, printing every finding.
    Replay(cmd::replay::Args),
    /// Swarm testing over random seeds; failures are shrunk and written as scenarios.
    Explore(cmd::explore::Args),
    /// Cross-node diff latency on the simulator, over a grid of settings and profiles.
    BenchLatency(cmd::bench_latency::Args),
    /// Wire conformance: the recorded Phoenix 1.7.21 behaviour against any server's URL.
    Conform(cmd::conform::Args),
    /// A scenario on a real Phoenix.Tracker cluster (Elixir) and on N simulator seeds, compared.
    Crosscheck(cmd::crosscheck::Args),
    /// List every planted bug (`--mutate NAME`), its layer and what catches it.
    Mutations(cmd::mutations::Args),
    /// The tracker workload of perf-workload.md, for side-by-side runs with Phoenix.Tracker.State.
    BenchTracker(cmd::bench_tracker::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        alloc_counter::keep_freed_memory();
    }
    // the simulator's commands (serve and bench-load turn them off themselves)
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Replay(_)
            | Command::Explore(_)
            | Command::Crosscheck(_)
            | Command::BenchLatency(_)
            | Command::BenchWs(_)
    ) {
        alloc_counter::no_huge_pages();
    }
    logging::install(cli.verbose);
    let result = match cli.command {
        Command::TrackerOps => cmd::tracker_ops::run(),
        Command::PresenceSync(args) => cmd::presence_sync::run(args),
        Command::Run(mut args) => {
            args.verbose = cli.verbose > 0;
            cmd::run::run(args)
        }
        Command::Serve(args) => cmd::serve::run(args),
        Command::BenchWs(args) => cmd::bench_ws::run(args),
        Command::BenchLoad(args) => cmd::bench_load::run(args),
        Command::Replay(args) => cmd::replay::run(args),
        Command::Explore(args) => cmd::explore::run(args),
        Command::Conform(args) => cmd::conform::run(args),
        Command::Crosscheck(args) => cmd::crosscheck::run(args),
        Command::BenchLatency(args) => cmd::bench_latency::run(args),
        Command::Mutations(args) => cmd::mutations::run(args),
        Command::BenchTracker(args) => cmd::bench_tracker::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout went away (`phxsim tracker-ops | head`): nobody is left to
        // report to, so the command ends quietly, with success, as `yes | head` looks to a shell.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<cmd::BadInput>() {
            Some(bad) => {
                eprintln!("phxsim: {bad}");
                ExitCode::from(cmd::EXIT_BAD_INPUT)
            }
            None => {
                eprintln!("phxsim: error: {err:#}");
                ExitCode::from(cmd::EXIT_INTERNAL)
            }
        },
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
