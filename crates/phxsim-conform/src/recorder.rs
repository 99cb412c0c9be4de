//! Records the authored cases ([`crate::authored`]) against a real Phoenix server, in the
//! recordings' JSON-lines format, so that their expected frames are Phoenix's own.
//!
//! After each action the recorder keeps listening until nothing has arrived for
//! [`QUIET`] (at most [`MAX_WAIT`]); an `idle` action waits for the server's close. Each case
//! runs on its own topic on the server (`room:rec-v<1|2>-<case>`), written back as `room:lobby`.
//! A recording is one sample of Phoenix's interleavings; the cases accept the others
//! ([`crate::races`]).

use crate::authored::{Act, AuthoredCase, bin_frame, connect_query, send_frame};
use crate::runner::{Cmd, Conn, RunError, connect, send, target, teardown};
use crate::script::{Observed, RECORDED_TOPIC, retopic};
use phxsim_wire::{Frame, Serializer};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message as WsMessage};

/// Silence that ends an action's exchange.
pub const QUIET: Duration = Duration::from_millis(250);
/// The longest an action's exchange is listened to (an idle wait: that plus the timeout).
pub const MAX_WAIT: Duration = Duration::from_secs(3);

struct Rec {
    lines: Vec<String>,
    seq: u64,
    start: Instant,
}

impl Rec {
    fn push(&mut self, conn: &str, mut fields: Json) {
        self.seq += 1;
        let t_ms = (self.start.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        let mut line = json!({"seq": self.seq, "t_ms": t_ms, "conn": conn});
        if let (Some(l), Some(f)) = (line.as_object_mut(), fields.as_object_mut()) {
            l.append(f);
        }
        self.lines.push(line.to_string());
    }

    fn frame(&mut self, conn: &str, dir: &str, frame: &Frame) {
        match frame {
            Frame::Text(t) => self.push(conn, json!({"dir": dir, "opcode": "text", "data": t})),
            Frame::Binary(b) => self.push(
                conn,
                json!({"dir": dir, "opcode": "binary", "data_hex": data_encoding::HEXLOWER.encode(b)}),
            ),
        }
    }

    fn observed(&mut self, conn: &str, obs: &Observed) {
        match obs {
            Observed::Frame(f) => self.frame(conn, "recv", f),
            Observed::Pong => self.push(conn, json!({"dir": "event", "event": "ws_pong_received"})),
            Observed::Closed { code, reason } => self.push(
                conn,
                json!({"dir": "event", "event": "closed", "close_rcvd_code": code,
                       "close_rcvd_reason": reason}),
            ),
            Observed::Ended { .. } => self.push(
                conn,
                json!({"dir": "event", "event": "closed", "close_rcvd_code": null,
                       "close_rcvd_reason": null}),
            ),
            // Connect results are recorded by the connect itself; sends report no result.
            Observed::Accepted
            | Observed::Refused { .. }
            | Observed::ConnectFailed { .. }
            | Observed::SendFailed { .. } => {}
        }
    }
}

/// Records every case that applies to `vsn`; returns the JSON lines.
pub async fn record(
    url: &str,
    short_url: &str,
    cases: &[AuthoredCase],
    vsn: Serializer,
) -> Result<String, RunError> {
    let main = target(url)?;
    let short = target(short_url)?;
    let mut rec = Rec {
        lines: Vec::new(),
        seq: 0,
        start: Instant::now(),
    };
    let v = match vsn {
        Serializer::V1 => "v1",
        Serializer::V2 => "v2",
    };
    for case in cases.iter().filter(|c| vsn == Serializer::V2 || !c.v2_only) {
        let topic = format!("room:rec-{v}-{}", case.id);
        let (tx, mut events) = mpsc::unbounded_channel::<(usize, Observed)>();
        let mut conns: BTreeMap<usize, Conn> = BTreeMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut vsns: BTreeMap<usize, Serializer> = BTreeMap::new();
        let out = |f: &Frame, client: bool| retopic(f, &topic, RECORDED_TOPIC, client);
        let into = |f: &Frame| retopic(f, RECORDED_TOPIC, &topic, true);
        for step in &case.steps {
            rec.push(
                "-",
                json!({"dir": "event", "event": "step", "step": step.title}),
            );
            for (act, fast) in &step.acts {
                let name = match act {
                    Act::Connect { conn, .. }
                    | Act::Send { conn, .. }
                    | Act::Raw { conn, .. }
                    | Act::Bin { conn, .. }
                    | Act::Ping(conn)
                    | Act::Close(conn, _)
                    | Act::Abort(conn)
                    | Act::Idle(conn)
                    | Act::Pause(conn, _) => conn.clone(),
                };
                let idx = match names.iter().position(|n| *n == name) {
                    Some(i) => i,
                    None => {
                        names.push(name.clone());
                        names.len() - 1
                    }
                };
                let conn_vsn = vsns.get(&idx).copied().unwrap_or(vsn);
                let mut wait_close = false;
                let mut text_out: Option<Frame> = None;
                match act {
                    Act::Connect {
                        query, short: s, ..
                    } => {
                        let q = connect_query(query, vsn);
                        let sv = q
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("vsn="))
                            .and_then(|x| Serializer::from_vsn(Some(x)));
                        vsns.insert(idx, sv.unwrap_or(vsn));
                        let t = if *s { &short } else { &main };
                        let (obs, conn) = connect(t, &q, Duration::from_secs(5), idx, &tx).await;
                        match obs {
                            Observed::Accepted => {
                                let mut f = json!({"dir": "event", "event": "connected",
                                                   "url_query": q});
                                if *s && let Some(o) = f.as_object_mut() {
                                    o.insert("endpoint".into(), json!("short"));
                                }
                                rec.push(&name, f);
                            }
                            Observed::Refused { status, body } => rec.push(
                                &name,
                                json!({"dir": "event", "event": "connect_rejected",
                                       "url_query": q, "http_status": status, "body": body}),
                            ),
                            other => {
                                return Err(RunError::InvalidUrl {
                                    url: url.to_owned(),
                                    detail: format!("recording case {}: {other:?}", case.id),
                                });
                            }
                        }
                        if let Some(c) = conn {
                            conns.insert(idx, c);
                        }
                    }
                    Act::Send {
                        join_ref,
                        ref_,
                        topic: t,
                        event,
                        payload,
                        ..
                    } => {
                        text_out = Some(Frame::Text(send_frame(
                            conn_vsn, join_ref, ref_, t, event, payload,
                        )));
                    }
                    Act::Raw { text, only, .. } => {
                        if only.is_none_or(|o| o == vsn) {
                            text_out = Some(Frame::Text(text.clone()));
                        }
                    }
                    Act::Bin { msg, .. } => {
                        text_out = Some(bin_frame(msg).map_err(|e| RunError::InvalidUrl {
                            url: url.to_owned(),
                            detail: e,
                        })?);
                    }
                    Act::Ping(_) => {
                        let ping = WsMessage::Ping(Bytes::from_static(b"phxsim-record"));
                        let _ = send(conns.get(&idx), ping).await;
                    }
                    Act::Close(_, code) => {
                        rec.push(
                            &name,
                            json!({"dir": "event", "event": "client_close", "code": code}),
                        );
                        let frame = CloseFrame {
                            code: CloseCode::from(*code),
                            reason: "".into(),
                        };
                        let _ = send(conns.get(&idx), WsMessage::Close(Some(frame))).await;
                    }
                    Act::Abort(_) => {
                        rec.push(&name, json!({"dir": "event", "event": "client_tcp_abort"}));
                        if let Some(c) = conns.remove(&idx) {
                            let _ = c.cmds.send(Cmd::Abort);
                            let _ = timeout(Duration::from_secs(2), c.task).await;
                        }
                    }
                    Act::Idle(_) => wait_close = true,
                    Act::Pause(_, ms) => {
                        rec.push(&name, json!({"dir": "event", "event": "pause", "ms": ms}));
                        let until = Instant::now() + Duration::from_millis(*ms);
                        while let Ok(Some((c, obs))) = timeout(
                            until.saturating_duration_since(Instant::now()),
                            events.recv(),
                        )
                        .await
                        {
                            let n = names.get(c).cloned().unwrap_or_default();
                            rec.observed(&n, &back(&obs, &out));
                        }
                    }
                }
                if let Some(frame) = text_out {
                    let sent = into(&frame).map_err(|e| RunError::InvalidUrl {
                        url: url.to_owned(),
                        detail: e,
                    })?;
                    rec.frame(&name, "send", &frame);
                    let msg = match sent {
                        Frame::Text(t) => WsMessage::text(t),
                        Frame::Binary(b) => WsMessage::binary(b),
                    };
                    let _ = send(conns.get(&idx), msg).await;
                }
                // Listen until quiet (or, for an idle wait, until the close and then quiet).
                let begun = Instant::now();
                let cap = if wait_close {
                    MAX_WAIT + Duration::from_secs(65)
                } else {
                    MAX_WAIT
                };
                if !*fast {
                    loop {
                        let wait = if wait_close { cap } else { QUIET };
                        let left = (begun + cap).saturating_duration_since(Instant::now());
                        match timeout(wait.min(left), events.recv()).await {
                            Ok(Some((c, obs))) => {
                                let n = names.get(c).cloned().unwrap_or_default();
                                if c == idx
                                    && matches!(
                                        obs,
                                        Observed::Closed { .. } | Observed::Ended { .. }
                                    )
                                {
                                    wait_close = false;
                                }
                                rec.observed(&n, &back(&obs, &out));
                            }
                            _ => break,
                        }
                    }
                }
            }
        }
        teardown(conns).await;
        // Frames the teardown caused are not part of any step.
        while events.try_recv().is_ok() {}
    }
    rec.push("-", json!({"dir": "event", "event": "done"}));
    let mut text = rec.lines.join("\n");
    text.push('\n');
    Ok(text)
}

fn back(obs: &Observed, out: &impl Fn(&Frame, bool) -> Result<Frame, String>) -> Observed {
    match obs {
        Observed::Frame(f) => Observed::Frame(out(f, false).unwrap_or_else(|_| f.clone())),
        other => other.clone(),
    }
}
