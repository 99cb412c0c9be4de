//! The client's task: the I/O glue around the [`Machine`]. One loop over the WebSocket, the
//! handle's commands and the machine's earliest deadline; every input goes to the machine with
//! the current instant, and whatever frames it queues are written out.

use super::lean_ws::{LeanWebSocket, Ready};
use super::machine::{CloseWith, Machine, STOPPED, SessionEnd};
use super::upgrade::{tungstenite, upgrade};
use super::{ClientConfig, Command, Shared};
use crate::prefixed::Prefixed;
use crate::server::percent_encode;
use futures_util::{SinkExt, StreamExt};
use phxsim_wire::{Frame, Serializer};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::future::{Future, poll_fn};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
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
            Ok(Ok((stream, tail))) => {
                attempt = 0;
                // each kind of session boxed on its own, so that a simulated browser's box
                // is the lean one's size
                let end = if cfg.lean_websocket {
                    let mask_seed = keys.mask_seed();
                    Box::pin(lean_session(&shared, &cfg, stream, tail, mask_seed)).await
                } else {
                    Box::pin(tungstenite_session(&shared, &cfg, stream, tail)).await
                };
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

/// Opens a stream and upgrades it: the stream and what was read past the upgrade response.
async fn open<C, F, S>(
    cfg: &ClientConfig,
    keys: &mut Keys,
    connect: &mut C,
) -> Result<(S, Vec<u8>), String>
where
    C: FnMut() -> F,
    F: Future<Output = io::Result<S>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stream = connect().await.map_err(|e| format!("connect: {e}"))?;
    let request = request(cfg, keys.next())?;
    upgrade(stream, request).await
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

    /// The seed of the masks of the connection whose key was drawn last (its number mixed
    /// into the client's seed), for [`LeanWebSocket`].
    fn mask_seed(&self) -> u64 {
        self.seed ^ self.drawn.rotate_left(32)
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

/// tungstenite's WebSocket for a real client, over an upgraded stream.
///
/// Not an `async fn`: its future would keep the arguments and, beside them, the locals the
/// body binds them to, so the stream took room twice for the connection's life. A block holds
/// what it captures once.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn tungstenite_session<'a, S>(
    shared: &'a Shared,
    cfg: &'a ClientConfig,
    stream: S,
    tail: Vec<u8>,
) -> impl Future<Output = SessionEnd> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    async move {
        let ws_cfg = WebSocketConfig::default()
            .read_buffer_size(cfg.read_buffer_size)
            .max_message_size(Some(cfg.max_frame_len))
            .max_frame_size(Some(cfg.max_frame_len));
        let mut ws = tungstenite(stream, tail, ws_cfg).await;
        serve(shared, cfg, &mut ws).await
    }
}

/// The lean WebSocket of a simulated browser ([`LeanWebSocket`]), over an upgraded stream; a
/// block, as [`tungstenite_session`] is.
#[allow(clippy::manual_async_fn)] // on purpose: see tungstenite_session
fn lean_session<'a, S>(
    shared: &'a Shared,
    cfg: &'a ClientConfig,
    stream: S,
    tail: Vec<u8>,
    mask_seed: u64,
) -> impl Future<Output = SessionEnd> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    async move {
        let mut ws = LeanWebSocket::new(
            stream,
            tail,
            cfg.read_buffer_size,
            cfg.max_frame_len,
            mask_seed,
        );
        serve(shared, cfg, &mut ws).await
    }
}

/// What the session loop needs of a WebSocket: tungstenite's for a real client, the lean one
/// for a simulated browser. One loop for both, so that both are polled in the same order.
trait Socket {
    /// What one poll for the next message found (owned, so that the socket is free again
    /// when it is handled).
    type Arrival;
    /// Polls for the next message; cancel-safe.
    fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<Self::Arrival>;
    /// Hands a data message to the machine; a close or an error ends the session.
    fn deliver(&mut self, shared: &Shared, arrival: Self::Arrival) -> Result<(), SessionEnd>;
    /// Queues a frame (writing only what is queued past the write buffer).
    async fn feed(&mut self, frame: Frame) -> Result<(), WsError>;
    /// Writes everything queued, and anything owed to the server (a pong, a close echo).
    async fn flush(&mut self) -> Result<(), WsError>;
    /// Sends a close frame with `frame`.
    async fn close(&mut self, frame: CloseFrame) -> Result<(), WsError>;
    /// Whether bytes that arrive now would begin a frame (nothing of an earlier frame or
    /// message buffered) and the socket owes the server nothing: what an
    /// [`Absorber`](super::Absorber) needs to take them instead. False unless known.
    fn idle(&self) -> bool {
        false
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket for WebSocketStream<Prefixed<S>> {
    type Arrival = Option<Result<WsMessage, WsError>>;

    fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<Self::Arrival> {
        self.poll_next_unpin(cx)
    }

    fn deliver(&mut self, shared: &Shared, arrival: Self::Arrival) -> Result<(), SessionEnd> {
        let frame = match arrival {
            None => return Err(SessionEnd::lost("connection lost")),
            Some(Err(e)) => return Err(lost(&e)),
            Some(Ok(WsMessage::Text(t))) => {
                let now = Instant::now();
                shared.step(now, |m| m.receive_text(now, t.as_str()));
                return Ok(());
            }
            Some(Ok(WsMessage::Binary(b))) => Frame::Binary(b.to_vec()),
            Some(Ok(WsMessage::Close(f))) => return Err(closed_by_server(f)),
            Some(Ok(_)) => return Ok(()),
        };
        let now = Instant::now();
        shared.step(now, |m| m.receive_uncached(now, frame));
        Ok(())
    }

    async fn feed(&mut self, frame: Frame) -> Result<(), WsError> {
        let msg = match frame {
            Frame::Text(t) => WsMessage::text(t),
            Frame::Binary(b) => WsMessage::binary(b),
        };
        SinkExt::feed(self, msg).await
    }

    async fn flush(&mut self) -> Result<(), WsError> {
        SinkExt::flush(self).await
    }

    async fn close(&mut self, frame: CloseFrame) -> Result<(), WsError> {
        WebSocketStream::close(self, Some(frame)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket for LeanWebSocket<S> {
    type Arrival = Result<Ready, WsError>;

    fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<Self::Arrival> {
        self.poll_next(cx)
    }

    fn deliver(&mut self, shared: &Shared, arrival: Self::Arrival) -> Result<(), SessionEnd> {
        let now = Instant::now();
        match arrival.map_err(|e| lost(&e))? {
            Ready::Text => {
                // borrowed from the read buffer: no copy
                let text = self.text().map_err(|e| lost(&e))?;
                shared.step(now, |m| m.receive_text(now, text));
            }
            Ready::Binary => {
                let frame = Frame::Binary(self.payload().to_vec());
                shared.step(now, |m| m.receive_uncached(now, frame));
            }
            Ready::Close(f) => return Err(closed_by_server(f)),
            Ready::Ping | Ready::Pong => {}
        }
        Ok(())
    }

    async fn feed(&mut self, frame: Frame) -> Result<(), WsError> {
        match &frame {
            Frame::Text(t) => LeanWebSocket::feed(self, true, t.as_bytes()).await,
            Frame::Binary(b) => LeanWebSocket::feed(self, false, b).await,
        }
    }

    async fn flush(&mut self) -> Result<(), WsError> {
        LeanWebSocket::flush(self).await
    }

    async fn close(&mut self, frame: CloseFrame) -> Result<(), WsError> {
        self.queue_close(Some(frame))?;
        LeanWebSocket::flush(self).await
    }

    fn idle(&self) -> bool {
        LeanWebSocket::idle(self)
    }
}

/// The end of a session that lost its connection to `e`.
fn lost(e: &WsError) -> SessionEnd {
    SessionEnd::lost(format!("connection lost: {e}"))
}

/// The end of a session the server closed with `f` (code and reason; 1005 without a body).
fn closed_by_server(f: Option<CloseFrame>) -> SessionEnd {
    let (code, why) = f
        .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
        .unwrap_or((1005, String::new()));
    // phoenix.js reconnects unless the close was clean (code 1000).
    SessionEnd::new(
        format!("closed by server: {code} {why}"),
        code != 1000,
        CloseWith::Reply,
    )
}

/// One open connection's loop, until it ends.
async fn serve<W: Socket>(shared: &Shared, cfg: &ClientConfig, ws: &mut W) -> SessionEnd {
    let cmds = &shared.commands;
    shared.step(Instant::now(), |m| m.connected(Instant::now()));
    // One timer for the session, moved to each new deadline: a fresh `sleep_until` per pass
    // cost a timer-wheel insert and removal for every frame received.
    let timer = sleep_until(shared.read(Machine::next_deadline));
    tokio::pin!(timer);
    let end = loop {
        let due = shared.read(Machine::next_deadline);
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        let step = tokio::select! {
            biased;
            m = poll_fn(|cx| {
                let arrival = ws.poll_arrival(cx);
                // waiting with nothing buffered: what arrives next may be absorbed
                if arrival.is_pending() && ws.idle() {
                    shared.read_idle.store(true, Ordering::Relaxed);
                }
                arrival
            }) => ws.deliver(shared, m),
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
        // running again: the next poll of the socket says whether it waits idle
        shared.read_idle.store(false, Ordering::Relaxed);
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
async fn close<W: Socket>(cfg: &ClientConfig, ws: &mut W, end: &SessionEnd) {
    match end.close {
        CloseWith::Nothing => {}
        CloseWith::Reply => {
            // the echo of the server's close frame was queued when it was read
            let _ = timeout(cfg.timeout, ws.flush()).await;
        }
        CloseWith::Normal => {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: end.reason.clone().into(),
            };
            let _ = timeout(cfg.timeout, ws.close(frame)).await;
        }
    }
}

/// Writes every frame the machine queued, then flushes (called when some frame is queued).
async fn write<W: Socket>(
    shared: &Shared,
    cfg: &ClientConfig,
    ws: &mut W,
) -> Result<(), SessionEnd> {
    while let Some(frame) = shared.step(Instant::now(), Machine::poll_transmit) {
        if let Err(e) = ws.feed(frame).await {
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
