//! What a case saw on the wire, raw ([`Transcript`]) and normalized ([`NormTranscript`]).
//!
//! Normalizing makes two runs of the same behaviour compare equal:
//! - JSON text frames are parsed with their key order kept: Phoenix's order (V1 `event,
//!   payload, ref, topic`; metas `phx_ref` first) is part of what a case checks;
//! - `phx_ref` and `phx_ref_prev` values, random per run, become `<ref1>`, `<ref2>`, … in order
//!   of first appearance; the same ref gets the same placeholder everywhere in the case, so a
//!   `phx_ref_prev` that names the wrong meta still shows;
//! - order of appearance is the transcript's canonical order: exchanges in order, within one
//!   the case's connections in order of first use, within a connection the frames as received.
//!   Arrival order between connections never enters it;
//! - binary frames are decoded to their header fields and payload bytes;
//! - a close frame's reason is kept for the reader but never compared (Phoenix sends none).

use crate::cases::CaseScript;

use crate::script::{Action, Observed};
use phxsim_wire::{Frame, Message, Payload, binary};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// Everything one exchange produced, per connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeTranscript {
    /// The recorded step.
    pub step: String,
    /// What the client did.
    pub action: Action,
    /// Observations per connection, connections in the case's order, only those that saw
    /// something.
    pub observed: Vec<(String, Vec<Observed>)>,
    /// The runner stopped waiting for this exchange's frames at its deadline.
    pub timed_out: bool,
}

/// A whole case, raw.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Transcript {
    /// The exchanges in order.
    pub exchanges: Vec<ExchangeTranscript>,
}

impl Transcript {
    /// What the recording says the case must produce.
    pub fn expected(script: &CaseScript) -> Transcript {
        let exchanges = script
            .exchanges
            .iter()
            .map(|ex| {
                let mut per: BTreeMap<usize, (String, Vec<Observed>)> = BTreeMap::new();
                for (conn, obs) in &ex.expect {
                    let idx = conn_index(&script.conns, conn);
                    per.entry(idx)
                        .or_insert_with(|| (conn.clone(), Vec::new()))
                        .1
                        .push(obs.clone());
                }
                ExchangeTranscript {
                    step: ex.step.clone(),
                    action: ex.action.clone(),
                    observed: per.into_values().collect(),
                    timed_out: false,
                }
            })
            .collect();
        Transcript { exchanges }
    }
}

/// A connection's position in the case's order (unknown names sort last, by name).
pub fn conn_index(conns: &[String], conn: &str) -> usize {
    conns.iter().position(|c| c == conn).unwrap_or(conns.len())
}

/// One normalized observation.
#[derive(Clone, Debug, PartialEq)]
pub enum NormItem {
    /// A JSON text frame: keys in their order, refs replaced.
    Json(Json),
    /// A text frame that is not JSON, as received.
    Text(String),
    /// A binary frame, decoded and rendered.
    Binary(String),
    /// The upgrade succeeded.
    Accepted,
    /// The upgrade was refused.
    Refused {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
    },
    /// A pong.
    Pong,
    /// A close frame.
    Closed {
        /// Its code.
        code: Option<u16>,
        /// Its reason (shown, never compared).
        reason: String,
    },
    /// The stream ended without a close frame.
    Ended(String),
    /// The connection could not be opened.
    ConnectFailed(String),
    /// A send failed.
    SendFailed(String),
}

impl NormItem {
    /// One line of text.
    pub fn render(&self) -> String {
        match self {
            NormItem::Json(v) => serde_json::to_string(v).unwrap_or_else(|e| format!("<{e}>")),
            NormItem::Text(t) => format!("text {}", quote(t)),
            NormItem::Binary(b) => b.clone(),
            NormItem::Accepted => "upgrade accepted".to_owned(),
            NormItem::Refused { status, body } => format!("HTTP {status} body {}", quote(body)),
            NormItem::Pong => "pong".to_owned(),
            NormItem::Closed { code, reason } => match code {
                Some(code) => format!("close {code} {}", quote(reason)),
                None => "close (no code)".to_owned(),
            },
            NormItem::Ended(d) => format!("connection ended without a close frame ({d})"),
            NormItem::ConnectFailed(d) => format!("connect failed: {d}"),
            NormItem::SendFailed(d) => format!("send failed: {d}"),
        }
    }
}

/// A normalized exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct NormExchange {
    /// The recorded step.
    pub step: String,
    /// Whether the step is prelude.
    pub prelude: bool,
    /// The action's connection.
    pub conn: String,
    /// The action, rendered.
    pub action: String,
    /// Observations per connection.
    pub observed: Vec<(String, Vec<NormItem>)>,
    /// The runner gave up waiting.
    pub timed_out: bool,
}

/// A normalized case transcript.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NormTranscript {
    /// The exchanges.
    pub exchanges: Vec<NormExchange>,
}

impl NormTranscript {
    /// The transcript as text, one line per action or observation, steps as headings:
    /// what the snapshots hold and the reports show.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut last_step: Option<&str> = None;
        for ex in &self.exchanges {
            if last_step != Some(ex.step.as_str()) {
                let tag = if ex.prelude { " (prelude)" } else { "" };
                out.push_str(&format!("## {}{tag}\n", ex.step));
                last_step = Some(&ex.step);
            }
            for line in ex.lines() {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

impl NormExchange {
    /// The exchange's lines: the action, then what each connection saw.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("{} {}", self.conn, self.action)];
        for (conn, items) in &self.observed {
            for item in items {
                out.push(format!("  {conn} <- {}", item.render()));
            }
        }
        if self.timed_out {
            out.push("  (timed out waiting for the rest; the case stopped here)".to_owned());
        }
        out
    }
}

/// Gives each distinct ref a placeholder in order of first appearance (shared by everything
/// normalized with one namer).
#[derive(Default, Clone, Debug)]
pub struct RefNamer {
    names: BTreeMap<String, String>,
}

impl RefNamer {
    fn name(&mut self, value: &str) -> String {
        let next = self.names.len() + 1;
        self.names
            .entry(value.to_owned())
            .or_insert_with(|| format!("<ref{next}>"))
            .clone()
    }
}

/// Keys whose string values are random per run.
const RANDOM_KEYS: [&str; 2] = ["phx_ref", "phx_ref_prev"];

/// Normalizes a transcript (see the module doc). `prelude_len` marks the first exchanges as
/// prelude.
pub fn normalize(t: &Transcript, prelude_len: usize) -> NormTranscript {
    let mut namer = RefNamer::default();
    let exchanges = t
        .exchanges
        .iter()
        .enumerate()
        .map(|(i, ex)| NormExchange {
            step: ex.step.clone(),
            prelude: i < prelude_len,
            conn: ex.action.conn().to_owned(),
            action: render_action(&ex.action),
            observed: ex
                .observed
                .iter()
                .map(|(conn, items)| {
                    let items = items.iter().map(|o| norm_item(o, &mut namer)).collect();
                    (conn.clone(), items)
                })
                .collect(),
            timed_out: ex.timed_out,
        })
        .collect();
    NormTranscript { exchanges }
}

/// One observation normalized with `namer` (refs named in the order the namer meets them).
pub fn norm_item(obs: &Observed, namer: &mut RefNamer) -> NormItem {
    match obs {
        Observed::Accepted => NormItem::Accepted,
        Observed::Refused { status, body } => NormItem::Refused {
            status: *status,
            body: body.clone(),
        },
        Observed::Frame(Frame::Text(text)) => match serde_json::from_str::<Json>(text) {
            Ok(v) => NormItem::Json(canonical(&v, namer)),
            Err(_) => NormItem::Text(text.clone()),
        },
        Observed::Frame(Frame::Binary(bytes)) => {
            NormItem::Binary(render_binary(bytes, binary::decode_from_server(bytes)))
        }
        Observed::Pong => NormItem::Pong,
        Observed::Closed { code, reason } => NormItem::Closed {
            code: *code,
            reason: reason.clone(),
        },
        Observed::Ended { detail } => NormItem::Ended(detail.clone()),
        Observed::ConnectFailed { detail } => NormItem::ConnectFailed(detail.clone()),
        Observed::SendFailed { detail } => NormItem::SendFailed(detail.clone()),
    }
}

/// Replaces random refs, depth first in document order; keys keep their order.
fn canonical(v: &Json, namer: &mut RefNamer) -> Json {
    match v {
        Json::Object(map) => {
            let mut out = Map::new();
            for (k, value) in map {
                let value = match value {
                    Json::String(s) if RANDOM_KEYS.contains(&k.as_str()) => {
                        Json::String(namer.name(s))
                    }
                    other => canonical(other, namer),
                };
                out.insert(k.clone(), value);
            }
            Json::Object(out)
        }
        Json::Array(items) => Json::Array(items.iter().map(|i| canonical(i, namer)).collect()),
        other => other.clone(),
    }
}

/// Normalizes one JSON text frame on its own (refs numbered from 1): for tests and tools.
pub fn normalize_frame(text: &str) -> Option<Json> {
    let v: Json = serde_json::from_str(text).ok()?;
    Some(canonical(&v, &mut RefNamer::default()))
}

fn render_action(action: &Action) -> String {
    match action {
        Action::Connect {
            query, short: true, ..
        } => format!("connect (short idle timeout) ?{query}"),
        Action::Connect { query, .. } => format!("connect ?{query}"),
        Action::Pause { ms, .. } => format!("stays quiet for {ms} ms"),
        Action::Send { frame, .. } => match frame {
            Frame::Text(t) => format!("-> {t}"),
            Frame::Binary(b) => format!("-> {}", render_binary(b, binary::decode_from_client(b))),
        },
        Action::Ping { .. } => "ping (WebSocket control frame)".to_owned(),
        Action::Close { code, .. } => format!("close {code}"),
        Action::Abort { .. } => "drops TCP (no close frame)".to_owned(),
        Action::Idle { .. } => "stays idle until the server closes it".to_owned(),
    }
}

fn render_binary(bytes: &[u8], decoded: Result<Message, phxsim_wire::DecodeError>) -> String {
    let Ok(msg) = decoded else {
        return format!(
            "binary 0x{} (not a valid frame)",
            data_encoding::HEXLOWER.encode(bytes)
        );
    };
    let kind = bytes.first().copied().unwrap_or(u8::MAX);
    let opt = |s: &Option<String>| s.as_deref().map_or("null".to_owned(), quote);
    match &msg.payload {
        Payload::BinaryReply { status, response } => format!(
            "binary reply join_ref={} ref={} topic={} status={} payload=0x{}",
            opt(&msg.join_ref),
            opt(&msg.ref_),
            quote(&msg.topic),
            quote(status),
            data_encoding::HEXLOWER.encode(response)
        ),
        Payload::Binary(payload) => {
            let name = match kind {
                binary::KIND_PUSH => "push",
                binary::KIND_BROADCAST => "broadcast",
                _ => "frame",
            };
            format!(
                "binary {name} join_ref={} ref={} topic={} event={} payload=0x{}",
                opt(&msg.join_ref),
                opt(&msg.ref_),
                quote(&msg.topic),
                quote(&msg.event),
                data_encoding::HEXLOWER.encode(payload)
            )
        }
        Payload::Json(_) => format!("binary 0x{}", data_encoding::HEXLOWER.encode(bytes)),
    }
}

/// A string as a JSON string literal (escapes control characters, quotes).
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}
