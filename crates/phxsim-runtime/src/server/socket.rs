//! One WebSocket connection: the upgrade, then the socket's read loop, its channels and their
//! presence diffs, until the connection ends; then every presence of the socket leaves.
//!
//! Rules reproduced (phoenix-protocol.md §1.6–1.9, reference-channel.md):
//! - heartbeats on topic `phoenix` need no join and reply with a null join_ref;
//! - a join or push to a topic with no route, or not joined, gets `unmatched topic` (join_ref
//!   null); a `phx_leave` on a topic not joined is answered ok anyway;
//! - a duplicate join closes the old channel first (its presence leaves), replies to the new
//!   join, then sends `phx_close` for the old join_ref;
//! - a push or leave whose join_ref is neither null nor the current one is dropped silently
//!   (Phoenix 1.8.12 rules); with [`PhoenixRules::V1_7_21`] such a push is answered by the
//!   current channel, with its join_ref (as every reply to a push is);
//! - any frame that does not decode ends the whole connection, never just a channel.

use super::fastlane;
use super::handshake::{self, ConnectInfo, Refusal};
use super::outbox::{self, Outbox, WireFrame};
use super::read_gate::ReadGate;
use super::room::{self, Action, reason};
use super::topic_map::TopicMap;
use super::{
    ConnectionEnd, PhoenixRules, Server, ServerEvent, ServerMutation, close_code, plain_get,
};
use crate::node::{Diffs, OwnerLease, PresenceUpdate, TopicState};
use crate::prefixed::Prefixed;
use crate::state_frame;
use futures_util::{SinkExt, StreamExt};
use phxsim_shard::presence::meta_with_refs;
use phxsim_wire::message::{
    HEARTBEAT, PHOENIX_TOPIC, PHX_CLOSE, PHX_ERROR, PHX_JOIN, PHX_LEAVE, PHX_REPLY, PRESENCE_DIFF,
    PRESENCE_STATE,
};
use phxsim_wire::{Codec, DecodeError, Frame, Message, Payload};
use serde_json::{Map, Value as Json};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message as WsMessage,
    error::{CapacityError, ProtocolError},
};

/// How long a closing connection waits for the peer's half of the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One joined channel incarnation.
struct Channel {
    /// The join_ref the client sent with its join (null for V1): `phx_close`/`phx_error` carry
    /// it, and pushes with another non-null join_ref are stale.
    join_ref: Option<String>,
    /// `join_ref || ref`: what Phoenix's channel tags its own pushes (`presence_state`) with.
    push_join_ref: Option<String>,
    /// The node-side owner of this channel's presence (Phoenix: the channel pid). Dropping
    /// the channel, on any path, makes the node untrack it.
    lease: OwnerLease,
    /// This node's diffs of the topic; dropping it unsubscribes.
    diffs: Diffs,
}

/// The socket's setup: the plain-GET screen (1.7.21), the upgrade, and the session it opens,
/// or how the connection ended before it had one. `conn` is numbered at the first poll, as the
/// connection task always numbered it, so that connections keep their numbers (and their
/// presences their owners) whichever way their tasks are spawned.
///
/// The caller boxes this future and lets it go once the socket is open: it holds the stream
/// and the handshake's locals, which a session does not need (kept inline in the connection
/// task, they cost 2.7 KB per socket for its whole life). The screen and the upgrade are boxed
/// too, so that only the stage under way takes room.
pub(super) async fn open<S>(server: Server, stream: S) -> (u64, Result<Running, ConnectionEnd>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = server.inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let opened = accept(&server, conn, stream).await;
    (
        conn,
        opened.map(|session| Box::pin(session.run()) as Running),
    )
}

/// An open socket's session loop, boxed where it is made: the session is handed on inside
/// its box, so no caller keeps room for it (a future keeps room for a value it once held,
/// moved out or not).
pub(super) type Running = Pin<Box<dyn Future<Output = ConnectionEnd> + Send>>;

async fn accept<S>(
    server: &Server,
    conn: u64,
    stream: S,
) -> Result<Session<Prefixed<S>>, ConnectionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = server.config();
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_size.max(256))
        .max_message_size(Some(cfg.max_frame_len))
        .max_frame_size(Some(cfg.max_frame_len));
    let v1_7_21 = cfg.phoenix == PhoenixRules::V1_7_21;
    // 1.7.21 answers a plain GET itself; 1.8 leaves it to the WebSocket handshake.
    let stream = if v1_7_21 {
        match timeout(cfg.handshake_timeout, Box::pin(plain_get::screen(stream))).await {
            Ok(Ok(Ok(prefixed))) => prefixed,
            Ok(Ok(Err((status, body)))) => {
                return Err(ConnectionEnd::Refused {
                    status,
                    reason: format!("not a WebSocket upgrade: {body}"),
                });
            }
            Ok(Err(e)) => return Err(ConnectionEnd::HandshakeFailed(e.to_string())),
            Err(_) => return Err(ConnectionEnd::HandshakeFailed("handshake timed out".into())),
        }
    } else {
        Prefixed::new(Vec::new(), stream)
    };
    let stream = ReadGate::new(stream);
    let mut decided: Option<Result<ConnectInfo, Refusal>> = None;
    // The error type is tungstenite's callback contract, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let uri = req.uri();
        let decision = handshake::decide(uri.path(), uri.query());
        let refused = decision.as_ref().err().map(Refusal::status);
        decided = Some(decision);
        match refused {
            None => Ok(resp),
            Some(status) => Err(refusal_response(status)),
        }
    };
    let accepted = timeout(
        cfg.handshake_timeout,
        Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(ws_cfg),
        )),
    )
    .await;
    let (ws, info) = match (accepted, decided) {
        (Ok(Ok(ws)), Some(Ok(info))) => (ws, info),
        (_, Some(Err(refusal))) => {
            return Err(ConnectionEnd::Refused {
                status: refusal.status(),
                reason: refusal.to_string(),
            });
        }
        (Ok(Err(e)), _) => return Err(ConnectionEnd::HandshakeFailed(e.to_string())),
        (Err(_), _) => return Err(ConnectionEnd::HandshakeFailed("handshake timed out".into())),
        (Ok(Ok(_)), None) => {
            return Err(ConnectionEnd::HandshakeFailed(
                "upgrade accepted without a decision".into(),
            ));
        }
    };
    // The connect params are read by no one after the decision: not kept with the session.
    let ConnectInfo {
        serializer,
        user_id,
        params: _,
    } = info;
    tracing::debug!(conn, user_id = %user_id, serializer = ?serializer, "socket connected");
    server.emit(|| ServerEvent::Connected {
        conn,
        user_id: user_id.clone(),
        serializer,
    });
    Ok(Session {
        server: server.clone(),
        conn,
        codec: Codec::server(serializer)
            .with_max_frame_len(cfg.max_frame_len)
            .with_numeric_refs(v1_7_21),
        user_id,
        ws,
        channels: TopicMap::default(),
        next_channel: 1,
        poll_from: 0,
        last_in: Instant::now(),
        outbox: Outbox::new(cfg.max_outbound_bytes),
        last_out: Instant::now(),
        held: VecDeque::new(),
        held_bytes: 0,
        theirs_flushed: false,
        idle: Box::pin(tokio::time::sleep(cfg.idle_timeout)),
        idle_armed: None,
        stall: Box::pin(tokio::time::sleep(cfg.write_timeout)),
    })
}

/// HTTP refusal with an empty body, as Phoenix sends it.
fn refusal_response(status: u16) -> ErrorResponse {
    let mut resp = ErrorResponse::new(None);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// An open socket: its stream, channels and timers, served by [`Session::run`].
pub(super) struct Session<S> {
    server: Server,
    conn: u64,
    codec: Codec,
    user_id: String,
    /// Over a [`ReadGate`]: the loop asks for a client frame only when one may have come.
    ws: WebSocketStream<ReadGate<S>>,
    channels: TopicMap<Channel>,
    next_channel: u64,
    /// Where the next scan of channel subscriptions starts, so no topic starves the others.
    poll_from: usize,
    last_in: Instant,
    /// Frames on their way out, written by the loop as the client reads them.
    outbox: Outbox,
    /// When the outbox last moved (or was empty); a stuck one past `write_timeout` drops.
    last_out: Instant,
    /// Diffs that arrived while a write was stalled, and their bytes.
    held: VecDeque<Held>,
    held_bytes: usize,
    /// Whether tungstenite has written out all of its own frames (pongs, a close echo) since
    /// the last time it read: only a read queues one, so until the next read a flush of it
    /// would write nothing, and a socket woken for a diff skips it.
    theirs_flushed: bool,
    /// The idle and write timeouts: one timer each for the socket's life, moved on only when
    /// they fire early (see [`expired`]); a fresh timer per wake-up cost two timer-wheel
    /// updates per diff per socket.
    idle: Pin<Box<Sleep>>,
    /// The idle timer's deadline and the waker it holds, once polled: until that instant it
    /// cannot fire, so a wake-up for a diff need not poll it again (see [`IdleArmed`]).
    idle_armed: Option<IdleArmed>,
    stall: Pin<Box<Sleep>>,
}

/// The idle timer, registered with a waker, firing at `at` at the earliest. A socket woken
/// for a diff skips the timer when nothing changed (the same waker, `at` still ahead): a
/// timer's poll per diff per socket touched its entry for nothing.
struct IdleArmed {
    at: Instant,
    waker: Waker,
}

/// [`expired`] for the idle timer, without polling it while it is armed for `cx`'s waker and
/// its deadline is ahead: it cannot have fired, and it will wake that waker when it does.
fn idle_expired(
    timer: &mut Pin<Box<Sleep>>,
    armed: &mut Option<IdleArmed>,
    deadline: Instant,
    now: Instant,
    cx: &mut Context<'_>,
) -> bool {
    if let Some(a) = armed
        && now < a.at
        && a.waker.will_wake(cx.waker())
    {
        return false;
    }
    if expired(timer, deadline, cx) {
        *armed = None;
        return true;
    }
    *armed = Some(IdleArmed {
        at: timer.deadline(),
        waker: cx.waker().clone(),
    });
    false
}

/// Whether `deadline` has passed, by `timer`, which may have been set for an earlier one:
/// then it is set again for `deadline` (and polled, so that it wakes the task).
fn expired(timer: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    if timer.as_mut().poll(cx).is_pending() {
        return false;
    }
    if Instant::now() >= deadline {
        return true;
    }
    timer.as_mut().reset(deadline);
    timer.as_mut().poll(cx).is_ready()
}

/// A diff held while a write was stalled.
struct Held {
    topic: Arc<str>,
    update: Option<PresenceUpdate>,
    /// Its frame's bytes, counted against the socket's limit until it is queued.
    bytes: usize,
}

/// What woke the socket up.
enum Wake {
    Incoming(Option<Result<WsMessage, WsError>>),
    Diff(Arc<str>, Option<PresenceUpdate>),
    Idle,
    /// A diff that arrived while a write was stalled: to hold.
    Hold(Arc<str>, Option<PresenceUpdate>),
    /// A held diff, now to send.
    Held(Held),
    /// Writing to the stream failed.
    WriteFailed(String),
    /// The outbox made no progress for `write_timeout`.
    Stalled,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Serves the socket until it ends. The caller boxes this future: it lives as long as
    /// the socket. What it awaits in place is kept small (the wait for a wake-up, a diff's
    /// write); a client frame's handling and the end of the connection are boxed, since,
    /// inline, their futures (3 KB for a join, and the close handshake) would be room that
    /// every socket keeps for its whole life.
    #[allow(clippy::manual_async_fn)] // on purpose: see the comment inside
    pub(super) fn run(mut self) -> impl Future<Output = ConnectionEnd> + Send + 'static {
        // Not an `async fn`: its future keeps an argument's room and, beside it, the room of
        // the local the body binds it to, so the session (about 700 bytes) took room twice.
        // A block holds what it captures once.
        async move { self.serve().await }
    }

    async fn serve(&mut self) -> ConnectionEnd {
        let end = loop {
            let wake = self.next_wake().await;
            let step = match wake {
                Wake::Incoming(m) => {
                    // Every socket is a process of its own in Phoenix: sockets whose frames
                    // arrive together take their turns with the tracker interleaved. Without
                    // this yield a current-thread scheduler lets one socket run its whole
                    // exchange with the node (subscribe, reply, track) before the next socket
                    // that woke with it reads its frame.
                    tokio::task::yield_now().await;
                    Box::pin(self.incoming(m)).await
                }
                Wake::Diff(topic, Some(update)) => {
                    let sent = self.send_diff(&topic, &update);
                    match sent {
                        Ok(()) => self.send_ready_diffs(&topic),
                        Err(end) => Err(end),
                    }
                }
                Wake::Hold(topic, update) => self.hold(topic, update),
                Wake::Held(Held {
                    topic,
                    update: Some(update),
                    bytes,
                }) => {
                    self.held_bytes -= bytes;
                    self.send_diff(&topic, &update)
                }
                Wake::Diff(_, None) | Wake::Held(Held { update: None, .. }) => {
                    Err(self.server_close(close_code::NODE_STOPPED, "presence node stopped".into()))
                }
                Wake::Idle => Err(self.server_close(
                    close_code::IDLE,
                    format!(
                        "idle timeout: nothing received for {} ms",
                        self.server.config().idle_timeout.as_millis()
                    ),
                )),
                Wake::WriteFailed(e) => Err(ConnectionEnd::Dropped(format!("write failed: {e}"))),
                Wake::Stalled => Err(ConnectionEnd::Dropped("write timed out".into())),
            };
            // What this step queued goes out as one write (see `Outbox::seal`).
            let vectored = self.ws.get_ref().is_write_vectored();
            self.outbox.seal(vectored);
            if let Err(end) = step {
                break end;
            }
        };
        Box::pin(self.finish(end)).await
    }

    /// Writes what the outbox holds as far as the stream takes it, and waits for the next
    /// thing to do: a frame from the client, a diff, the idle timeout, or a write problem.
    ///
    /// While a write cannot complete, the socket takes no new work, as a Phoenix socket
    /// process blocked in a send (and as this server always did): it reads no frame from the
    /// client and handles no diff. Diffs that arrive meanwhile are only held, in order, and
    /// counted against the socket's byte limit, so a client that stops reading is cut off
    /// instead of growing a queue. Client frames are read only between two of our frames:
    /// tungstenite may answer a ping or a close on its own while reading, and its frame must
    /// not land inside ours.
    async fn next_wake(&mut self) -> Wake {
        let cfg = self.server.config();
        let (idle_timeout, write_timeout) = (cfg.idle_timeout, cfg.write_timeout);
        let Session {
            ws,
            channels,
            poll_from,
            outbox,
            last_in,
            last_out,
            held,
            theirs_flushed,
            idle,
            idle_armed,
            stall,
            ..
        } = self;
        poll_fn(|cx| {
            // Time stands still within one poll in the simulator (and moves by microseconds
            // on a real clock): read it once.
            let now = Instant::now();
            if !outbox.is_empty() {
                // tungstenite's own frames (pongs, a close echo) go first, never inside ours.
                let theirs_done = outbox.mid_frame()
                    || *theirs_flushed
                    || match ws.poll_flush_unpin(cx) {
                        Poll::Ready(Ok(())) => {
                            *theirs_flushed = true;
                            true
                        }
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Wake::WriteFailed(e.to_string()));
                        }
                        Poll::Pending => false,
                    };
                if theirs_done {
                    let (progressed, res) = outbox.poll_write(ws.get_mut(), cx);
                    if progressed {
                        *last_out = now;
                    }
                    if let Poll::Ready(Err(e)) = res {
                        return Poll::Ready(Wake::WriteFailed(e.to_string()));
                    }
                }
                if !outbox.is_empty() {
                    if let Poll::Ready((topic, update)) = poll_update(channels, poll_from, cx) {
                        return Poll::Ready(Wake::Hold(topic, update));
                    }
                    if expired(stall, *last_out + write_timeout, cx) {
                        return Poll::Ready(Wake::Stalled);
                    }
                    return Poll::Pending;
                }
            }
            *last_out = now;
            if ws.get_ref().may_read() {
                // A read may queue a frame of tungstenite's own (a pong, a close echo).
                *theirs_flushed = false;
                if let Poll::Ready(m) = ws.poll_next_unpin(cx) {
                    return Poll::Ready(Wake::Incoming(m));
                }
            }
            // Diffs held during a stalled write come first, in the order they arrived.
            if let Some(h) = held.pop_front() {
                return Poll::Ready(Wake::Held(h));
            }
            if let Poll::Ready((topic, update)) = poll_update(channels, poll_from, cx) {
                return Poll::Ready(Wake::Diff(topic, update));
            }
            if idle_expired(idle, idle_armed, *last_in + idle_timeout, now, cx) {
                return Poll::Ready(Wake::Idle);
            }
            Poll::Pending
        })
        .await
    }

    /// On a real socket, the topic's diffs already waiting go out with the one just sent, in
    /// one write: in a join storm every socket has thousands queued, and one write each would
    /// cost a system call per diff per socket. (A stream that writes one buffer at a time, as
    /// the simulator's, keeps one diff per step, so simulated runs are unchanged.)
    fn send_ready_diffs(&mut self, topic: &str) -> Result<(), ConnectionEnd> {
        const BATCH: usize = 64;
        if !self.ws.get_ref().is_write_vectored() {
            return Ok(());
        }
        for _ in 1..BATCH {
            let Some(Ok(update)) = self.channels.get_mut(topic).map(|ch| ch.diffs.try_recv())
            else {
                return Ok(());
            };
            self.send_diff(topic, &update)?;
        }
        Ok(())
    }

    /// Keeps a diff that arrived while a write was stalled, counting its frame's bytes (framed
    /// once for every socket by the fastlane) against the socket's limit.
    fn hold(
        &mut self,
        topic: Arc<str>,
        update: Option<PresenceUpdate>,
    ) -> Result<(), ConnectionEnd> {
        let bytes = match &update {
            Some(update) => self.shared_diff(&topic, update)?.wire.len(),
            None => 0,
        };
        self.admit(bytes)?;
        self.held_bytes += bytes;
        self.held.push_back(Held {
            topic,
            update,
            bytes,
        });
        Ok(())
    }

    /// Writes out the whole outbox, for the end of a connection.
    async fn drain(&mut self) -> Result<(), String> {
        let Session { ws, outbox, .. } = self;
        poll_fn(|cx| {
            if !outbox.mid_frame() {
                match ws.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            outbox
                .poll_write(ws.get_mut(), cx)
                .1
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Ends the connection: the close frame (if the server closes), the presences, then the
    /// rest of the close handshake.
    async fn finish(&mut self, end: ConnectionEnd) -> ConnectionEnd {
        if let ConnectionEnd::ServerClosed { code, reason } = &end {
            // What was queued before the close goes first, within the grace period (not for
            // a client that stopped reading). The close frame cannot go inside a frame.
            if !self.outbox.is_empty() && *code != close_code::OUTBOX_FULL {
                let _ = timeout(CLOSE_GRACE, self.drain()).await;
            }
            if !self.outbox.mid_frame() {
                let frame = CloseFrame {
                    code: CloseCode::from(*code),
                    reason: close_reason(reason).into(),
                };
                let _ = timeout(CLOSE_GRACE, self.ws.close(Some(frame))).await;
            }
        }
        // Nothing more will be written: free the queue now.
        self.outbox = Outbox::new(0);
        // Every channel of the socket exits with it, and the tracker drops their presences.
        let channels = std::mem::take(&mut self.channels);
        if self
            .server
            .mutated(ServerMutation::KeepPresencesOnDisconnect)
        {
            // The planted ghost: the leases are leaked, so the node never hears of the exit.
            for ch in channels.into_values() {
                std::mem::forget(ch.lease);
            }
        } else {
            for ch in channels.into_values() {
                drop(ch.diffs);
                let _ = self.server.node().untrack_owner(ch.lease.owner()).await;
            }
        }
        match &end {
            ConnectionEnd::ClientClosed { .. } => {
                // Answer the client's close frame. tungstenite queued the echo when it read
                // the frame and sends it on the next flush; `close` would be refused here
                // (the peer has already closed), so the reply would never leave.
                let _ = timeout(CLOSE_GRACE, self.ws.flush()).await;
            }
            ConnectionEnd::ServerClosed { .. } => {
                // Read until the client's close reply, or give up after the grace period.
                let _ = timeout(CLOSE_GRACE, async {
                    while let Some(Ok(_)) = self.ws.next().await {}
                })
                .await;
            }
            _ => {}
        }
        end
    }

    fn server_close(&self, code: u16, reason: String) -> ConnectionEnd {
        ConnectionEnd::ServerClosed { code, reason }
    }

    async fn incoming(
        &mut self,
        m: Option<Result<WsMessage, WsError>>,
    ) -> Result<(), ConnectionEnd> {
        let msg = match m {
            None => return Err(ConnectionEnd::Dropped("stream ended".into())),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                return Err(self.server_close(
                    close_code::TOO_BIG,
                    format!("frame of {size} bytes exceeds the limit of {max_size} bytes"),
                ));
            }
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Err(ConnectionEnd::Dropped("connection closed".into()));
            }
            // tungstenite files a TCP stream that ends without a close frame under protocol
            // errors; it is the client going away (a killed tab or process), not a bad frame.
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                return Err(ConnectionEnd::Dropped(
                    "stream ended without a close frame".into(),
                ));
            }
            // RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection; 1007 says
            // why, as for every other frame that is not a Channels message.
            Some(Err(WsError::Utf8(e))) => {
                return Err(self.server_close(
                    close_code::MALFORMED,
                    format!("text frame is not valid UTF-8 (near {e:?})"),
                ));
            }
            Some(Err(WsError::Protocol(e))) => {
                return Err(self.server_close(
                    close_code::MALFORMED,
                    format!("websocket protocol error: {e}"),
                ));
            }
            Some(Err(e)) => return Err(ConnectionEnd::Dropped(e.to_string())),
            Some(Ok(msg)) => msg,
        };
        // Any frame, control frames included, is traffic for the idle timeout.
        self.last_in = Instant::now();
        let frame = match msg {
            WsMessage::Text(text) => Frame::Text(text.as_str().to_owned()),
            WsMessage::Binary(bytes) => Frame::Binary(bytes.to_vec()),
            WsMessage::Close(frame) => {
                return Err(ConnectionEnd::ClientClosed {
                    code: frame.map(|f| u16::from(f.code)),
                });
            }
            // tungstenite answers pings itself; pongs and raw frames carry nothing for us.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => return Ok(()),
        };
        let conn = self.conn;
        self.server.emit_frame(|| ServerEvent::Received {
            conn,
            frame: frame.clone(),
        });
        match self.codec.decode(&frame) {
            Ok(msg) => self.dispatch(msg).await,
            // A frame that is not a Channels message kills the whole connection in Phoenix.
            Err(e @ DecodeError::Oversized { .. }) => {
                Err(self.server_close(close_code::TOO_BIG, e.to_string()))
            }
            Err(e) => {
                Err(self.server_close(close_code::MALFORMED, format!("malformed frame: {e}")))
            }
        }
    }

    async fn dispatch(&mut self, msg: Message) -> Result<(), ConnectionEnd> {
        if msg.topic == PHOENIX_TOPIC && msg.event == HEARTBEAT {
            let topic = if self
                .server
                .mutated(ServerMutation::HeartbeatReplyWrongTopic)
            {
                HEARTBEAT
            } else {
                PHOENIX_TOPIC
            };
            return self
                .reply(None, msg.ref_, topic, "ok", Payload::Json(empty()))
                .await;
        }
        match msg.event.as_str() {
            PHX_JOIN => self.join(msg).await,
            PHX_LEAVE => self.leave(msg).await,
            _ => self.push(msg).await,
        }
    }

    async fn join(&mut self, msg: Message) -> Result<(), ConnectionEnd> {
        let Message {
            join_ref,
            ref_,
            topic,
            payload,
            ..
        } = msg;
        if !room::routes(&topic) {
            return self.unmatched(ref_, &topic).await;
        }
        let old = self.channels.remove(&topic);
        let cfg = self.server.config();
        let capped = cfg.phoenix == PhoenixRules::V1_8;
        if old.is_none() && capped && self.channels.len() >= cfg.max_channels {
            let why = reason("too many channels joined");
            return self
                .reply(join_ref, ref_, &topic, "error", Payload::Json(why))
                .await;
        }
        // Duplicate join: the old incarnation goes first (its presence leaves), and its
        // phx_close is written after the reply to the new join, as Phoenix does.
        let old_close = match old {
            Some(old) => {
                drop(old.diffs);
                let _ = self.server.node().untrack_owner(old.lease.owner()).await;
                Some(old.join_ref)
            }
            None => None,
        };
        let node = self.server.node().clone();
        let refused = match room::join_meta(&payload) {
            Ok(meta) => match node.subscribe(&topic).await {
                Ok(sub) => Ok((meta, sub)),
                Err(_) => Err(room::JoinRefusal::Crashed),
            },
            Err(refusal) => Err(refusal),
        };
        let (meta, sub) = match refused {
            Ok(joined) => joined,
            Err(refusal) => {
                let why = Payload::Json(reason(refusal.reason()));
                self.reply(join_ref, ref_, &topic, "error", why).await?;
                return self.close_old(old_close, &topic).await;
            }
        };
        let mut joined_as = Map::new();
        joined_as.insert("joined_as".into(), Json::String(self.user_id.clone()));
        self.reply(
            join_ref.clone(),
            ref_.clone(),
            &topic,
            "ok",
            Payload::Json(Json::Object(joined_as)),
        )
        .await?;
        self.close_old(old_close, &topic).await?;

        // The lease is taken before the presence exists: from here on, whatever ends this
        // join (a failed write, a closed socket, a cancelled task) drops it, and the node
        // untracks the presence as Phoenix does when a channel process exits. The owner is
        // zero-padded so that owners sort in the order they were made, as Phoenix's channel
        // pids do: the tracker orders a key's metas by owner, and `conn10` would come before
        // `conn9` (found by conformance case 53 against a long-running server).
        let mut lease = node.lease(&format!("conn{:012}/ch{:06}", self.conn, self.next_channel));
        self.next_channel += 1;
        let old_order = self.server.mutated(ServerMutation::TrackBeforeBookkeeping);
        let own = if self.server.config().track_on_join {
            let tracked = if old_order {
                // planted: no lease watches this presence (see the bookkeeping below)
                node.track(lease.owner(), &topic, &self.user_id, meta.clone())
                    .await
            } else {
                node.track_leased(&mut lease, &topic, &self.user_id, meta.clone())
                    .await
            };
            match tracked {
                Ok(phx_ref) => Some(meta_with_refs(&phx_ref, None, &meta)),
                // The after-join step failed: the channel process would have crashed.
                Err(_) => return self.send_end(join_ref, &topic, PHX_ERROR).await,
            }
        } else {
            None
        };
        let mut ch = Channel {
            push_join_ref: join_ref.clone().or(ref_),
            join_ref,
            lease,
            diffs: sub.diffs,
        };
        // Diffs already queued (this join's own, and any other change since the subscription
        // started) go out before the state: a client must buffer them until the state comes,
        // and the state does not contain the others' changes, as in Phoenix where a fastlane
        // diff can overtake the channel's presence_state push.
        while let Ok(update) = ch.diffs.try_recv() {
            self.send_diff(&topic, &update)?;
        }
        if !self.server.mutated(ServerMutation::NoPresenceState) {
            let push_join_ref = if self.server.mutated(ServerMutation::StateWithWrongJoinRef) {
                Some("stale".to_owned())
            } else {
                ch.push_join_ref.clone()
            };
            self.send_state(push_join_ref, &topic, &sub.state, own)
                .await?;
        }
        if old_order {
            // planted: the join's writes must reach the client before the channel is kept;
            // if they fail, nothing will ever untrack the presence
            let vectored = self.ws.get_ref().is_write_vectored();
            self.outbox.seal(vectored);
            self.drain()
                .await
                .map_err(|e| ConnectionEnd::Dropped(format!("write failed: {e}")))?;
        }
        self.channels.insert(topic, ch);
        Ok(())
    }

    /// `presence_state`: the topic's list with this socket's own presence, from the list's
    /// one shared encoding (see `state_frame`), unless a planted bug rewrites the payload.
    async fn send_state(
        &mut self,
        join_ref: Option<String>,
        topic: &str,
        state: &TopicState,
        own: Option<Json>,
    ) -> Result<(), ConnectionEnd> {
        if !self.server.mutated(ServerMutation::DropPhxRefPrev) {
            let payload = &state.payload;
            let parts = match &own {
                Some(own) => payload.with_own(&self.user_id, own),
                None => vec![payload.bytes()],
            };
            if let Some(parts) =
                state_frame::frame(self.codec, join_ref.clone(), topic, PRESENCE_STATE, parts)
            {
                let conn = self.conn;
                self.server.emit_frame(|| ServerEvent::Sent {
                    conn,
                    frame: Frame::Text(state_frame::joined(&parts)),
                });
                let parts = outbox::text_frame_parts(parts);
                self.admit(parts.iter().map(bytes::Bytes::len).sum())?;
                return self.outbox.push_parts(parts).map_err(|o| self.overflow(&o));
            }
        }
        let mut list = state.list().clone();
        if let Some(own) = own {
            list.0.entry(self.user_id.clone()).or_default().push(own);
        }
        let mut payload = list.to_json();
        self.scrub(&mut payload);
        self.send(&Message::push(join_ref, topic, PRESENCE_STATE, payload))
    }

    async fn close_old(
        &mut self,
        old_close: Option<Option<String>>,
        topic: &str,
    ) -> Result<(), ConnectionEnd> {
        match old_close {
            Some(old_join_ref) => self.send_end(old_join_ref, topic, PHX_CLOSE).await,
            None => Ok(()),
        }
    }

    async fn leave(&mut self, msg: Message) -> Result<(), ConnectionEnd> {
        let Some(ch) = self.channels.get(&msg.topic) else {
            // Phoenix answers a leave of a topic it does not have as if it had left.
            return self
                .reply(
                    msg.join_ref,
                    msg.ref_,
                    &msg.topic,
                    "ok",
                    Payload::Json(empty()),
                )
                .await;
        };
        if stale(&msg.join_ref, &ch.join_ref) {
            return Ok(());
        }
        let Some(ch) = self.channels.remove(&msg.topic) else {
            return Ok(());
        };
        drop(ch.diffs);
        self.reply(
            msg.join_ref,
            msg.ref_,
            &msg.topic,
            "ok",
            Payload::Json(empty()),
        )
        .await?;
        if !self.server.mutated(ServerMutation::NoPhxCloseOnLeave) {
            self.send_end(ch.join_ref, &msg.topic, PHX_CLOSE).await?;
        }
        let _ = self.server.node().untrack_owner(ch.lease.owner()).await;
        Ok(())
    }

    async fn push(&mut self, msg: Message) -> Result<(), ConnectionEnd> {
        let Some(ch) = self.channels.get(&msg.topic) else {
            return self.unmatched(msg.ref_, &msg.topic).await;
        };
        if stale(&msg.join_ref, &ch.join_ref) && self.server.config().phoenix == PhoenixRules::V1_8
        {
            // Phoenix 1.8.3+: a message for an earlier incarnation is dropped without a word.
            // 1.7.21 hands it to the current channel, which answers it.
            return Ok(());
        }
        let owner = ch.lease.owner().to_owned();
        // The channel answers with its own join_ref, whatever the push carried.
        let channel_join_ref = ch.join_ref.clone();
        let node = self.server.node().clone();
        let Message {
            ref_,
            topic,
            event,
            payload,
            ..
        } = msg;
        let join_ref = channel_join_ref;
        match room::handle_in(&event, payload) {
            Action::Reply { status, response } => {
                self.reply(join_ref, ref_, &topic, status, response).await
            }
            Action::NoReply => Ok(()),
            Action::List => match node.list(&topic).await {
                Ok(state) => {
                    let mut payload = state.to_json();
                    self.scrub(&mut payload);
                    self.reply(join_ref, ref_, &topic, "ok", Payload::Json(payload))
                        .await
                }
                Err(_) => self.crash(&topic).await,
            },
            Action::UpdateMeta(meta) => {
                match node.update(&owner, &topic, &self.user_id, meta).await {
                    Ok(_) => {
                        self.reply(join_ref, ref_, &topic, "ok", Payload::Json(empty()))
                            .await
                    }
                    Err(_) => self.crash(&topic).await,
                }
            }
            Action::Crash => self.crash(&topic).await,
        }
    }

    /// The channel dies abnormally: `phx_error`, then its presence leaves; the socket stays.
    async fn crash(&mut self, topic: &str) -> Result<(), ConnectionEnd> {
        let Some(ch) = self.channels.remove(topic) else {
            return Ok(());
        };
        drop(ch.diffs);
        self.send_end(ch.join_ref, topic, PHX_ERROR).await?;
        let _ = self.server.node().untrack_owner(ch.lease.owner()).await;
        Ok(())
    }

    async fn unmatched(&mut self, ref_: Option<String>, topic: &str) -> Result<(), ConnectionEnd> {
        let why = Payload::Json(reason("unmatched topic"));
        self.reply(None, ref_, topic, "error", why).await
    }

    fn send_diff(&mut self, topic: &str, update: &PresenceUpdate) -> Result<(), ConnectionEnd> {
        let drop_leaves = self.server.mutated(ServerMutation::DropLeaves);
        let wrong_ref = self.server.mutated(ServerMutation::LeaveWrongRef);
        if drop_leaves || wrong_ref || self.server.mutated(ServerMutation::DropPhxRefPrev) {
            // a planted bug renders this socket's own payload
            if drop_leaves && update.diff.joins.is_empty() {
                return Ok(());
            }
            let mut diff = (*update.diff).clone();
            if drop_leaves {
                diff.leaves.clear();
            }
            let mut payload = diff.to_json();
            if wrong_ref && let Some(leaves) = payload.get_mut("leaves") {
                misname_refs(leaves);
            }
            if let Json::Object(m) = &mut payload {
                for part in m.values_mut() {
                    self.scrub(part);
                }
            }
            return self.send(&Message::broadcast(topic, PRESENCE_DIFF, payload));
        }
        // The hot path of a fan-out: encoded and framed once per serializer for every socket
        // (fastlane); each socket queues the same bytes.
        let shared = self.shared_diff(topic, update)?;
        let conn = self.conn;
        self.server.emit_frame(|| ServerEvent::Sent {
            conn,
            frame: (*shared.frame).clone(),
        });
        self.queue(shared.wire.clone())
    }

    /// A diff's frame, encoded once per serializer for every socket of the node.
    fn shared_diff<'u>(
        &self,
        topic: &str,
        update: &'u PresenceUpdate,
    ) -> Result<&'u crate::encoded::Shared, ConnectionEnd> {
        let codec = self.codec;
        fastlane::frame(update, codec.serializer(), || {
            codec.encode(&Message::broadcast(
                topic,
                PRESENCE_DIFF,
                update.diff.to_json(),
            ))
        })
        .map_err(|e| self.server_close(close_code::INTERNAL, format!("cannot encode a diff: {e}")))
    }

    /// [`ServerMutation::DropPhxRefPrev`] on a `{key: {"metas": [...]}}` object.
    fn scrub(&self, presences: &mut Json) {
        if !self.server.mutated(ServerMutation::DropPhxRefPrev) {
            return;
        }
        let Json::Object(presences) = presences else {
            return;
        };
        for entry in presences.values_mut() {
            if let Some(Json::Array(metas)) = entry.get_mut("metas") {
                for meta in metas {
                    if let Json::Object(meta) = meta {
                        meta.remove("phx_ref_prev");
                    }
                }
            }
        }
    }

    async fn reply(
        &mut self,
        join_ref: Option<String>,
        ref_: Option<String>,
        topic: &str,
        status: &str,
        response: Payload,
    ) -> Result<(), ConnectionEnd> {
        let msg = match response {
            Payload::Json(response) => Message::reply(join_ref, ref_, topic, status, response),
            Payload::Binary(response) | Payload::BinaryReply { response, .. } => Message::new(
                join_ref,
                ref_,
                topic,
                PHX_REPLY,
                Payload::BinaryReply {
                    status: status.to_owned(),
                    response,
                },
            ),
        };
        self.send(&msg)
    }

    /// `phx_close` or `phx_error` for one incarnation: `[jr, jr, topic, event, {}]`.
    async fn send_end(
        &mut self,
        join_ref: Option<String>,
        topic: &str,
        event: &str,
    ) -> Result<(), ConnectionEnd> {
        self.send(&Message::channel_end(join_ref, topic, event, empty()))
    }

    /// Queues one message on the socket; the session loop writes it out. Queuing never waits
    /// (a full queue closes the socket), so this and the diff paths built on it are plain
    /// functions: as `async fn`s their futures took room in every socket's session future.
    fn send(&mut self, msg: &Message) -> Result<(), ConnectionEnd> {
        let frame = self.codec.encode(msg).map_err(|e| {
            self.server_close(close_code::INTERNAL, format!("cannot encode a reply: {e}"))
        })?;
        self.write_frame(frame)
    }

    fn write_frame(&mut self, frame: Frame) -> Result<(), ConnectionEnd> {
        let wire = outbox::wire_frame(&frame);
        let conn = self.conn;
        self.server.emit_frame(|| ServerEvent::Sent { conn, frame });
        self.queue(wire)
    }

    /// Queues a framed message; past the socket's limit, the connection is closed.
    fn queue(&mut self, wire: WireFrame) -> Result<(), ConnectionEnd> {
        self.admit(wire.len())?;
        self.outbox.push(wire).map_err(|o| self.overflow(&o))
    }

    /// Whether `more` bytes fit beside what is queued and held.
    fn admit(&self, more: usize) -> Result<(), ConnectionEnd> {
        self.outbox
            .admit(self.held_bytes + more)
            .map_err(|o| self.overflow(&o))
    }

    fn overflow(&self, o: &outbox::Overflow) -> ConnectionEnd {
        self.server_close(
            close_code::OUTBOX_FULL,
            format!(
                "outbound buffer full: {} bytes queued, limit {} (the client does not read)",
                o.queued, o.limit
            ),
        )
    }
}

/// The next diff of any joined channel, scanning from a rotating start so that a busy topic
/// cannot starve the others. `None` as the update means the node dropped the subscription.
/// The topic is the update's own (the node names a diff by the topic subscribed to), so a
/// diff costs no copy of its name per socket.
fn poll_update(
    channels: &mut TopicMap<Channel>,
    poll_from: &mut usize,
    cx: &mut std::task::Context<'_>,
) -> Poll<(Arc<str>, Option<PresenceUpdate>)> {
    let n = channels.len();
    for i in 0..n {
        let idx = (*poll_from + i) % n;
        if let Some((topic, ch)) = channels.nth_mut(idx)
            && let Poll::Ready(update) = ch.diffs.poll_recv(cx)
        {
            *poll_from = idx + 1;
            let name = match &update {
                Some(u) => u.topic.clone(),
                None => Arc::from(topic),
            };
            return Poll::Ready((name, update));
        }
    }
    Poll::Pending
}

/// A message whose join_ref is set and differs from the channel's (also set) belongs to an
/// earlier incarnation. A null on either side matches (V1 clients send none).
fn stale(sent: &Option<String>, current: &Option<String>) -> bool {
    matches!((sent, current), (Some(s), Some(c)) if s != c)
}

fn empty() -> Json {
    Json::Object(Map::new())
}

/// A close frame's reason is at most 123 bytes (125 minus the code); cut at a char boundary.
fn close_reason(reason: &str) -> String {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason.to_owned();
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// [`ServerMutation::LeaveWrongRef`] on a `{key: {"metas": [...]}}` object: every `phx_ref`
/// gets a suffix, so it names no presence the client holds.
fn misname_refs(presences: &mut Json) {
    let Json::Object(presences) = presences else {
        return;
    };
    for entry in presences.values_mut() {
        if let Some(Json::Array(metas)) = entry.get_mut("metas") {
            for meta in metas {
                if let Some(Json::String(r)) = meta.get_mut("phx_ref") {
                    r.push_str("-wrong");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_join_refs_follow_phoenix_1_8_12() {
        let s = |v: &str| Some(v.to_owned());
        assert!(!stale(&None, &s("3")));
        assert!(!stale(&s("3"), &s("3")));
        assert!(!stale(&s("3"), &None));
        assert!(stale(&s("2"), &s("3")));
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(&cut));
        assert_eq!(close_reason("short"), "short");
    }
}
