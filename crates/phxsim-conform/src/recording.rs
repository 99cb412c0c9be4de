//! The recordings of a real Phoenix 1.7.21 server (`data/phoenix-1.7.21-frames-v1.jsonl` and
//! `-v2.jsonl`, copied into the crate), parsed into steps.
//!
//! One JSON object per line: `seq`, `t_ms`, `conn`, `dir` (`send`, `recv` or `event`), and
//! `data` (a text frame) or `data_hex` (a binary one). `event` lines with `"event":"step"` name
//! what the recording script did next; the other events say what happened to a connection
//! (`connected`, `connect_rejected`, `client_tcp_abort`, `client_close`, `closed`,
//! `ws_pong_received`, `done`).
//!
//! The recordings are compiled in ([`reference`](fn@reference)), so `phxsim conform` carries its expectations
//! with it; [`Recording::parse`] reads any other recording of the same format.

use phxsim_wire::{Frame, Serializer};
use serde_json::Value as Json;

/// The Phoenix version the built-in recordings come from.
pub const PHOENIX_VERSION: &str = "1.7.21";

/// The V1 recording, compiled in from `data/` (a copy of the recorded Phoenix 1.7.21 session).
pub const REFERENCE_V1: &str = include_str!("../data/phoenix-1.7.21-frames-v1.jsonl");
/// The V2 recording.
pub const REFERENCE_V2: &str = include_str!("../data/phoenix-1.7.21-frames-v2.jsonl");

/// Where the built-in recordings come from, for reports and error messages.
pub fn reference_source(vsn: Serializer) -> &'static str {
    match vsn {
        Serializer::V1 => "crates/phxsim-conform/data/phoenix-1.7.21-frames-v1.jsonl",
        Serializer::V2 => "crates/phxsim-conform/data/phoenix-1.7.21-frames-v2.jsonl",
    }
}

/// The recordings of the authored cases ([`crate::authored`]), made by the recorder against
/// the real Phoenix 1.7.21 server.
pub const CASES_V1: &str = include_str!("../data/phoenix-1.7.21-cases-v1.jsonl");
/// The V2 recording of the authored cases.
pub const CASES_V2: &str = include_str!("../data/phoenix-1.7.21-cases-v2.jsonl");

/// Where the authored cases' recordings come from.
pub fn cases_source(vsn: Serializer) -> &'static str {
    match vsn {
        Serializer::V1 => "crates/phxsim-conform/data/phoenix-1.7.21-cases-v1.jsonl",
        Serializer::V2 => "crates/phxsim-conform/data/phoenix-1.7.21-cases-v2.jsonl",
    }
}

/// The built-in recording of the authored cases for `vsn`.
pub fn authored_recording(vsn: Serializer) -> Result<Recording, RecordingError> {
    let text = match vsn {
        Serializer::V1 => CASES_V1,
        Serializer::V2 => CASES_V2,
    };
    Recording::parse(cases_source(vsn), text)
}

/// The built-in recording for `vsn`.
///
/// The text is compiled in and covered by tests, so a parse failure here is a build defect;
/// it is still returned as an error rather than a panic.
pub fn reference(vsn: Serializer) -> Result<Recording, RecordingError> {
    let text = match vsn {
        Serializer::V1 => REFERENCE_V1,
        Serializer::V2 => REFERENCE_V2,
    };
    Recording::parse(reference_source(vsn), text)
}

/// Why a recording could not be read. Every variant names the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    /// The line is not a JSON object.
    #[error("{source_name}:{line}: not a JSON object: {detail}")]
    NotJson {
        /// The recording's name.
        source_name: String,
        /// The line number.
        line: usize,
        /// What the parser said.
        detail: String,
    },
    /// A field the line's kind requires is absent or of the wrong type.
    #[error("{source_name}:{line}: field {field:?} is missing or not a {expected}")]
    Field {
        /// The recording's name.
        source_name: String,
        /// The line number.
        line: usize,
        /// The field.
        field: &'static str,
        /// The JSON type it should have.
        expected: &'static str,
    },
    /// `dir` or `event` has a value this format does not define.
    #[error("{source_name}:{line}: unknown {what} {value:?}")]
    Unknown {
        /// The recording's name.
        source_name: String,
        /// The line number.
        line: usize,
        /// `dir` or `event`.
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// `data_hex` is not an even number of hex digits.
    #[error("{source_name}:{line}: data_hex is not hex")]
    BadHex {
        /// The recording's name.
        source_name: String,
        /// The line number.
        line: usize,
    },
    /// A frame or connection event appears before the first step marker.
    #[error("{source_name}:{line}: an entry before the first step marker")]
    BeforeFirstStep {
        /// The recording's name.
        source_name: String,
        /// The line number.
        line: usize,
    },
    /// The `connected` lines do not say which serializer the recording used.
    #[error("{source_name}: no connected line with vsn=1.0.0 or vsn=2.0.0")]
    UnknownVsn {
        /// The recording's name.
        source_name: String,
    },
}

/// What one recorded line says happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryKind {
    /// The client sent this frame.
    Send(Frame),
    /// The client received this frame.
    Recv(Frame),
    /// The WebSocket upgrade succeeded with this query string.
    Connected {
        /// For example `vsn=2.0.0&user_id=alice`.
        query: String,
        /// Whether the connection went to the endpoint with the short idle timeout
        /// (`"endpoint": "short"`; the reference server's `/short`).
        short: bool,
    },
    /// The client stayed quiet on purpose for this long (`"event": "pause"`, `"ms"`).
    Pause {
        /// How long, in ms (under a second, so it is never read as an idle wait).
        ms: u64,
    },
    /// The upgrade was refused with an HTTP status.
    ConnectRejected {
        /// The query string tried.
        query: String,
        /// The HTTP status (Phoenix: 403).
        status: u16,
        /// The response body (Phoenix: empty).
        body: String,
    },
    /// The client dropped its TCP connection without a close frame.
    ClientTcpAbort,
    /// The client started the close handshake with this code.
    ClientClose {
        /// The close code sent.
        code: u16,
    },
    /// The connection is closed; `rcvd_code` is the code in the server's close frame (none
    /// after an abort).
    Closed {
        /// The server's close code.
        rcvd_code: Option<u16>,
        /// The server's close reason.
        rcvd_reason: Option<String>,
    },
    /// The client sent a WebSocket ping control frame and got the pong.
    PongReceived,
}

impl EntryKind {
    /// Whether the recording script caused this (as opposed to observing the server).
    pub fn is_action(&self) -> bool {
        matches!(
            self,
            EntryKind::Send(_)
                | EntryKind::Connected { .. }
                | EntryKind::Pause { .. }
                | EntryKind::ConnectRejected { .. }
                | EntryKind::ClientTcpAbort
                | EntryKind::ClientClose { .. }
                | EntryKind::PongReceived
        )
    }
}

/// One recorded line (step markers and `done` excluded).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The line's `seq`.
    pub seq: u64,
    /// Milliseconds since the recording started.
    pub t_ms: f64,
    /// The connection's name (`A`, `B`, ...).
    pub conn: String,
    /// What happened.
    pub kind: EntryKind,
}

/// What the recording script did between two step markers, and what it saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The step marker's text, e.g. `A join room:lobby with meta`.
    pub title: String,
    /// The entries, in recorded order.
    pub entries: Vec<Entry>,
}

/// A whole recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// Where it came from, for messages.
    pub source: String,
    /// The serializer its connections negotiated.
    pub vsn: Serializer,
    /// Its steps, in order.
    pub steps: Vec<Step>,
}

impl Recording {
    /// Parses a recording. Blank lines are skipped; anything else malformed is an error with
    /// its line number, never a panic.
    ///
    /// A step marker is written before the script sleeps and acts, so a reply to the previous
    /// step can be recorded after the next marker (the V2 recording has the reply to `ping`
    /// after the `error_reply` marker). Entries that arrive after a marker but before the
    /// step's first action therefore belong to the previous step, and are moved there.
    pub fn parse(source: &str, text: &str) -> Result<Recording, RecordingError> {
        let mut steps: Vec<Step> = Vec::new();
        let mut vsn = None;
        for (idx, line) in text.lines().enumerate() {
            let line_no = idx + 1;
            if line.trim().is_empty() {
                continue;
            }
            let ctx = LineCtx {
                source,
                line: line_no,
            };
            let obj: Json = serde_json::from_str(line).map_err(|e| RecordingError::NotJson {
                source_name: source.to_owned(),
                line: line_no,
                detail: e.to_string(),
            })?;
            if !obj.is_object() {
                return Err(RecordingError::NotJson {
                    source_name: source.to_owned(),
                    line: line_no,
                    detail: "a JSON value that is not an object".to_owned(),
                });
            }
            match ctx.parse_line(&obj)? {
                Line::Step(title) => steps.push(Step {
                    title,
                    entries: Vec::new(),
                }),
                Line::Done => {}
                Line::Entry(entry) => {
                    if let EntryKind::Connected { query, .. } = &entry.kind {
                        vsn = vsn.or_else(|| vsn_of_query(query));
                    }
                    let Some(step) = steps.last_mut() else {
                        return Err(RecordingError::BeforeFirstStep {
                            source_name: source.to_owned(),
                            line: line_no,
                        });
                    };
                    step.entries.push(entry);
                }
            }
        }
        reattribute(&mut steps);
        let vsn = vsn.ok_or_else(|| RecordingError::UnknownVsn {
            source_name: source.to_owned(),
        })?;
        Ok(Recording {
            source: source.to_owned(),
            vsn,
            steps,
        })
    }

    /// The step with this exact title.
    pub fn step(&self, title: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.title == title)
    }
}

/// The serializer a connect query asks for, if it names one Phoenix accepts.
fn vsn_of_query(query: &str) -> Option<Serializer> {
    query.split('&').find_map(|kv| match kv.split_once('=') {
        Some(("vsn", "1.0.0")) => Some(Serializer::V1),
        Some(("vsn", "2.0.0")) => Some(Serializer::V2),
        _ => None,
    })
}

/// Moves entries recorded after a step marker but before that step's first action to the
/// previous step (see [`Recording::parse`]).
fn reattribute(steps: &mut [Step]) {
    for i in 1..steps.len() {
        let lead = steps[i]
            .entries
            .iter()
            .take_while(|e| !e.kind.is_action())
            .count();
        if lead == 0 {
            continue;
        }
        let moved: Vec<Entry> = steps[i].entries.drain(..lead).collect();
        steps[i - 1].entries.extend(moved);
    }
}

enum Line {
    Step(String),
    Done,
    Entry(Entry),
}

struct LineCtx<'a> {
    source: &'a str,
    line: usize,
}

impl LineCtx<'_> {
    fn field_err(&self, field: &'static str, expected: &'static str) -> RecordingError {
        RecordingError::Field {
            source_name: self.source.to_owned(),
            line: self.line,
            field,
            expected,
        }
    }

    fn str<'j>(&self, obj: &'j Json, field: &'static str) -> Result<&'j str, RecordingError> {
        obj.get(field)
            .and_then(Json::as_str)
            .ok_or_else(|| self.field_err(field, "string"))
    }

    fn u16_or_null(&self, obj: &Json, field: &'static str) -> Result<Option<u16>, RecordingError> {
        match obj.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.field_err(field, "16-bit number or null")),
        }
    }

    fn frame(&self, obj: &Json) -> Result<Frame, RecordingError> {
        if let Some(text) = obj.get("data").and_then(Json::as_str) {
            return Ok(Frame::Text(text.to_owned()));
        }
        let hex = obj
            .get("data_hex")
            .and_then(Json::as_str)
            .ok_or_else(|| self.field_err("data", "string (or data_hex)"))?;
        decode_hex(hex)
            .map(Frame::Binary)
            .ok_or_else(|| RecordingError::BadHex {
                source_name: self.source.to_owned(),
                line: self.line,
            })
    }

    fn parse_line(&self, obj: &Json) -> Result<Line, RecordingError> {
        let dir = self.str(obj, "dir")?;
        if dir == "event" && obj.get("event").and_then(Json::as_str) == Some("step") {
            return Ok(Line::Step(self.str(obj, "step")?.to_owned()));
        }
        if dir == "event" && obj.get("event").and_then(Json::as_str) == Some("done") {
            return Ok(Line::Done);
        }
        let seq = obj
            .get("seq")
            .and_then(Json::as_u64)
            .ok_or_else(|| self.field_err("seq", "non-negative integer"))?;
        let t_ms = obj
            .get("t_ms")
            .and_then(Json::as_f64)
            .ok_or_else(|| self.field_err("t_ms", "number"))?;
        let conn = self.str(obj, "conn")?.to_owned();
        let kind = match dir {
            "send" => EntryKind::Send(self.frame(obj)?),
            "recv" => EntryKind::Recv(self.frame(obj)?),
            "event" => self.event(obj)?,
            other => {
                return Err(RecordingError::Unknown {
                    source_name: self.source.to_owned(),
                    line: self.line,
                    what: "dir",
                    value: other.to_owned(),
                });
            }
        };
        Ok(Line::Entry(Entry {
            seq,
            t_ms,
            conn,
            kind,
        }))
    }

    fn event(&self, obj: &Json) -> Result<EntryKind, RecordingError> {
        let event = self.str(obj, "event")?;
        Ok(match event {
            "connected" => EntryKind::Connected {
                query: self.str(obj, "url_query")?.to_owned(),
                short: obj.get("endpoint").and_then(Json::as_str) == Some("short"),
            },
            "pause" => EntryKind::Pause {
                ms: obj
                    .get("ms")
                    .and_then(Json::as_u64)
                    .ok_or_else(|| self.field_err("ms", "whole number"))?,
            },
            "connect_rejected" => EntryKind::ConnectRejected {
                query: self.str(obj, "url_query")?.to_owned(),
                status: self
                    .u16_or_null(obj, "http_status")?
                    .ok_or_else(|| self.field_err("http_status", "16-bit number"))?,
                body: self.str(obj, "body")?.to_owned(),
            },
            "client_tcp_abort" => EntryKind::ClientTcpAbort,
            "client_close" => EntryKind::ClientClose {
                code: self
                    .u16_or_null(obj, "code")?
                    .ok_or_else(|| self.field_err("code", "16-bit number"))?,
            },
            "closed" => EntryKind::Closed {
                rcvd_code: self.u16_or_null(obj, "close_rcvd_code")?,
                rcvd_reason: obj
                    .get("close_rcvd_reason")
                    .and_then(Json::as_str)
                    .map(str::to_owned),
            },
            "ws_pong_received" => EntryKind::PongReceived,
            other => {
                return Err(RecordingError::Unknown {
                    source_name: self.source.to_owned(),
                    line: self.line,
                    what: "event",
                    value: other.to_owned(),
                });
            }
        })
    }
}

/// Lower- or upper-case hex to bytes; `None` for an odd length or a non-hex digit.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_reference_recordings_parse() {
        let v1 = reference(Serializer::V1).unwrap();
        let v2 = reference(Serializer::V2).unwrap();
        assert_eq!(v1.vsn, Serializer::V1);
        assert_eq!(v2.vsn, Serializer::V2);
        // V1 has no binary frames, so one step fewer.
        assert_eq!(v2.steps.len(), v1.steps.len() + 1);
        assert!(
            v2.step("A binary push (v2 binary frame) event ping")
                .is_some()
        );
        assert!(
            v1.step("A binary push (v2 binary frame) event ping")
                .is_none()
        );
    }

    #[test]
    fn a_reply_recorded_after_the_next_marker_stays_with_its_step() {
        let v2 = reference(Serializer::V2).unwrap();
        let ping = v2.step("A ping (reply ok with payload)").unwrap();
        let seqs: Vec<u64> = ping.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [24, 26]);
        let error = v2.step("A error_reply").unwrap();
        assert_eq!(error.entries.first().map(|e| e.seq), Some(27));
        // Every step now starts with an action.
        for step in &v2.steps {
            if let Some(first) = step.entries.first() {
                assert!(first.kind.is_action(), "{}: {:?}", step.title, first);
            }
        }
    }

    #[test]
    fn malformed_lines_are_typed_errors_with_line_numbers() {
        let step = r#"{"seq":1,"t_ms":0,"conn":"-","dir":"event","event":"step","step":"s"}"#;
        let cases = [
            ("not json", "1: not a JSON object"),
            ("[1]", "1: not a JSON object"),
            (
                r#"{"seq":1,"t_ms":0,"conn":"A","dir":"send","data":"x"}"#,
                "1: an entry before the first step marker",
            ),
        ];
        for (text, want) in cases {
            let err = Recording::parse("r", text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let more = [
            (
                r#"{"seq":2,"t_ms":0,"conn":"A","dir":"sideways"}"#,
                "unknown dir",
            ),
            (
                r#"{"seq":2,"t_ms":0,"conn":"A","dir":"event","event":"teleport"}"#,
                "unknown event",
            ),
            (
                r#"{"seq":2,"t_ms":0,"conn":"A","dir":"recv","data_hex":"0g"}"#,
                "not hex",
            ),
            (
                r#"{"seq":2,"t_ms":0,"conn":"A","dir":"recv"}"#,
                "field \"data\"",
            ),
            (
                r#"{"t_ms":0,"conn":"A","dir":"recv","data":""}"#,
                "field \"seq\"",
            ),
            (
                r#"{"seq":2,"t_ms":0,"conn":"A","dir":"event","event":"closed","close_rcvd_code":70000}"#,
                "close_rcvd_code",
            ),
        ];
        for (line, want) in more {
            let text = format!("{step}\n{line}");
            let err = Recording::parse("r", &text).unwrap_err().to_string();
            assert!(err.starts_with("r:2: "), "{err}");
            assert!(err.contains(want), "{line}: {err}");
        }
        let no_vsn = format!("{step}\n");
        assert!(matches!(
            Recording::parse("r", &no_vsn),
            Err(RecordingError::UnknownVsn { .. })
        ));
    }

    #[test]
    fn hex_decodes_either_case_and_rejects_garbage() {
        assert_eq!(decode_hex("00ff1A"), Some(vec![0, 255, 26]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex(""), Some(vec![]));
    }
}
