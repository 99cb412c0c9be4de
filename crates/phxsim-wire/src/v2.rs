//! The V2 JSON serializer (`vsn=2.0.0`, phoenix-protocol.md §1.4): text frames are the array
//! `[join_ref, ref, topic, event, payload]`, the same in both directions.

use serde_json::Value;

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

/// The head of a V2 text frame, its payload left as text that nothing has checked yet: for a
/// reader that decodes the payload its own way, checking it as it goes (many simulated
/// clients sharing what they decode of a topic's states, which repeat one another).
#[derive(Debug)]
pub struct RawFrame<'a> {
    pub join_ref: Option<String>,
    pub ref_: Option<String>,
    pub topic: String,
    pub event: String,
    /// Everything between the comma after `event` and the array's closing bracket, without
    /// the whitespace around it. **Not checked**: the frame is what [`decode_text_refs`]
    /// accepts, with these fields, exactly when this text is one JSON value.
    pub payload: &'a str,
}

/// JSON's whitespace.
fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// How long the JSON string or literal (`null`, a number, `true`, `false`) that `text`
/// starts with is, as far as its delimiters tell; its text is checked by whoever reads it.
/// `None` for an object or an array (or nothing).
fn token_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    match bytes.first()? {
        b'"' => {
            let mut i = 1;
            loop {
                match *bytes.get(i)? {
                    b'"' => return Some(i + 1),
                    b'\\' => i += 2,
                    _ => i += 1,
                }
            }
        }
        b'{' | b'[' => None,
        _ => Some(
            bytes
                .iter()
                .take_while(|b| !matches!(b, b',' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .count(),
        )
        .filter(|&n| n > 0),
    }
}

/// Splits a V2 text frame into the fields [`decode_text_refs`] reads from its first four
/// elements (decoded as it decodes them) and the payload's text, unchecked (see
/// [`RawFrame::payload`]). `None` for a frame this does not split: one whose head holds an
/// object or an array, or anything malformed. The caller then decodes it the ordinary way,
/// which says what is wrong; a payload followed by more elements (which Phoenix ignores) is
/// split with them, and is not one JSON value.
///
/// Why: a client's `presence_state` lists the whole topic, and a join storm sends thousands
/// of them, each mostly the one before; checking each whole as JSON before reading it was a
/// twentieth of a simulated join storm. The reader checks only what it has not read before.
pub fn split_text(text: &str, numeric: bool) -> Option<RawFrame<'_>> {
    let mut rest = text.trim_start_matches(is_json_space).strip_prefix('[')?;
    let mut head = Vec::with_capacity(4);
    for _ in 0..4 {
        rest = rest.trim_start_matches(is_json_space);
        let len = token_len(rest)?;
        head.push(serde_json::from_str::<Value>(rest.get(..len)?).ok()?);
        rest = rest[len..]
            .trim_start_matches(is_json_space)
            .strip_prefix(',')?;
    }
    let payload = rest
        .trim_end_matches(is_json_space)
        .strip_suffix(']')?
        .trim_matches(is_json_space);
    let mut head = head.into_iter();
    let mut next = || head.next().unwrap_or(Value::Null);
    Some(RawFrame {
        join_ref: optional_ref("join_ref", next(), numeric).ok()?,
        ref_: optional_ref("ref", next(), numeric).ok()?,
        topic: required_string("topic", next()).ok()?,
        event: required_string("event", next()).ok()?,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of V2 frames: head elements of every kind, payloads valid and not, and the
    /// whitespace JSON allows (and a byte it does not).
    fn arb_frame() -> impl Strategy<Value = String> {
        let strings = prop::sample::select(vec![
            "\"1\"",
            "\"a\\\"b\"",
            "\"\\u0041\\\\\"",
            "\"room:t\"",
            "\"presence_state\"",
        ]);
        let others = prop::sample::select(vec!["null", "12", "-1.5e3", "true"]);
        let bad = prop::sample::select(vec!["{}", "[1]", "\"x", "nul", "\"\u{1}\""]);
        let head = prop_oneof![8 => strings, 3 => others, 1 => bad];
        let payload = prop_oneof![
            6 => prop::sample::select(vec!["{}", "{\"a\":{\"metas\":[]}}", "{\"k\\\"\":[true,null]}"]),
            4 => prop::sample::select(vec![
                "{\"a\":1", "{\"a\":1}}", "[1, 2]", "\"s\"", "{\"a\":1}, 5", "", "{\"a\":1e400}",
            ]),
        ];
        let space = prop_oneof![
            9 => prop::sample::select(vec!["", " ", "\n\t", "\r "]),
            1 => Just("\u{b}"),
        ];
        (
            prop::collection::vec((space.clone(), head, space.clone()), 4),
            (space.clone(), payload, space.clone()),
            prop::bool::weighted(0.9),
            space,
        )
            .prop_map(|(heads, (a, p, b), close, end)| {
                let mut text = String::from("[");
                for (a, h, b) in heads {
                    text.push_str(&format!("{a}{h}{b},"));
                }
                text.push_str(&format!("{a}{p}{b}"));
                if close {
                    text.push(']');
                }
                text.push_str(end);
                text
            })
    }

    #[test]
    fn a_state_frame_splits_into_its_head_and_payload() {
        let text = " [\"1\", null ,\"room:a\\\"b\",\"presence_state\",\n{\"u\":{\"metas\":[]}} ] ";
        let split = split_text(text, false).expect("split");
        assert_eq!(split.join_ref.as_deref(), Some("1"));
        assert_eq!(split.ref_, None);
        assert_eq!(split.topic, "room:a\"b");
        assert_eq!(split.event, "presence_state");
        assert_eq!(split.payload, "{\"u\":{\"metas\":[]}}");
        // numbers are refs only on a codec with numeric refs, as `decode_text_refs` has them
        assert!(split_text("[1,null,\"t\",\"e\",{}]", false).is_none());
        let numeric = split_text("[1,null,\"t\",\"e\",{}]", true).expect("split");
        assert_eq!(
            numeric.join_ref,
            Some(format!("{}1", crate::NUMERIC_REF_MARK))
        );
        for refused in [
            "",
            "[",
            "[null,null,\"t\",\"e\"]",
            "[null,null,\"t\",{},{}]",
            "{}",
        ] {
            assert!(split_text(refused, false).is_none(), "{refused}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// A split frame whose payload is one JSON value is a frame `decode_text_refs` accepts,
        /// with the same fields and payload; and every frame it accepts with five elements is
        /// split.
        #[test]
        fn a_split_frame_is_what_the_decoder_reads(text in arb_frame(), numeric in any::<bool>()) {
            let split = split_text(&text, numeric);
            let decoded = decode_text_refs(&text, numeric);
            let payload: Option<Value> =
                split.as_ref().and_then(|s| serde_json::from_str(s.payload).ok());
            if let (Some(s), Some(payload)) = (&split, payload) {
                let Ok(m) = &decoded else {
                    return Err(TestCaseError::fail(format!("split but refused: {decoded:?}")));
                };
                prop_assert_eq!(&s.join_ref, &m.join_ref);
                prop_assert_eq!(&s.ref_, &m.ref_);
                prop_assert_eq!(&s.topic, &m.topic);
                prop_assert_eq!(&s.event, &m.event);
                prop_assert_eq!(Payload::Json(payload), m.payload.clone());
            }
            // (an object or an array is never a ref, a topic or an event)
            if let Ok(m) = &decoded {
                let five = serde_json::from_str::<Vec<Value>>(&text).is_ok_and(|v| v.len() == 5);
                if five {
                    prop_assert!(split.is_some(), "accepted as {:?} but not split", m);
                }
            }
        }
    }
}
