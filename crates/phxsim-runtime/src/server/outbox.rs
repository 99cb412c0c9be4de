//! A socket's outbound queue: whole WebSocket frames, already framed, written straight to the
//! stream, and bounded in bytes.
//!
//! Why not tungstenite's writer: it copies every frame into a per-socket `Vec` that keeps its
//! largest size forever, so 10 000 sockets that each once received a 700 KB `presence_state`
//! would hold 7 GB; and its buffer grows without bound for a client that stops reading. Here a
//! broadcast is framed once and every socket queues the same shared buffer (no copy), the
//! queue is freed as it drains, and a socket whose queue would pass its limit is closed.
//!
//! Server frames are never masked (RFC 6455 §5.1), so one framed broadcast is valid on every
//! socket.

use bytes::Bytes;
use phxsim_wire::Frame;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// One complete WebSocket frame as it goes on the wire, shareable between sockets.
pub(crate) type WireFrame = Bytes;

/// The header of an unmasked data frame with FIN set: opcode text (0x1) or binary (0x2), and
/// the shortest length form.
pub(crate) fn frame_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    out.push(0x80 | opcode);
    if len < 126 {
        // fits the 7-bit length
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out
}

/// Frames a data message: FIN set, opcode text or binary, no mask, the shortest length form.
pub(crate) fn wire_frame(frame: &Frame) -> WireFrame {
    let (opcode, payload): (u8, &[u8]) = match frame {
        Frame::Text(t) => (0x1, t.as_bytes()),
        Frame::Binary(b) => (0x2, b),
    };
    let mut out = frame_header(opcode, payload.len());
    out.reserve_exact(payload.len());
    out.extend_from_slice(payload);
    out.into()
}

/// A text frame whose payload is the concatenation of `parts` (shared buffers, slices of
/// them): the header and the parts, written one after the other with no copy.
pub(crate) fn text_frame_parts(parts: Vec<Bytes>) -> Vec<Bytes> {
    let len = parts.iter().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(parts.len() + 1);
    out.push(Bytes::from(frame_header(0x1, len)));
    out.extend(parts.into_iter().filter(|p| !p.is_empty()));
    out
}

/// The queue went over its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overflow {
    /// Bytes that would have been queued.
    pub queued: usize,
    /// The limit.
    pub limit: usize,
}

/// A piece of a frame: the whole frame, or one of the buffers it is written from.
#[derive(Debug)]
struct Part {
    bytes: Bytes,
    /// Whether a frame starts here (else the part continues the frame before it).
    first: bool,
}

/// Frames waiting to be written, oldest first.
#[derive(Debug)]
pub(crate) struct Outbox {
    parts: VecDeque<Part>,
    /// Bytes of the front part already written.
    head: usize,
    /// Bytes not yet written, over all parts.
    bytes: usize,
    limit: usize,
    /// Parts at the back queued since the last [`Outbox::seal`].
    unsealed: usize,
}

/// Parts handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Slots an emptied queue keeps (160 bytes): the smallest allocation a `VecDeque` makes, so
/// one diff at a time never allocates.
const KEPT_PARTS: usize = 4;

impl Outbox {
    pub(crate) fn new(limit: usize) -> Outbox {
        Outbox {
            parts: VecDeque::new(),
            head: 0,
            bytes: 0,
            limit,
            unsealed: 0,
        }
    }

    /// Queues a frame, unless that would put more than the limit in the queue.
    pub(crate) fn push(&mut self, frame: WireFrame) -> Result<(), Overflow> {
        self.admit(frame.len())?;
        self.bytes += frame.len();
        self.unsealed += 1;
        self.parts.push_back(Part {
            bytes: frame,
            first: true,
        });
        Ok(())
    }

    /// Queues one frame made of `parts` (header first), unless that would put more than the
    /// limit in the queue.
    pub(crate) fn push_parts(&mut self, parts: Vec<Bytes>) -> Result<(), Overflow> {
        let len = parts.iter().map(Bytes::len).sum();
        self.admit(len)?;
        self.bytes += len;
        for (i, bytes) in parts.into_iter().enumerate() {
            self.unsealed += 1;
            self.parts.push_back(Part {
                bytes,
                first: i == 0,
            });
        }
        Ok(())
    }

    /// Whether `more` bytes beyond what is queued stay within the limit.
    pub(crate) fn admit(&self, more: usize) -> Result<(), Overflow> {
        let queued = self.bytes + more;
        if queued > self.limit {
            return Err(Overflow {
                queued,
                limit: self.limit,
            });
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Whether a frame is partly written: nothing else may touch the stream until it is done.
    pub(crate) fn mid_frame(&self) -> bool {
        self.head > 0 || self.parts.front().is_some_and(|p| !p.first)
    }

    /// Bytes not yet written.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes as much as the stream takes now. `Ready(Ok)` once empty; `Pending` when the
    /// stream is full (the task is woken when it can take more); an error ends the socket.
    /// Returns whether any byte was written, with the poll result.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut W,
        cx: &mut Context<'_>,
    ) -> (bool, Poll<io::Result<()>>) {
        let mut progressed = false;
        // A stream without vectored writes takes only the first buffer of a vectored write,
        // so it gets that buffer without the slice array (one diff per wake-up is the usual).
        let vectored = stream.is_write_vectored();
        while let Some(front) = self.parts.front() {
            let polled = if !vectored || self.parts.len() == 1 {
                Pin::new(&mut *stream).poll_write(cx, &front.bytes[self.head..])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                for (i, p) in self.parts.iter().take(MAX_SLICES).enumerate() {
                    let from = if i == 0 { self.head } else { 0 };
                    slices[i] = IoSlice::new(&p.bytes[from..]);
                    n += 1;
                }
                Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n])
            };
            let written = match polled {
                Poll::Pending => return (progressed, Poll::Pending),
                Poll::Ready(Err(e)) => return (progressed, Poll::Ready(Err(e))),
                Poll::Ready(Ok(0)) => {
                    return (
                        progressed,
                        Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    );
                }
                Poll::Ready(Ok(w)) => w,
            };
            progressed = true;
            self.advance(written);
        }
        (progressed, Pin::new(stream).poll_flush(cx))
    }

    /// Ends a step of the socket: for a stream that writes one buffer at a time, the parts
    /// queued since the last step are joined into one, so that a step goes out in one write,
    /// as through a socket's own write buffer (the simulator's streams deliver each write as
    /// one segment, and draw each segment's loss).
    pub(crate) fn seal(&mut self, vectored: bool) {
        let fresh = std::mem::take(&mut self.unsealed);
        if vectored || fresh < 2 {
            return;
        }
        // Parts written since they were queued are gone; a part partly written stays whole.
        let start = self
            .parts
            .len()
            .saturating_sub(fresh)
            .max(usize::from(self.head > 0));
        if self.parts.len() < start + 2 {
            return;
        }
        let len: usize = self.parts.iter().skip(start).map(|p| p.bytes.len()).sum();
        let first = self.parts.get(start).is_some_and(|p| p.first);
        let mut all = Vec::with_capacity(len);
        for p in self.parts.drain(start..) {
            all.extend_from_slice(&p.bytes);
        }
        self.parts.push_back(Part {
            bytes: all.into(),
            first,
        });
    }

    fn advance(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let Some(front) = self.parts.front() else {
                return;
            };
            let left = front.bytes.len() - self.head;
            if written >= left {
                written -= left;
                self.head = 0;
                self.parts.pop_front();
            } else {
                self.head += written;
                written = 0;
            }
        }
        if self.parts.is_empty() && self.parts.capacity() > KEPT_PARTS {
            // Give a burst's queue memory back: an idle socket keeps no more than a few slots,
            // which it reuses frame after frame instead of allocating them for each.
            self.parts = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_use_the_shortest_length_form() {
        let f = wire_frame(&Frame::Text("hi".into()));
        assert_eq!(&f[..], &[0x81, 2, b'h', b'i']);
        let f = wire_frame(&Frame::Binary(vec![7; 126]));
        assert_eq!(&f[..4], &[0x82, 126, 0, 126]);
        assert_eq!(f.len(), 4 + 126);
        let f = wire_frame(&Frame::Text("x".repeat(70_000)));
        assert_eq!(&f[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn the_limit_counts_unwritten_bytes() {
        let mut o = Outbox::new(10);
        assert!(o.push(vec![1; 6].into()).is_ok());
        assert_eq!(
            o.push(vec![2; 5].into()),
            Err(Overflow {
                queued: 11,
                limit: 10
            })
        );
        o.advance(4);
        assert!(o.mid_frame());
        assert!(o.push(vec![2; 5].into()).is_ok());
        assert_eq!(o.bytes(), 7);
        o.advance(7);
        assert!(o.is_empty() && !o.mid_frame());
        // A frame of parts is under way until its last part is written.
        o.push_parts(vec![Bytes::from("ab"), Bytes::from("cd")])
            .unwrap();
        assert!(!o.mid_frame());
        o.advance(2);
        assert!(o.mid_frame());
        o.advance(2);
        assert!(!o.mid_frame() && o.is_empty());
        // Sealed for a stream without vectored writes, the parts become one frame.
        o.push_parts(vec![Bytes::from("ab"), Bytes::from("cd")])
            .unwrap();
        o.seal(false);
        assert_eq!(o.parts.len(), 1);
        assert!(!o.mid_frame());
    }

    #[test]
    fn frames_read_back_with_tungstenite() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut ours, theirs) = tokio::io::duplex(1 << 20);
            let mut o = Outbox::new(1 << 20);
            let big = "y".repeat(100_000);
            o.push(wire_frame(&Frame::Text("a".into()))).unwrap();
            o.push(wire_frame(&Frame::Text(big.clone()))).unwrap();
            o.push(wire_frame(&Frame::Binary(vec![1, 2]))).unwrap();
            let shared = Bytes::from("0123456789");
            o.push_parts(text_frame_parts(vec![
                shared.slice(..4),
                Bytes::from("-own-"),
                shared.slice(4..),
            ]))
            .unwrap();
            let done = std::future::poll_fn(|cx| o.poll_write(&mut ours, cx).1).await;
            assert!(done.is_ok());
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(theirs, Role::Client, None)
                    .await;
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("a"));
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(big));
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::binary(vec![1, 2])
            );
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text("0123-own-456789")
            );
        });
    }
}
