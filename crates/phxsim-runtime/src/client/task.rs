//! The client's task: phoenix.js's socket and one channel, as one loop over the WebSocket, the
//! handle's commands and the earliest due timer.

use super::{
    ChannelState, ClientConfig, ClientEvent, ClientMutation, Command, PresenceOutcome, Shared,
};
use crate::server::percent_encode;
use futures_util::{SinkExt, StreamExt};
use phxsim_wire::message::{
    HEARTBEAT, PHOENIX_TOPIC, PHX_CLOSE, PHX_ERROR, PHX_JOIN, PHX_LEAVE, PHX_REPLY, PRESENCE_DIFF,
    PRESENCE_STATE,
};
use phxsim_wire::sync::Callbacks;
use phxsim_wire::{
    Codec, Frame, Handled, Message, Payload, Presence, PresenceDiff, PresenceInstance, Serializer,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::{Request, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

/// How a connection ended, and whether to come back.
struct SessionEnd {
    reason: String,
    reconnect: bool,
    close: CloseWith,
}

/// What is left to say on a connection that ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CloseWith {
    /// Nothing: the stream is gone (or is being dropped on purpose).
    Nothing,
    /// Answer the server's close frame.
    Reply,
    /// Close cleanly with code 1000 and the end's reason.
    Normal,
}

impl SessionEnd {
    fn new(reason: impl Into<String>, reconnect: bool, close: CloseWith) -> Self {
        SessionEnd {
            reason: reason.into(),
            reconnect,
            close,
        }
    }

    fn lost(reason: impl Into<String>) -> Self {
        SessionEnd::new(reason, true, CloseWith::Nothing)
    }
}

struct Task {
    cfg: ClientConfig,
    shared: Arc<Shared>,
    codec: Codec,
    rng: ChaCha8Rng,
    /// phoenix.js `socket.ref`: one counter for every ref of the socket, across reconnects.
    next_ref: u64,
    want_connected: bool,
    /// The channel, as phoenix.js's `Channel` holds it.
    state: ChannelState,
    join_ref: Option<String>,
    /// Whether the current join was sent on the current connection (else it is sent on open).
    join_sent: bool,
    join_deadline: Option<Instant>,
    rejoin_tries: u32,
    rejoin_at: Option<Instant>,
    leave_ref: Option<String>,
    leave_deadline: Option<Instant>,
    /// Pushes made before the channel joined, sent once it does.
    buffered: Vec<(String, Json)>,
    /// Pushes awaiting a reply: ref → (event, deadline).
    awaiting: BTreeMap<String, (String, Instant)>,
    heartbeat_ref: Option<String>,
    /// When the next heartbeat is due, or (with `heartbeat_ref` set) when its reply is late.
    heartbeat_at: Instant,
    presence: PresenceInstance,
}

pub(super) async fn run<C, F, S>(
    cfg: ClientConfig,
    mut connect: C,
    mut cmds: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) where
    C: FnMut() -> F + Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut t = Task {
        codec: Codec::client(cfg.serializer).with_max_frame_len(cfg.max_frame_len),
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        want_connected: cfg.auto_connect,
        state: ChannelState::Closed,
        join_ref: None,
        join_sent: false,
        join_deadline: None,
        rejoin_tries: 0,
        rejoin_at: None,
        leave_ref: None,
        leave_deadline: None,
        buffered: Vec::new(),
        awaiting: BTreeMap::new(),
        heartbeat_ref: None,
        heartbeat_at: Instant::now(),
        presence: PresenceInstance::new(),
        next_ref: 0,
        shared,
        cfg,
    };
    if t.cfg.auto_join {
        t.set_state(ChannelState::Joining);
    }
    let mut attempt: u32 = 0;
    loop {
        if !t.want_connected {
            match cmds.recv().await {
                None => return,
                Some(cmd) => {
                    t.offline_command(cmd);
                    continue;
                }
            }
        }
        attempt += 1;
        t.shared.emit(|| ClientEvent::Connecting { attempt });
        let opened = timeout(t.cfg.timeout, t.open(&mut connect)).await;
        let reconnect = match opened {
            Ok(Ok(ws)) => {
                attempt = 0;
                let end = t.session(ws, &mut cmds).await;
                if end.reason == STOPPED {
                    return;
                }
                t.disconnected(&end);
                end.reconnect
            }
            Ok(Err(reason)) => {
                t.shared.emit(|| ClientEvent::ConnectFailed { reason });
                true
            }
            Err(_) => {
                t.shared.emit(|| ClientEvent::ConnectFailed {
                    reason: "connect timed out".into(),
                });
                true
            }
        };
        if !reconnect {
            t.want_connected = false;
            continue;
        }
        // Wait out the backoff, still obeying commands (a disconnect cancels the retry).
        let retry_at = Instant::now() + t.cfg.reconnect_after.delay(attempt.max(1));
        loop {
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(Command::Connect) => break,
                    Some(cmd) => {
                        t.offline_command(cmd);
                        if !t.want_connected {
                            break;
                        }
                    }
                },
                () = sleep_until(retry_at) => break,
            }
        }
    }
}

const STOPPED: &str = "client stopped";

impl Task {
    fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    fn set_state(&mut self, state: ChannelState) {
        self.state = state;
        let join_ref = self.join_ref.clone();
        self.shared.update(|v| {
            v.channel = state;
            v.join_ref = join_ref.clone();
        });
        self.shared
            .emit(|| ClientEvent::Channel { state, join_ref });
    }

    /// Publishes the whole presence list (after a state, or a fresh instance).
    fn publish_presence(&self) {
        let presences = self
            .presence
            .list_by(|key, p| (key.to_owned(), metas_json(p)))
            .into_iter()
            .collect();
        let pending = self.presence.pending_diffs().len();
        self.shared.update(|v| {
            v.presences = presences;
            v.pending_diffs = pending;
        });
    }

    /// Publishes only the keys a message touched: every key the sync changes gets an
    /// `onJoin` or `onLeave` callback, so the other keys of the view are already right.
    fn publish_keys(&self, changed: &ChangedKeys) {
        let state = self.presence.state();
        let pending = self.presence.pending_diffs().len();
        self.shared.update(|v| {
            for key in &changed.0 {
                match state.get(key) {
                    Some(p) => {
                        v.presences.insert(key.clone(), metas_json(p));
                    }
                    None => {
                        v.presences.remove(key);
                    }
                }
            }
            v.pending_diffs = pending;
            debug_assert_eq!(
                v.presences,
                self.presence
                    .list_by(|key, p| (key.to_owned(), metas_json(p)))
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                "the incremental view differs from the whole list"
            );
        });
    }

    /// Opens a stream and upgrades it.
    async fn open<C, F, S>(&mut self, connect: &mut C) -> Result<WebSocketStream<S>, String>
    where
        C: FnMut() -> F,
        F: Future<Output = io::Result<S>>,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = connect().await.map_err(|e| format!("connect: {e}"))?;
        let request = self.request()?;
        let ws_cfg = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .max_message_size(Some(self.cfg.max_frame_len))
            .max_frame_size(Some(self.cfg.max_frame_len));
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_cfg))
            .await
            .map_err(|e| match e {
                WsError::Http(resp) => format!("upgrade refused: HTTP {}", resp.status().as_u16()),
                e => format!("upgrade: {e}"),
            })?;
        Ok(ws)
    }

    /// The upgrade request, with a WebSocket key drawn from the seed.
    fn request(&mut self) -> Result<Request<()>, String> {
        let vsn = match self.cfg.serializer {
            Serializer::V1 => "1.0.0",
            Serializer::V2 => "2.0.0",
        };
        let mut query = format!("vsn={vsn}");
        for (k, v) in &self.cfg.params {
            query.push_str(&format!("&{}={}", percent_encode(k), percent_encode(v)));
        }
        let url = format!("{}?{}", self.cfg.url, query);
        let uri: Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| format!("url {url:?} has no host"))?;
        let mut key = [0u8; 16];
        self.rng.fill_bytes(&mut key);
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

    /// A command while no connection is open.
    fn offline_command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect => self.want_connected = true,
            Command::Disconnect | Command::DropConnection => self.want_connected = false,
            Command::Join => self.start_join_intent(),
            // phoenix.js: a leave that cannot be pushed closes the channel at once.
            Command::Leave => {
                if self.state != ChannelState::Closed {
                    self.set_state(ChannelState::Closed);
                }
                self.buffered.clear();
            }
            Command::Push { event, payload } => self.buffer_push(event, payload),
        }
    }

    fn start_join_intent(&mut self) {
        if self.state == ChannelState::Closed {
            // A new channel: a new Presence, as phoenix.js apps create one per channel.
            self.presence = PresenceInstance::new();
            self.publish_presence();
            self.rejoin_tries = 0;
            self.join_sent = false;
            self.set_state(ChannelState::Joining);
        }
    }

    fn buffer_push(&mut self, event: String, payload: Json) {
        if self.state == ChannelState::Closed || self.state == ChannelState::Leaving {
            // phoenix.js throws for a push on a channel never joined; here it is reported.
            self.shared.emit(|| ClientEvent::Timeout { event });
        } else {
            self.buffered.push((event, payload));
        }
    }

    /// One open connection, until it ends. `None` when every handle is gone.
    async fn session<S>(
        &mut self,
        mut ws: WebSocketStream<S>,
        cmds: &mut mpsc::UnboundedReceiver<Command>,
    ) -> SessionEnd
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.shared.update(|v| {
            v.connected = true;
            v.connects += 1;
        });
        self.shared.emit(|| ClientEvent::Connected);
        self.heartbeat_ref = None;
        self.heartbeat_at = Instant::now() + self.cfg.heartbeat_interval;
        // On open, an errored or joining channel (re)joins at once, without backoff.
        if matches!(self.state, ChannelState::Joining | ChannelState::Errored) {
            self.rejoin_at = Some(Instant::now());
        }
        self.join_sent = false;
        let mut out: Vec<Message> = Vec::new();
        let end = loop {
            let due = self.next_deadline();
            let step = tokio::select! {
                biased;
                m = ws.next() => self.incoming(m, &mut out),
                cmd = cmds.recv() => match cmd {
                    None => Err(SessionEnd::new(STOPPED, false, CloseWith::Normal)),
                    Some(cmd) => self.online_command(cmd, &mut out),
                },
                () = sleep_until(due) => self.timers(&mut out),
            };
            let step = match step {
                Ok(()) => self.write(&mut ws, &mut out).await,
                Err(end) => Err(end),
            };
            if let Err(end) = step {
                break end;
            }
        };
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: end.reason.clone().into(),
        };
        match end.close {
            CloseWith::Nothing => {}
            CloseWith::Reply => {
                // tungstenite queued the echo of the server's close frame when it read it;
                // `close` would be refused now, so flush to send the echo.
                let _ = timeout(self.cfg.timeout, ws.flush()).await;
            }
            CloseWith::Normal => {
                let _ = timeout(self.cfg.timeout, ws.close(Some(frame))).await;
            }
        }
        end
    }

    /// After a connection ends: phoenix.js errors every channel that is not already errored,
    /// leaving or closed, and forgets what it was waiting for.
    fn disconnected(&mut self, end: &SessionEnd) {
        self.shared.update(|v| v.connected = false);
        let reason = end.reason.clone();
        let reconnect = end.reconnect;
        tracing::debug!(topic = %self.cfg.topic, reason = %reason, reconnect, "client disconnected");
        self.shared
            .emit(|| ClientEvent::Disconnected { reason, reconnect });
        self.heartbeat_ref = None;
        self.awaiting.clear();
        self.join_deadline = None;
        self.rejoin_at = None;
        match self.state {
            ChannelState::Joined | ChannelState::Joining => self.set_state(ChannelState::Errored),
            ChannelState::Leaving => {
                self.leave_ref = None;
                self.leave_deadline = None;
                self.set_state(ChannelState::Closed);
            }
            ChannelState::Errored | ChannelState::Closed => {}
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut due = self.heartbeat_at;
        for d in [self.join_deadline, self.rejoin_at, self.leave_deadline]
            .into_iter()
            .flatten()
        {
            due = due.min(d);
        }
        for (_, d) in self.awaiting.values() {
            due = due.min(*d);
        }
        due
    }

    fn timers(&mut self, out: &mut Vec<Message>) -> Result<(), SessionEnd> {
        let now = Instant::now();
        if self.heartbeat_at <= now {
            if self.heartbeat_ref.is_some() {
                // No reply within an interval: phoenix.js closes (1000) and reconnects.
                return Err(SessionEnd::new(HEARTBEAT_TIMEOUT, true, CloseWith::Normal));
            }
            let r = self.make_ref();
            out.push(Message::new(
                None,
                Some(r.clone()),
                PHOENIX_TOPIC,
                HEARTBEAT,
                Json::Object(Map::new()),
            ));
            self.heartbeat_ref = Some(r);
            self.heartbeat_at = now + self.cfg.heartbeat_interval;
        }
        if self.join_deadline.is_some_and(|d| d <= now) {
            // Join timeout: leave that join_ref, error, rejoin with backoff.
            self.join_deadline = None;
            self.shared.emit(|| ClientEvent::Timeout {
                event: PHX_JOIN.into(),
            });
            let r = self.make_ref();
            out.push(Message::new(
                self.join_ref.clone(),
                Some(r),
                self.cfg.topic.as_str(),
                PHX_LEAVE,
                Json::Object(Map::new()),
            ));
            self.errored();
        }
        if self.rejoin_at.is_some_and(|d| d <= now) {
            self.rejoin_at = None;
            if matches!(self.state, ChannelState::Joining | ChannelState::Errored) {
                self.send_join(out);
            }
        }
        if self.leave_deadline.is_some_and(|d| d <= now) {
            self.leave_deadline = None;
            self.leave_ref = None;
            self.shared.emit(|| ClientEvent::Timeout {
                event: PHX_LEAVE.into(),
            });
            self.set_state(ChannelState::Closed);
        }
        let late: Vec<String> = self
            .awaiting
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in late {
            if let Some((event, _)) = self.awaiting.remove(&r) {
                self.shared.emit(|| ClientEvent::Timeout { event });
            }
        }
        Ok(())
    }

    /// The channel errored: rejoin after the backoff.
    fn errored(&mut self) {
        self.rejoin_tries += 1;
        self.rejoin_at = Some(Instant::now() + self.cfg.rejoin_after.delay(self.rejoin_tries));
        self.set_state(ChannelState::Errored);
    }

    fn send_join(&mut self, out: &mut Vec<Message>) {
        let r = self.make_ref();
        self.join_ref = Some(r.clone());
        self.join_sent = true;
        self.join_deadline = Some(Instant::now() + self.cfg.timeout);
        out.push(Message::new(
            Some(r.clone()),
            Some(r),
            self.cfg.topic.as_str(),
            PHX_JOIN,
            self.cfg.join_payload.clone(),
        ));
        self.set_state(ChannelState::Joining);
    }

    fn send_push(&mut self, event: String, payload: Json, out: &mut Vec<Message>) {
        let r = self.make_ref();
        self.awaiting.insert(
            r.clone(),
            (event.clone(), Instant::now() + self.cfg.timeout),
        );
        out.push(Message::new(
            self.join_ref.clone(),
            Some(r),
            self.cfg.topic.as_str(),
            event,
            payload,
        ));
    }

    fn online_command(&mut self, cmd: Command, out: &mut Vec<Message>) -> Result<(), SessionEnd> {
        match cmd {
            Command::Connect => {}
            Command::Disconnect => {
                return Err(SessionEnd::new("disconnect", false, CloseWith::Normal));
            }
            Command::DropConnection => {
                return Err(SessionEnd::lost(DROPPED));
            }
            Command::Join => {
                if self.state == ChannelState::Closed {
                    self.start_join_intent();
                    self.send_join(out);
                }
            }
            Command::Leave => match self.state {
                ChannelState::Joined | ChannelState::Joining => {
                    let r = self.make_ref();
                    self.leave_ref = Some(r.clone());
                    self.leave_deadline = Some(Instant::now() + self.cfg.timeout);
                    self.join_deadline = None;
                    self.rejoin_at = None;
                    self.buffered.clear();
                    out.push(Message::new(
                        self.join_ref.clone(),
                        Some(r),
                        self.cfg.topic.as_str(),
                        PHX_LEAVE,
                        Json::Object(Map::new()),
                    ));
                    self.set_state(ChannelState::Leaving);
                }
                ChannelState::Errored => {
                    self.rejoin_at = None;
                    self.buffered.clear();
                    self.set_state(ChannelState::Closed);
                }
                ChannelState::Closed | ChannelState::Leaving => {}
            },
            Command::Push { event, payload } => {
                if self.state == ChannelState::Joined {
                    self.send_push(event, payload, out);
                } else {
                    self.buffer_push(event, payload);
                }
            }
        }
        Ok(())
    }

    fn incoming(
        &mut self,
        m: Option<Result<WsMessage, WsError>>,
        out: &mut Vec<Message>,
    ) -> Result<(), SessionEnd> {
        let frame = match m {
            None => return Err(SessionEnd::lost("connection lost")),
            Some(Err(e)) => return Err(SessionEnd::lost(format!("connection lost: {e}"))),
            Some(Ok(WsMessage::Text(t))) => Frame::Text(t.as_str().to_owned()),
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
            Some(Ok(_)) => return Ok(()),
        };
        // decoding emits nothing, so the frame can be decoded first and then handed over
        let decoded = self.codec.decode(&frame);
        self.shared.emit_frame(|| ClientEvent::Received(frame));
        let msg = match decoded {
            Ok(msg) => msg,
            Err(e) => {
                self.shared.emit(|| ClientEvent::Undecodable {
                    error: e.to_string(),
                });
                return Ok(());
            }
        };
        if msg.ref_.is_some() && msg.ref_ == self.heartbeat_ref {
            self.heartbeat_ref = None;
            self.heartbeat_at = Instant::now() + self.cfg.heartbeat_interval;
        }
        if msg.topic != self.cfg.topic || self.state == ChannelState::Closed {
            return Ok(());
        }
        // phoenix.js `isMember`: a message of another incarnation is dropped.
        if let Some(jr) = msg.join_ref.as_deref()
            && !jr.is_empty()
            && Some(jr) != self.join_ref.as_deref()
        {
            return Ok(());
        }
        match msg.event.as_str() {
            PHX_REPLY => self.reply(msg, out),
            PHX_ERROR => {
                if matches!(self.state, ChannelState::Joined | ChannelState::Joining) {
                    self.join_deadline = None;
                    self.errored();
                }
            }
            PHX_CLOSE => {
                self.join_deadline = None;
                self.rejoin_at = None;
                self.leave_deadline = None;
                self.set_state(ChannelState::Closed);
            }
            PRESENCE_STATE | PRESENCE_DIFF => self.presence_message(msg),
            _ => {}
        }
        Ok(())
    }

    fn reply(&mut self, msg: Message, out: &mut Vec<Message>) {
        let (status, response) = match msg.payload {
            Payload::Json(Json::Object(mut m)) => (
                m.get("status")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                m.remove("response").unwrap_or(Json::Null),
            ),
            Payload::BinaryReply { status, response } => (
                status,
                Json::Array(response.into_iter().map(Json::from).collect()),
            ),
            _ => (String::new(), Json::Null),
        };
        let r = msg.ref_;
        if r.is_some() && r == self.join_ref && self.state == ChannelState::Joining {
            self.join_deadline = None;
            if status == "ok" {
                self.rejoin_tries = 0;
                self.shared.update(|v| v.joins += 1);
                self.set_state(ChannelState::Joined);
                for (event, payload) in std::mem::take(&mut self.buffered) {
                    self.send_push(event, payload, out);
                }
            } else {
                self.errored();
            }
        } else if r.is_some() && r == self.leave_ref {
            self.leave_ref = None;
            self.leave_deadline = None;
            self.set_state(ChannelState::Closed);
        } else if let Some((event, _)) = r.and_then(|r| self.awaiting.remove(&r)) {
            self.shared.emit(|| ClientEvent::Reply {
                event,
                status,
                response,
            });
        }
    }

    fn presence_message(&mut self, msg: Message) {
        let Payload::Json(payload) = msg.payload else {
            return;
        };
        let join_ref = self.join_ref.clone();
        let forget = self.cfg.mutation == Some(ClientMutation::ForgetPendingDiffs)
            && msg.event == PRESENCE_DIFF
            && self.presence.in_pending_sync_state(join_ref.as_deref());
        let mut changed = ChangedKeys::default();
        let outcome = if forget {
            match PresenceDiff::from_payload(payload.clone()) {
                Ok(_) => PresenceOutcome::Dropped,
                Err(e) => PresenceOutcome::Invalid(e.to_string()),
            }
        } else {
            match self.presence.handle_message(
                join_ref.as_deref(),
                &msg.event,
                payload.clone(),
                &mut changed,
            ) {
                Ok(Handled::Buffered) => PresenceOutcome::Buffered,
                Ok(_) => PresenceOutcome::Applied,
                Err(e) => PresenceOutcome::Invalid(e.to_string()),
            }
        };
        self.shared.emit(|| ClientEvent::Presence {
            event: msg.event,
            join_ref,
            payload,
            outcome,
        });
        self.publish_keys(&changed);
    }

    async fn write<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        out: &mut Vec<Message>,
    ) -> Result<(), SessionEnd>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if out.is_empty() {
            return Ok(());
        }
        for msg in out.drain(..) {
            let frame = match self.codec.encode(&msg) {
                Ok(frame) => frame,
                Err(e) => {
                    self.shared.emit(|| ClientEvent::Undecodable {
                        error: format!("cannot encode {}: {e}", msg.event),
                    });
                    continue;
                }
            };
            self.shared.emit_frame(|| ClientEvent::Sent(frame.clone()));
            let ws_msg = match frame {
                Frame::Text(t) => WsMessage::text(t),
                Frame::Binary(b) => WsMessage::binary(b),
            };
            if let Err(e) = ws.feed(ws_msg).await {
                return Err(SessionEnd::lost(format!("write failed: {e}")));
            }
        }
        match timeout(self.cfg.timeout, ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SessionEnd::lost(format!("write failed: {e}"))),
            Err(_) => Err(SessionEnd::lost("write timed out")),
        }
    }
}

/// The keys a sync touched, as its callbacks name them (a key may repeat).
#[derive(Default)]
struct ChangedKeys(Vec<String>);

impl Callbacks for ChangedKeys {
    fn on_join(&mut self, key: &str, _current: Option<&Presence>, _joined: &Presence) {
        self.0.push(key.to_owned());
    }

    fn on_leave(&mut self, key: &str, _current: &Presence, _left: &Presence) {
        self.0.push(key.to_owned());
    }
}

/// A presence's metas as the view holds them.
fn metas_json(p: &Presence) -> Vec<Json> {
    p.metas
        .iter()
        .map(|m| Json::Object(m.as_map().clone()))
        .collect()
}

const DROPPED: &str = "connection dropped";
const HEARTBEAT_TIMEOUT: &str = "heartbeat timeout";

#[cfg(test)]
mod tests {
    use crate::client::Backoff;

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
