//! Broadcast diffs handed to a waiting client without waking its task.
//!
//! Why: in a join storm every browser of a node receives every join as a frame of its own,
//! and for a simulated browser that nobody observes such a frame only moves its presence list
//! (shared with the other browsers of its host that hold the same, see `frame_cache.rs`).
//! Waking its task for each one (the scheduler's queue, the session's select, the stream's
//! read and copy, the frame's parse) cost about a fifth of a 3 000-browser run. A simulated
//! link offers each segment to the receiving browser's [`Absorber`] as it arrives; when the
//! task waits for bytes with nothing of an earlier frame buffered and every frame of the
//! segment is a broadcast `presence_diff` that the browser's frame cache holds decoded, the
//! absorber hands them to the machine, and the segment is never read.
//!
//! Why that changes nothing a run shows:
//! - the session loop polls the socket first (a biased select), so bytes that arrive while it
//!   waits are handled before any command or timer of its next poll: the machine sees the
//!   same inputs in the same order;
//! - the frames are checked as the lean WebSocket checks them (final, unmasked, no RSV bit,
//!   text, within the frame limit, UTF-8) and would leave nothing behind in its buffer;
//!   anything else (a control frame, a fragment, a partial frame, a frame that is not cached
//!   or that carries a ref, an observed client) is left to the task, whole segment and all;
//! - a cached broadcast diff emits no event and queues no frame (if a step did either, the
//!   task is woken to write or deliver it, as after any step).

use super::Shared;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Hands segments that arrive on a client's connection to its machine while its task waits;
/// see the module docs. Made by [`crate::client::Client::absorber`].
#[derive(Clone)]
pub struct Absorber(pub(super) Arc<Shared>);

impl std::fmt::Debug for Absorber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Absorber").finish_non_exhaustive()
    }
}

/// What [`Absorber::absorb`] did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absorbed {
    /// Nothing: the segment is the task's to read.
    No,
    /// Handled: drop the segment; the task need not wake.
    Quiet,
    /// Handled: drop the segment, and wake the task (its step left something to do).
    WakeTask,
}

impl Absorber {
    /// Offers `segment`, the next bytes the server wrote on this client's connection, which
    /// have just arrived; see the module docs for when it takes them.
    pub fn absorb(&self, segment: &[u8]) -> Absorbed {
        let shared = &self.0;
        if !shared.read_idle.load(Ordering::Relaxed) {
            return Absorbed::No;
        }
        if shared
            .every_change
            .get()
            .is_some_and(|w| w.receiver_count() > 0)
        {
            // its receivers would be woken from outside the task's turn
            return Absorbed::No;
        }
        let mut m = shared.machine();
        // filled in place: returned, the array was copied at every call
        let mut texts = Texts {
            texts: [&[]; MAX_FRAMES],
            len: 0,
        };
        if !broadcast_texts(segment, m.max_frame_len(), &mut texts) {
            return Absorbed::No;
        }
        #[cfg(debug_assertions)]
        let due = m.next_deadline();
        let had_output = m.has_output();
        if !m.receive_broadcast_diffs(texts.iter()) {
            return Absorbed::No;
        }
        // only the presence counters moved, which the lifecycle watchers' status takes at the
        // task's next step (`Client::status` reads them from the machine): the watch is a
        // block of its own, a cache miss and a lock for each diff of each browser
        // a broadcast diff touches no timer, and a client that emits events is observed
        #[cfg(debug_assertions)]
        debug_assert_eq!(m.next_deadline(), due, "a broadcast diff moved a timer");
        debug_assert!(!m.has_events(), "a cached broadcast diff emitted an event");
        if m.has_output() != had_output || m.has_events() {
            Absorbed::WakeTask
        } else {
            Absorbed::Quiet
        }
    }
}

/// The most frames one segment may hold to be absorbed (a node's step writes a socket's
/// frames as one segment; more than a few is rare, and left to the task).
const MAX_FRAMES: usize = 16;

/// The payloads of a segment's text frames, in order.
struct Texts<'a> {
    texts: [&'a [u8]; MAX_FRAMES],
    len: usize,
}

impl<'a> Texts<'a> {
    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + Clone + '_ {
        self.texts[..self.len].iter().copied()
    }
}

/// Whether `segment` is whole text frames only, each final, unmasked, without RSV bits and
/// at most `max_len` bytes (what the lean WebSocket would read out of it as text messages,
/// UTF-8 permitting, without keeping a byte); their payloads go into `texts`, whose UTF-8 the
/// machine checks unless its cache holds the text.
fn broadcast_texts<'a>(segment: &'a [u8], max_len: usize, texts: &mut Texts<'a>) -> bool {
    let mut rest = segment;
    while !rest.is_empty() {
        let mut cursor = Cursor::new(rest);
        let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) else {
            return false;
        };
        let (Ok(start), Ok(len)) = (usize::try_from(cursor.position()), usize::try_from(len))
        else {
            return false;
        };
        let plain = header.is_final
            && !(header.rsv1 || header.rsv2 || header.rsv3)
            && header.mask.is_none()
            && header.opcode == OpCode::Data(Data::Text);
        if !plain || len > max_len || rest.len() - start < len || texts.len == MAX_FRAMES {
            return false;
        }
        texts.texts[texts.len] = &rest[start..start + len];
        texts.len += 1;
        rest = &rest[start + len..];
    }
    texts.len > 0
}

#[cfg(test)]
mod tests {
    use super::{MAX_FRAMES, Texts, broadcast_texts};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

    fn texts_of(segment: &[u8], max_len: usize) -> Option<Vec<&[u8]>> {
        let mut texts = Texts {
            texts: [&[]; MAX_FRAMES],
            len: 0,
        };
        broadcast_texts(segment, max_len, &mut texts).then(|| texts.iter().collect())
    }

    fn frame(header: FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header
            .format(payload.len() as u64, &mut out)
            .expect("format");
        out.extend_from_slice(payload);
        out
    }

    /// A final, unmasked text frame (tungstenite's default header is a close).
    fn plain() -> FrameHeader {
        FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        }
    }

    fn text(payload: &str) -> Vec<u8> {
        frame(plain(), payload.as_bytes())
    }

    #[test]
    fn whole_plain_text_frames_are_read_out() {
        let long = "x".repeat(70_000);
        let mut segment = text("a");
        segment.extend(text(&long));
        segment.extend(text("[null,null,\"t\",\"presence_diff\",{}]"));
        let got = texts_of(&segment, 100_000).expect("plain");
        let want: [&[u8]; 3] = [
            b"a",
            long.as_bytes(),
            b"[null,null,\"t\",\"presence_diff\",{}]",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn anything_the_task_must_see_leaves_the_segment_alone() {
        let ok = text("ok");
        let with = |bad: Vec<u8>| {
            let mut s = ok.clone();
            s.extend(bad);
            s
        };
        // `ok` then a frame of "x" whose header `change` made from a plain text one
        let after_ok = |change: fn(&mut FrameHeader)| {
            let mut header = plain();
            change(&mut header);
            with(frame(header, b"x"))
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("partial payload", with(text("hello")[..4].to_vec())),
            ("partial header", with(vec![0x81])),
            ("fragment", after_ok(|h| h.is_final = false)),
            (
                "binary",
                after_ok(|h| h.opcode = OpCode::Data(Data::Binary)),
            ),
            (
                "ping",
                after_ok(|h| h.opcode = OpCode::Control(Control::Ping)),
            ),
            (
                "close",
                after_ok(|h| h.opcode = OpCode::Control(Control::Close)),
            ),
            ("masked", after_ok(|h| h.mask = Some([1, 2, 3, 4]))),
            ("rsv", after_ok(|h| h.rsv1 = true)),
            ("too long", with(text(&"y".repeat(200)))),
            (
                "too many",
                (0..=super::MAX_FRAMES).flat_map(|_| text("z")).collect(),
            ),
        ];
        for (what, segment) in cases {
            assert!(texts_of(&segment, 100).is_none(), "{what}");
        }
        assert!(texts_of(&ok, 100).is_some());
    }
}
