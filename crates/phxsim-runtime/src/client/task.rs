//! The client's task: the I/O glue around the [`Machine`]. One loop over the WebSocket, the
//! handle's commands and the machine's earliest deadline; every input goes to the machine with
//! the current instant, and whatever frames it queues are written out.

use super::frame_aligned::FrameAligned;
use super::machine::{CloseWith, Machine, STOPPED, SessionEnd};
use super::upgrade::upgrade;
use super::{ClientConfig, Command, Shared};
use crate::server::percent_encode;
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
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
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
) -> Result<WebSocketStream<FrameAligned<S>>, String>
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
    upgrade(stream, request, ws_cfg, cfg.release_read_buffer).await
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
    mut ws: WebSocketStream<FrameAligned<S>>,
) -> impl Future<Output = SessionEnd> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    async move { serve(shared, cfg, &mut ws).await }
}

/// [`session`]'s loop over a stream it borrows.
async fn serve<S>(
    shared: &Shared,
    cfg: &ClientConfig,
    ws: &mut WebSocketStream<FrameAligned<S>>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
        let mut large = false;
        let step = tokio::select! {
            biased;
            m = ws.next() => incoming(shared, m).map(|len| large = len > cfg.read_buffer_size),
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
        if large
            && cfg.release_read_buffer
            && ws.get_ref().at_frame_start()
            && let Err(end) = Box::pin(renew(cfg, ws)).await
        {
            break end;
        }
    };
    Box::pin(close(cfg, ws, &end)).await;
    end
}

/// Builds the WebSocket afresh around its stream, between two messages, so that the read
/// buffer tungstenite grew for a frame longer than `cfg.read_buffer_size` (and would keep for
/// the connection's life) is freed; the new one starts at that size again. Done after every
/// such message, so an idle connection holds just that much. tungstenite holds no byte of
/// the next frame ([`FrameAligned`]), and a pong it still owes is written first: the new
/// WebSocket would not know of it. Nothing else of the old one lives on: a message was just read whole (no
/// fragment is pending), and every frame the client queued was flushed after its step.
async fn renew<S>(
    cfg: &ClientConfig,
    ws: &mut WebSocketStream<FrameAligned<S>>,
) -> Result<(), SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    flush(cfg, ws).await?;
    let config = *ws.get_config();
    let stream = ws.get_mut().take();
    *ws = WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await;
    Ok(())
}

/// Ends the connection as `end` says: a close frame, the echo of the server's, or nothing.
async fn close<S>(cfg: &ClientConfig, ws: &mut WebSocketStream<FrameAligned<S>>, end: &SessionEnd)
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

/// A WebSocket message: a data frame goes to the machine (its length is returned; 0 for any
/// other frame), a close or an error ends the session.
fn incoming(shared: &Shared, m: Option<Result<WsMessage, WsError>>) -> Result<usize, SessionEnd> {
    let frame = match m {
        None => return Err(SessionEnd::lost("connection lost")),
        Some(Err(e)) => return Err(SessionEnd::lost(format!("connection lost: {e}"))),
        Some(Ok(WsMessage::Text(t))) => {
            let now = Instant::now();
            shared.step(now, |m| m.receive_text(now, t.as_str()));
            return Ok(t.len());
        }
        Some(Ok(WsMessage::Binary(b))) => Frame::Binary(b.to_vec()),
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
        Some(Ok(_)) => return Ok(0),
    };
    let len = match &frame {
        Frame::Binary(b) => b.len(),
        Frame::Text(t) => t.len(),
    };
    let now = Instant::now();
    shared.step(now, |m| m.receive_uncached(now, frame));
    Ok(len)
}

/// Writes every frame the machine queued, then flushes (called when some frame is queued).
async fn write<S>(
    shared: &Shared,
    cfg: &ClientConfig,
    ws: &mut WebSocketStream<FrameAligned<S>>,
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
    flush(cfg, ws).await
}

/// Flushes what tungstenite holds to write, within the client's timeout.
async fn flush<S>(
    cfg: &ClientConfig,
    ws: &mut WebSocketStream<FrameAligned<S>>,
) -> Result<(), SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout(cfg.timeout, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SessionEnd::lost(format!("write failed: {e}"))),
        Err(_) => Err(SessionEnd::lost("write timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::{FrameAligned, Keys, WebSocketStream, renew};
    use crate::client::Backoff;
    use crate::client::ClientConfig;
    use crate::client::upgrade::{tests::request, upgrade};
    use futures_util::{SinkExt, StreamExt};
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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

    /// A server that sends large and small messages and a ping in one write, to a client that
    /// renews its WebSocket after every large message, as a simulated browser does: what the
    /// client reads, and whether the server got its pong.
    async fn renewing_client(aligned: bool) -> (Vec<String>, bool) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let big = |c: char| c.to_string().repeat(1500);
        let sent = vec![big('x'), "a".into(), "b".into(), big('y'), "c".into()];
        let to_send = sent.clone();
        let server = tokio::spawn(async move {
            let mut ws = tokio_tungstenite::accept_async(server)
                .await
                .expect("accepted");
            for (i, text) in to_send.into_iter().enumerate() {
                if i == 3 {
                    ws.feed(Message::Ping("p".into())).await.unwrap();
                }
                ws.feed(Message::text(text)).await.unwrap();
            }
            ws.flush().await.unwrap();
            // the pong, unless the client lost it (then the stream just ends)
            matches!(ws.next().await, Some(Ok(Message::Pong(_))))
        });
        let mut cfg = ClientConfig::new("ws://example/socket/websocket", "u", "t");
        cfg.release_read_buffer = true;
        cfg.read_buffer_size = 256;
        let ws_cfg = WebSocketConfig::default().read_buffer_size(cfg.read_buffer_size);
        let mut ws: WebSocketStream<FrameAligned<_>> = upgrade(client, request(), ws_cfg, aligned)
            .await
            .expect("upgraded");
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let next = tokio::time::timeout(std::time::Duration::from_secs(1), ws.next()).await;
            let t = match next {
                Ok(Some(Ok(Message::Text(t)))) => t,
                // tungstenite queued the pong; the session loop passes pings over too
                Ok(Some(Ok(Message::Ping(_)))) => continue,
                _ => break,
            };
            let large = t.len() > cfg.read_buffer_size;
            got.push(t.to_string());
            if large {
                // an unaligned stream is renewed too here, to show what alignment saves
                renew(&cfg, &mut ws).await.expect("renewed");
            }
        }
        drop(ws);
        (got, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_renewed_websocket_reads_on_and_answers_pings() {
        let (got, ponged) = renewing_client(true).await;
        let big = |c: char| c.to_string().repeat(1500);
        assert_eq!(
            got,
            vec![big('x'), "a".into(), "b".into(), big('y'), "c".into()]
        );
        assert!(ponged, "the ping read just before a renewal was answered");
    }

    /// Why the stream is aligned: renewing a WebSocket that read ahead loses the frames it held.
    #[tokio::test]
    async fn renewing_an_unaligned_websocket_loses_what_it_read_ahead() {
        let (got, _) = renewing_client(false).await;
        assert_eq!(got.len(), 1, "{got:?}");
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
