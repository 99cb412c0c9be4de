//! Typed errors of the codec and of presence payloads.
//!
//! Phoenix kills the whole connection on any decode failure (phoenix-protocol.md §1.8); the
//! runtime must do the same but also log *why*, so every variant says what was wrong and where.

use serde_json::Value;
use thiserror::Error;

/// Why a frame could not be decoded. Every input, however hostile, ends here rather than in a panic.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The frame is longer than the decoder's limit; checked before any parsing.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Frame length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A text frame that is not one JSON value.
    #[error("text frame is not JSON: {reason}")]
    NotJson {
        /// serde_json's message, with line and column.
        reason: String,
    },
    /// JSON of the wrong kind at the top level: V1 wants an object, V2 an array.
    #[error("{serializer} text frame must be a JSON {expected}, found {found}")]
    WrongShape {
        /// `"V1"` or `"V2"`.
        serializer: &'static str,
        /// `"object"` or `"array"`.
        expected: &'static str,
        /// The JSON kind that arrived.
        found: &'static str,
    },
    /// A V2 array with fewer than the five elements `[join_ref, ref, topic, event, payload]`.
    #[error("V2 frame must have 5 elements [join_ref, ref, topic, event, payload], found {found}")]
    WrongArity {
        /// How many elements arrived.
        found: usize,
    },
    /// A V1 object without one of its required keys (`ref` may be null but must be present).
    #[error("V1 frame has no {0:?} key")]
    MissingField(&'static str),
    /// A field of the right frame shape holding the wrong JSON kind.
    #[error("{field} must be {expected}, found {found}")]
    WrongType {
        /// `"join_ref"`, `"ref"`, `"topic"` or `"event"`.
        field: &'static str,
        /// What the field may hold.
        expected: &'static str,
        /// The JSON kind that arrived.
        found: &'static str,
    },
    /// A binary frame on a V1 connection; binary frames arrived with V2 (Phoenix 1.6).
    #[error("binary frames exist only in the V2 serializer")]
    BinaryOnV1,
    /// A binary frame whose header or declared lengths run past its end.
    #[error("binary frame is truncated: {needed} bytes needed for its {part}, {len} present")]
    Truncated {
        /// `"kind byte"`, `"header"` or the name of the string that overruns.
        part: &'static str,
        /// Bytes needed up to the end of that part.
        needed: usize,
        /// Bytes in the frame.
        len: usize,
    },
    /// A binary frame whose first byte is no known kind (0 push, 1 reply, 2 broadcast).
    #[error("unknown binary frame kind {0}")]
    UnknownBinaryKind(u8),
    /// A known kind that this side never receives: a server only receives pushes (kind 0).
    #[error("binary frame kind {kind} ({name}) is never sent by the {sender}")]
    UnexpectedBinaryKind {
        /// The kind byte.
        kind: u8,
        /// `"reply"` or `"broadcast"`.
        name: &'static str,
        /// `"client"` or `"server"`.
        sender: &'static str,
    },
    /// A binary header string that is not UTF-8 (Phoenix would take the bytes; Rust strings cannot).
    #[error("binary frame {field} is not UTF-8")]
    InvalidUtf8 {
        /// Which header string.
        field: &'static str,
    },
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// V1 has only text frames, so it cannot carry a binary payload.
    #[error("the V1 serializer cannot carry a binary payload")]
    BinaryOnV1,
    /// A binary header string longer than its one length byte can say (Phoenix raises the same).
    #[error("binary frame {field} is {len} bytes; header lengths are one byte (at most 255)")]
    FieldTooLong {
        /// Which header string.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A server push in a binary frame has no `ref` slot (kind 0 from the server has a 4-byte header).
    #[error("a binary push from the server has no ref slot; only replies carry a ref")]
    RefOnServerPush,
    /// Clients never send replies, so there is no client-side binary reply frame.
    #[error("a client never sends a binary reply")]
    ReplyFromClient,
    /// serde_json refused the value (cannot happen for `serde_json::Value`, kept so nothing panics).
    #[error("JSON encoding failed: {0}")]
    Json(String),
}

/// Why a JSON payload is not a valid `presence_state` / `presence_diff`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PayloadError {
    /// Something that must be a JSON object is not.
    #[error("{what} must be a JSON object, found {found}")]
    NotAnObject {
        /// What was being read, e.g. `"presence_state payload"` or `"presence \"u1\""`.
        what: String,
        /// The JSON kind that arrived.
        found: &'static str,
    },
    /// A presence without its `metas` list.
    #[error("presence {key:?} has no \"metas\"")]
    MissingMetas {
        /// The presence key.
        key: String,
    },
    /// A presence whose `metas` is not an array.
    #[error("presence {key:?}: \"metas\" must be an array, found {found}")]
    MetasNotArray {
        /// The presence key.
        key: String,
        /// The JSON kind that arrived.
        found: &'static str,
    },
    /// A meta that is not an object (phoenix.js reads `meta.phx_ref`; Phoenix metas are maps).
    #[error("presence {key:?}: meta #{index} must be an object, found {found}")]
    MetaNotObject {
        /// The presence key.
        key: String,
        /// Position in `metas`.
        index: usize,
        /// The JSON kind that arrived.
        found: &'static str,
    },
    /// A `presence_diff` without `joins` or `leaves` (Phoenix always sends both).
    #[error("presence_diff has no {0:?}")]
    MissingDiffField(&'static str),
}

/// The JSON kind of a value, for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
