//! The encodings a broadcast carries with it (see `server::fastlane`): the node creates the
//! empty cache with each presence update, and the server's sockets fill it, so a topic's diff
//! is encoded once per serializer. It lives apart from both so that the node, below the
//! server, does not import it.

use bytes::Bytes;
use phxsim_wire::Frame;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// One broadcast, encoded and framed once; cloning it copies no bytes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Shared {
    /// The message, for observers (transcripts, `--frames`).
    pub frame: Arc<Frame>,
    /// The WebSocket frame every socket of that serializer writes.
    pub wire: Bytes,
}

/// The frames of one broadcast, one per serializer, filled by the first socket that needs it.
#[derive(Default)]
pub struct EncodedFrames {
    pub(crate) v1: OnceLock<Shared>,
    pub(crate) v2: OnceLock<Shared>,
}

impl fmt::Debug for EncodedFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedFrames")
            .field("v1", &self.v1.get().is_some())
            .field("v2", &self.v2.get().is_some())
            .finish()
    }
}

/// A cache: two updates are equal whatever each has encoded so far.
impl PartialEq for EncodedFrames {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EncodedFrames {}
