//! V2 binary frames (phoenix-protocol.md §1.5): a kind byte, one length byte per header string,
//! the strings, then the raw payload to the end of the frame.
//!
//! | kind | sender | header |
//! |---|---|---|
//! | 0 push | client | `0, len(join_ref), len(ref), len(topic), len(event)` |
//! | 0 push | server | `0, len(join_ref), len(topic), len(event)` (no ref) |
//! | 1 reply | server | `1, len(join_ref), len(ref), len(topic), len(status)` |
//! | 2 broadcast | server | `2, len(topic), len(event)` |
//!
//! A null `join_ref`/`ref` is written as the empty string, so decoding gives `Some("")` back:
//! binary frames cannot say null, and Phoenix itself hands `""` to the channel.

use crate::error::{DecodeError, EncodeError};
use crate::message::{Message, PHX_REPLY, Payload};

/// Kind byte of a push (either direction).
pub const KIND_PUSH: u8 = 0;
/// Kind byte of a reply (server → client only).
pub const KIND_REPLY: u8 = 1;
/// Kind byte of a broadcast (server → client only).
pub const KIND_BROADCAST: u8 = 2;

/// Encodes a server → client binary frame, choosing the kind from the message's shape:
/// a [`Payload::BinaryReply`] is a reply; a message with neither `join_ref` nor `ref` is a
/// broadcast; anything else with a `join_ref` is a push (which has no ref slot).
///
/// A push with no join_ref is written by Phoenix with an empty one: pass `Some("")` for that.
pub fn encode_server(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let join_ref = msg.join_ref.as_deref();
    let ref_ = msg.ref_.as_deref();
    match &msg.payload {
        Payload::BinaryReply { status, response } => build(
            KIND_REPLY,
            &[
                ("join_ref", join_ref.unwrap_or("")),
                ("ref", ref_.unwrap_or("")),
                ("topic", &msg.topic),
                ("status", status),
            ],
            response,
        ),
        Payload::Binary(bytes) => match (join_ref, ref_) {
            (None, None) => build(
                KIND_BROADCAST,
                &[("topic", &msg.topic), ("event", &msg.event)],
                bytes,
            ),
            (_, Some(_)) => Err(EncodeError::RefOnServerPush),
            (Some(join_ref), None) => build(
                KIND_PUSH,
                &[
                    ("join_ref", join_ref),
                    ("topic", &msg.topic),
                    ("event", &msg.event),
                ],
                bytes,
            ),
        },
        Payload::Json(_) => Err(EncodeError::Json(
            "a JSON payload belongs in a text frame".to_owned(),
        )),
    }
}

/// Encodes a client → server binary push (phoenix.js sends one when the payload is an ArrayBuffer).
pub fn encode_client(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    match &msg.payload {
        Payload::Binary(bytes) => build(
            KIND_PUSH,
            &[
                ("join_ref", msg.join_ref.as_deref().unwrap_or("")),
                ("ref", msg.ref_.as_deref().unwrap_or("")),
                ("topic", &msg.topic),
                ("event", &msg.event),
            ],
            bytes,
        ),
        Payload::BinaryReply { .. } => Err(EncodeError::ReplyFromClient),
        Payload::Json(_) => Err(EncodeError::Json(
            "a JSON payload belongs in a text frame".to_owned(),
        )),
    }
}

fn build(
    kind: u8,
    fields: &[(&'static str, &str)],
    payload: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let strings: usize = fields.iter().map(|(_, s)| s.len()).sum();
    let mut out = Vec::with_capacity(1 + fields.len() + strings + payload.len());
    out.push(kind);
    for (field, s) in fields {
        // Every header length is one unsigned byte; Phoenix and phoenix.js both refuse more.
        let len = u8::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong {
            field,
            len: s.len(),
        })?;
        out.push(len);
    }
    for (_, s) in fields {
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes a frame sent by a client, as the server does: only pushes (kind 0, 5-byte header).
pub fn decode_from_client(bytes: &[u8]) -> Result<Message, DecodeError> {
    let kind = kind_of(bytes)?;
    match kind {
        KIND_PUSH => {
            let mut r = Reader::new(bytes, 4)?;
            let join_ref = r.string("join_ref")?;
            let ref_ = r.string("ref")?;
            let topic = r.string("topic")?;
            let event = r.string("event")?;
            Ok(Message {
                join_ref: Some(join_ref),
                ref_: Some(ref_),
                topic,
                event,
                payload: Payload::Binary(r.rest().to_vec()),
            })
        }
        // Phoenix's decoder has clauses for kind 0 only; a reply or broadcast from a client
        // crashes the connection with a FunctionClauseError.
        KIND_REPLY => Err(DecodeError::UnexpectedBinaryKind {
            kind,
            name: "reply",
            sender: "client",
        }),
        KIND_BROADCAST => Err(DecodeError::UnexpectedBinaryKind {
            kind,
            name: "broadcast",
            sender: "client",
        }),
        other => Err(DecodeError::UnknownBinaryKind(other)),
    }
}

/// Decodes a frame sent by the server, as phoenix.js does: push (4-byte header, no ref), reply
/// (event `phx_reply`) or broadcast (no join_ref, no ref).
pub fn decode_from_server(bytes: &[u8]) -> Result<Message, DecodeError> {
    let kind = kind_of(bytes)?;
    match kind {
        KIND_PUSH => {
            let mut r = Reader::new(bytes, 3)?;
            let join_ref = r.string("join_ref")?;
            let topic = r.string("topic")?;
            let event = r.string("event")?;
            Ok(Message {
                join_ref: Some(join_ref),
                ref_: None,
                topic,
                event,
                payload: Payload::Binary(r.rest().to_vec()),
            })
        }
        KIND_REPLY => {
            let mut r = Reader::new(bytes, 4)?;
            let join_ref = r.string("join_ref")?;
            let ref_ = r.string("ref")?;
            let topic = r.string("topic")?;
            let status = r.string("status")?;
            Ok(Message {
                join_ref: Some(join_ref),
                ref_: Some(ref_),
                topic,
                event: PHX_REPLY.to_owned(),
                payload: Payload::BinaryReply {
                    status,
                    response: r.rest().to_vec(),
                },
            })
        }
        KIND_BROADCAST => {
            let mut r = Reader::new(bytes, 2)?;
            let topic = r.string("topic")?;
            let event = r.string("event")?;
            Ok(Message {
                join_ref: None,
                ref_: None,
                topic,
                event,
                payload: Payload::Binary(r.rest().to_vec()),
            })
        }
        other => Err(DecodeError::UnknownBinaryKind(other)),
    }
}

fn kind_of(bytes: &[u8]) -> Result<u8, DecodeError> {
    bytes.first().copied().ok_or(DecodeError::Truncated {
        part: "kind byte",
        needed: 1,
        len: 0,
    })
}

/// Walks the header: `lengths` one-byte lengths after the kind byte, then the strings in order.
struct Reader<'a> {
    bytes: &'a [u8],
    lengths: &'a [u8],
    next_len: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], count: usize) -> Result<Self, DecodeError> {
        let header_end = 1 + count;
        let lengths = bytes.get(1..header_end).ok_or(DecodeError::Truncated {
            part: "header",
            needed: header_end,
            len: bytes.len(),
        })?;
        Ok(Reader {
            bytes,
            lengths,
            next_len: 0,
            pos: header_end,
        })
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.lengths.get(self.next_len).copied().unwrap_or(0));
        self.next_len += 1;
        let end = self.pos + len;
        let raw = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated {
                part: field,
                needed: end,
                len: self.bytes.len(),
            })?;
        self.pos = end;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or(&[])
    }
}
