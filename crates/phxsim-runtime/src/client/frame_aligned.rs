//! The client's stream under tungstenite, which can hand tungstenite the bytes of one frame at
//! a time, so that the WebSocket's read buffer can be let go after a large message.
//!
//! Why: tungstenite reads into one `BytesMut` and reserves a whole frame's length in it. Once
//! the message is dropped the buffer takes the allocation back and keeps it, so every idle
//! connection holds the largest frame it ever read (a browser's `presence_state`, a heal's
//! diff: several KB). A simulation holds one connection per browser: at 16 000 browsers these
//! buffers were the largest single owner of memory (46 MiB), and most of it held frames read
//! long ago. tungstenite offers no way to shrink the buffer, but a WebSocket can be built
//! afresh around the same stream between two messages, if tungstenite holds no byte of the
//! next frame then. This stream makes sure of that: while `aligned`, a read never goes past
//! the end of the frame tungstenite is reading (it reads ahead at most one frame header, which
//! it keeps itself). tungstenite still parses, checks and answers every frame.
//!
//! Not aligned, it is a plain pass-through: a real socket would pay a system call per frame
//! header for the alignment, and a real client holds one connection.

use crate::prefixed::Prefixed;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest frame header (RFC 6455 §5.2): 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// A stream whose reads can stop at frame boundaries; see the module docs.
#[derive(Debug)]
pub(crate) struct FrameAligned<S> {
    /// The stream, after what came with the upgrade response; `None` only once it was moved
    /// into a fresh WebSocket ([`FrameAligned::take`]).
    inner: Option<Prefixed<S>>,
    aligned: bool,
    /// Bytes read from the stream ahead of tungstenite, to learn the length of the next frame.
    ahead: [u8; MAX_HEADER],
    ahead_at: usize,
    ahead_end: usize,
    /// Bytes of the current frame not yet handed out, its header included; 0 at a frame's start.
    left: u64,
}

/// The length of the frame that `bytes` starts with (header and payload), once they hold its
/// whole header. Saturates for lengths no frame can have: tungstenite refuses those headers.
fn frame_len(bytes: &[u8]) -> Option<u64> {
    let [_, second, ..] = *bytes else {
        return None;
    };
    let (extended, payload) = match second & 0x7F {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let header = 2 + extended + mask;
    if bytes.len() < header {
        return None;
    }
    let payload = payload.unwrap_or_else(|| {
        bytes[2..2 + extended]
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b))
    });
    Some(payload.saturating_add(header as u64))
}

impl<S> FrameAligned<S> {
    /// `stream`, after an upgrade that left `first` (the bytes read past the response).
    pub(crate) fn new(stream: S, first: Vec<u8>, aligned: bool) -> FrameAligned<S> {
        FrameAligned {
            inner: Some(Prefixed::new(first, stream)),
            aligned,
            ahead: [0; MAX_HEADER],
            ahead_at: 0,
            ahead_end: 0,
            left: 0,
        }
    }

    /// Moves the stream, and what was read ahead, into a new value, to be wrapped in a fresh
    /// WebSocket; this one is left without a stream (its I/O fails).
    pub(crate) fn take(&mut self) -> FrameAligned<S> {
        FrameAligned {
            inner: self.inner.take(),
            aligned: self.aligned,
            ahead: self.ahead,
            ahead_at: std::mem::take(&mut self.ahead_at),
            ahead_end: std::mem::take(&mut self.ahead_end),
            left: std::mem::take(&mut self.left),
        }
    }

    /// Whether tungstenite has been handed every byte of the frames read so far and none of
    /// the next: true between two messages of an aligned stream.
    pub(crate) fn at_frame_start(&self) -> bool {
        self.aligned && self.left == 0
    }

    fn inner(&mut self) -> io::Result<Pin<&mut Prefixed<S>>>
    where
        S: Unpin,
    {
        stream(&mut self.inner)
    }
}

/// The stream in `inner`, unless it moved to a new WebSocket. A function of the field alone, so
/// that a read can fill another field (the read-ahead) while it borrows this one.
fn stream<S: Unpin>(inner: &mut Option<Prefixed<S>>) -> io::Result<Pin<&mut Prefixed<S>>> {
    match inner.as_mut() {
        Some(s) => Ok(Pin::new(s)),
        None => Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "the stream moved to a new WebSocket",
        )),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameAligned<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.aligned {
            return this.inner()?.poll_read(cx, buf);
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.left > 0 {
                let want = usize::try_from(this.left)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining());
                if this.ahead_at < this.ahead_end {
                    let n = want.min(this.ahead_end - this.ahead_at);
                    buf.put_slice(&this.ahead[this.ahead_at..this.ahead_at + n]);
                    this.ahead_at += n;
                    this.left -= n as u64;
                    return Poll::Ready(Ok(()));
                }
                // straight into tungstenite's buffer, no further than the frame's end
                let mut part = ReadBuf::new(buf.initialize_unfilled_to(want));
                ready!(this.inner()?.poll_read(cx, &mut part))?;
                let n = part.filled().len();
                buf.advance(n);
                this.left -= n as u64;
                return Poll::Ready(Ok(()));
            }
            if let Some(len) = frame_len(&this.ahead[this.ahead_at..this.ahead_end]) {
                this.left = len;
                continue;
            }
            // The next header is not all here: read more of it (and perhaps past it).
            this.ahead.copy_within(this.ahead_at..this.ahead_end, 0);
            this.ahead_end -= this.ahead_at;
            this.ahead_at = 0;
            let mut part = ReadBuf::new(&mut this.ahead[this.ahead_end..]);
            ready!(stream(&mut this.inner)?.poll_read(cx, &mut part))?;
            let n = part.filled().len();
            this.ahead_end += n;
            if n == 0 {
                // The stream ended inside a header (or before one): tungstenite gets what
                // there is, then the end, and says what is wrong as it always does.
                if this.ahead_end == 0 {
                    return Poll::Ready(Ok(()));
                }
                this.left = this.ahead_end as u64;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameAligned<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// A frame header for a payload of `len` bytes, masked or not (the payload is not framed
    /// or masked here: only lengths matter to the stream).
    fn header(len: u64, masked: bool, wide: bool) -> Vec<u8> {
        let mask = if masked { 0x80 } else { 0 };
        let mut h = vec![0x81];
        if wide {
            h.push(mask | 127);
            h.extend_from_slice(&len.to_be_bytes());
        } else if len < 126 {
            h.push(mask | len as u8);
        } else {
            h.push(mask | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        if masked {
            h.extend_from_slice(&[1, 2, 3, 4]);
        }
        h
    }

    /// A stream that returns its chunks one read at a time (part of one if the read is
    /// smaller), then ends.
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(front) = self.0.front_mut() {
                let n = front.len().min(buf.remaining());
                buf.put_slice(&front[..n]);
                front.drain(..n);
                if front.is_empty() {
                    self.0.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn read_once(s: &mut FrameAligned<Chunks>, max: usize) -> Vec<u8> {
        let mut space = vec![0u8; max];
        let mut buf = ReadBuf::new(&mut space);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(s).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => buf.filled().to_vec(),
            other => panic!("read: {other:?}"),
        }
    }

    #[test]
    fn frame_lengths_follow_rfc_6455() {
        assert_eq!(frame_len(&[]), None);
        assert_eq!(frame_len(&[0x81]), None);
        assert_eq!(frame_len(&[0x81, 5]), Some(7));
        assert_eq!(frame_len(&[0x81, 0x85, 1, 2, 3]), None);
        assert_eq!(frame_len(&[0x81, 0x85, 1, 2, 3, 4]), Some(11));
        assert_eq!(frame_len(&[0x81, 126, 1]), None);
        assert_eq!(frame_len(&[0x81, 126, 1, 0]), Some(4 + 256));
        assert_eq!(frame_len(&header(70_000, true, true)), Some(14 + 70_000));
        assert_eq!(
            frame_len(&[0x81, 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Some(u64::MAX)
        );
    }

    proptest! {
        /// Whatever the chunks the bytes come in and the room each read offers, an aligned
        /// stream hands out every byte in order and no read spans two frames; a plain one
        /// hands out the same bytes.
        #[test]
        fn reads_stop_at_frame_boundaries(
            frames in prop::collection::vec((0u64..400, any::<bool>(), prop::bool::weighted(0.1)), 1..12),
            first_len in 0usize..40,
            cuts in prop::collection::vec(1usize..50, 1..40),
            rooms in prop::collection::vec(1usize..300, 1..40),
        ) {
            let mut bytes = Vec::new();
            let mut ends = Vec::new();
            for (i, (len, masked, wide)) in frames.iter().enumerate() {
                bytes.extend(header(*len, *masked, *wide));
                bytes.extend((0..*len).map(|b| (b as u8) ^ (i as u8)));
                ends.push(bytes.len());
            }
            let first_len = first_len.min(bytes.len());
            let mut chunks = VecDeque::new();
            let mut at = first_len;
            for cut in cuts.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + cut).min(bytes.len());
                chunks.push_back(bytes[at..end].to_vec());
                at = end;
            }
            for aligned in [true, false] {
                let mut s = FrameAligned::new(
                    Chunks(chunks.clone()),
                    bytes[..first_len].to_vec(),
                    aligned,
                );
                let mut got = Vec::new();
                for room in rooms.iter().cycle() {
                    let before = got.len();
                    let read = read_once(&mut s, *room);
                    if read.is_empty() {
                        break;
                    }
                    got.extend(read);
                    if aligned {
                        // the frame this read started in ends at or after where it stopped
                        let end = ends.iter().find(|e| **e > before).copied();
                        prop_assert!(end.is_some_and(|e| got.len() <= e), "read {before}..{} crosses a frame end", got.len());
                        prop_assert_eq!(s.at_frame_start(), ends.contains(&got.len()));
                    }
                }
                prop_assert_eq!(&got, &bytes);
            }
        }
    }

    #[test]
    fn a_stream_that_ends_inside_a_header_hands_out_what_came() {
        let mut s = FrameAligned::new(
            Chunks(VecDeque::from([vec![0x81, 126, 1]])),
            Vec::new(),
            true,
        );
        assert_eq!(read_once(&mut s, 100), vec![0x81, 126, 1]);
        assert_eq!(read_once(&mut s, 100), Vec::<u8>::new());
    }

    #[test]
    fn a_taken_stream_reads_on_where_it_was_and_the_old_one_fails() {
        let mut bytes = header(3, false, false);
        bytes.extend_from_slice(b"abc");
        bytes.extend(header(2, false, false));
        bytes.extend_from_slice(b"de");
        let mut s = FrameAligned::new(Chunks(VecDeque::from([bytes.clone()])), Vec::new(), true);
        assert_eq!(read_once(&mut s, 100), bytes[..5].to_vec());
        let mut fresh = s.take();
        assert_eq!(read_once(&mut fresh, 100), bytes[5..].to_vec());
        let mut space = [0u8; 4];
        let mut buf = ReadBuf::new(&mut space);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let old = Pin::new(&mut s).poll_read(&mut cx, &mut buf);
        assert!(matches!(old, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::NotConnected));
    }
}
