//! The one message model every serializer maps to and from (phoenix-protocol.md §1.2).
//!
//! Phoenix has three server structs (`Message`, `Reply`, `Broadcast`); on the wire they differ
//! only in which of `join_ref`/`ref` are null and, for replies, in the `{status, response}`
//! payload. One struct with constructors for each shape keeps the runtime from spelling frames by
//! hand, while still letting a test build any frame a misbehaving peer could send.

use serde_json::Value;

/// Event of every reply (`Phoenix.Socket.Reply` on the wire).
pub const PHX_REPLY: &str = "phx_reply";
/// The client's join request; its `ref` becomes the channel incarnation's `join_ref`.
pub const PHX_JOIN: &str = "phx_join";
/// The client's leave request.
pub const PHX_LEAVE: &str = "phx_leave";
/// Sent by the server when a channel ends gracefully.
pub const PHX_CLOSE: &str = "phx_close";
/// Sent by the server when a channel crashed.
pub const PHX_ERROR: &str = "phx_error";
/// Socket-level keep-alive, only on topic [`PHOENIX_TOPIC`].
pub const HEARTBEAT: &str = "heartbeat";
/// The reserved topic that carries heartbeats.
pub const PHOENIX_TOPIC: &str = "phoenix";
/// Default event name of the full presence list pushed to one joiner.
pub const PRESENCE_STATE: &str = "presence_state";
/// Default event name of the presence changes broadcast to a topic.
pub const PRESENCE_DIFF: &str = "presence_diff";

/// What a message carries: JSON for text frames, raw bytes for V2 binary frames.
///
/// A binary reply is its own variant because its status travels in the frame header while the
/// response stays raw bytes; phoenix.js surfaces it as `{status, response: ArrayBuffer}`.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Any JSON value. Phoenix requires a map for server pushes but does not check what clients
    /// send, so decoding keeps whatever arrived.
    Json(Value),
    /// Raw bytes of a binary push (client or server) or broadcast.
    Binary(Vec<u8>),
    /// A binary reply (kind 1): event `phx_reply`, the status in the header, raw response bytes.
    BinaryReply {
        /// `"ok"`, `"error"`, or whatever the channel replied with.
        status: String,
        /// The raw response bytes.
        response: Vec<u8>,
    },
}

impl Payload {
    /// The JSON value, if this is a JSON payload.
    pub fn as_json(&self) -> Option<&Value> {
        match self {
            Payload::Json(value) => Some(value),
            _ => None,
        }
    }

    /// Whether this payload can only travel in a V2 binary frame.
    pub fn is_binary(&self) -> bool {
        !matches!(self, Payload::Json(_))
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload::Json(value)
    }
}

/// One frame's worth of protocol: `[join_ref, ref, topic, event, payload]`.
///
/// `join_ref` and `ref_` are strings or absent (null). Phoenix echoes a numeric ref as a number,
/// but no real client sends one and the typed model is worth more than that echo, so decoders
/// reject non-string refs with [`crate::DecodeError::WrongType`].
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The `ref` of the `phx_join` that created the channel incarnation this message belongs to.
    pub join_ref: Option<String>,
    /// The client's per-message ref; replies echo it; server pushes and broadcasts have none.
    pub ref_: Option<String>,
    /// For example `"room:lobby"`, or [`PHOENIX_TOPIC`] for heartbeats.
    pub topic: String,
    /// For example `"phx_join"` or `"presence_diff"`.
    pub event: String,
    /// JSON or raw bytes.
    pub payload: Payload,
}

impl Message {
    /// A message with every field given; the shape-specific constructors below are usually clearer.
    pub fn new(
        join_ref: Option<String>,
        ref_: Option<String>,
        topic: impl Into<String>,
        event: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> Self {
        Message {
            join_ref,
            ref_,
            topic: topic.into(),
            event: event.into(),
            payload: payload.into(),
        }
    }

    /// A reply to a client message: `[join_ref, ref, topic, "phx_reply", {"status", "response"}]`.
    ///
    /// Phoenix writes `response` before `status` (Jason sorts small maps), and so do we, so a
    /// recorded frame re-encodes byte for byte.
    pub fn reply(
        join_ref: Option<String>,
        ref_: Option<String>,
        topic: impl Into<String>,
        status: &str,
        response: Value,
    ) -> Self {
        let mut payload = serde_json::Map::new();
        payload.insert("response".to_owned(), response);
        payload.insert("status".to_owned(), Value::String(status.to_owned()));
        Message::new(join_ref, ref_, topic, PHX_REPLY, Value::Object(payload))
    }

    /// A channel push (`Phoenix.Channel.push/3`, e.g. `presence_state`): `[join_ref, null, ...]`.
    pub fn push(
        join_ref: Option<String>,
        topic: impl Into<String>,
        event: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> Self {
        Message::new(join_ref, None, topic, event, payload)
    }

    /// A broadcast (fastlane, e.g. `presence_diff`): `[null, null, topic, event, payload]`.
    pub fn broadcast(
        topic: impl Into<String>,
        event: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> Self {
        Message::new(None, None, topic, event, payload)
    }

    /// `phx_close` or `phx_error` for one incarnation: Phoenix sets `ref = join_ref`.
    pub fn channel_end(
        join_ref: Option<String>,
        topic: impl Into<String>,
        event: &str,
        payload: Value,
    ) -> Self {
        Message::new(join_ref.clone(), join_ref, topic, event, payload)
    }

    /// The `(status, response)` of a JSON or binary reply, if this is one.
    pub fn reply_status(&self) -> Option<&str> {
        if self.event != PHX_REPLY {
            return None;
        }
        match &self.payload {
            Payload::Json(Value::Object(map)) => map.get("status").and_then(Value::as_str),
            Payload::BinaryReply { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// A WebSocket data frame as the transport sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text frame: JSON in both serializers.
    Text(String),
    /// A binary frame: V2 only.
    Binary(Vec<u8>),
}

impl Frame {
    /// Length in bytes, the quantity the decoder's size limit applies to.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(text) => text.len(),
            Frame::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the frame has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
