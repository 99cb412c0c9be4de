//! Phoenix's fastlane: a topic broadcast is encoded once per serializer, and every subscriber
//! of that serializer is sent the same frame, instead of each socket rendering and encoding the
//! diff again.

use super::outbox::{WireFrame, wire_frame};
use crate::node::PresenceUpdate;
use phxsim_wire::{Frame, Serializer};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// How many recent broadcasts keep their frames: the sockets of a node send one diff within
/// a few steps of each other, so a handful is enough; older ones are encoded again.
const RECENT: usize = 8;

/// One encoded broadcast. Holding the diff keeps its allocation alive, so a pointer match is
/// the same diff and never a new one at a reused address.
struct Entry {
    update: PresenceUpdate,
    serializer: Serializer,
    shared: Shared,
}

/// One broadcast, encoded and framed once; cloning it copies no bytes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Shared {
    /// The message, for observers (transcripts, `--frames`).
    pub frame: Arc<Frame>,
    /// The WebSocket frame every socket of that serializer writes.
    pub wire: WireFrame,
}

#[derive(Default)]
pub(crate) struct Fastlane {
    recent: Mutex<VecDeque<Entry>>,
}

impl Fastlane {
    /// The frame of `update` for `serializer`: the one encoded already for another socket, or
    /// `encode`'s, kept for the next.
    pub(crate) fn frame<E>(
        &self,
        update: &PresenceUpdate,
        serializer: Serializer,
        encode: impl FnOnce() -> Result<Frame, E>,
    ) -> Result<Shared, E> {
        let same = |e: &Entry| {
            e.serializer == serializer
                && Arc::ptr_eq(&e.update.diff, &update.diff)
                && e.update.topic == update.topic
        };
        if let Ok(recent) = self.recent.lock()
            && let Some(e) = recent.iter().find(|e| same(e))
        {
            return Ok(e.shared.clone());
        }
        let frame = encode()?;
        let shared = Shared {
            wire: wire_frame(&frame),
            frame: Arc::new(frame),
        };
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Entry {
                update: update.clone(),
                serializer,
                shared: shared.clone(),
            });
        }
        Ok(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phxsim_shard::PresenceDiff;

    fn update(topic: &str) -> PresenceUpdate {
        PresenceUpdate {
            topic: topic.into(),
            diff: Arc::new(PresenceDiff::default()),
        }
    }

    #[test]
    fn one_encoding_per_broadcast_and_serializer() {
        let lane = Fastlane::default();
        let mut encoded = 0;
        let mut enc = |text: &str| {
            encoded += 1;
            Ok::<_, ()>(Frame::Text(text.into()))
        };
        let a = update("room:a");
        let same_a = a.clone();
        let other = update("room:a");
        let text = |r: Result<Shared, ()>| r.map(|s| (*s.frame).clone());
        let first = lane.frame(&a, Serializer::V2, || enc("a2")).unwrap();
        assert_eq!(*first.frame, Frame::Text("a2".into()));
        // the same broadcast for another socket: no encoding, the very same bytes
        let again = lane.frame(&same_a, Serializer::V2, || enc("x")).unwrap();
        assert!(Arc::ptr_eq(&first.wire, &again.wire));
        // another serializer, or another diff with equal content: encoded again
        assert_eq!(
            text(lane.frame(&a, Serializer::V1, || enc("a1"))),
            Ok(Frame::Text("a1".into()))
        );
        assert_eq!(
            text(lane.frame(&other, Serializer::V2, || enc("o2"))),
            Ok(Frame::Text("o2".into()))
        );
        assert_eq!(encoded, 3);
    }

    #[test]
    fn an_encoding_error_is_returned_and_not_kept() {
        let lane = Fastlane::default();
        let a = update("room:a");
        assert_eq!(
            lane.frame(&a, Serializer::V2, || Err("too big")),
            Err("too big")
        );
        let ok = lane.frame(&a, Serializer::V2, || {
            Ok::<_, &str>(Frame::Text("ok".into()))
        });
        assert_eq!(ok.map(|s| (*s.frame).clone()), Ok(Frame::Text("ok".into())));
    }
}
