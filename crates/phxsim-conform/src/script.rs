//! Recorded steps turned into what a runner can replay: exchanges of one client action and the
//! frames every connection must see before the next action.
//!
//! Rules for reading a step (each checked by tests against both recordings):
//! - `send`, `connected`, `connect_rejected`, `client_tcp_abort`, `client_close` and
//!   `ws_pong_received` are client actions; each starts an exchange. A pong stands for "the
//!   client sent a WebSocket ping and got the pong".
//! - `recv` lines belong to the exchange they follow, whichever connection received them.
//! - `closed` is an expectation only when the server decided it: after the client's own close
//!   (the close handshake's answer), or on a connection that sent a frame or connected in the
//!   same step (a malformed frame, or a connect or join followed by silence). After `client_tcp_abort` there is nothing
//!   to observe, and the closes at the very end are the recording script tearing down.
//! - A pause of more than [`IDLE_GAP_MS`] inside an exchange is the recording script staying
//!   idle: what follows is an [`Action::Idle`] exchange that waits for the server to close the
//!   idle connection (the recording used an endpoint with a 1500 ms timeout).

use crate::recording::{Entry, EntryKind, Recording, Step};
use phxsim_wire::{Frame, Message, binary};

/// A pause in a recording longer than this (ms) means the script was idling on purpose; the
/// script otherwise acts every 200–400 ms and replies arrive within ~30 ms.
pub const IDLE_GAP_MS: f64 = 1000.0;

/// The topic every recorded step used; cases rewrite it so that they do not share presences.
pub const RECORDED_TOPIC: &str = "room:lobby";

/// What the client does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open a WebSocket with this query string.
    Connect {
        /// The connection.
        conn: String,
        /// For example `vsn=2.0.0&user_id=alice`.
        query: String,
        /// Connect to the endpoint with the short idle timeout (the runner's idle URL).
        short: bool,
    },
    /// Send nothing for this long (no keepalives either), then go on.
    Pause {
        /// The connection that stays quiet.
        conn: String,
        /// How long, in ms.
        ms: u64,
    },
    /// Send one data frame, exactly as given (it may be deliberately malformed).
    Send {
        /// The connection.
        conn: String,
        /// The frame.
        frame: Frame,
    },
    /// Send a WebSocket ping control frame.
    Ping {
        /// The connection.
        conn: String,
    },
    /// Start the close handshake with this code.
    Close {
        /// The connection.
        conn: String,
        /// The close code.
        code: u16,
    },
    /// Drop the TCP connection without a close frame.
    Abort {
        /// The connection.
        conn: String,
    },
    /// Send nothing on this connection until the server closes it for idling; the runner keeps
    /// the case's other connections alive meanwhile.
    Idle {
        /// The connection.
        conn: String,
    },
}

impl Action {
    /// The connection the action is on.
    pub fn conn(&self) -> &str {
        match self {
            Action::Connect { conn, .. }
            | Action::Send { conn, .. }
            | Action::Ping { conn }
            | Action::Close { conn, .. }
            | Action::Abort { conn }
            | Action::Idle { conn }
            | Action::Pause { conn, .. } => conn,
        }
    }
}

/// One thing a connection observed.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// The WebSocket upgrade succeeded.
    Accepted,
    /// The upgrade was refused with an HTTP response.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The body, lossily decoded.
        body: String,
    },
    /// The server sent a data frame.
    Frame(Frame),
    /// The server answered a ping.
    Pong,
    /// The server's close frame (code and reason), or a close frame without a code.
    Closed {
        /// The close code, if the frame had one.
        code: Option<u16>,
        /// The reason text.
        reason: String,
    },
    /// The stream ended without a close frame.
    Ended {
        /// What the client library said.
        detail: String,
    },
    /// The connection could not be opened at all (no HTTP response).
    ConnectFailed {
        /// Why.
        detail: String,
    },
    /// The client could not send (the connection was gone).
    SendFailed {
        /// Why.
        detail: String,
    },
}

/// One action and what each connection must see before the next one.
#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    /// The recorded step this exchange comes from.
    pub step: String,
    /// What the client does.
    pub action: Action,
    /// What the connections see, in the order each connection sees it. Order *between*
    /// connections is not meaningful.
    pub expect: Vec<(String, Observed)>,
}

/// Why a recorded step cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// A frame or close was recorded before any action of its step.
    #[error("step {step:?}: seq {seq} is observed before any client action")]
    ObservedBeforeAction {
        /// The step.
        step: String,
        /// The entry's seq.
        seq: u64,
    },
    /// A pause in the recording with no server close after it: nothing tells the runner what
    /// to wait for.
    #[error("step {step:?}: a pause of {gap_ms} ms at seq {seq} is not followed by a server close")]
    PauseWithoutClose {
        /// The step.
        step: String,
        /// The first entry after the pause.
        seq: u64,
        /// The pause, in whole ms.
        gap_ms: u64,
    },
    /// A binary frame could not be decoded to rewrite its topic.
    #[error("step {step:?}: cannot rewrite the topic of a binary frame: {detail}")]
    Binary {
        /// The step.
        step: String,
        /// Why.
        detail: String,
    },
}

/// An exchange being built: the exchange, `(t_ms, seq)` of each expectation, and the t_ms of
/// its action.
type Timed = (Exchange, Vec<(f64, u64)>, f64);

/// Turns one recorded step into exchanges.
pub fn exchanges_of(step: &Step) -> Result<Vec<Exchange>, ScriptError> {
    let mut out: Vec<Timed> = Vec::new();
    let mut sent_in_step: Vec<&str> = Vec::new();
    let mut aborted: Vec<&str> = Vec::new();
    let mut client_closed: Vec<&str> = Vec::new();
    for entry in &step.entries {
        let Entry {
            seq,
            t_ms,
            conn,
            kind,
        } = entry;
        let conn_s = conn.clone();
        let start = |action: Action, expect: Vec<(String, Observed)>| {
            let times = expect.iter().map(|_| (*t_ms, *seq)).collect();
            (
                Exchange {
                    step: step.title.clone(),
                    action,
                    expect,
                },
                times,
                *t_ms,
            )
        };
        match kind {
            EntryKind::Send(frame) => {
                sent_in_step.push(conn);
                out.push(start(
                    Action::Send {
                        conn: conn_s,
                        frame: frame.clone(),
                    },
                    Vec::new(),
                ));
            }
            EntryKind::Pause { ms } => out.push(start(
                Action::Pause {
                    conn: conn_s.clone(),
                    ms: *ms,
                },
                Vec::new(),
            )),
            EntryKind::Connected { query, short } => {
                // A connection opened in this step that the server closes in it was closed
                // by the server's decision (an idle socket that never sent anything).
                sent_in_step.push(conn);
                out.push(start(
                    Action::Connect {
                        conn: conn_s.clone(),
                        query: query.clone(),
                        short: *short,
                    },
                    vec![(conn_s, Observed::Accepted)],
                ));
            }
            EntryKind::ConnectRejected {
                query,
                status,
                body,
            } => out.push(start(
                Action::Connect {
                    conn: conn_s.clone(),
                    query: query.clone(),
                    short: false,
                },
                vec![(
                    conn_s,
                    Observed::Refused {
                        status: *status,
                        body: body.clone(),
                    },
                )],
            )),
            EntryKind::ClientTcpAbort => {
                aborted.push(conn);
                out.push(start(Action::Abort { conn: conn_s }, Vec::new()));
            }
            EntryKind::ClientClose { code } => {
                client_closed.push(conn);
                out.push(start(
                    Action::Close {
                        conn: conn_s,
                        code: *code,
                    },
                    Vec::new(),
                ));
            }
            EntryKind::PongReceived => out.push(start(
                Action::Ping {
                    conn: conn_s.clone(),
                },
                vec![(conn_s, Observed::Pong)],
            )),
            EntryKind::Recv(frame) => {
                let Some((ex, times, _)) = out.last_mut() else {
                    return Err(ScriptError::ObservedBeforeAction {
                        step: step.title.clone(),
                        seq: *seq,
                    });
                };
                ex.expect.push((conn_s, Observed::Frame(frame.clone())));
                times.push((*t_ms, *seq));
            }
            EntryKind::Closed {
                rcvd_code,
                rcvd_reason,
            } => {
                let c = conn.as_str();
                let server_decided = !aborted.contains(&c)
                    && (client_closed.contains(&c) || sent_in_step.contains(&c));
                if !server_decided {
                    continue;
                }
                let Some((ex, times, _)) = out.last_mut() else {
                    return Err(ScriptError::ObservedBeforeAction {
                        step: step.title.clone(),
                        seq: *seq,
                    });
                };
                ex.expect.push((
                    conn_s,
                    Observed::Closed {
                        code: *rcvd_code,
                        reason: rcvd_reason.clone().unwrap_or_default(),
                    },
                ));
                times.push((*t_ms, *seq));
            }
        }
    }
    let mut exchanges = Vec::new();
    for (ex, times, action_t) in out {
        exchanges.extend(split_idle(ex, &times, action_t)?);
    }
    Ok(exchanges)
}

/// Splits an exchange at a pause longer than [`IDLE_GAP_MS`]: the part after it becomes an
/// [`Action::Idle`] exchange on the connection the server then closed.
fn split_idle(
    ex: Exchange,
    times: &[(f64, u64)],
    action_t: f64,
) -> Result<Vec<Exchange>, ScriptError> {
    let mut prev = action_t;
    let mut cut = None;
    for (i, (t, seq)) in times.iter().enumerate() {
        if t - prev > IDLE_GAP_MS {
            cut = Some((i, *seq, t - prev));
            break;
        }
        prev = *t;
    }
    let Some((i, seq, gap)) = cut else {
        return Ok(vec![ex]);
    };
    let Exchange {
        step,
        action,
        mut expect,
    } = ex;
    let tail = expect.split_off(i);
    let idle_conn = tail.iter().find_map(|(conn, obs)| match obs {
        Observed::Closed { .. } => Some(conn.clone()),
        _ => None,
    });
    let Some(idle_conn) = idle_conn else {
        return Err(ScriptError::PauseWithoutClose {
            step,
            seq,
            // Whole milliseconds are enough for a message; the gap is positive and small.
            gap_ms: gap.round() as u64,
        });
    };
    let tail_times: Vec<(f64, u64)> = times[i..].to_vec();
    let first = Exchange {
        step: step.clone(),
        action,
        expect,
    };
    let idle = Exchange {
        step,
        action: Action::Idle { conn: idle_conn },
        expect: tail,
    };
    // A second pause after the idle close would be another idle period.
    let tail_start = tail_times.first().map_or(action_t, |(t, _)| *t);
    let mut rest = split_idle(idle, &tail_times, tail_start)?;
    rest.insert(0, first);
    Ok(rest)
}

/// The exchanges of the named steps of a recording, in the order given, each step optionally
/// cut after its first `n` exchanges.
pub fn exchanges_for(
    recording: &Recording,
    steps: &[(&str, Option<usize>)],
) -> Result<Vec<Exchange>, MissingStep> {
    let mut out = Vec::new();
    for (title, limit) in steps {
        let step = recording.step(title).ok_or_else(|| MissingStep {
            source_name: recording.source.clone(),
            title: (*title).to_owned(),
            detail: None,
        })?;
        let mut exchanges = exchanges_of(step).map_err(|e| MissingStep {
            source_name: recording.source.clone(),
            title: (*title).to_owned(),
            detail: Some(e.to_string()),
        })?;
        if let Some(n) = limit {
            exchanges.truncate(*n);
        }
        out.extend(exchanges);
    }
    Ok(out)
}

/// A case names a step the recording does not have, or that cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: step {title:?} {}", detail.as_deref().unwrap_or("is not in the recording"))]
pub struct MissingStep {
    /// The recording.
    pub source_name: String,
    /// The step title.
    pub title: String,
    /// Why it cannot be replayed, when it exists.
    pub detail: Option<String>,
}

/// Rewrites [`RECORDED_TOPIC`] to `topic` in a frame: the JSON string literal in text frames
/// (even in malformed ones, which is why this is textual), the topic field in binary ones.
/// A topic that merely starts with it (`room:lobby-2`, a case's second topic) keeps its
/// suffix: `<topic>-2`.
pub fn rewrite_topic(frame: &Frame, topic: &str, from_client: bool) -> Result<Frame, String> {
    retopic(frame, RECORDED_TOPIC, topic, from_client)
}

/// [`rewrite_topic`] from any topic prefix to any other.
pub fn retopic(frame: &Frame, from: &str, topic: &str, from_client: bool) -> Result<Frame, String> {
    match frame {
        Frame::Text(text) => {
            // The opening quote and the prefix, without the closing quote.
            let lit = |t: &str| -> Result<String, String> {
                let s = serde_json::to_string(t).map_err(|e| e.to_string())?;
                Ok(s[..s.len() - 1].to_owned())
            };
            Ok(Frame::Text(text.replace(&lit(from)?, &lit(topic)?)))
        }
        Frame::Binary(bytes) => {
            let decoded = if from_client {
                binary::decode_from_client(bytes)
            } else {
                binary::decode_from_server(bytes)
            };
            let mut msg: Message = match decoded {
                Ok(msg) => msg,
                // A binary frame that is not a valid message is sent as recorded.
                Err(_) => return Ok(frame.clone()),
            };
            let Some(rest) = msg.topic.strip_prefix(from) else {
                return Ok(frame.clone());
            };
            msg.topic = format!("{topic}{rest}");
            let encoded = if from_client {
                binary::encode_client(&msg)
            } else {
                // Decoding gives back the shape (push: join_ref only; broadcast: neither), so
                // encoding picks the same kind.
                binary::encode_server(&msg)
            };
            encoded.map(Frame::Binary).map_err(|e| e.to_string())
        }
    }
}

/// [`rewrite_topic`] over a whole exchange list.
pub fn rewrite_exchanges(exchanges: &mut [Exchange], topic: &str) -> Result<(), ScriptError> {
    for ex in exchanges {
        let step = ex.step.clone();
        let err = |detail: String| ScriptError::Binary {
            step: step.clone(),
            detail,
        };
        if let Action::Send { frame, .. } = &mut ex.action {
            *frame = rewrite_topic(frame, topic, true).map_err(err)?;
        }
        for (_, obs) in &mut ex.expect {
            if let Observed::Frame(frame) = obs {
                *frame = rewrite_topic(frame, topic, false).map_err(err)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{decode_hex, reference};
    use phxsim_wire::Serializer;

    fn count_idle(exchanges: &[Exchange]) -> usize {
        exchanges
            .iter()
            .filter(|e| matches!(e.action, Action::Idle { .. }))
            .count()
    }

    #[test]
    fn every_recorded_step_becomes_exchanges_and_only_the_idle_step_idles() {
        for vsn in [Serializer::V1, Serializer::V2] {
            let rec = reference(vsn).unwrap();
            for step in &rec.steps {
                let ex = exchanges_of(step).unwrap();
                let idles = count_idle(&ex);
                let is_idle_step = step.title.contains("stay idle");
                assert_eq!(idles, usize::from(is_idle_step), "{vsn:?} {}", step.title);
            }
        }
    }

    #[test]
    fn the_idle_exchange_waits_for_the_close_and_the_leaves() {
        for vsn in [Serializer::V1, Serializer::V2] {
            let rec = reference(vsn).unwrap();
            let step = rec
                .steps
                .iter()
                .find(|s| s.title.contains("stay idle"))
                .unwrap();
            let ex = exchanges_of(step).unwrap();
            let idle = ex.last().unwrap();
            assert_eq!(idle.action, Action::Idle { conn: "I".into() });
            let conns: Vec<&str> = idle.expect.iter().map(|(c, _)| c.as_str()).collect();
            assert_eq!(conns.len(), 3, "{vsn:?}: {conns:?}");
            assert!(conns.contains(&"A") && conns.contains(&"H") && conns.contains(&"I"));
            assert!(idle.expect.contains(&(
                "I".to_owned(),
                Observed::Closed {
                    code: Some(1002),
                    reason: String::new()
                }
            )));
        }
    }

    #[test]
    fn closes_are_expected_only_where_the_server_decides_them() {
        let rec = reference(Serializer::V2).unwrap();
        // The teardown closes of G and H at the end are not expectations; A's answer to its
        // own close is.
        let step = rec.step("A graceful close (1000)").unwrap();
        let ex = exchanges_of(step).unwrap();
        assert_eq!(ex.len(), 1);
        let closes: Vec<&String> = ex[0]
            .expect
            .iter()
            .filter(|(_, o)| matches!(o, Observed::Closed { .. }))
            .map(|(c, _)| c)
            .collect();
        assert_eq!(closes, ["A"]);
        // After an abort, the aborting side observes nothing.
        let step = rec
            .step("B rejoin room:lobby then abort TCP (no close frame)")
            .unwrap();
        let ex = exchanges_of(step).unwrap();
        assert_eq!(ex[1].action, Action::Abort { conn: "B".into() });
        assert_eq!(ex[1].expect.len(), 1);
        assert_eq!(ex[1].expect[0].0, "A");
    }

    #[test]
    fn an_unexplained_pause_is_an_error() {
        let rec = reference(Serializer::V2).unwrap();
        let mut step = rec.step("A heartbeat").unwrap().clone();
        step.entries[1].t_ms += 5000.0;
        assert!(matches!(
            exchanges_of(&step),
            Err(ScriptError::PauseWithoutClose { .. })
        ));
    }

    #[test]
    fn topics_are_rewritten_in_text_and_binary_frames() {
        let text = Frame::Text(r#"["1","1","room:lobby","phx_join",{}]"#.into());
        assert_eq!(
            rewrite_topic(&text, "room:x-1", true).unwrap(),
            Frame::Text(r#"["1","1","room:x-1","phx_join",{}]"#.into())
        );
        // Malformed frames are rewritten too (the text is never parsed).
        let bad = Frame::Text(r#"["1","9","room:lobby"]"#.into());
        assert_eq!(
            rewrite_topic(&bad, "room:y", true).unwrap(),
            Frame::Text(r#"["1","9","room:y"]"#.into())
        );
        let push =
            decode_hex("0002020a0431313132726f6f6d3a6c6f62627970696e6701020362696e617279").unwrap();
        let reply =
            decode_hex("0102020a0231313132726f6f6d3a6c6f6262796f6b01020362696e617279").unwrap();
        // Same topic: byte-identical.
        assert_eq!(
            rewrite_topic(&Frame::Binary(push.clone()), RECORDED_TOPIC, true).unwrap(),
            Frame::Binary(push.clone())
        );
        assert_eq!(
            rewrite_topic(&Frame::Binary(reply.clone()), RECORDED_TOPIC, false).unwrap(),
            Frame::Binary(reply.clone())
        );
        let Frame::Binary(moved) = rewrite_topic(&Frame::Binary(reply), "room:c", false).unwrap()
        else {
            panic!("binary in, binary out");
        };
        let msg = binary::decode_from_server(&moved).unwrap();
        assert_eq!(msg.topic, "room:c");
        assert_eq!(msg.ref_.as_deref(), Some("12"));
    }
}
