//! The V1 JSON serializer (`vsn=1.0.0`, phoenix-protocol.md §1.3): one JSON object per text frame.
//!
//! The server writes only `event, payload, ref, topic`, in that order (Jason's order for a small
//! atom-keyed map), and never `join_ref`; a V1 client therefore cannot tell incarnations apart.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{DecodeError, EncodeError, json_kind};
use crate::message::{Message, Payload};
use crate::text::{optional_ref, ref_value, required_string};

/// Server → client, exactly as Phoenix writes it.
#[derive(Serialize)]
struct ServerFrame<'a> {
    event: &'a str,
    payload: &'a Value,
    #[serde(rename = "ref")]
    ref_: Value,
    topic: &'a str,
}

/// Client → server, as legacy phoenix.js wrote it (Phoenix also reads an optional `join_ref`).
#[derive(Serialize)]
struct ClientFrame<'a> {
    topic: &'a str,
    event: &'a str,
    payload: &'a Value,
    #[serde(rename = "ref")]
    ref_: Option<&'a str>,
    join_ref: Option<&'a str>,
}

fn json_payload(msg: &Message) -> Result<&Value, EncodeError> {
    match &msg.payload {
        Payload::Json(value) => Ok(value),
        Payload::Binary(_) | Payload::BinaryReply { .. } => Err(EncodeError::BinaryOnV1),
    }
}

/// Encodes a server → client frame; the message's `join_ref` is dropped, as Phoenix does.
pub fn encode_server(msg: &Message) -> Result<String, EncodeError> {
    encode_server_refs(msg, false)
}

/// [`encode_server`] on a codec that may hold numeric refs (Phoenix 1.7.21).
pub fn encode_server_refs(msg: &Message, numeric: bool) -> Result<String, EncodeError> {
    let frame = ServerFrame {
        event: &msg.event,
        payload: json_payload(msg)?,
        ref_: ref_value(msg.ref_.as_deref(), numeric),
        topic: &msg.topic,
    };
    serde_json::to_string(&frame).map_err(|err| EncodeError::Json(err.to_string()))
}

/// Encodes a client → server frame, `join_ref` included (null when absent).
pub fn encode_client(msg: &Message) -> Result<String, EncodeError> {
    let frame = ClientFrame {
        topic: &msg.topic,
        event: &msg.event,
        payload: json_payload(msg)?,
        ref_: msg.ref_.as_deref(),
        join_ref: msg.join_ref.as_deref(),
    };
    serde_json::to_string(&frame).map_err(|err| EncodeError::Json(err.to_string()))
}

/// Decodes a V1 object sent by either side.
///
/// Phoenix's `Message.from_map!` requires `topic`, `event`, `payload` and `ref` (which may be
/// null) and reads `join_ref` if present; the same rule serves the client side, where the server
/// simply never sends `join_ref`.
pub fn decode(text: &str) -> Result<Message, DecodeError> {
    decode_refs(text, false)
}

/// [`decode`] accepting numeric refs too (Phoenix 1.7.21).
pub fn decode_refs(text: &str, numeric: bool) -> Result<Message, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|err| DecodeError::NotJson {
        reason: err.to_string(),
    })?;
    let Value::Object(mut map) = value else {
        return Err(DecodeError::WrongShape {
            serializer: "V1",
            expected: "object",
            found: json_kind(&value),
        });
    };
    let topic = required_string("topic", take(&mut map, "topic")?)?;
    let event = required_string("event", take(&mut map, "event")?)?;
    let payload = take(&mut map, "payload")?;
    let ref_ = optional_ref("ref", take(&mut map, "ref")?, numeric)?;
    let join_ref = match map.remove("join_ref") {
        Some(value) => optional_ref("join_ref", value, numeric)?,
        None => None,
    };
    Ok(Message {
        join_ref,
        ref_,
        topic,
        event,
        payload: Payload::Json(payload),
    })
}

fn take(map: &mut Map<String, Value>, key: &'static str) -> Result<Value, DecodeError> {
    map.remove(key).ok_or(DecodeError::MissingField(key))
}
