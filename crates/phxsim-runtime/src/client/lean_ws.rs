//! The client's side of an open WebSocket for simulated browsers: frames parsed out of a read
//! buffer the socket owns, with the checks and answers tungstenite makes for a client.
//!
//! Why not tungstenite's `WebSocketStream` here: a simulation holds thousands of browsers, and
//! tungstenite's read path (a `BytesMut` zeroed before each read of at most the read buffer's
//! size, a waker proxy with two atomic wakers, each message split off into a shared `Bytes`)
//! was about a fifth of a population run's time. Worse,
//! tungstenite keeps its read buffer at the size of the largest frame it read for the
//! connection's life, and letting that go meant rebuilding the WebSocket between messages with
//! reads stopped at frame boundaries (one more read per frame). This socket reads as much as
//! the stream has into its own buffer, parses every whole frame in it with tungstenite's own
//! [`FrameHeader::parse`], hands a message's payload out as a borrowed slice, and after a
//! frame longer than the configured read buffer lets the grown allocation go (keeping any
//! bytes of the next frames).
//!
//! What it keeps of RFC 6455, as tungstenite does for a client (and with tungstenite's error
//! values, so a session ends with the same words): server frames unmasked, RSV bits zero, known
//! opcodes, control frames of at most 125 bytes and never fragmented, fragmented data messages
//! reassembled, text checked as UTF-8 (by [`LeanWebSocket::text`], where the caller borrows
//! it), frame and message size limits, a ping answered with a pong of its payload before the
//! next read, a close answered with its echo (an unknown code with 1002), and its own frames
//! masked. The masks are drawn from the client's seed: nothing reads them, but a simulated
//! run's bytes then depend on its seed only. One difference in words only: a fragmented text
//! message is checked as UTF-8 once it is whole (tungstenite checks it piece by piece), so a
//! bad one ends the session a few frames later, with another error text.
//!
//! It takes from the stream what tungstenite took, when tungstenite took it, and writes what
//! tungstenite wrote: the stream is read only when the buffered bytes hold no whole frame (its
//! reads are larger, but turmoil's TCP hands out at most one segment per read, so the same
//! segments are begun at the same moments), a pong is written at the next poll, and the frames
//! a step queues go out in one write at the flush. A simulated run's task wake-ups, and thus
//! its output, do not change with the socket (`tests.rs` holds it to tungstenite's reads and
//! writes).

use std::future::poll_fn;
use std::io::{self, Cursor};
use std::pin::pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader, Utf8Bytes};

/// Queued frames past this many bytes are written at once rather than at the flush
/// (tungstenite's default `write_buffer_size`).
const WRITE_BUFFER: usize = 128 * 1024;

/// The longest frame header (RFC 6455 §5.2): 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// What [`LeanWebSocket::poll_next`] found; the payload of a data, ping or pong frame is read
/// with [`LeanWebSocket::payload`] (or [`LeanWebSocket::text`]) until the next poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ready {
    Text,
    Binary,
    Ping,
    Pong,
    /// The server's close frame, as tungstenite reports it (an unknown code became 1002); its
    /// echo is queued and goes out with [`LeanWebSocket::flush`].
    Close(Option<CloseFrame>),
}

/// A frame header read, whose payload is still to come.
#[derive(Debug, Clone, Copy)]
struct Header {
    opcode: OpCode,
    is_final: bool,
    reserved_bits: bool,
    masked: bool,
    len: usize,
}

/// Where the payload handed out last lives.
#[derive(Debug, Clone, Copy)]
enum Held {
    Nothing,
    /// `buf[start..end]`
    Read(usize, usize),
    /// `assembled`: a fragmented message put together
    Assembled,
}

/// The client's side of an open WebSocket; see the module docs.
#[derive(Debug)]
pub(crate) struct LeanWebSocket<S> {
    stream: S,
    /// Bytes read; `buf[pos..]` not parsed yet.
    buf: Vec<u8>,
    pos: usize,
    /// The capacity the read buffer returns to after a larger frame.
    keep: usize,
    /// The largest frame and the largest message accepted.
    max_len: usize,
    /// The frame being read, once its header is in.
    header: Option<Header>,
    /// The payload handed out last; let go at the next poll.
    held: Held,
    /// A fragmented data message: whether it is text, once its first frame came.
    fragmented: Option<bool>,
    assembled: Vec<u8>,
    /// A pong or a close echo owed to the server (a close echo replaces a pong, as in
    /// tungstenite): opcode and payload.
    owed: Option<(OpCode, Vec<u8>)>,
    /// Frames formatted, not yet written.
    out: Vec<u8>,
    /// Masks: the seed and how many were drawn.
    mask_seed: u64,
    masks: u64,
}

impl<S> LeanWebSocket<S> {
    /// The socket over `stream`, which the upgrade read `first` past the response from.
    /// `read_buffer` is the capacity kept between large frames, `max_len` the largest frame
    /// and message accepted, and `seed` draws the masks.
    pub(crate) fn new(
        stream: S,
        first: Vec<u8>,
        read_buffer: usize,
        max_len: usize,
        seed: u64,
    ) -> LeanWebSocket<S> {
        let keep = read_buffer.max(MAX_HEADER);
        let mut buf = first;
        buf.reserve(keep.saturating_sub(buf.len()));
        LeanWebSocket {
            stream,
            buf,
            pos: 0,
            keep,
            max_len,
            header: None,
            held: Held::Nothing,
            fragmented: None,
            assembled: Vec::new(),
            owed: None,
            out: Vec::new(),
            mask_seed: seed,
            masks: 0,
        }
    }

    /// The payload of the data, ping or pong frame [`LeanWebSocket::poll_next`] returned last.
    pub(crate) fn payload(&self) -> &[u8] {
        match self.held {
            Held::Nothing => &[],
            Held::Read(start, end) => &self.buf[start..end],
            Held::Assembled => &self.assembled,
        }
    }

    /// The text message returned last, checked as UTF-8 here (once, where it is borrowed).
    pub(crate) fn text(&self) -> Result<&str, WsError> {
        std::str::from_utf8(self.payload()).map_err(WsError::from)
    }

    /// Nothing read is left to parse or hand out, no fragmented message is open, and nothing
    /// is owed or queued: the next bytes the stream gives begin a frame, and reading them
    /// writes nothing first.
    pub(crate) fn idle(&self) -> bool {
        self.pos == self.buf.len()
            && self.header.is_none()
            && self.fragmented.is_none()
            && self.owed.is_none()
            && self.out.is_empty()
    }

    /// The read buffer's capacity (for tests of its release).
    #[cfg(test)]
    pub(crate) fn read_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Queues a masked data frame (text if `text`, else binary). True if a pong or close
    /// echo owed went in after it: tungstenite then writes and flushes at once
    /// ([`LeanWebSocket::feed`]).
    fn queue(&mut self, text: bool, payload: &[u8]) -> Result<bool, WsError> {
        let opcode = OpCode::Data(if text { Data::Text } else { Data::Binary });
        self.format(opcode, payload)?;
        let owed = self.owed.is_some();
        self.stage_owed()?;
        Ok(owed)
    }

    /// Queues a close frame with `frame` (after which nothing more is sent).
    pub(crate) fn queue_close(&mut self, frame: Option<CloseFrame>) -> Result<(), WsError> {
        let close = Frame::close(frame);
        self.format(OpCode::Control(Control::Close), close.payload())?;
        self.stage_owed()
    }

    /// The next mask: words of a SplitMix64 sequence from the client's seed.
    fn next_mask(&mut self) -> [u8; 4] {
        self.masks += 1;
        let mut z = self
            .mask_seed
            .wrapping_add(self.masks.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let [a, b, c, d, ..] = z.to_le_bytes();
        [a, b, c, d]
    }

    /// Formats one masked frame into `out`.
    fn format(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), WsError> {
        let mask = self.next_mask();
        let header = FrameHeader {
            is_final: true,
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        self.out
            .reserve(header.len(payload.len() as u64) + payload.len());
        header.format(payload.len() as u64, &mut self.out)?;
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        for (i, b) in self.out[start..].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        Ok(())
    }

    /// Formats the pong or close echo owed, if any.
    fn stage_owed(&mut self) -> Result<(), WsError> {
        if let Some((opcode, payload)) = self.owed.take() {
            self.format(opcode, &payload)?;
        }
        Ok(())
    }

    /// Owes the server `opcode` with `payload`: a close echo replaces a pong not yet sent,
    /// nothing replaces a close echo.
    fn owe(&mut self, opcode: OpCode, payload: Vec<u8>) {
        let replaceable = self
            .owed
            .as_ref()
            .is_none_or(|(op, _)| *op == OpCode::Control(Control::Pong));
        if replaceable {
            self.owed = Some((opcode, payload));
        }
    }

    /// Forgets the payload handed out last and what was parsed; lets a grown buffer go.
    fn let_go(&mut self) {
        if let Held::Assembled = std::mem::replace(&mut self.held, Held::Nothing) {
            if self.assembled.capacity() > self.keep {
                self.assembled = Vec::new();
            } else {
                self.assembled.clear();
            }
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        if self.buf.capacity() > self.keep {
            let left = self.buf.len() - self.pos;
            // not while a large frame is coming in: it would only grow again
            let coming = self.header.map_or(0, |h| h.len);
            if left <= self.keep && coming <= self.keep {
                let mut fresh = Vec::with_capacity(self.keep);
                fresh.extend_from_slice(&self.buf[self.pos..]);
                self.buf = fresh;
                self.pos = 0;
            }
        }
    }

    /// The next whole message or control frame among the bytes read, if there is one.
    fn parse(&mut self) -> Result<Option<Ready>, WsError> {
        loop {
            let header = match self.header {
                Some(h) => h,
                None => {
                    let mut cursor = Cursor::new(&self.buf[self.pos..]);
                    let Some((h, len)) = FrameHeader::parse(&mut cursor)? else {
                        return Ok(None);
                    };
                    self.pos += usize::try_from(cursor.position()).unwrap_or(usize::MAX);
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    if len > self.max_len {
                        return Err(too_long(len, self.max_len));
                    }
                    let h = Header {
                        opcode: h.opcode,
                        is_final: h.is_final,
                        reserved_bits: h.rsv1 || h.rsv2 || h.rsv3,
                        masked: h.mask.is_some(),
                        len,
                    };
                    self.header = Some(h);
                    h
                }
            };
            if self.buf.len() - self.pos < header.len {
                return Ok(None);
            }
            self.header = None;
            let (start, end) = (self.pos, self.pos + header.len);
            self.pos = end;
            if let Some(ready) = self.frame(header, start, end)? {
                return Ok(Some(ready));
            }
        }
    }

    /// One whole frame, `buf[start..end]` its payload: checked, answered, and handed out if
    /// it completes a message or is a control frame (in tungstenite's order of checks).
    fn frame(&mut self, h: Header, start: usize, end: usize) -> Result<Option<Ready>, WsError> {
        if h.reserved_bits {
            return Err(ProtocolError::NonZeroReservedBits.into());
        }
        if h.masked {
            return Err(ProtocolError::MaskedFrameFromServer.into());
        }
        match h.opcode {
            OpCode::Control(_) if !h.is_final => Err(ProtocolError::FragmentedControlFrame.into()),
            OpCode::Control(_) if h.len > 125 => Err(ProtocolError::ControlFrameTooBig.into()),
            OpCode::Control(Control::Close) => {
                let close = self.close_frame(start, end)?;
                let echo = Frame::close(close.clone());
                self.owe(OpCode::Control(Control::Close), echo.payload().to_vec());
                Ok(Some(Ready::Close(close)))
            }
            OpCode::Control(Control::Reserved(i)) => {
                Err(ProtocolError::UnknownControlFrameType(i).into())
            }
            OpCode::Control(Control::Ping) => {
                self.owe(
                    OpCode::Control(Control::Pong),
                    self.buf[start..end].to_vec(),
                );
                self.held = Held::Read(start, end);
                Ok(Some(Ready::Ping))
            }
            OpCode::Control(Control::Pong) => {
                self.held = Held::Read(start, end);
                Ok(Some(Ready::Pong))
            }
            OpCode::Data(data) => match (data, self.fragmented) {
                (Data::Continue, None) => Err(ProtocolError::UnexpectedContinueFrame.into()),
                (Data::Continue, Some(text)) => {
                    let (have, more) = (self.assembled.len(), end - start);
                    if have > self.max_len || more > self.max_len - have {
                        return Err(too_long(have + more, self.max_len));
                    }
                    self.assembled.extend_from_slice(&self.buf[start..end]);
                    if !h.is_final {
                        return Ok(None);
                    }
                    self.fragmented = None;
                    self.held = Held::Assembled;
                    Ok(Some(if text { Ready::Text } else { Ready::Binary }))
                }
                (_, Some(_)) => Err(ProtocolError::ExpectedFragment(data).into()),
                (Data::Text | Data::Binary, None) => {
                    let text = data == Data::Text;
                    if h.is_final {
                        self.held = Held::Read(start, end);
                        return Ok(Some(if text { Ready::Text } else { Ready::Binary }));
                    }
                    self.fragmented = Some(text);
                    self.assembled.clear();
                    self.assembled.extend_from_slice(&self.buf[start..end]);
                    Ok(None)
                }
                (Data::Reserved(i), None) => Err(ProtocolError::UnknownDataFrameType(i).into()),
            },
        }
    }

    /// A close frame's body as tungstenite reads it: none, or a code and a UTF-8 reason (a
    /// code not allowed on the wire becomes 1002 "Protocol violation").
    fn close_frame(&self, start: usize, end: usize) -> Result<Option<CloseFrame>, WsError> {
        let body = &self.buf[start..end];
        let [high, low, reason @ ..] = body else {
            return if body.is_empty() {
                Ok(None)
            } else {
                Err(ProtocolError::InvalidCloseSequence.into())
            };
        };
        let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
        let reason = std::str::from_utf8(reason)?;
        if !code.is_allowed() {
            return Ok(Some(CloseFrame {
                code: CloseCode::Protocol,
                reason: Utf8Bytes::from_static("Protocol violation"),
            }));
        }
        Ok(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    }
}

fn too_long(size: usize, max_size: usize) -> WsError {
    WsError::Capacity(CapacityError::MessageTooLong { size, max_size })
}

impl<S: AsyncRead + AsyncWrite + Unpin> LeanWebSocket<S> {
    /// The next message or control frame. Cancel-safe: whatever was read stays in the socket.
    /// A pong owed is written first (without waiting for a blocked stream), as tungstenite
    /// does before each read. An error ends the connection: poll no further.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Ready, WsError>> {
        self.let_go();
        loop {
            if self.owed.is_some() || !self.out.is_empty() {
                self.stage_owed()?;
                if let Poll::Ready(Err(e)) = self.poll_write_out(cx) {
                    return Poll::Ready(Err(WsError::Io(e)));
                }
            }
            if let Some(ready) = self.parse()? {
                return Poll::Ready(Ok(ready));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Reads once from the stream into the buffer: as much as it has, with room for at least
    /// the rest of the frame being read.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let need = match self.header {
            Some(h) => h.len - self.buf.len(),
            None => MAX_HEADER,
        };
        if self.buf.capacity() - self.buf.len() < need.max(1) {
            self.buf.reserve(need.max(1));
        }
        let read = pin!(self.stream.read_buf(&mut self.buf)).poll(cx);
        match ready!(read) {
            Ok(0) => Poll::Ready(Err(ProtocolError::ResetWithoutClosingHandshake.into())),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(WsError::Io(e))),
        }
    }

    /// Writes what is queued, as far as the stream takes it.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(std::pin::Pin::new(&mut self.stream).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "Connection reset while sending",
                )));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what is queued, as far as the stream takes it, then flushes the stream.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_queued(cx))?;
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Queues a data frame (text if `text`, else binary) and writes when and as tungstenite
    /// would, so that the segments a simulated run sees stay the same: at once (and flushed)
    /// if a pong was owed, what is queued past [`WRITE_BUFFER`], else nothing until
    /// [`LeanWebSocket::flush`].
    pub(crate) async fn feed(&mut self, text: bool, payload: &[u8]) -> Result<(), WsError> {
        if self.queue(text, payload)? {
            self.flush().await
        } else if self.out.len() > WRITE_BUFFER {
            self.write_queued().await
        } else {
            Ok(())
        }
    }

    /// Writes what is queued (no flush of the stream: what a queue past [`WRITE_BUFFER`]
    /// does in tungstenite).
    async fn write_queued(&mut self) -> Result<(), WsError> {
        poll_fn(|cx| self.poll_write_queued(cx))
            .await
            .map_err(WsError::Io)
    }

    /// Writes every frame queued and owed, then flushes the stream.
    pub(crate) async fn flush(&mut self) -> Result<(), WsError> {
        self.stage_owed()?;
        poll_fn(|cx| self.poll_write_out(cx))
            .await
            .map_err(WsError::Io)
    }
}

#[cfg(test)]
mod tests;
