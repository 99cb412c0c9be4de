//! Runs case scripts against a server: a raw-frame WebSocket client per recorded connection,
//! so that malformed frames go out exactly as recorded and close codes come back exactly as
//! sent.
//!
//! - Each connection is a small task that owns its socket, sends what it is told and reports
//!   every frame, pong, close frame and end of stream on one channel. Pings from the server are
//!   answered by tungstenite; they carry nothing for the transcript.
//! - For each exchange the runner acts, then collects until every connection has seen each
//!   frame the case requires there (in any order; optional frames of races D and L may come
//!   on top, see [`crate::races`]), or as many observations as could possibly be right, or the
//!   deadline passes. A frame that comes later than its exchange is therefore reported in the
//!   next one (or in the settle period after the last one), which fails the case unless it is
//!   an optional frame still allowed there.
//! - "Drop TCP" closes the socket without a close frame (a FIN: tokio's SO_LINGER control, which
//!   would give a RST, is deprecated; the server sees a stream that ends without a close
//!   either way).
//! - While an [`Action::Idle`] exchange waits for the server's idle timeout, the case's other
//!   connections send heartbeats with refs starting [`KEEPALIVE_REF`], whose replies are left
//!   out of the transcript.
//! - An exchange whose frames do not all arrive in time ends the case: it has failed there (or
//!   earlier), and the rest would only cost one timeout per exchange.
//! - Time comes from `tokio::time` only; every wait is bounded.

use crate::cases::CaseScript;
use crate::compare::{Comparison, compare};
use crate::races;
use crate::script::{Action, Observed};
use crate::transcript::{ExchangeTranscript, Transcript};
use futures_util::{SinkExt, StreamExt};
use phxsim_wire::{Frame, Serializer};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message as WsMessage};

/// Refs of the runner's own keepalive heartbeats; their replies are not part of any case.
pub const KEEPALIVE_REF: &str = "conform-keepalive-";

/// How to run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// `ws://HOST:PORT/socket/websocket`; the recorded query is appended.
    pub url: String,
    /// Where idle connections connect, if not `url` (Phoenix's recording used an endpoint with
    /// a short timeout for them).
    pub idle_url: Option<String>,
    /// How long to wait for one exchange's frames (and for a connect).
    pub timeout: Duration,
    /// The server's idle timeout: how long an idle exchange may take beyond `timeout`.
    pub idle_timeout: Duration,
    /// How long to keep listening after a case's last exchange, for stray frames.
    pub settle: Duration,
}

impl RunConfig {
    /// Defaults for a server on loopback: 5 s per exchange, Phoenix's 60 s idle timeout,
    /// 200 ms of settling.
    pub fn new(url: impl Into<String>) -> RunConfig {
        RunConfig {
            url: url.into(),
            idle_url: None,
            timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            settle: Duration::from_millis(200),
        }
    }
}

/// The runner cannot start (nothing about the server under test).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The URL is not a `ws://host[:port]/path` URL.
    #[error("invalid server URL {url:?}: {detail}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// Nothing accepts TCP connections at the URL's host and port.
    #[error("cannot reach {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The OS error, or the timeout.
        detail: String,
    },
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    host: String,
    port: u16,
    base: String,
}

/// Checks a server URL: `ws://` only (the client has no TLS), host required.
pub fn check_url(url: &str) -> Result<(), RunError> {
    target(url).map(|_| ())
}

/// Checks that something accepts TCP connections at the URL's host and port within
/// `timeout`, so that a server that is not there is found at once, not as a failure of every
/// case. The probe connection is closed again without a byte sent.
pub async fn check_reachable(url: &str, timeout: Duration) -> Result<(), RunError> {
    let t = target(url)?;
    let unreachable = |detail: String| RunError::Unreachable {
        url: url.to_owned(),
        detail,
    };
    match tokio::time::timeout(timeout, TcpStream::connect((t.host.as_str(), t.port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

pub(crate) fn target(url: &str) -> Result<Target, RunError> {
    let err = |detail: &str| RunError::InvalidUrl {
        url: url.to_owned(),
        detail: detail.to_owned(),
    };
    let req = url.into_client_request().map_err(|e| err(&e.to_string()))?;
    let uri = req.uri();
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => return Err(err("wss:// is not supported; use ws://")),
        _ => return Err(err("the scheme must be ws://")),
    }
    let host = uri.host().ok_or_else(|| err("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Target {
        host,
        port: uri.port_u16().unwrap_or(80),
        base: url.to_owned(),
    })
}

/// `base` with `query` appended.
fn with_query(base: &str, query: &str) -> String {
    if query.is_empty() {
        base.to_owned()
    } else if base.contains('?') {
        format!("{base}&{query}")
    } else {
        format!("{base}?{query}")
    }
}

pub(crate) enum Cmd {
    Send(WsMessage, oneshot::Sender<Result<(), String>>),
    /// Drop the socket without a close frame.
    Abort,
    /// Close politely and stop; nothing more is reported.
    Teardown,
}

pub(crate) struct Conn {
    pub(crate) cmds: mpsc::UnboundedSender<Cmd>,
    pub(crate) task: JoinHandle<()>,
}

pub(crate) type Events = mpsc::UnboundedSender<(usize, Observed)>;

async fn conn_task(
    idx: usize,
    mut ws: WebSocketStream<TcpStream>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    events: Events,
) {
    let report = |obs: Observed| {
        let _ = events.send((idx, obs));
    };
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Send(msg, ack)) => {
                    let sent = ws.send(msg).await.map_err(|e| e.to_string());
                    let _ = ack.send(sent);
                }
                Some(Cmd::Abort) => return,
                Some(Cmd::Teardown) | None => {
                    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    let _ = timeout(Duration::from_millis(500), async {
                        let _ = ws.send(WsMessage::Close(Some(frame))).await;
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return;
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(WsMessage::Text(t))) => report(Observed::Frame(Frame::Text(t.as_str().to_owned()))),
                Some(Ok(WsMessage::Binary(b))) => report(Observed::Frame(Frame::Binary(b.to_vec()))),
                Some(Ok(WsMessage::Pong(_))) => report(Observed::Pong),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(frame))) => {
                    let (code, reason) = match frame {
                        Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                        None => (None, String::new()),
                    };
                    report(Observed::Closed { code, reason });
                    // Let tungstenite send the close reply and see the stream end.
                    let _ = timeout(Duration::from_millis(500), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return;
                }
                Some(Err(e)) => {
                    report(Observed::Ended { detail: ended_detail(&e) });
                    return;
                }
                None => {
                    report(Observed::Ended { detail: "stream ended".to_owned() });
                    return;
                }
            },
        }
    }
}

fn ended_detail(e: &WsError) -> String {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => "connection closed".to_owned(),
        WsError::Protocol(p) => format!("protocol error: {p}"),
        other => other.to_string(),
    }
}

/// Opens one connection; the observation is what the upgrade gave.
pub(crate) async fn connect(
    target: &Target,
    query: &str,
    limit: Duration,
    idx: usize,
    events: &Events,
) -> (Observed, Option<Conn>) {
    let url = with_query(&target.base, query);
    let attempt = timeout(limit, async {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Observed::ConnectFailed {
                detail: format!("TCP connect: {e}"),
            })?;
        let _ = stream.set_nodelay(true);
        match tokio_tungstenite::client_async(url.as_str(), stream).await {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(resp)) => Err(Observed::Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => Err(Observed::ConnectFailed {
                detail: e.to_string(),
            }),
        }
    })
    .await;
    match attempt {
        Ok(Ok(ws)) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(conn_task(idx, ws, rx, events.clone()));
            (Observed::Accepted, Some(Conn { cmds: tx, task }))
        }
        Ok(Err(obs)) => (obs, None),
        Err(_) => (
            Observed::ConnectFailed {
                detail: format!("no upgrade within {} ms", limit.as_millis()),
            },
            None,
        ),
    }
}

pub(crate) async fn send(conn: Option<&Conn>, msg: WsMessage) -> Option<Observed> {
    let failed = |detail: &str| {
        Some(Observed::SendFailed {
            detail: detail.to_owned(),
        })
    };
    let Some(conn) = conn else {
        return failed("not connected");
    };
    let (ack_tx, ack_rx) = oneshot::channel();
    if conn.cmds.send(Cmd::Send(msg, ack_tx)).is_err() {
        return failed("the connection is gone");
    }
    match ack_rx.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => failed(&e),
        Err(_) => failed("the connection is gone"),
    }
}

/// A heartbeat that the collector will drop again.
fn keepalive_frame(vsn: Serializer, n: u64) -> String {
    let r = format!("{KEEPALIVE_REF}{n}");
    match vsn {
        Serializer::V1 => {
            format!(r#"{{"topic":"phoenix","event":"heartbeat","payload":{{}},"ref":"{r}"}}"#)
        }
        Serializer::V2 => format!(r#"[null,"{r}","phoenix","heartbeat",{{}}]"#),
    }
}

/// Whether a frame is the reply to one of the runner's keepalive heartbeats.
fn is_keepalive_reply(obs: &Observed) -> bool {
    let Observed::Frame(Frame::Text(text)) = obs else {
        return false;
    };
    if !text.contains(KEEPALIVE_REF) {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Json>(text) else {
        return false;
    };
    let r = match &v {
        Json::Array(items) => items.get(1),
        Json::Object(map) => map.get("ref"),
        _ => None,
    };
    r.and_then(Json::as_str)
        .is_some_and(|r| r.starts_with(KEEPALIVE_REF))
}

/// One case's run.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseRun {
    /// What happened.
    pub transcript: Transcript,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs one case.
pub async fn run_case(cfg: &RunConfig, script: &CaseScript) -> Result<CaseRun, RunError> {
    let main = target(&cfg.url)?;
    let idle_target = match &cfg.idle_url {
        Some(url) => target(url)?,
        None => main.clone(),
    };
    let idle_conns: Vec<&str> = script
        .exchanges
        .iter()
        .filter_map(|e| match &e.action {
            Action::Idle { conn } => Some(conn.as_str()),
            _ => None,
        })
        .collect();
    let plan = races::plan(script);
    let started = Instant::now();
    let (events_tx, mut events) = mpsc::unbounded_channel::<(usize, Observed)>();
    let mut conns: BTreeMap<usize, Conn> = BTreeMap::new();
    let mut transcript = Transcript::default();
    let mut keepalives = 0u64;
    let idx_of = |name: &str| script.conns.iter().position(|c| c == name).unwrap_or(0);

    for ex in &script.exchanges {
        let conn_name = ex.action.conn();
        let idx = idx_of(conn_name);
        let mut seen: BTreeMap<usize, Vec<Observed>> = BTreeMap::new();
        match &ex.action {
            Action::Connect { query, short, .. } => {
                let t = if *short || idle_conns.contains(&conn_name) {
                    &idle_target
                } else {
                    &main
                };
                let (obs, conn) = connect(t, query, cfg.timeout, idx, &events_tx).await;
                seen.entry(idx).or_default().push(obs);
                if let Some(conn) = conn {
                    conns.insert(idx, conn);
                }
            }
            Action::Send { frame, .. } => {
                let msg = match frame {
                    Frame::Text(t) => WsMessage::text(t.clone()),
                    Frame::Binary(b) => WsMessage::binary(b.clone()),
                };
                if let Some(obs) = send(conns.get(&idx), msg).await {
                    seen.entry(idx).or_default().push(obs);
                }
            }
            Action::Ping { .. } => {
                let ping = WsMessage::Ping(Bytes::from_static(b"phxsim-conform"));
                if let Some(obs) = send(conns.get(&idx), ping).await {
                    seen.entry(idx).or_default().push(obs);
                }
            }
            Action::Close { code, .. } => {
                let frame = CloseFrame {
                    code: CloseCode::from(*code),
                    reason: "".into(),
                };
                if let Some(obs) = send(conns.get(&idx), WsMessage::Close(Some(frame))).await {
                    seen.entry(idx).or_default().push(obs);
                }
            }
            Action::Abort { .. } => {
                if let Some(conn) = conns.remove(&idx) {
                    let _ = conn.cmds.send(Cmd::Abort);
                    let _ = timeout(cfg.timeout, conn.task).await;
                }
            }
            Action::Idle { .. } => {}
            Action::Pause { ms, .. } => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }

        let j = transcript.exchanges.len();
        let want: Vec<usize> = plan.exchanges.get(j).map_or_else(Vec::new, |p| {
            p.conns.iter().map(|c| idx_of(&c.conn)).collect()
        });
        let idle = matches!(ex.action, Action::Idle { .. });
        let limit = if idle {
            cfg.timeout + cfg.idle_timeout
        } else {
            cfg.timeout
        };
        let deadline = Instant::now() + limit;
        // Heartbeat the other sockets well within the idle timeout.
        let beat = (cfg.idle_timeout / 3).max(Duration::from_millis(20));
        let mut next_beat = Instant::now() + beat;
        let mut timed_out = false;
        loop {
            let done = want.iter().all(|c| {
                let name = script.conns.get(*c).map_or("", String::as_str);
                plan.exchange_done(j, name, seen.get(c).map_or(&[], Vec::as_slice))
            });
            if done {
                break;
            }
            let wake = if idle {
                next_beat.min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                biased;
                ev = events.recv() => match ev {
                    Some((c, obs)) => {
                        if !is_keepalive_reply(&obs) {
                            seen.entry(c).or_default().push(obs);
                        }
                    }
                    None => break,
                },
                () = sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        timed_out = true;
                        break;
                    }
                    for (c, conn) in &conns {
                        if *c != idx {
                            keepalives += 1;
                            let hb = WsMessage::text(keepalive_frame(script.vsn, keepalives));
                            let _ = send(Some(conn), hb).await;
                        }
                    }
                    next_beat = Instant::now() + beat;
                }
            }
        }
        transcript.exchanges.push(ExchangeTranscript {
            step: ex.step.clone(),
            action: ex.action.clone(),
            observed: by_conn(script, seen),
            timed_out,
        });
        // Frames are missing here, so the case has failed at or before this exchange; going
        // on would only spend a timeout per remaining exchange.
        if timed_out {
            break;
        }
    }

    // Anything else that arrives soon belongs to the last exchange (and fails the case).
    let settle_until = Instant::now() + cfg.settle;
    let mut extra: BTreeMap<usize, Vec<Observed>> = BTreeMap::new();
    while let Ok(Some((c, obs))) = timeout(
        settle_until.saturating_duration_since(Instant::now()),
        events.recv(),
    )
    .await
    {
        if !is_keepalive_reply(&obs) {
            extra.entry(c).or_default().push(obs);
        }
    }
    if let Some(last) = transcript.exchanges.last_mut() {
        for (conn, items) in by_conn(script, extra) {
            match last.observed.iter_mut().find(|(c, _)| *c == conn) {
                Some((_, seen)) => seen.extend(items),
                None => last.observed.push((conn, items)),
            }
        }
        last.observed
            .sort_by_key(|(c, _)| crate::transcript::conn_index(&script.conns, c));
    }
    let elapsed = started.elapsed();
    teardown(conns).await;
    Ok(CaseRun {
        transcript,
        elapsed,
    })
}

fn by_conn(
    script: &CaseScript,
    seen: BTreeMap<usize, Vec<Observed>>,
) -> Vec<(String, Vec<Observed>)> {
    seen.into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(c, v)| {
            let name = script
                .conns
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("#{c}"));
            (name, v)
        })
        .collect()
}

/// Closes every connection still open, politely, within a bounded time.
pub(crate) async fn teardown(conns: BTreeMap<usize, Conn>) {
    let mut tasks = Vec::new();
    for conn in conns.into_values() {
        let _ = conn.cmds.send(Cmd::Teardown);
        tasks.push(conn.task);
    }
    for task in tasks {
        let abort = task.abort_handle();
        if timeout(Duration::from_secs(1), task).await.is_err() {
            abort.abort();
        }
    }
}

/// One case's run, compared.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseResult {
    /// The script that ran.
    pub script: CaseScript,
    /// The comparison with the recording.
    pub comparison: Comparison,
    /// How long the case took.
    pub elapsed: Duration,
}

/// Runs and compares cases one after another; `progress` sees each result as it comes.
pub async fn run_all(
    cfg: &RunConfig,
    scripts: &[CaseScript],
    mut progress: impl FnMut(&CaseResult),
) -> Result<Vec<CaseResult>, RunError> {
    check_url(&cfg.url)?;
    if let Some(url) = &cfg.idle_url {
        check_url(url)?;
    }
    let mut out = Vec::new();
    for script in scripts {
        let run = run_case(cfg, script).await?;
        let result = CaseResult {
            script: script.clone(),
            comparison: compare(script, &run.transcript),
            elapsed: run.elapsed,
        };
        progress(&result);
        out.push(result);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_websocket_urls() {
        assert!(check_url("ws://127.0.0.1:4000/socket/websocket").is_ok());
        assert!(check_url("ws://[::1]:4000/socket/websocket").is_ok());
        let t = target("ws://localhost/socket/websocket").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("localhost", 80));
        for bad in ["http://h/socket", "wss://h/socket", "not a url", "ws:///x"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_appended() {
        assert_eq!(with_query("ws://h/s", "vsn=2.0.0"), "ws://h/s?vsn=2.0.0");
        assert_eq!(
            with_query("ws://h/s?t=1", "vsn=2.0.0"),
            "ws://h/s?t=1&vsn=2.0.0"
        );
        assert_eq!(with_query("ws://h/s", ""), "ws://h/s");
    }

    #[test]
    fn only_keepalive_replies_are_dropped() {
        let reply = |r: &str| {
            Observed::Frame(Frame::Text(format!(
                r#"[null,"{r}","phoenix","phx_reply",{{"response":{{}},"status":"ok"}}]"#
            )))
        };
        assert!(is_keepalive_reply(&reply("conform-keepalive-3")));
        assert!(!is_keepalive_reply(&reply("3")));
        let v1 = Observed::Frame(Frame::Text(
            r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"conform-keepalive-1","topic":"phoenix"}"#
                .into(),
        ));
        assert!(is_keepalive_reply(&v1));
        // The ref must be the ref, not a string somewhere in the payload.
        let sneaky = Observed::Frame(Frame::Text(
            r#"["1","4","room:x","phx_reply",{"response":{"x":"conform-keepalive-1"},"status":"ok"}]"#
                .into(),
        ));
        assert!(!is_keepalive_reply(&sneaky));
        assert_eq!(
            serde_json::from_str::<Json>(&keepalive_frame(Serializer::V1, 2)).unwrap()["ref"],
            "conform-keepalive-2"
        );
        assert_eq!(
            serde_json::from_str::<Json>(&keepalive_frame(Serializer::V2, 2)).unwrap()[1],
            "conform-keepalive-2"
        );
    }
}
