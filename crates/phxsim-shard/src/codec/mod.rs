//! The node-to-node codec: length-prefixed, versioned binary frames. Pure functions, no I/O.
//!
//! A frame is `[len: u32 big-endian][version: u8][kind: u8][body]`, where `len` counts
//! everything after itself. The version comes first so that a peer speaking another version is
//! refused before anything else is read. Integers are LEB128 varints, strings are a varint
//! length and UTF-8 bytes, and a presence's pid, key and meta travel as one string, the
//! tracker's meta block, so a receiver keeps it with one copy.
//! Replica refs are written once per message in a table and dots refer to them by index, which
//! keeps a 100 000-presence transfer small and gives one place to check every reference.
//! The layout of each message is in [`write`]; [`debug_json`] renders any frame as JSON for
//! people reading traces.
//!
//! Encoding reads borrowed data and writes into one buffer reserved up front from the sizes of
//! the strings it will write ([`encode_frame_into`] reuses a caller's buffer). Nothing here
//! trusts the peer: every malformed input is a [`CodecError`], never a panic, and decoding
//! checks what the CRDT relies on (dots start at 1, each dot once, metas are objects).

mod debug_json;
mod read;
mod write;

use crate::message::Frame;
use phxsim_tracker::{MetaInterner, ReplicaRef, Tag};

pub use debug_json::debug_json;

/// The only body version this build speaks (1 was the JSON body of earlier builds; 2 carried a
/// presence's pid, key and meta as three fields, 3 carries them as the tracker's one block).
pub const VERSION: u8 = 3;
/// The size of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Default bound on one frame: a full transfer of a few hundred thousand presences fits.
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024 * 1024;

/// Why bytes from a peer were refused. The link that sent them is dropped; nothing else is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// A length of 0 leaves no room for the version byte.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another version of this codec.
    #[error("unsupported codec version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The kind byte names no message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The body ends inside a field.
    #[error("frame body ends inside {0}")]
    Truncated(&'static str),
    /// Bytes left over after the message.
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
    /// A varint longer than 64 bits.
    #[error("integer too large in {0}")]
    IntegerTooLarge(&'static str),
    /// A string that is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A flag byte other than 0 or 1.
    #[error("bad flag byte {0} in {1}")]
    BadFlag(u8, &'static str),
    /// A count larger than the bytes left could hold.
    #[error("{0} count exceeds the frame")]
    CountTooLarge(&'static str),
    /// A meta that is not JSON.
    #[error("meta of dot {tag} is not JSON: {error}")]
    MetaNotJson { tag: Tag, error: String },
    /// A dot or clock names a replica outside the message's replica table.
    #[error("replica index {0} is outside the message's table")]
    BadReplicaIndex(u64),
    /// The same replica twice in a table or a clock would make the last entry win silently.
    #[error("replica {0} appears twice")]
    DuplicateReplica(ReplicaRef),
    /// Dots count from 1; clock 0 names no event.
    #[error("dot with clock 0 of replica {0}")]
    ZeroDot(ReplicaRef),
    /// One dot carried with two values.
    #[error("dot {0} appears twice")]
    DuplicateTag(Tag),
    /// Values and dots are written in ascending order; anything else was not written by us.
    #[error("{0} out of order")]
    OutOfOrder(&'static str),
    /// A presence block whose owner lengths do not describe it.
    #[error("the pid and key lengths of dot {0} do not fit its presence")]
    BadOwner(Tag),
    /// Presence metas are JSON objects (they carry `phx_ref`).
    #[error("meta of dot {0} is not a JSON object")]
    MetaNotObject(Tag),
    /// A greeting without a node name cannot be addressed.
    #[error("hello with an empty node name")]
    EmptyNodeName,
}

/// Encodes one frame, length prefix included.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame_into(frame, &mut out);
    out
}

/// Appends one encoded frame (length prefix included) to `out`, reserving its size first.
pub fn encode_frame_into(frame: &Frame, out: &mut Vec<u8>) {
    write::frame(frame, out);
}

/// Reads a length prefix: how many bytes follow it, refused above `max_len`.
pub fn decode_header(header: [u8; HEADER_LEN], max_len: usize) -> Result<usize, CodecError> {
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(CodecError::Empty);
    }
    if len > max_len {
        return Err(CodecError::TooLarge { len, max: max_len });
    }
    Ok(len)
}

/// Decodes what follows a length prefix: the version byte and the message.
pub fn decode_body(body: &[u8]) -> Result<Frame, CodecError> {
    decode_body_with(body, None)
}

/// [`decode_body`], each presence's block taken from `interner` when it holds its text (the
/// nodes of one process then share one block per presence; see [`MetaInterner`]). The frame
/// reads the same either way.
pub fn decode_body_interned(body: &[u8], interner: &mut MetaInterner) -> Result<Frame, CodecError> {
    decode_body_with(body, Some(interner))
}

fn decode_body_with(body: &[u8], interner: Option<&mut MetaInterner>) -> Result<Frame, CodecError> {
    let (&version, rest) = body.split_first().ok_or(CodecError::Empty)?;
    if version != VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    read::frame(rest, interner)
}

/// Decodes the first frame of `buf`: `Ok(None)` if it is not complete yet, else the frame and
/// how many bytes it used.
pub fn decode_frame(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, CodecError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = decode_header(*header, max_len)?;
    let Some(body) = buf[HEADER_LEN..].get(..len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests;
