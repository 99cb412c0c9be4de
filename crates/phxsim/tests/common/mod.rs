//! Running the built `phxsim` binary as a user would, for the CLI tests: one command, its exit
//! code and its output, never waiting forever.

#![allow(dead_code)]
// each test file uses its own part
// Real processes on the real clock: nothing here runs inside the simulator.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The repository root (where `scenarios/` is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `phxsim ARGS` run from the repository root.
pub fn phxsim(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phxsim"));
    cmd.current_dir(root()).args(args);
    cmd
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Done {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub took: Duration,
}

impl Done {
    /// Asserts the exit code and that stderr holds every one of `parts`.
    pub fn expect(&self, code: i32, parts: &[&str]) {
        assert_eq!(self.code, Some(code), "exit code; {self:#?}");
        for p in parts {
            assert!(self.stderr.contains(p), "stderr lacks {p:?}: {self:#?}");
        }
        assert!(
            !self.stderr.contains("panicked"),
            "a panic is never an answer: {self:#?}"
        );
    }
}

/// Runs `cmd` (stdin closed) to its end, killing it after `limit`: a command that should
/// have stopped at once must not hang the suite.
pub fn run_within(mut cmd: Command, limit: Duration) -> Done {
    let started = std::time::Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn phxsim");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    // drain both pipes while waiting, so a chatty command cannot block on a full pipe
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for phxsim") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "phxsim {:?} still ran after {limit:?}; stderr so far is lost",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Done {
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// Runs `phxsim ARGS` from the repository root within 60 s.
pub fn run(args: &[&str]) -> Done {
    run_within(phxsim(args), Duration::from_secs(60))
}

/// A fresh, empty scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
