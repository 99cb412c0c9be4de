//! Human logs: the runtime and the simulator log closes, errors and drops through `tracing`;
//! this installs the one subscriber, writing to stderr so that stdout (reports, JSON, op
//! streams) stays a contract. `RUST_LOG` chooses the filter when set; otherwise `-v` raises
//! the level from warnings only (the default, quiet) to info, debug and trace. A simulated
//! run's transcript never sees a log line, so logs cannot change a seed's output.

use tracing_subscriber::EnvFilter;

/// The filter `-v` repeated `verbose` times stands for.
fn level(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Installs the stderr subscriber. A `RUST_LOG` that does not parse is said once, and the
/// `-v` level used instead.
pub fn install(verbose: u8) {
    let fallback = level(verbose);
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("phxsim: RUST_LOG={spec:?} is not a log filter ({e}); using {fallback}");
            EnvFilter::new(fallback)
        }),
        _ => EnvFilter::new(fallback),
    };
    // a second install (never in the CLI) keeps the first subscriber
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_v_raises_the_level_and_every_level_parses() {
        let levels: Vec<&str> = (0..5).map(level).collect();
        assert_eq!(levels, ["warn", "info", "debug", "trace", "trace"]);
        for l in levels {
            assert!(EnvFilter::try_new(l).is_ok());
        }
    }
}
