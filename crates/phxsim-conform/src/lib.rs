//! Wire conformance for Phoenix Channels servers, built from the recorded behaviour of a real
//! Phoenix 1.7.21 server running the reference presence channel (reference-channel.md).
//!
//! - [`recording`]: the recordings (compiled in) parsed into steps.
//! - [`script`]: recorded steps as exchanges a client can replay: one action, then what each
//!   connection must see.
//! - [`cases`]: the numbered catalogue, one case per behaviour, each on its own topic: the
//!   cases of the reference recording, then the [`authored`] ones (client scripts whose
//!   expected frames the [`recorder`] took from the real Phoenix 1.7.21 server).
//! - [`runner`]: a raw-frame WebSocket client that runs cases against any server URL.
//! - [`transcript`]: raw and normalized transcripts (refs as `<ref1>`, keys sorted).
//! - [`races`]: the orderings Phoenix allows for a case (races U, D, L and the join order of
//!   `phoenix-races.md`), each looseness citing its race.
//! - [`compare`](mod@compare): verdicts (pass, non-strict with a reason, fail with the first differing
//!   frame and what was allowed there), exact about contents and key order.
//! - [`report`]: text table, JSON, JUnit XML and an Autobahn-style HTML page.
//! - [`junit`]: the JUnit XML writer every phxsim report uses (conform, run, explore).
//!
//! Running it:
//!
//! ```text
//! phxsim serve --nodes 1 --port 4000 --idle-timeout 1500 &
//! phxsim conform --url ws://127.0.0.1:4000/socket/websocket --idle-timeout-ms 1500 \
//!     [--vsn 1.0.0|2.0.0] [--phoenix 1.7.21|1.8] [--case N]... [--json F] [--junit F] [--html F]
//! # the real Phoenix reference server: its /short socket idles out after 1.5 s
//! phxsim conform --url ws://127.0.0.1:4310/socket/websocket \
//!     --idle-url ws://127.0.0.1:4310/short/websocket --idle-timeout-ms 1500
//! ```
//!
//! A Phoenix app qualifies if it routes `room:*` to the reference channel and mounts its socket
//! at `/socket`; pass its idle timeout (`--idle-timeout-ms`, default 60 000) or an endpoint with
//! a short one (`--idle-url`). Tests: `cargo test -p phxsim-conform` (snapshots in
//! `snapshots/conform/`: `recorded/` from the recordings, `phxsim/` from phxsim's server,
//! `reports/` golden reports; review changes with `cargo insta review`).
//!
//! Architecture invariant: only [`runner`] and [`recorder`] do I/O; everything else is a pure function of the
//! recordings and a transcript, so verdicts and reports are tested without a server.

pub mod authored;
pub mod cases;
pub mod compare;
pub mod junit;
pub mod races;
pub mod recorder;
pub mod recording;
pub mod report;
pub mod runner;
pub mod script;
pub mod transcript;

pub use cases::{CASES, Case, CaseScript, Looseness, catalogue};
pub use compare::{Comparison, Difference, Verdict, compare};
pub use report::{Report, VsnRun};
pub use runner::{CaseResult, RunConfig, RunError, run_all, run_case};
pub use transcript::{NormTranscript, Transcript, normalize};
