//! The lean WebSocket against tungstenite's own `WebSocketStream` (the slow path it replaces):
//! the same messages, errors and answers for any frames in any chunking.

use super::*;
use futures_util::{SinkExt as _, StreamExt as _};
use proptest::prelude::*;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use tokio::io::ReadBuf;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The largest frame and message both sockets accept here.
const MAX: usize = 600;
/// The lean socket's read buffer here.
const KEEP: usize = 64;

/// What a scripted stream saw: how many chunks its reads had begun (turmoil's TCP takes one
/// segment from its queue per such read), and each write apart.
#[derive(Debug, Default)]
struct Log {
    begun: usize,
    writes: Vec<Vec<u8>>,
}

/// A stream whose reads hand out scripted chunks (part of one if the read offers less room),
/// some after a `Pending` first, then its end; what is written to it is logged.
struct Script {
    chunks: VecDeque<(Vec<u8>, bool)>,
    /// whether the front chunk was begun
    begun: bool,
    log: Arc<Mutex<Log>>,
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((front, pending)) = this.chunks.front_mut() {
            if std::mem::take(pending) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !std::mem::replace(&mut this.begun, true) {
                this.log.lock().unwrap().begun += 1;
            }
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.drain(..n);
            if front.is_empty() {
                this.chunks.pop_front();
                this.begun = false;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.log.lock().unwrap().writes.push(b.to_vec());
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `bytes` cut at `cuts` (cycled), each chunk after a `Pending` where `pendings` says so.
fn script(bytes: &[u8], cuts: &[usize], pendings: &[bool]) -> (Script, Arc<Mutex<Log>>) {
    let mut chunks = VecDeque::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let end = (at + cuts[i % cuts.len()]).min(bytes.len());
        chunks.push_back((bytes[at..end].to_vec(), pendings[i % pendings.len()]));
        at = end;
        i += 1;
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let s = Script {
        chunks,
        begun: false,
        log: Arc::clone(&log),
    };
    (s, log)
}

/// Whether the client answers a text message (as the machine would with a push): some, not all.
fn answers(text: &str) -> Option<String> {
    (text.len() % 3 == 1).then(|| format!("re:{}", text.len()))
}

/// What a socket made of the frames: each message, or the error that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Error(String),
}

/// Polls until ready (the scripted stream wakes at once after a `Pending`).
fn block_on<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100_000 {
        if let Poll::Ready(t) = poll(&mut cx) {
            return t;
        }
    }
    panic!("never ready");
}

/// What one socket did with a stream: each message (or the error that ended it) with how
/// many chunks the stream's reads had begun when it came, and the frames of each write.
type Run = (Vec<(Got, usize)>, Vec<Vec<(u8, bool, Vec<u8>)>>);

/// Reads with the lean socket until a close or an error, answering some texts; then flushes
/// what it owes.
fn lean(bytes: &[u8], cuts: &[usize], pendings: &[bool]) -> Run {
    let (s, log) = script(bytes, cuts, pendings);
    let mut ws = LeanWebSocket::new(s, Vec::new(), KEEP, MAX, 7);
    let mut got = Vec::new();
    loop {
        let next = match block_on(|cx| ws.poll_next(cx)) {
            Ok(Ready::Text) => ws.text().map(|t| Got::Text(t.to_owned())),
            Ok(Ready::Binary) => Ok(Got::Binary(ws.payload().to_vec())),
            Ok(Ready::Ping) => Ok(Got::Ping(ws.payload().to_vec())),
            Ok(Ready::Pong) => Ok(Got::Pong(ws.payload().to_vec())),
            Ok(Ready::Close(f)) => Ok(Got::Close(
                f.map(|f| (u16::from(f.code), f.reason.to_string())),
            )),
            Err(e) => Err(e),
        };
        assert!(ws.read_capacity() <= KEEP.max(MAX + MAX_HEADER) * 2);
        let next = next.unwrap_or_else(|e| Got::Error(e.to_string()));
        let begun = log.lock().unwrap().begun;
        let stop = matches!(next, Got::Close(_) | Got::Error(_));
        if let Got::Text(t) = &next
            && let Some(reply) = answers(t)
        {
            {
                let mut feed = pin!(ws.feed(true, reply.as_bytes()));
                block_on(|cx| feed.as_mut().poll(cx)).unwrap();
            }
            let mut flush = pin!(ws.flush());
            block_on(|cx| flush.as_mut().poll(cx)).unwrap();
        }
        got.push((next, begun));
        if stop {
            break;
        }
    }
    let _ = block_on(|cx| pin!(ws.flush()).poll(cx));
    let writes = log
        .lock()
        .unwrap()
        .writes
        .iter()
        .map(|w| client_frames(w))
        .collect();
    (got, writes)
}

/// The same with tungstenite's `WebSocketStream`, as the client task used it.
fn tungstenite(bytes: &[u8], cuts: &[usize], pendings: &[bool]) -> Run {
    let (s, log) = script(bytes, cuts, pendings);
    let cfg = WebSocketConfig::default()
        .read_buffer_size(KEEP)
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    let mut opening = pin!(WebSocketStream::from_raw_socket(s, Role::Client, Some(cfg)));
    let mut ws = block_on(|cx| opening.as_mut().poll(cx));
    let mut got = Vec::new();
    loop {
        let next = match block_on(|cx| ws.poll_next_unpin(cx)) {
            None => Got::Error("ended".into()),
            Some(Ok(Message::Text(t))) => Got::Text(t.to_string()),
            Some(Ok(Message::Binary(b))) => Got::Binary(b.to_vec()),
            Some(Ok(Message::Ping(b))) => Got::Ping(b.to_vec()),
            Some(Ok(Message::Pong(b))) => Got::Pong(b.to_vec()),
            Some(Ok(Message::Close(f))) => {
                Got::Close(f.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Some(Ok(Message::Frame(_))) => unreachable!("tungstenite hands out no raw frame"),
            Some(Err(e)) => Got::Error(e.to_string()),
        };
        let begun = log.lock().unwrap().begun;
        let stop = matches!(next, Got::Close(_) | Got::Error(_));
        if let Got::Text(t) = &next
            && let Some(reply) = answers(t)
        {
            {
                let mut feed = pin!(ws.feed(Message::text(reply)));
                block_on(|cx| feed.as_mut().poll(cx)).unwrap();
            }
            block_on(|cx| ws.poll_flush_unpin(cx)).unwrap();
        }
        got.push((next, begun));
        if stop {
            break;
        }
    }
    let _ = block_on(|cx| ws.poll_flush_unpin(cx));
    let writes = log
        .lock()
        .unwrap()
        .writes
        .iter()
        .map(|w| client_frames(w))
        .collect();
    (got, writes)
}

/// The frames a client wrote: opcode, fin and unmasked payload each; every one must be masked.
fn client_frames(mut bytes: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let mut cursor = Cursor::new(bytes);
        let (h, len) = FrameHeader::parse(&mut cursor)
            .unwrap()
            .expect("a whole header");
        let at = cursor.position() as usize;
        let mask = h.mask.expect("a client frame is masked");
        let payload = bytes[at..at + len as usize]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i & 3])
            .collect();
        frames.push((u8::from(h.opcode), h.is_final, payload));
        bytes = &bytes[at + len as usize..];
    }
    frames
}

/// One server frame: `first` is FIN, RSV and opcode; unmasked unless `mask`.
fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i & 3]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// What a server sends, drawn: data messages (some fragmented, with control frames between
/// the fragments), pings, pongs, a few frames tungstenite refuses, and perhaps a close.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Binary(Vec<u8>),
    /// a message in fragments: text?, the pieces, pings between them
    Fragmented(bool, Vec<Vec<u8>>, Vec<bool>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    /// a frame both must refuse the same way
    Bad(Vec<u8>),
}

fn part() -> impl Strategy<Value = Part> {
    let text = "[a-zé€😀\\\"{}:,0-9 ]{0,300}";
    let bytes = |n: usize| prop::collection::vec(any::<u8>(), 0..n);
    prop_oneof![
        6 => prop::string::string_regex(text).unwrap().prop_map(Part::Text),
        1 => bytes(300).prop_map(Part::Binary),
        2 => (any::<bool>(), prop::collection::vec("[a-z€]{0,40}", 1..5), prop::collection::vec(any::<bool>(), 5))
            .prop_map(|(text, pieces, pings)| {
                let pieces = if text {
                    pieces.into_iter().map(String::into_bytes).collect()
                } else {
                    pieces.into_iter().map(|p| p.into_bytes().into_iter().rev().collect()).collect()
                };
                Part::Fragmented(text, pieces, pings)
            }),
        1 => bytes(125).prop_map(Part::Ping),
        1 => bytes(20).prop_map(Part::Pong),
        1 => prop_oneof![
            Just(None),
            (prop_oneof![Just(1000u16), Just(1001), Just(1011), Just(4000), Just(1005), Just(999), Just(1006)], "[a-z ]{0,30}")
                .prop_map(Some),
        ].prop_map(Part::Close),
        1 => prop_oneof![
            Just(frame(0x81, b"masked", Some([1, 2, 3, 4]))),
            Just(frame(0xC1, b"rsv1", None)),
            Just(frame(0xA2, b"rsv2", None)),
            Just(frame(0x83, b"reserved data opcode", None)),
            Just(frame(0x8B, b"reserved control opcode", None)),
            Just(frame(0x89, &[7; 126], None)),
            Just(frame(0x09, b"fragmented ping", None)),
            Just(frame(0x81, &[0xFF, 0xFE, b'a'], None)),
            Just(frame(0x80, b"continuation of nothing", None)),
            Just(frame(0x88, &[3], None)),
            Just(frame(0x88, &[3, 232, 0xC3], None)),
            Just(frame(0x82, &[0; MAX + 1], None)),
            Just([frame(0x01, &[b'x'; MAX - 10], None), frame(0x80, &[b'y'; 11], None)].concat()),
            Just([frame(0x01, b"half", None), frame(0x81, b"whole", None)].concat()),
        ].prop_map(Part::Bad),
        // any opcode, reserved ones too, with reserved bits or a mask or both
        1 => (0u8..16, 0u8..8, any::<bool>(), any::<bool>()).prop_map(|(op, rsv, fin, masked)| {
            let first = u8::from(fin) << 7 | rsv << 4 | op;
            Part::Bad(frame(first, b"odd", masked.then_some([9, 9, 9, 9])))
        }),
    ]
}

fn encode(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Text(t) => out.extend(frame(0x81, t.as_bytes(), None)),
            Part::Binary(b) => out.extend(frame(0x82, b, None)),
            Part::Fragmented(text, pieces, pings) => {
                for (i, piece) in pieces.iter().enumerate() {
                    let op = match (i, text) {
                        (0, true) => 1,
                        (0, false) => 2,
                        _ => 0,
                    };
                    let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                    out.extend(frame(fin | op, piece, None));
                    if pings[i % pings.len()] && i + 1 < pieces.len() {
                        out.extend(frame(0x89, b"between", None));
                    }
                }
            }
            Part::Ping(b) => out.extend(frame(0x89, b, None)),
            Part::Pong(b) => out.extend(frame(0x8A, b, None)),
            Part::Close(None) => out.extend(frame(0x88, b"", None)),
            Part::Close(Some((code, why))) => {
                let mut body = code.to_be_bytes().to_vec();
                body.extend_from_slice(why.as_bytes());
                out.extend(frame(0x88, &body, None));
            }
            Part::Bad(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the frames and however the stream cuts them, the lean socket yields what
    /// tungstenite yields (messages, the error that ends the stream, the close), each after
    /// as many of the stream's chunks (turmoil's segments), and makes the same writes (its
    /// answers, pongs, the close echo), masked.
    #[test]
    fn reads_and_writes_what_tungstenite_does(
        parts in prop::collection::vec(part(), 0..14),
        cuts in prop::collection::vec(1usize..700, 1..30),
        pendings in prop::collection::vec(prop::bool::weighted(0.3), 1..8),
    ) {
        let bytes = encode(&parts);
        let (lean_got, lean_writes) = lean(&bytes, &cuts, &pendings);
        let (tung_got, tung_writes) = tungstenite(&bytes, &cuts, &pendings);
        prop_assert_eq!(&lean_got, &tung_got);
        prop_assert_eq!(lean_writes, tung_writes);
    }

    /// Any bytes at all end in messages and an error or a close, never a panic.
    #[test]
    fn garbage_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(1usize..50, 1..10),
    ) {
        let (got, _) = lean(&bytes, &cuts, &[false]);
        prop_assert!(matches!(got.last(), Some((Got::Error(_) | Got::Close(_), _))));
    }
}

/// The error each refused frame ends the session with (tungstenite's words).
#[test]
fn protocol_errors_end_the_session() {
    let cases: [(Vec<u8>, &str); 7] = [
        (
            frame(0x81, b"x", Some([1, 2, 3, 4])),
            "Received a masked frame from server",
        ),
        (frame(0x83, b"x", None), "Encountered invalid opcode: 3"),
        (frame(0xC1, b"x", None), "Reserved bits are non-zero"),
        (
            frame(0x89, &[0; 126], None),
            "Control frame too big (payload must be 125 bytes or less)",
        ),
        (frame(0x09, b"x", None), "Fragmented control frame"),
        (frame(0x81, &[0xC3, 0x28], None), "UTF-8 encoding error"),
        (frame(0x81, &[b'a'; MAX + 1], None), "Message too long"),
    ];
    for (bytes, words) in cases {
        let (got, _) = lean(&bytes, &[1000], &[false]);
        match got.as_slice() {
            [(Got::Error(e), _)] => assert!(e.contains(words), "{e:?} for {bytes:?}"),
            other => panic!("{other:?} for {bytes:?}"),
        }
    }
}

/// After a frame longer than the read buffer, the buffer goes back to its size, and the
/// bytes of the next frames read with it are kept.
#[test]
fn the_buffer_is_let_go_after_a_large_frame() {
    let big = "b".repeat(5000);
    let bytes = [
        frame(0x81, big.as_bytes(), None),
        frame(0x81, b"next", None),
        frame(0x81, b"and the next", None),
    ]
    .concat();
    // everything in one read
    let (s, _) = script(&bytes, &[bytes.len()], &[false]);
    let mut ws = LeanWebSocket::new(s, Vec::new(), KEEP, 1 << 20, 1);
    assert_eq!(ws.read_capacity(), KEEP);
    assert_eq!(block_on(|cx| ws.poll_next(cx)).unwrap(), Ready::Text);
    assert_eq!(ws.text().unwrap(), big);
    assert!(ws.read_capacity() >= 5000);
    assert_eq!(block_on(|cx| ws.poll_next(cx)).unwrap(), Ready::Text);
    assert_eq!(ws.text().unwrap(), "next");
    assert_eq!(ws.read_capacity(), KEEP, "let go, the next frames kept");
    assert_eq!(block_on(|cx| ws.poll_next(cx)).unwrap(), Ready::Text);
    assert_eq!(ws.text().unwrap(), "and the next");
    // a fragmented message's assembly is let go too
    let bytes = [
        frame(0x01, big.as_bytes(), None),
        frame(0x80, b"!", None),
        frame(0x81, b"small", None),
    ]
    .concat();
    let (s, _) = script(&bytes, &[300], &[false]);
    let mut ws = LeanWebSocket::new(s, Vec::new(), KEEP, 1 << 20, 1);
    assert_eq!(block_on(|cx| ws.poll_next(cx)).unwrap(), Ready::Text);
    assert_eq!(ws.text().unwrap().len(), 5001);
    assert_eq!(block_on(|cx| ws.poll_next(cx)).unwrap(), Ready::Text);
    assert_eq!(ws.text().unwrap(), "small");
    assert_eq!(ws.read_capacity(), KEEP);
    assert_eq!(ws.assembled.capacity(), 0);
}

/// Over a real upgrade with a tungstenite server: what the upgrade read past the response is
/// read first, large and small messages arrive, a ping is answered, the client's frames read
/// back at the server, and a close is echoed (the server reads the echo).
#[tokio::test]
async fn talks_to_a_tungstenite_server() {
    use crate::client::upgrade::{tests::request, upgrade};
    let (client, server) = tokio::io::duplex(1 << 16);
    let big = "x".repeat(3000);
    let to_send = big.clone();
    let server = tokio::spawn(async move {
        let mut ws = tokio_tungstenite::accept_async(server).await.unwrap();
        ws.feed(Message::text("first")).await.unwrap();
        ws.feed(Message::text(to_send)).await.unwrap();
        ws.feed(Message::Ping(b"p".to_vec().into())).await.unwrap();
        ws.feed(Message::binary(vec![1, 2])).await.unwrap();
        ws.flush().await.unwrap();
        let mut heard = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            let text = matches!(m, Message::Text(_));
            heard.push(m);
            if text {
                break;
            }
        }
        ws.close(None).await.unwrap();
        while let Some(Ok(m)) = ws.next().await {
            heard.push(m);
        }
        heard
    });
    let (stream, tail) = upgrade(client, request()).await.unwrap();
    let mut ws = LeanWebSocket::new(stream, tail, 256, 1 << 20, 3);
    let mut got = Vec::new();
    for _ in 0..4 {
        let ready = poll_fn(|cx| ws.poll_next(cx)).await.unwrap();
        got.push((ready, ws.payload().to_vec()));
    }
    assert_eq!(
        got,
        vec![
            (Ready::Text, b"first".to_vec()),
            (Ready::Text, big.into_bytes()),
            (Ready::Ping, b"p".to_vec()),
            (Ready::Binary, vec![1, 2]),
        ]
    );
    assert_eq!(ws.read_capacity(), 256);
    ws.feed(true, b"hello").await.unwrap();
    ws.flush().await.unwrap();
    let close = poll_fn(|cx| ws.poll_next(cx)).await.unwrap();
    assert_eq!(close, Ready::Close(None));
    ws.flush().await.unwrap();
    drop(ws);
    let heard = server.await.unwrap();
    assert_eq!(
        heard,
        vec![
            Message::Pong(b"p".to_vec().into()),
            Message::text("hello"),
            Message::Close(None),
        ],
    );
}

/// `idle` (what lets an absorber take the next bytes instead) holds only between whole
/// frames, with no fragmented message open and nothing owed.
#[test]
fn idle_only_between_whole_frames_with_nothing_owed() {
    let two = frame(0x81, b"two", None);
    let bytes = [
        frame(0x81, b"one", None),
        two.clone(),
        frame(0x89, b"p", None),
        frame(0x01, b"frag", None),
        frame(0x80, b"ment", None),
    ]
    .concat();
    let one_len = frame(0x81, b"one", None).len();
    // the first read ends inside "two"; every later chunk comes after a `Pending`
    let cuts = [one_len + 2, two.len() - 2, 3, 6, 100];
    let (s, _) = script(&bytes, &cuts, &[false, true, true, true, true]);
    let mut ws = LeanWebSocket::new(s, Vec::new(), KEEP, MAX, 1);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(ws.idle(), "nothing read yet");
    assert!(matches!(
        ws.poll_next(&mut cx),
        Poll::Ready(Ok(Ready::Text))
    ));
    assert!(!ws.idle(), "part of the next frame is buffered");
    assert!(ws.poll_next(&mut cx).is_pending());
    assert!(!ws.idle(), "waiting with part of a frame buffered");
    assert!(matches!(
        ws.poll_next(&mut cx),
        Poll::Ready(Ok(Ready::Text))
    ));
    assert_eq!(ws.text().unwrap(), "two");
    assert!(ws.idle(), "between whole frames");
    assert!(ws.poll_next(&mut cx).is_pending());
    assert!(matches!(
        ws.poll_next(&mut cx),
        Poll::Ready(Ok(Ready::Ping))
    ));
    assert!(!ws.idle(), "a pong is owed");
    assert!(ws.poll_next(&mut cx).is_pending());
    assert!(ws.idle(), "the pong went out before the read");
    assert!(ws.poll_next(&mut cx).is_pending());
    assert!(!ws.idle(), "a fragmented message is open");
    assert!(matches!(
        ws.poll_next(&mut cx),
        Poll::Ready(Ok(Ready::Text))
    ));
    assert_eq!(ws.text().unwrap(), "fragment");
    assert!(ws.idle());
}
