//! Phoenix's fastlane: a topic broadcast is encoded once per serializer, and every subscriber
//! of that serializer is sent the same frame, instead of each socket rendering and encoding the
//! diff again.
//!
//! The encoded frames live with the broadcast itself ([`PresenceUpdate::frames`]), so a socket
//! that is far behind (a join storm queues thousands of diffs per socket) still finds the frame
//! that the first socket encoded, and the frames go away with the last socket's copy of the
//! update.

use super::outbox::wire_frame;
use crate::encoded::Shared;
use crate::node::PresenceUpdate;
use phxsim_wire::{Frame, Serializer};
use std::sync::Arc;

/// The frame of `update` for `serializer`: the one encoded already for another socket, or
/// `encode`'s, kept for the next. Borrowed from the update: a socket takes only what it
/// writes (the wire bytes), and the message only when someone observes frames.
pub(crate) fn frame<E>(
    update: &PresenceUpdate,
    serializer: Serializer,
    encode: impl FnOnce() -> Result<Frame, E>,
) -> Result<&Shared, E> {
    let cell = match serializer {
        Serializer::V1 => &update.frames.v1,
        Serializer::V2 => &update.frames.v2,
    };
    if let Some(s) = cell.get() {
        return Ok(s);
    }
    let frame = encode()?;
    let fresh = Shared {
        wire: wire_frame(&frame),
        frame: Arc::new(frame),
    };
    // Two sockets may encode the same update at once: the first one stored wins.
    Ok(cell.get_or_init(|| fresh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use phxsim_shard::TrackerDiff;

    fn update(topic: &str) -> PresenceUpdate {
        PresenceUpdate::new(topic.into(), Arc::new(TrackerDiff::default()))
    }

    #[test]
    fn one_encoding_per_broadcast_and_serializer() {
        let mut encoded = 0;
        let mut enc = |text: &str| {
            encoded += 1;
            Ok::<_, ()>(Frame::Text(text.into()))
        };
        let a = update("room:a");
        let same_a = a.clone();
        let other = update("room:a");
        let text = |r: Result<&Shared, ()>| r.map(|s| (*s.frame).clone());
        let first = frame(&a, Serializer::V2, || enc("a2")).unwrap().clone();
        assert_eq!(*first.frame, Frame::Text("a2".into()));
        // the same broadcast for another socket: no encoding, the very same bytes
        let again = frame(&same_a, Serializer::V2, || enc("x")).unwrap();
        assert_eq!(first.wire.as_ptr(), again.wire.as_ptr());
        // another serializer, or another diff with equal content: encoded again
        assert_eq!(
            text(frame(&a, Serializer::V1, || enc("a1"))),
            Ok(Frame::Text("a1".into()))
        );
        assert_eq!(
            text(frame(&other, Serializer::V2, || enc("o2"))),
            Ok(Frame::Text("o2".into()))
        );
        assert_eq!(encoded, 3);
    }

    #[test]
    fn an_encoding_error_is_returned_and_not_kept() {
        let a = update("room:a");
        assert_eq!(frame(&a, Serializer::V2, || Err("too big")), Err("too big"));
        let ok = frame(&a, Serializer::V2, || {
            Ok::<_, &str>(Frame::Text("ok".into()))
        });
        assert_eq!(ok.map(|s| (*s.frame).clone()), Ok(Frame::Text("ok".into())));
    }
}
