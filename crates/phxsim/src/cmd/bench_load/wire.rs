//! The load generator's side of one WebSocket after the handshake (tungstenite's): frames read
//! from the socket with a small reused buffer, and masked text frames written.
//!
//! Why not tungstenite's reader here: with N sockets on one topic each socket reads a
//! `presence_state` that lists everyone before it, O(N²) bytes in all (3.3 GB at 10 000).
//! tungstenite keeps a whole frame in the socket's read buffer, which then keeps that size
//! (10 000 states: 4 GB of client memory, much of the client's CPU in page faults), copies it
//! into the message, checks its UTF-8, and zeroes 16 KiB before every read attempt, one per
//! diff per socket. The bench reads no state (its observers, which do, still use tungstenite),
//! so a state's payload is dropped as it arrives, after its head names it; every other frame is
//! kept whole. The bytes read from the socket are the same: the server's work is unchanged.

use std::io::{self, Cursor};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// Bytes asked of the socket per read (a diff is a few hundred).
const READ_CHUNK: usize = 16 * 1024;
/// A read buffer grown past this for a large frame is given back once that frame is read.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Frames up to this size are kept whole without looking at their head.
const SMALL_FRAME: usize = 4 * 1024;
/// Bytes of a large text frame read before deciding from its head whether to keep it: enough
/// for `[join_ref, ref, topic, event,` with any sane topic.
const HEAD: usize = 512;

/// One frame from the server, as far as the bench needs it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    /// A text frame (every one but a `presence_state`), whole.
    Text(String),
    /// A `presence_state`, read and dropped.
    State,
    /// A close frame: its code, if it had one.
    Close(Option<u16>),
    /// A ping, to be answered with a pong of this payload.
    Ping(Vec<u8>),
    /// A pong or a binary frame: nothing for the bench.
    Other,
}

/// Reads frames from a stream. Cancel-safe: everything read is kept in the reader, so a
/// `select!` may drop [`FrameReader::next`] at any await.
#[derive(Default)]
pub(super) struct FrameReader {
    /// Bytes read; `buf[pos..]` is not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    /// Payload bytes of a dropped `presence_state` still to come.
    skip: usize,
}

impl FrameReader {
    /// The next frame, or `None` when the stream ended.
    pub(super) async fn next<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> io::Result<Option<Incoming>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            if !self.fill(stream).await? {
                return Ok(None);
            }
        }
    }

    /// A frame out of what was read, if it is all there (or a skipped state is over).
    fn parse(&mut self) -> io::Result<Option<Incoming>> {
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len() - self.pos);
            self.pos += n;
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
            self.consumed();
            return Ok(Some(Incoming::State));
        }
        let unread = &self.buf[self.pos..];
        let mut cursor = Cursor::new(unread);
        let Some((header, len)) = FrameHeader::parse(&mut cursor).map_err(invalid)? else {
            return Ok(None);
        };
        let head_len = usize::try_from(cursor.position()).map_err(invalid)?;
        let len = usize::try_from(len).map_err(invalid)?;
        if !header.is_final || matches!(header.opcode, OpCode::Data(Data::Continue)) {
            return Err(invalid(
                "fragmented server frame (bench-load reads whole frames only)",
            ));
        }
        if header.mask.is_some() {
            return Err(invalid("masked server frame (RFC 6455 §5.1)"));
        }
        let body = unread.len() - head_len;
        if header.opcode == OpCode::Data(Data::Text) && len > SMALL_FRAME {
            if body < HEAD {
                return Ok(None);
            }
            let head = &unread[head_len..head_len + HEAD];
            // the head may end inside a character
            let head = match std::str::from_utf8(head) {
                Ok(text) => text,
                Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
            };
            if super::event_of(head) == Some("presence_state") {
                self.pos += head_len;
                self.skip = len;
                return self.parse();
            }
        }
        if body < len {
            // room for the rest of the frame, so that it arrives in few reads
            self.buf.reserve(len - body);
            return Ok(None);
        }
        let payload = &unread[head_len..head_len + len];
        let frame = match header.opcode {
            OpCode::Data(Data::Text) => Incoming::Text(
                String::from_utf8(payload.to_vec())
                    .map_err(|_| invalid("text frame is not UTF-8"))?,
            ),
            OpCode::Control(Control::Close) => {
                Incoming::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))
            }
            OpCode::Control(Control::Ping) => Incoming::Ping(payload.to_vec()),
            _ => Incoming::Other,
        };
        self.pos += head_len + len;
        self.consumed();
        Ok(Some(frame))
    }

    /// After a frame: forget what was consumed, and give back a buffer grown for a big frame.
    fn consumed(&mut self) {
        if self.pos == self.buf.len() {
            self.pos = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
    }

    /// Reads more from the stream into the buffer (never zeroed first); false at its end.
    async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> io::Result<bool> {
        if self.skip > 0 {
            // everything buffered belongs to the skipped frame
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        Ok(stream.read_buf(&mut self.buf).await? > 0)
    }
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Writes one client frame, masked with `mask` (RFC 6455 §5.3: every client frame is).
async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    opcode: OpCode,
    payload: Vec<u8>,
    mask: [u8; 4],
) -> io::Result<()> {
    let header = FrameHeader {
        is_final: true,
        opcode,
        mask: Some(mask),
        ..FrameHeader::default()
    };
    let frame = Frame::from_payload(header, payload.into());
    let mut out = Vec::with_capacity(frame.len());
    frame.format(&mut out).map_err(invalid)?;
    stream.write_all(&out).await
}

/// A masked text frame.
pub(super) async fn write_text<S: AsyncWrite + Unpin>(
    stream: &mut S,
    text: String,
    mask: [u8; 4],
) -> io::Result<()> {
    write_frame(stream, OpCode::Data(Data::Text), text.into_bytes(), mask).await
}

/// A masked pong answering a ping.
pub(super) async fn write_pong<S: AsyncWrite + Unpin>(
    stream: &mut S,
    payload: Vec<u8>,
    mask: [u8; 4],
) -> io::Result<()> {
    write_frame(stream, OpCode::Control(Control::Pong), payload, mask).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// What a reader gets from frames that tungstenite (as the server) wrote, through a pipe
    /// small enough that big frames arrive in many reads.
    #[test]
    fn frames_from_a_tungstenite_server() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(1000);
            let state = format!(
                r#"["1","1","room:x","presence_state",{{"a":{{"metas":[{{"pad":"{}"}}]}}}}]"#,
                "s".repeat(100_000)
            );
            let big_diff = format!(
                r#"[null,null,"room:x","presence_diff",{{"joins":{{"b":{{"metas":[{{"pad":"{}"}}]}}}},"leaves":{{}}}}]"#,
                "d".repeat(20_000)
            );
            let sent = vec![
                Message::text(r#"["1","1","room:x","phx_reply",{"status":"ok"}]"#),
                Message::text(state),
                Message::text(big_diff.clone()),
                Message::Ping(vec![7, 8].into()),
                Message::binary(vec![1, 2, 3]),
                Message::text("é"),
            ];
            let writer = tokio::spawn(async move {
                let mut ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
                for m in sent {
                    ws.send(m).await.unwrap();
                }
                ws.close(None).await.unwrap();
                // the close reply, then the end
                while let Some(Ok(_)) = ws.next().await {}
            });
            let mut client = client;
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            while let Some(f) = r.next(&mut client).await.unwrap() {
                let close = matches!(f, Incoming::Close(_));
                got.push(f);
                if close {
                    write_frame(&mut client, OpCode::Control(Control::Close), vec![], [1, 2, 3, 4])
                        .await
                        .unwrap();
                }
            }
            writer.await.unwrap();
            assert_eq!(
                got,
                vec![
                    Incoming::Text(r#"["1","1","room:x","phx_reply",{"status":"ok"}]"#.into()),
                    Incoming::State,
                    Incoming::Text(big_diff),
                    Incoming::Ping(vec![7, 8]),
                    Incoming::Other,
                    Incoming::Text("é".into()),
                    Incoming::Close(None),
                ]
            );
            // a frame grown past KEEP_CAPACITY is not kept
            assert!(r.buf.capacity() <= KEEP_CAPACITY);
        });
    }

    /// A masked frame reads back at a tungstenite server as the text sent.
    #[test]
    fn masked_frames_read_back_at_a_tungstenite_server() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            write_text(&mut client, "hello".into(), [9, 8, 7, 6])
                .await
                .unwrap();
            write_pong(&mut client, vec![1], [1, 1, 1, 1])
                .await
                .unwrap();
            let mut ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::Pong(vec![1].into())
            );
        });
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for bytes in [
                &[0x01u8, 0x01, b'a'][..],           // not final: fragmented
                &[0x81, 0x81, 1, 2, 3, 4, b'a'][..], // masked from a server
                &[0x81, 0x02, 0xff, 0xfe][..],       // not UTF-8
            ] {
                let mut r = FrameReader::default();
                let mut s = bytes;
                assert!(r.next(&mut s).await.is_err(), "{bytes:?}");
            }
            // a stream ending mid-frame is the end, not a frame
            let mut r = FrameReader::default();
            let mut s = &[0x81u8, 0x05, b'a'][..];
            assert_eq!(r.next(&mut s).await.unwrap(), None);
        });
    }
}
