//! The client's task: the I/O glue around the [`Machine`]. One loop over the WebSocket, the
//! handle's commands and the machine's earliest deadline; every input goes to the machine with
//! the current instant, and whatever frames it queues are written out.

use super::machine::{CloseWith, Machine, STOPPED, SessionEnd};
use super::upgrade::upgrade;
use super::{ClientConfig, Command, Shared};
use crate::server::percent_encode;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use phxsim_wire::{Frame, Serializer};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::{Request, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

pub(super) async fn run<C, F, S>(mut connect: C, shared: Arc<Shared>)
where
    C: FnMut() -> F + Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Commands are dropped once the task ends (returns or is aborted), as a channel whose
    /// receiver is gone drops them.
    struct Ended(Arc<Shared>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.commands.task_ended();
        }
    }
    let _ended = Ended(Arc::clone(&shared));
    let cmds = &shared.commands;
    let cfg = shared.read(|m| Arc::clone(m.config()));
    // the WebSocket keys: drawn from the seed, so a simulated run's bytes come from it
    let mut keys = Keys::new(cfg.seed);
    let mut attempt: u32 = 0;
    loop {
        if !shared.read(Machine::wants_connection) {
            match cmds.recv().await {
                None => return,
                Some(cmd) => {
                    shared.step(Instant::now(), |m| m.offline_command(cmd));
                    continue;
                }
            }
        }
        attempt += 1;
        shared.step(Instant::now(), |m| m.connecting(attempt));
        // The connect and upgrade (about 5 KB of future) and the session (about 2 KB) are boxed:
        // inline, this task kept room for both, and a moved awaitee twice, for its whole life
        // (11.6 KB; 1.9 KB boxed). A simulation holds one such task per browser.
        let opened = timeout(cfg.timeout, Box::pin(open(&cfg, &mut keys, &mut connect))).await;
        let reconnect = match opened {
            Ok(Ok(ws)) => {
                attempt = 0;
                let end = Box::pin(session(&shared, &cfg, ws)).await;
                if end.reason == STOPPED {
                    return;
                }
                shared.step(Instant::now(), |m| m.disconnected(&end));
                end.reconnect
            }
            Ok(Err(reason)) => {
                shared.step(Instant::now(), |m| m.connect_failed(reason));
                true
            }
            Err(_) => {
                shared.step(Instant::now(), |m| {
                    m.connect_failed("connect timed out".into())
                });
                true
            }
        };
        if !reconnect {
            shared.step(Instant::now(), Machine::stop_connecting);
            continue;
        }
        // Wait out the backoff, still obeying commands (a disconnect cancels the retry).
        let retry_at = Instant::now() + cfg.reconnect_after.delay(attempt.max(1));
        loop {
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(Command::Connect) => break,
                    Some(cmd) => {
                        let wanted = shared.step(Instant::now(), |m| {
                            m.offline_command(cmd);
                            m.wants_connection()
                        });
                        if !wanted {
                            break;
                        }
                    }
                },
                () = sleep_until(retry_at) => break,
            }
        }
    }
}

/// Opens a stream and upgrades it.
async fn open<C, F, S>(
    cfg: &ClientConfig,
    keys: &mut Keys,
    connect: &mut C,
) -> Result<WebSocketStream<S>, String>
where
    C: FnMut() -> F,
    F: Future<Output = io::Result<S>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stream = connect().await.map_err(|e| format!("connect: {e}"))?;
    let request = request(cfg, keys.next())?;
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_size)
        .max_message_size(Some(cfg.max_frame_len))
        .max_frame_size(Some(cfg.max_frame_len));
    upgrade(stream, request, ws_cfg).await
}

/// The WebSocket keys of one client's connections, drawn from its seed: key `n` is words
/// `4n .. 4n + 4` of the seed's ChaCha8 stream, as if one generator drew them one after another.
/// The generator (about 330 bytes) is made for each draw instead of living in the client's
/// task, of which a simulation holds one per browser for the whole run.
struct Keys {
    seed: u64,
    drawn: u64,
}

impl Keys {
    fn new(seed: u64) -> Keys {
        Keys { seed, drawn: 0 }
    }

    /// The next connection's key.
    fn next(&mut self) -> [u8; 16] {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_word_pos(u128::from(self.drawn) * 4);
        self.drawn += 1;
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        key
    }
}

/// The upgrade request, with this connection's WebSocket key.
fn request(cfg: &ClientConfig, key: [u8; 16]) -> Result<Request<()>, String> {
    let vsn = match cfg.serializer {
        Serializer::V1 => "1.0.0",
        Serializer::V2 => "2.0.0",
    };
    let mut query = format!("vsn={vsn}");
    for (k, v) in &cfg.params {
        query.push_str(&format!("&{}={}", percent_encode(k), percent_encode(v)));
    }
    let url = format!("{}?{}", cfg.url, query);
    let uri: Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| format!("url {url:?} has no host"))?;
    Request::builder()
        .method("GET")
        .uri(uri)
        .header("Host", host)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", data_encoding::BASE64.encode(&key))
        .body(())
        .map_err(|e| format!("bad request: {e}"))
}

/// One open connection, until it ends.
///
/// Not an `async fn`: its future would keep the argument `ws` and, beside it, the local the
/// body binds it to, so the stream (about 500 bytes) took room twice for the connection's
/// life. A block holds what it captures once.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn session<'a, S>(
    shared: &'a Shared,
    cfg: &'a ClientConfig,
    mut ws: WebSocketStream<S>,
) -> impl Future<Output = SessionEnd> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    async move { serve(shared, cfg, &mut ws).await }
}

/// [`session`]'s loop over a stream it borrows.
async fn serve<S>(shared: &Shared, cfg: &ClientConfig, ws: &mut WebSocketStream<S>) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cmds = &shared.commands;
    shared.step(Instant::now(), |m| m.connected(Instant::now()));
    // One timer for the session, moved to each new deadline: a fresh `sleep_until` per pass
    // cost a timer-wheel insert and removal for every frame received.
    let timer = sleep_until(shared.read(Machine::next_deadline));
    tokio::pin!(timer);
    let mut kept = KeptMessage::default();
    let end = loop {
        let due = shared.read(Machine::next_deadline);
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        let step = tokio::select! {
            biased;
            m = ws.next() => incoming(shared, m, &mut kept),
            cmd = cmds.recv() => match cmd {
                None => Err(SessionEnd::new(STOPPED, false, CloseWith::Normal)),
                Some(cmd) => {
                    let now = Instant::now();
                    shared.step(now, |m| m.online_command(now, cmd))
                }
            },
            () = &mut timer => {
                let now = Instant::now();
                shared.step(now, |m| m.timers(now))
            }
        };
        // Writing and closing are boxed: inline, the session future kept room for the larger
        // of them (a flush or a close under a timeout, about 0.2 KB) beside the select for the
        // whole connection, and a simulation holds one session per browser. A client writes
        // rarely (a join, a heartbeat every 30 s), so only a step that queued a frame allocates.
        let step = match step {
            Ok(()) if shared.read(Machine::has_output) => Box::pin(write(shared, cfg, ws)).await,
            Ok(()) => Ok(()),
            Err(end) => Err(end),
        };
        if let Err(end) = step {
            break end;
        }
    };
    Box::pin(close(cfg, ws, &end)).await;
    end
}

/// Ends the connection as `end` says: a close frame, the echo of the server's, or nothing.
async fn close<S>(cfg: &ClientConfig, ws: &mut WebSocketStream<S>, end: &SessionEnd)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match end.close {
        CloseWith::Nothing => {}
        CloseWith::Reply => {
            // tungstenite queued the echo of the server's close frame when it read it;
            // `close` would be refused now, so flush to send the echo.
            let _ = timeout(cfg.timeout, ws.flush()).await;
        }
        CloseWith::Normal => {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: end.reason.clone().into(),
            };
            let _ = timeout(cfg.timeout, ws.close(Some(frame))).await;
        }
    }
}

/// The payload of the last data message, held until the next one arrives, so that the
/// WebSocket's read buffer does not keep the size of the largest frame for the connection's life.
///
/// tungstenite reads into one `BytesMut` and hands each message out as a slice of it. When
/// that buffer runs out of room, `bytes` takes the old allocation back if no message points
/// into it any more, growing it if needed: so after a presence_state (often the largest frame,
/// several KB) every idle connection keeps that much. While this slice is alive the allocation
/// is shared, so the buffer moves to a new one of the size needed now (at least the size it
/// started with: `upgrade.rs`) and the old one is freed with the kept message. Nothing is
/// copied for it, and it changes no byte read or written.
#[derive(Default)]
struct KeptMessage(Option<Bytes>);

/// A WebSocket message: a data frame goes to the machine, a close or an error ends the session.
fn incoming(
    shared: &Shared,
    m: Option<Result<WsMessage, WsError>>,
    kept: &mut KeptMessage,
) -> Result<(), SessionEnd> {
    let frame = match m {
        None => return Err(SessionEnd::lost("connection lost")),
        Some(Err(e)) => return Err(SessionEnd::lost(format!("connection lost: {e}"))),
        Some(Ok(WsMessage::Text(t))) => {
            let now = Instant::now();
            shared.step(now, |m| m.receive_text(now, t.as_str()));
            kept.0 = Some(Bytes::from(t));
            return Ok(());
        }
        Some(Ok(WsMessage::Binary(b))) => {
            let frame = Frame::Binary(b.to_vec());
            kept.0 = Some(b);
            frame
        }
        Some(Ok(WsMessage::Close(f))) => {
            let (code, why) = f
                .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                .unwrap_or((1005, String::new()));
            // phoenix.js reconnects unless the close was clean (code 1000).
            return Err(SessionEnd::new(
                format!("closed by server: {code} {why}"),
                code != 1000,
                CloseWith::Reply,
            ));
        }
        Some(Ok(_)) => return Ok(()),
    };
    let now = Instant::now();
    shared.step(now, |m| m.receive_uncached(now, frame));
    Ok(())
}

/// Writes every frame the machine queued, then flushes (called when some frame is queued).
async fn write<S>(
    shared: &Shared,
    cfg: &ClientConfig,
    ws: &mut WebSocketStream<S>,
) -> Result<(), SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(frame) = shared.step(Instant::now(), Machine::poll_transmit) {
        let ws_msg = match frame {
            Frame::Text(t) => WsMessage::text(t),
            Frame::Binary(b) => WsMessage::binary(b),
        };
        if let Err(e) = ws.feed(ws_msg).await {
            return Err(SessionEnd::lost(format!("write failed: {e}")));
        }
    }
    match timeout(cfg.timeout, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SessionEnd::lost(format!("write failed: {e}"))),
        Err(_) => Err(SessionEnd::lost("write timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;
    use crate::client::Backoff;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn keys_are_one_generators_draws_in_turn() {
        for seed in [0, 1, 7, u64::MAX] {
            let mut one = ChaCha8Rng::seed_from_u64(seed);
            let mut keys = Keys::new(seed);
            // 40 draws cross several of the generator's 64-word blocks
            for n in 0..40 {
                let mut key = [0u8; 16];
                one.fill_bytes(&mut key);
                assert_eq!(keys.next(), key, "seed {seed}, key {n}");
            }
        }
    }

    #[test]
    fn backoff_schedules_are_phoenix_js() {
        let r = Backoff::reconnect();
        assert_eq!(r.delay(1).as_millis(), 10);
        assert_eq!(r.delay(9).as_millis(), 2000);
        assert_eq!(r.delay(10).as_millis(), 5000);
        assert_eq!(r.delay(100).as_millis(), 5000);
        let j = Backoff::rejoin();
        assert_eq!(j.delay(1).as_millis(), 1000);
        assert_eq!(j.delay(3).as_millis(), 5000);
        assert_eq!(j.delay(4).as_millis(), 10_000);
        assert_eq!(Backoff(vec![]).delay(3), std::time::Duration::ZERO);
    }
}
