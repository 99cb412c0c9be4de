//! The V2 JSON serializer (`vsn=2.0.0`, phoenix-protocol.md §1.4): text frames are the array
//! `[join_ref, ref, topic, event, payload]`, the same in both directions.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{DecodeError, EncodeError, json_kind};
use crate::message::{Message, Payload};
use crate::text::{optional_ref, ref_value, required_string};

/// Encodes a message with a JSON payload as a V2 text frame.
///
/// Binary payloads go through [`crate::binary`] instead; the caller dispatches.
pub fn encode_text(msg: &Message, payload: &Value) -> Result<String, EncodeError> {
    encode_text_refs(msg, payload, false)
}

/// [`encode_text`] on a codec that may hold numeric refs (see [`NUMERIC_REF_MARK`]).
///
/// [`NUMERIC_REF_MARK`]: crate::NUMERIC_REF_MARK
pub fn encode_text_refs(
    msg: &Message,
    payload: &Value,
    numeric: bool,
) -> Result<String, EncodeError> {
    let frame = (
        ref_value(msg.join_ref.as_deref(), numeric),
        ref_value(msg.ref_.as_deref(), numeric),
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
    decode_text_refs(text, false)
}

/// [`decode_text`] accepting numeric refs too (Phoenix 1.7.21).
pub fn decode_text_refs(text: &str, numeric: bool) -> Result<Message, DecodeError> {
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
    let join_ref = optional_ref("join_ref", next(), numeric)?;
    let ref_ = optional_ref("ref", next(), numeric)?;
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

/// A V2 text frame whose payload is left as JSON text: for a reader that decodes the payload
/// its own way (many simulated clients sharing what they decode of equal presences).
#[derive(Debug)]
pub struct RawFrame<'a> {
    pub join_ref: Option<String>,
    pub ref_: Option<String>,
    pub topic: String,
    pub event: String,
    /// The payload's JSON text, checked as JSON syntax only.
    pub payload: &'a RawValue,
}

/// [`decode_text_refs`] with the payload left as text. It accepts what `decode_text_refs`
/// accepts, with the same fields, except that the payload is only checked as JSON syntax
/// (a number out of `f64`'s range in it is not refused here): a reader parses it itself.
pub fn decode_text_raw(text: &str, numeric: bool) -> Result<RawFrame<'_>, DecodeError> {
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|err| DecodeError::NotJson {
        reason: err.to_string(),
    })?;
    if items.len() < 5 {
        return Err(DecodeError::WrongArity { found: items.len() });
    }
    let value = |raw: &RawValue| -> Result<Value, DecodeError> {
        serde_json::from_str(raw.get()).map_err(|err| DecodeError::NotJson {
            reason: err.to_string(),
        })
    };
    // elements past the fifth are ignored, but must be JSON a `Value` holds, as they are in
    // `decode_text_refs`
    for extra in &items[5..] {
        value(extra)?;
    }
    Ok(RawFrame {
        join_ref: optional_ref("join_ref", value(items[0])?, numeric)?,
        ref_: optional_ref("ref", value(items[1])?, numeric)?,
        topic: required_string("topic", value(items[2])?)?,
        event: required_string("event", value(items[3])?)?,
        payload: items[4],
    })
}
