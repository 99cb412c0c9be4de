//! The Phoenix Channels wire protocol and phoenix.js's client-side presence bookkeeping, as pure
//! data: frames in, messages out, state in, callbacks out. No sockets, no clock, no threads.
//!
//! Architecture invariant: nothing in this crate does I/O or reads time, so the same code runs in
//! the simulator, on a real socket, in a benchmark and under a fuzzer, and every input (however
//! hostile) ends in a value or a typed error, never a panic.
//!
//! - [`Message`], [`Payload`], [`Frame`]: the message model (phoenix-protocol.md §1.2).
//! - [`Codec`] / [`Serializer`]: V1 and V2 text frames ([`v1`], [`v2`]) and V2 binary frames
//!   ([`binary`]), on the server's or the client's side, with a frame size limit.
//! - [`presence`]: typed `presence_state` / `presence_diff` payloads that keep field order.
//! - [`sync`]: phoenix.js 1.8.16 `Presence` (`syncState`, `syncDiff`, `list`, the instance with
//!   pending diffs), down to JavaScript key order and `===` on refs; [`jsmap`] holds the key order;
//!   [`shared_list`] holds the lists that clients nobody reads in that order share.
//! - [`sync_driver`]: the JSON-lines driver behind `phxsim presence-sync`.

pub mod binary;
pub mod codec;
pub mod error;
pub mod jsmap;
pub mod message;
pub mod presence;
pub mod shared_list;
pub mod sync;
pub mod sync_driver;
mod text;
pub use text::NUMERIC_REF_MARK;
pub mod v1;
pub mod v2;

pub use codec::{Codec, DEFAULT_MAX_FRAME_LEN, Role, Serializer};
pub use error::{DecodeError, EncodeError, PayloadError};
pub use jsmap::JsMap;
pub use message::{Frame, Message, Payload};
pub use presence::{Meta, Presence, PresenceDiff, PresenceState, Presences};
pub use shared_list::{SharedList, SharedLists};
pub use sync::{
    Callbacks, Event, Handled, Listed, PresenceEvents, PresenceInstance, SharedDiff, SyncList,
    SyncState, list, list_by, sync_diff, sync_shared_diff, sync_state, sync_state_shared,
};
