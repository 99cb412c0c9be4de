//! The V2 JSON serializer (`vsn=2.0.0`, phoenix-protocol.md §1.4): text frames are the array
//! `[join_ref, ref, topic, event, payload]`, the same in both directions.

use serde_json::Value;

use crate::error::{DecodeError, EncodeError, json_kind};
use crate::message::{Message, Payload};
use crate::text::{optional_string, required_string};

/// Encodes a message with a JSON payload as a V2 text frame.
///
/// Binary payloads go through [`crate::binary`] instead; the caller dispatches.
pub fn encode_text(msg: &Message, payload: &Value) -> Result<String, EncodeError> {
    let frame = (
        msg.join_ref.as_deref(),
        msg.ref_.as_deref(),
        msg.topic.as_str(),
        msg.event.as_str(),
        payload,
    );
    serde_json::to_string(&frame).map_err(|err| EncodeError::Json(err.to_string()))
}

/// Decodes a V2 text frame sent by either side.
///
/// Phoenix binds the first five elements and ignores any more (`[a, b, c, d, e | _]`), so a
/// longer array is accepted; a shorter one is a [`DecodeError::WrongArity`].
pub fn decode_text(text: &str) -> Result<Message, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|err| DecodeError::NotJson {
        reason: err.to_string(),
    })?;
    let Value::Array(items) = value else {
        return Err(DecodeError::WrongShape {
            serializer: "V2",
            expected: "array",
            found: json_kind(&value),
        });
    };
    if items.len() < 5 {
        return Err(DecodeError::WrongArity { found: items.len() });
    }
    let mut items = items.into_iter();
    let mut next = || items.next().unwrap_or(Value::Null);
    let join_ref = optional_string("join_ref", next())?;
    let ref_ = optional_string("ref", next())?;
    let topic = required_string("topic", next())?;
    let event = required_string("event", next())?;
    let payload = next();
    Ok(Message {
        join_ref,
        ref_,
        topic,
        event,
        payload: Payload::Json(payload),
    })
}
