//! Cases written as client scripts (`data/cases-1.7.21.txt`), whose expected frames are
//! recorded from the real Phoenix 1.7.21 server by the recorder
//! (`cargo run -p phxsim-conform --example record`), into `data/phoenix-1.7.21-cases-v1.jsonl`
//! and `-v2.jsonl`. The script says what the client does; Phoenix says what comes back.
//!
//! The format, one directive per line (`#` starts a comment line):
//!
//! ```text
//! case 26 two-sockets-one-user          number and slug
//! title Two sockets of one user ...     one sentence
//! note ...                              optional, for the reader
//! loose close-code <why>                optional: the close code may differ
//! only v2                               optional: binary frames exist in V2 only
//! phoenix 1.7.21                        optional: the case describes only this version
//! prelude <what>                        a step that builds state (checked, not the point)
//! step <what>                           a step under test
//! connect A user_id=alice               vsn=<the run's> is put first unless given
//! connect A short user_id=alice         to the endpoint with the short idle timeout
//! send A "1" "1" room:lobby phx_join {"meta":{}}
//!                                       join_ref ref topic event payload; refs are JSON
//!                                       literals ("1", 1, null); V1 drops the join_ref
//! raw A <text>                          a text frame sent as is
//! raw1 A <text> / raw2 A <text>         only in the V1 / V2 recording
//! bin A "1" "2" room:lobby ping <text>  a V2 binary push with these payload bytes
//! ping A / close A 1000 / abort A       WebSocket ping, close handshake, TCP drop
//! idle A                                wait until the server closes A for idling
//! pause A 400                           A stays quiet this long (under 1000 ms)
//! fast <action>                         the recorder acts again at once (frames then all
//!                                       belong to the next action: a push still pending)
//! ```
//!
//! Topics starting with `room:lobby` are renamed per case and serializer (see
//! [`crate::script::rewrite_topic`]).

use phxsim_wire::{Frame, Message, Payload, Serializer, binary};

/// The authored cases, compiled in.
pub const CASES_TEXT: &str = include_str!("../data/cases-1.7.21.txt");

/// Which Phoenix versions a case describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    /// 1.7.21 and 1.8 alike.
    All,
    /// Only 1.7.21 (1.8 changed it).
    Only1721,
    /// Only 1.8.
    Only18,
}

impl Versions {
    /// Whether a case for these versions applies to `phoenix` (`1.7.21` or `1.8`).
    pub fn includes(self, phoenix: PhoenixVersion) -> bool {
        matches!(
            (self, phoenix),
            (Versions::All, _)
                | (Versions::Only1721, PhoenixVersion::V1_7_21)
                | (Versions::Only18, PhoenixVersion::V1_8)
        )
    }

    /// For tables.
    pub fn label(self) -> &'static str {
        match self {
            Versions::All => "1.7.21, 1.8",
            Versions::Only1721 => "1.7.21",
            Versions::Only18 => "1.8",
        }
    }
}

/// The Phoenix version a run checks against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PhoenixVersion {
    /// The recorded reference.
    #[default]
    V1_7_21,
    /// The newer rules `phxsim serve --phoenix 1.8` follows.
    V1_8,
}

impl std::str::FromStr for PhoenixVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1.7.21" => Ok(PhoenixVersion::V1_7_21),
            "1.8" => Ok(PhoenixVersion::V1_8),
            other => Err(format!("unknown Phoenix version {other:?} (1.7.21 or 1.8)")),
        }
    }
}

/// One client action of an authored step.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    /// Open a socket.
    Connect {
        /// Connection name.
        conn: String,
        /// The query without vsn (or with an explicit one).
        query: String,
        /// To the short-idle endpoint.
        short: bool,
    },
    /// Send a Channels message built for the connection's serializer.
    Send {
        /// Connection.
        conn: String,
        /// JSON literal.
        join_ref: String,
        /// JSON literal.
        ref_: String,
        /// Topic.
        topic: String,
        /// Event.
        event: String,
        /// Payload JSON text.
        payload: String,
    },
    /// Send a text frame as is, in the recordings of `only` (or both).
    Raw {
        /// Connection.
        conn: String,
        /// The frame.
        text: String,
        /// Only for this serializer.
        only: Option<Serializer>,
    },
    /// A V2 binary push.
    Bin {
        /// Connection.
        conn: String,
        /// The frame's fields; the payload is the text's bytes.
        msg: Message,
    },
    /// WebSocket ping.
    Ping(String),
    /// Close handshake with this code.
    Close(String, u16),
    /// TCP drop.
    Abort(String),
    /// Wait for the idle close.
    Idle(String),
    /// Stay quiet.
    Pause(String, u64),
}

/// One authored step.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthoredStep {
    /// `c26 <what>`: unique in the recording.
    pub title: String,
    /// Prelude or under test.
    pub prelude: bool,
    /// Actions, each with whether the recorder acts again at once (`fast`).
    pub acts: Vec<(Act, bool)>,
}

/// One authored case.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthoredCase {
    /// Number.
    pub id: u8,
    /// Slug.
    pub slug: String,
    /// Title.
    pub title: String,
    /// Note.
    pub note: Option<String>,
    /// Close-code looseness reason.
    pub loose_close: Option<String>,
    /// V2 only.
    pub v2_only: bool,
    /// Versions described.
    pub versions: Versions,
    /// Steps in order.
    pub steps: Vec<AuthoredStep>,
}

/// A line of the case file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cases file line {line}: {detail}")]
pub struct AuthoredError {
    /// 1-based line.
    pub line: usize,
    /// Why.
    pub detail: String,
}

fn word(rest: &str) -> (&str, &str) {
    let rest = rest.trim_start();
    match rest.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim_start()),
        None => (rest, ""),
    }
}

/// Parses the case file.
pub fn parse(text: &str) -> Result<Vec<AuthoredCase>, AuthoredError> {
    let mut cases: Vec<AuthoredCase> = Vec::new();
    for (i, raw_line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |detail: String| AuthoredError {
            line: line_no,
            detail,
        };
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (mut kw, mut rest) = word(line);
        let fast = kw == "fast";
        if fast {
            (kw, rest) = word(rest);
        }
        if kw == "case" {
            let (id, slug) = word(rest);
            let id: u8 = id
                .parse()
                .map_err(|_| err(format!("bad case number {id:?}")))?;
            if slug.is_empty() {
                return Err(err("a case needs a slug".into()));
            }
            cases.push(AuthoredCase {
                id,
                slug: slug.to_owned(),
                title: String::new(),
                note: None,
                loose_close: None,
                v2_only: false,
                versions: Versions::All,
                steps: Vec::new(),
            });
            continue;
        }
        let Some(case) = cases.last_mut() else {
            return Err(err("a directive before the first case".into()));
        };
        let conn_then = |rest: &str| -> Result<(String, String), AuthoredError> {
            let (c, r) = word(rest);
            if c.is_empty() {
                return Err(err("missing connection name".into()));
            }
            Ok((c.to_owned(), r.to_owned()))
        };
        let act = match kw {
            "title" => {
                case.title = rest.to_owned();
                continue;
            }
            "note" => {
                case.note = Some(rest.to_owned());
                continue;
            }
            "loose" => {
                let (what, why) = word(rest);
                if what != "close-code" || why.is_empty() {
                    return Err(err("only `loose close-code <why>` is known".into()));
                }
                case.loose_close = Some(why.to_owned());
                continue;
            }
            "only" => {
                if rest != "v2" {
                    return Err(err("only `only v2` is known".into()));
                }
                case.v2_only = true;
                continue;
            }
            "phoenix" => {
                case.versions = match rest {
                    "1.7.21" => Versions::Only1721,
                    "1.8" => Versions::Only18,
                    other => return Err(err(format!("unknown Phoenix version {other:?}"))),
                };
                continue;
            }
            "prelude" | "step" => {
                let title = format!("c{} {rest}", case.id);
                case.steps.push(AuthoredStep {
                    title,
                    prelude: kw == "prelude",
                    acts: Vec::new(),
                });
                continue;
            }
            "connect" => {
                let (conn, r) = conn_then(rest)?;
                let (maybe_short, q) = word(&r);
                let (short, query) = if maybe_short == "short" {
                    (true, q.to_owned())
                } else {
                    (false, r.clone())
                };
                Act::Connect { conn, query, short }
            }
            "send" => {
                let (conn, r) = conn_then(rest)?;
                let (join_ref, r) = word(&r);
                let (ref_, r) = word(r);
                let (topic, r) = word(r);
                let (event, payload) = word(r);
                for lit in [join_ref, ref_] {
                    serde_json::from_str::<serde_json::Value>(lit)
                        .map_err(|e| err(format!("ref {lit:?} is not a JSON literal: {e}")))?;
                }
                if event.is_empty() || payload.is_empty() {
                    return Err(err("send needs join_ref ref topic event payload".into()));
                }
                Act::Send {
                    conn,
                    join_ref: join_ref.to_owned(),
                    ref_: ref_.to_owned(),
                    topic: topic.to_owned(),
                    event: event.to_owned(),
                    payload: payload.to_owned(),
                }
            }
            "raw" | "raw1" | "raw2" => {
                let (conn, text) = conn_then(rest)?;
                let only = match kw {
                    "raw1" => Some(Serializer::V1),
                    "raw2" => Some(Serializer::V2),
                    _ => None,
                };
                Act::Raw { conn, text, only }
            }
            "bin" => {
                let (conn, r) = conn_then(rest)?;
                let (join_ref, r) = word(&r);
                let (ref_, r) = word(r);
                let (topic, r) = word(r);
                let (event, payload) = word(r);
                let s = |lit: &str| -> Result<Option<String>, AuthoredError> {
                    match serde_json::from_str::<serde_json::Value>(lit) {
                        Ok(serde_json::Value::String(s)) => Ok(Some(s)),
                        Ok(serde_json::Value::Null) => Ok(None),
                        _ => Err(err(format!("binary refs are strings or null, not {lit:?}"))),
                    }
                };
                case.v2_only = true;
                Act::Bin {
                    conn,
                    msg: Message::new(
                        s(join_ref)?,
                        s(ref_)?,
                        topic,
                        event,
                        Payload::Binary(payload.as_bytes().to_vec()),
                    ),
                }
            }
            "ping" => Act::Ping(conn_then(rest)?.0),
            "abort" => Act::Abort(conn_then(rest)?.0),
            "idle" => Act::Idle(conn_then(rest)?.0),
            "close" => {
                let (conn, code) = conn_then(rest)?;
                let code = code
                    .parse()
                    .map_err(|_| err(format!("bad close code {code:?}")))?;
                Act::Close(conn, code)
            }
            "pause" => {
                let (conn, ms) = conn_then(rest)?;
                let ms: u64 = ms.parse().map_err(|_| err(format!("bad pause {ms:?}")))?;
                if ms >= 1000 {
                    return Err(err("a pause must stay under 1000 ms".into()));
                }
                Act::Pause(conn, ms)
            }
            other => return Err(err(format!("unknown directive {other:?}"))),
        };
        let Some(step) = case.steps.last_mut() else {
            return Err(err("an action before the case's first step".into()));
        };
        step.acts.push((act, fast));
    }
    for c in &cases {
        if c.title.is_empty() || !c.steps.iter().any(|s| !s.prelude) {
            return Err(AuthoredError {
                line: 0,
                detail: format!("case {} needs a title and a step under test", c.id),
            });
        }
    }
    Ok(cases)
}

/// The query a connect sends on `vsn`: `vsn=` first unless the script gives one.
pub fn connect_query(query: &str, vsn: Serializer) -> String {
    if query.split('&').any(|kv| kv.starts_with("vsn=")) {
        return query.to_owned();
    }
    let v = match vsn {
        Serializer::V1 => "1.0.0",
        Serializer::V2 => "2.0.0",
    };
    if query.is_empty() {
        format!("vsn={v}")
    } else {
        format!("vsn={v}&{query}")
    }
}

/// The frame `send` puts on the wire for a connection using `vsn`: V2 an array, V1 an object
/// in phoenix.js's key order (topic, event, payload, ref) without the join_ref.
pub fn send_frame(
    vsn: Serializer,
    join_ref: &str,
    ref_: &str,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    let t = serde_json::Value::String(topic.to_owned()).to_string();
    let e = serde_json::Value::String(event.to_owned()).to_string();
    match vsn {
        Serializer::V2 => format!("[{join_ref},{ref_},{t},{e},{payload}]"),
        Serializer::V1 => {
            format!(r#"{{"topic":{t},"event":{e},"payload":{payload},"ref":{ref_}}}"#)
        }
    }
}

/// The binary frame of a `bin` action.
pub fn bin_frame(msg: &Message) -> Result<Frame, String> {
    binary::encode_client(msg)
        .map(Frame::Binary)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_cases_parse() {
        let cases = parse(CASES_TEXT).unwrap();
        assert!(!cases.is_empty());
        let mut ids: Vec<u8> = cases.iter().map(|c| c.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), cases.len());
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = parse("case 30 x\ntitle t\nstep s\nfrobnicate A\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(parse("send A 1 1 t e {}\n").is_err());
        assert!(parse("case 30 x\ntitle t\nstep s\nsend A '1' 1 t e {}\n").is_err());
        assert!(parse("case 30 x\ntitle t\nstep s\npause A 1500\n").is_err());
        assert!(parse("case 30 x\ntitle t\nprelude p\nconnect A user_id=a\n").is_err());
    }

    #[test]
    fn frames_follow_the_serializer() {
        let v2 = send_frame(Serializer::V2, "\"1\"", "2", "room:x", "ping", r#"{"a":1}"#);
        assert_eq!(v2, r#"["1",2,"room:x","ping",{"a":1}]"#);
        let v1 = send_frame(Serializer::V1, "\"1\"", "2", "room:x", "ping", r#"{"a":1}"#);
        assert_eq!(
            v1,
            r#"{"topic":"room:x","event":"ping","payload":{"a":1},"ref":2}"#
        );
        assert_eq!(
            connect_query("user_id=a", Serializer::V1),
            "vsn=1.0.0&user_id=a"
        );
        assert_eq!(
            connect_query("vsn=3.0.0&user_id=a", Serializer::V1),
            "vsn=3.0.0&user_id=a"
        );
    }
}
