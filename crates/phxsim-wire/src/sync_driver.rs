//! The JSON-lines presence-sync driver of `phxsim presence-sync` (presence-sync.md), kept here
//! rather than in the CLI so tests and other tools can run it without a process.
//!
//! Input lines are `{"op":"state"|"diff"|"join_ref"|"reset", "payload":...}`; every line that
//! is not blank or a comment yields one output line. The same format is spoken by
//! `ci/js/presence-adapter.mjs` around the real phoenix.js, which is what makes the two
//! comparable line by line.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::json_kind;
use crate::presence::{Presence, PresenceDiff, PresenceState};
use crate::sync::{Event, PresenceInstance, SyncState, list, sync_diff, sync_state};

/// The channel join_ref an instance-mode stream starts with.
pub const INITIAL_JOIN_REF: &str = "1";

/// Which phoenix.js API the driver exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// `Presence.syncState` / `Presence.syncDiff` on one state.
    Static,
    /// `new Presence(channel)` with a fake channel whose join_ref the stream sets.
    Instance,
}

/// Applies one input line at a time and renders the output line.
#[derive(Debug)]
pub struct SyncDriver {
    mode: SyncMode,
    step: u64,
    state: SyncState,
    instance: PresenceInstance,
    channel_join_ref: String,
}

#[derive(Serialize)]
struct Output<'a> {
    step: u64,
    op: &'a str,
    events: &'a [Event],
    keys: Vec<&'a str>,
    state: &'a SyncState,
    list: Vec<&'a Presence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<usize>,
}

#[derive(Serialize)]
struct ErrorOutput<'a> {
    step: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<&'a str>,
    error: String,
}

impl SyncDriver {
    /// A driver with an empty state (and, in instance mode, channel join_ref `"1"`).
    pub fn new(mode: SyncMode) -> Self {
        SyncDriver {
            mode,
            step: 0,
            state: SyncState::new(),
            instance: PresenceInstance::new(),
            channel_join_ref: INITIAL_JOIN_REF.to_owned(),
        }
    }

    /// Whether a line is skipped: blank, or a `#` / `//` comment.
    pub fn is_skipped(line: &str) -> bool {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line.starts_with("//")
    }

    /// Processes one input line; `None` for a skipped line, else the output line (no newline).
    pub fn process_line(&mut self, line: &str) -> Option<String> {
        if Self::is_skipped(line) {
            return None;
        }
        self.step += 1;
        let step = self.step;
        let rendered = match serde_json::from_str::<Value>(line) {
            Err(err) => error_line(step, None, format!("line is not JSON: {err}")),
            Ok(Value::Object(map)) => self.process_message(step, map),
            Ok(other) => error_line(
                step,
                None,
                format!("line must be a JSON object, found {}", json_kind(&other)),
            ),
        };
        Some(rendered)
    }

    fn process_message(&mut self, step: u64, mut map: Map<String, Value>) -> String {
        let op = match map.remove("op") {
            Some(Value::String(op)) => op,
            Some(other) => {
                return error_line(
                    step,
                    None,
                    format!("\"op\" must be a string, found {}", json_kind(&other)),
                );
            }
            None => return error_line(step, None, "line has no \"op\"".to_owned()),
        };
        let payload = map.remove("payload").unwrap_or(Value::Null);
        let mut events = Vec::new();
        let applied = match op.as_str() {
            "state" => PresenceState::from_payload(payload).map(|new_state| match self.mode {
                SyncMode::Static => sync_state(&mut self.state, new_state, &mut events),
                SyncMode::Instance => {
                    self.instance
                        .handle_state(Some(&self.channel_join_ref), new_state, &mut events)
                }
            }),
            "diff" => PresenceDiff::from_payload(payload).map(|diff| match self.mode {
                SyncMode::Static => sync_diff(&mut self.state, diff, &mut events),
                SyncMode::Instance => {
                    self.instance
                        .handle_diff(Some(&self.channel_join_ref), diff, &mut events);
                }
            }),
            "join_ref" => match payload {
                Value::String(join_ref) => {
                    self.channel_join_ref = join_ref;
                    Ok(())
                }
                other => {
                    let message = format!(
                        "join_ref payload must be a string, found {}",
                        json_kind(&other)
                    );
                    return error_line(step, Some(&op), message);
                }
            },
            "reset" => {
                self.state = SyncState::new();
                self.instance = PresenceInstance::new();
                self.channel_join_ref = INITIAL_JOIN_REF.to_owned();
                Ok(())
            }
            _ => return error_line(step, Some(&op), format!("unknown op {op:?}")),
        };
        if let Err(err) = applied {
            return error_line(step, Some(&op), err.to_string());
        }
        let (state, pending) = match self.mode {
            SyncMode::Static => (&self.state, None),
            SyncMode::Instance => {
                // the driver's instance takes its messages with callbacks: its list is always
                // in JavaScript order, never a shared one
                let Some(state) = self.instance.state().ordered() else {
                    return error_line(step, Some(&op), "the list has no JavaScript order".into());
                };
                (state, Some(self.instance.pending_diffs().len()))
            }
        };
        let output = Output {
            step,
            op: &op,
            events: &events,
            keys: state.keys().collect(),
            state,
            list: list(state),
            pending,
        };
        serde_json::to_string(&output)
            .unwrap_or_else(|err| error_line(step, Some(&op), err.to_string()))
    }
}

fn error_line(step: u64, op: Option<&str>, error: String) -> String {
    let output = ErrorOutput { step, op, error };
    // Serializing a struct of a number and strings cannot fail; the fallback keeps this total.
    serde_json::to_string(&output)
        .unwrap_or_else(|_| format!("{{\"step\":{step},\"error\":\"unprintable error\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: SyncMode, input: &str) -> Vec<String> {
        let mut driver = SyncDriver::new(mode);
        input
            .lines()
            .filter_map(|line| driver.process_line(line))
            .collect()
    }

    #[test]
    fn comments_and_blank_lines_take_no_step() {
        let out = run(
            SyncMode::Static,
            "# c\n\n  // c\n{\"op\":\"state\",\"payload\":{}}\n",
        );
        assert_eq!(
            out,
            [r#"{"step":1,"op":"state","events":[],"keys":[],"state":{},"list":[]}"#]
        );
    }

    #[test]
    fn errors_name_the_step_and_op_and_change_nothing() {
        let out = run(
            SyncMode::Instance,
            concat!(
                "{\"op\":\"state\",\"payload\":{\"u\":{\"metas\":[{\"phx_ref\":\"1\"}]}}}\n",
                "not json\n",
                "[1]\n",
                "{\"payload\":{}}\n",
                "{\"op\":\"diff\",\"payload\":{\"joins\":{\"v\":{}},\"leaves\":{}}}\n",
                "{\"op\":\"join_ref\",\"payload\":7}\n",
                "{\"op\":\"bogus\"}\n",
                "{\"op\":\"diff\",\"payload\":{\"joins\":{},\"leaves\":{}}}\n",
            ),
        );
        assert_eq!(out.len(), 8);
        assert!(
            out[1].starts_with(r#"{"step":2,"error":"line is not JSON: "#),
            "{}",
            out[1]
        );
        assert_eq!(
            out[2],
            r#"{"step":3,"error":"line must be a JSON object, found an array"}"#
        );
        assert_eq!(out[3], r#"{"step":4,"error":"line has no \"op\""}"#);
        assert_eq!(
            out[4],
            r#"{"step":5,"op":"diff","error":"presence \"v\" has no \"metas\""}"#
        );
        assert_eq!(
            out[5],
            r#"{"step":6,"op":"join_ref","error":"join_ref payload must be a string, found a number"}"#
        );
        assert_eq!(
            out[6],
            r#"{"step":7,"op":"bogus","error":"unknown op \"bogus\""}"#
        );
        assert_eq!(
            out[7],
            r#"{"step":8,"op":"diff","events":[{"cb":"sync"}],"keys":["u"],"state":{"u":{"metas":[{"phx_ref":"1"}]}},"list":[{"metas":[{"phx_ref":"1"}]}],"pending":0}"#
        );
    }

    #[test]
    fn reset_forgets_state_buffer_and_join_ref() {
        let out = run(
            SyncMode::Instance,
            concat!(
                "{\"op\":\"join_ref\",\"payload\":\"5\"}\n",
                "{\"op\":\"state\",\"payload\":{\"u\":{\"metas\":[]}}}\n",
                "{\"op\":\"reset\"}\n",
                "{\"op\":\"diff\",\"payload\":{\"joins\":{\"w\":{\"metas\":[]}},\"leaves\":{}}}\n",
            ),
        );
        assert_eq!(
            out[2],
            r#"{"step":3,"op":"reset","events":[],"keys":[],"state":{},"list":[],"pending":0}"#
        );
        // After a reset no state has been seen, so the diff is buffered again.
        assert_eq!(
            out[3],
            r#"{"step":4,"op":"diff","events":[],"keys":[],"state":{},"list":[],"pending":1}"#
        );
    }
}
