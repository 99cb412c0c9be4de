//! A socket task wakes up for every diff its channels receive, but a client sends it a frame
//! only now and then. Asking tungstenite for the next frame on each wake-up costs a trip
//! through its read path down to the stream, only to learn that nothing arrived (6 % of the
//! CPU with 3 000 clients in one topic). [`ReadGate`] wraps the stream and remembers whether
//! a read could find anything new, so the socket asks only then.
//!
//! The gate is closed only when the stream's read said "nothing yet" (`Pending`) and the
//! stream has not woken the reader since. Any bytes read, any wake-up of the read side, and
//! any write that had to wait (tungstenite may have a pong or a close echo to finish on its
//! next read) open it again. So skipping a read while the gate is closed skips exactly the
//! reads that would have returned nothing: heartbeats, closes and timeouts keep their timing.

use futures_util::task::AtomicWaker;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that knows whether reading it may find something.
pub(super) struct ReadGate<S> {
    inner: S,
    signal: Arc<ReadSignal>,
    /// `signal` as a waker, made once: the stream's read side wakes it.
    waker: Waker,
}

/// Set when the stream's read side wakes up; wakes the reader in turn.
struct ReadSignal {
    open: AtomicBool,
    reader: AtomicWaker,
}

impl Wake for ReadSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.open.store(true, Ordering::Release);
        self.reader.wake();
    }
}

impl<S> ReadGate<S> {
    pub(super) fn new(inner: S) -> ReadGate<S> {
        let signal = Arc::new(ReadSignal {
            open: AtomicBool::new(true),
            reader: AtomicWaker::new(),
        });
        let waker = Waker::from(signal.clone());
        ReadGate {
            inner,
            signal,
            waker,
        }
    }

    /// Whether a read may find bytes (or an end, or an error) it did not find last time.
    pub(super) fn may_read(&self) -> bool {
        self.signal.open.load(Ordering::Acquire)
    }

    fn open(&self) {
        self.signal.open.store(true, Ordering::Release);
    }

    /// Opens the gate when a write had to wait: tungstenite finishes its own pending frames
    /// on its next read.
    fn note_write<T>(&self, polled: Poll<T>) -> Poll<T> {
        if polled.is_pending() {
            self.open();
        }
        polled
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadGate<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.signal.reader.register(cx.waker());
        // Closed before the read: a wake-up during or after it opens the gate again.
        this.signal.open.store(false, Ordering::Release);
        let mut ours = Context::from_waker(&this.waker);
        let polled = Pin::new(&mut this.inner).poll_read(&mut ours, buf);
        if polled.is_ready() {
            this.open();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadGate<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(polled)
    }

    // Forwarded for the outbox's one write per step (see `crate::prefixed::Prefixed`).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_write(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note_write(polled)
    }
}

#[cfg(test)]
mod tests {
    use super::ReadGate;
    use std::pin::Pin;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

    /// Polls one read once: whether it found nothing yet.
    async fn read_pends(gate: &mut ReadGate<tokio::io::DuplexStream>) -> bool {
        let mut buf = [0u8; 8];
        std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            std::task::Poll::Ready(Pin::new(&mut *gate).poll_read(cx, &mut rb).is_pending())
        })
        .await
    }

    #[tokio::test]
    async fn the_gate_closes_on_an_empty_read_and_opens_when_bytes_arrive() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut gate = ReadGate::new(ours);
        assert!(gate.may_read(), "a new stream may have bytes");
        let mut buf = [0u8; 8];
        assert!(read_pends(&mut gate).await);
        assert!(!gate.may_read(), "nothing arrived since the empty read");
        peer.write_all(b"hi").await.unwrap();
        assert!(gate.may_read(), "the peer's bytes wake the read side");
        assert_eq!(gate.read(&mut buf).await.unwrap(), 2);
        assert!(gate.may_read(), "after bytes, the next read may find more");
        drop(peer);
        assert!(!read_pends(&mut gate).await, "the end is read at once");
        assert!(
            gate.may_read(),
            "the end of the stream is something to read"
        );
    }
}
