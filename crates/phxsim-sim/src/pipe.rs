//! In-memory browser links: what a population's browsers talk to their nodes over, instead of
//! a turmoil TCP stream each (`transport = "memory"`, the default of `[[population]]`).
//!
//! Why: in a join storm every browser of a node receives every local join as a frame of its
//! own, and turmoil's TCP took about 2 µs per frame (its link queues, sequence numbers,
//! reorder buffers and a message per segment), a quarter of a 3 000-browser run, and 2 KB of
//! stream per end. A pipe carries the same bytes (the WebSocket upgrade and frames, written by
//! the same server and client code) with turmoil's TCP semantics as a browser sees them:
//! - every write is a segment that arrives after a one-way latency drawn as turmoil draws it
//!   (`min + (max - min) · Exp(5)`, capped at `max`, whole milliseconds), never before the
//!   segment written before it (TCP delivers in order);
//! - a connect takes one crossing of the link (turmoil answers a SYN at once), and is refused
//!   then if the node's host is down;
//! - a closed end sends a FIN after its data; an end dropped with unread data sends a RST,
//!   and data that reaches an end already dropped sends one back, as turmoil's TCP does;
//! - a crashed node's host drops its ends, which close as above: its browsers see the end of
//!   their streams one crossing later, as turmoil's crash shows them;
//! - loss is `LossyStream`'s, on top, as on a TCP link.
//!
//! Time is the driver's: [`Pipes::deliver`] runs before every simulation step with the
//! simulated time, makes due segments readable and wakes their readers. A segment written
//! during the step that starts at `t` is due at `t + latency`. Every choice is ordered by
//! (due time, write number), and the latency draws come from one RNG seeded from the run,
//! drawn in the order the hosts write, which turmoil runs deterministically.
//!
//! Steps cannot cut or hold a browser link (their links name nodes only), so a pipe knows
//! no partition.

use crate::scenario::population::{PopulationSpec, Transport, population_of};
use phxsim_runtime::client::{Absorbed, Absorber};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

/// Which browsers of a run talk to their nodes over in-memory links: those of the
/// populations with `transport = "memory"` (read before the populations are expanded).
#[derive(Clone, Default)]
pub(crate) struct MemoryBrowsers(Arc<[PopulationSpec]>);

impl MemoryBrowsers {
    pub(crate) fn of(populations: &[PopulationSpec]) -> MemoryBrowsers {
        MemoryBrowsers(populations.into())
    }

    pub(crate) fn contains(&self, client: &str) -> bool {
        population_of(client, &self.0).is_some_and(|p| self.0[p].transport == Transport::Memory)
    }
}

/// The browser's end of a connection.
const BROWSER: usize = 0;
/// The server's end of a connection.
const SERVER: usize = 1;

/// The in-memory browser links of one run: shared by the driver, every node host (which
/// listens) and every browsers' host (which connects).
#[derive(Clone)]
pub(crate) struct Pipes(Arc<Mutex<Net>>);

/// A one-way latency range in milliseconds, `[min, max]`.
pub(crate) type LatencyMs = [u64; 2];

struct Net {
    /// The driver's simulated time at the last [`Pipes::deliver`].
    now: Duration,
    /// Every segment, FIN and RST on its way, by arrival time, each time's in write order (a
    /// queue per time: latencies are whole milliseconds, so a run has few times in flight, and
    /// a write appends to its time's queue where a heap of every segment sifted each in).
    due: BTreeMap<Duration, VecDeque<Due>>,
    rng: ChaCha8Rng,
    /// The one-way latency of browser links: every node's, or its own.
    latency: LatencyMs,
    node_latency: BTreeMap<String, LatencyMs>,
    /// Each running node's server, waiting for connections.
    listeners: BTreeMap<String, mpsc::UnboundedSender<PipeEnd>>,
    next_id: u64,
    /// Segments an absorber took.
    absorbed: u64,
    /// Wake a reader whose segment was absorbed, as if it were to read it (tests).
    wake_absorbed: bool,
    /// The bytes of the last data segment written (see [`Net::share`]).
    last_data: Option<Arc<[u8]>>,
}

/// Something on its way to one end of a connection (when: its place in [`Net::due`]).
struct Due {
    conn: Arc<Conn>,
    /// The end it reaches.
    to: usize,
    kind: Kind,
}

enum Kind {
    /// The next data segment or FIN of the stream towards `to`. It travels here, not in the
    /// connection, until it arrives: a segment that an absorber takes then never touches the
    /// connection's queue (a cache miss of its own for each diff of each browser).
    Segment(Segment),
    /// A reset: `to`'s reads and writes fail from now on.
    Reset,
}

/// One connection: the stream towards each end.
struct Conn {
    id: u64,
    latency: LatencyMs,
    ends: Mutex<[Inbound; 2]>,
}

/// The stream one end reads: what arrived of it and is not read yet, and its state (what is
/// still on its way is in [`Net::due`]).
#[derive(Default)]
struct Inbound {
    /// Arrived, in order; a FIN that arrived stays last.
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already read.
    offset: usize,
    /// When the last segment written will arrive: the next one does not arrive before it.
    last_due: Duration,
    /// The task waiting to read.
    reader: Option<Waker>,
    /// A reset arrived: every read and write of this end fails.
    reset: bool,
    /// This end was dropped: what arrives is dropped (data answered with a reset).
    closed: bool,
    /// The other end shut down or dropped its writing side: nothing more is written here.
    fin_written: bool,
    /// Takes arriving segments while the reader waits idle (a browser's end; see
    /// [`Absorber`]): the segment is then never read, and the reader not woken.
    absorber: Option<Box<dyn Absorb>>,
}

/// What an end offers the segments that arrive while its reader waits: a browser's
/// [`Absorber`] (a trait so that tests can watch what is offered).
pub(crate) trait Absorb: Send {
    fn absorb(&self, segment: &[u8]) -> Absorbed;
}

impl Absorb for Absorber {
    fn absorb(&self, segment: &[u8]) -> Absorbed {
        Absorber::absorb(self, segment)
    }
}

enum Segment {
    /// Shared with the other segments of the same bytes (see [`Net::share`]).
    Data(Arc<[u8]>),
    Fin,
}

impl Inbound {
    /// Offers `data`, arriving now, to the absorber, if the reader waits for it (it read
    /// everything before and is parked on this end); a segment absorbed is dropped.
    fn offer(&self, data: &[u8]) -> Absorbed {
        match &self.absorber {
            Some(absorber) if self.segments.is_empty() && self.reader.is_some() => {
                absorber.absorb(data)
            }
            _ => Absorbed::No,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // one thread runs the whole simulation: the lock is never contended, and a panic inside a
    // host already fails the run
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// turmoil's latency draw: `min + (max - min) · x` for `x` from an exponential distribution of
/// rate 5, in whole milliseconds, capped at `max`.
fn draw_latency(rng: &mut ChaCha8Rng, [min, max]: LatencyMs) -> Duration {
    if max <= min {
        return Duration::from_millis(min);
    }
    let u: f64 = rng.gen_range(0.0..1.0);
    let x = -(1.0 - u).ln() / 5.0;
    let ms = min + ((max - min) as f64 * x) as u64;
    Duration::from_millis(ms.min(max))
}

impl Pipes {
    /// Links whose latency is `latency`, or a node's own from `node_latency`; draws from
    /// `seed`.
    pub(crate) fn new(
        seed: u64,
        latency: LatencyMs,
        node_latency: BTreeMap<String, LatencyMs>,
    ) -> Pipes {
        Pipes(Arc::new(Mutex::new(Net {
            now: Duration::ZERO,
            due: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            latency,
            node_latency,
            listeners: BTreeMap::new(),
            next_id: 0,
            absorbed: 0,
            wake_absorbed: false,
            last_data: None,
        })))
    }

    /// Node `node`'s server listens: the connections browsers make to it arrive here until the
    /// receiver is dropped (the host crashed), or a later incarnation listens.
    pub(crate) fn listen(&self, node: &str) -> mpsc::UnboundedReceiver<PipeEnd> {
        let (tx, rx) = mpsc::unbounded_channel();
        // the last incarnation's listener is let go outside the lock (see `connect`)
        let old = lock(&self.0).listeners.insert(node.to_owned(), tx);
        drop(old);
        rx
    }

    /// Connects a browser to `node`'s server: once the SYN has crossed the link, the browser's
    /// end, or "connection refused" if no server of `node` is running. turmoil answers a SYN
    /// at once (its listener hands the answer back without crossing the link), so a connect
    /// takes one crossing there too.
    pub(crate) async fn connect(&self, node: &str) -> io::Result<PipeEnd> {
        let (there, latency) = {
            let mut net = lock(&self.0);
            let latency = net.latency_of(node);
            (draw_latency(&mut net.rng, latency), latency)
        };
        tokio::time::sleep(there).await;
        let (browser, server, listener) = {
            let mut net = lock(&self.0);
            net.next_id += 1;
            let conn = Arc::new(Conn {
                id: net.next_id,
                latency,
                ends: Mutex::default(),
            });
            let end = |side| PipeEnd {
                net: self.clone(),
                conn: conn.clone(),
                side,
            };
            (end(BROWSER), end(SERVER), net.listeners.get(node).cloned())
        };
        // outside the lock: a refused end is dropped with the error, and a drop takes the lock
        let accepted = listener.is_some_and(|l| l.send(server).is_ok());
        if accepted {
            Ok(browser)
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("connection refused: node {node} is down"),
            ))
        }
    }

    /// Makes everything due by `now` (the simulated time) arrive, and wakes its readers.
    pub(crate) fn deliver(&self, now: Duration) {
        let mut wake = Vec::new();
        {
            let mut net = lock(&self.0);
            net.now = now;
            let wake_absorbed = net.wake_absorbed;
            while let Some(mut first) = net.due.first_entry().filter(|e| *e.key() <= now) {
                let Some(due) = first.get_mut().pop_front() else {
                    first.remove();
                    continue;
                };
                if first.get().is_empty() {
                    first.remove();
                }
                let mut absorbed = false;
                let answer = {
                    let mut ends = lock(&due.conn.ends);
                    let end = &mut ends[due.to];
                    match due.kind {
                        Kind::Reset => {
                            end.reset = true;
                            wake.extend(end.reader.take());
                            false
                        }
                        // a closed end answers data with a reset (a FIN with nothing)
                        Kind::Segment(segment) if end.closed => {
                            matches!(segment, Segment::Data(_)) && !ends[1 - due.to].reset
                        }
                        Kind::Segment(segment) => {
                            let offered = match &segment {
                                Segment::Data(data) => end.offer(data),
                                Segment::Fin => Absorbed::No,
                            };
                            match offered {
                                Absorbed::No => {
                                    end.segments.push_back(segment);
                                    wake.extend(end.reader.take());
                                }
                                Absorbed::Quiet => {
                                    absorbed = true;
                                    if wake_absorbed {
                                        wake.extend(end.reader.take());
                                    }
                                }
                                Absorbed::WakeTask => {
                                    absorbed = true;
                                    wake.extend(end.reader.take());
                                }
                            }
                            false
                        }
                    }
                };
                net.absorbed += u64::from(absorbed);
                if answer {
                    let from = due.to;
                    net.send_reset(&due.conn, from);
                }
            }
        }
        for w in wake {
            w.wake();
        }
    }

    /// Wakes the reader of every absorbed segment too, as if it were to read it: the run is
    /// then the run of readers that read everything ([`crate::world::BrowserReads`]).
    pub(crate) fn wake_absorbed(&self) {
        lock(&self.0).wake_absorbed = true;
    }

    /// How many segments an absorber took.
    pub(crate) fn absorbed(&self) -> u64 {
        lock(&self.0).absorbed
    }

    /// How many connections were made (accepted or refused).
    pub(crate) fn connections(&self) -> u64 {
        lock(&self.0).next_id
    }

    /// How many segments, FINs and RSTs are on their way (for tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        lock(&self.0).due.values().map(VecDeque::len).sum()
    }
}

impl Net {
    /// The bytes of a segment to write: those of the last segment written if they are the
    /// same. A node writes a broadcast to its subscribers one after another, so its thousand
    /// copies become one allocation and one copy, and the browsers that take them one after
    /// another read bytes already in the cache instead of a cold copy each.
    fn share(&mut self, buf: &[u8]) -> Arc<[u8]> {
        if let Some(last) = &self.last_data
            && **last == *buf
        {
            return Arc::clone(last);
        }
        let fresh: Arc<[u8]> = buf.into();
        self.last_data = Some(Arc::clone(&fresh));
        fresh
    }

    fn latency_of(&self, node: &str) -> LatencyMs {
        self.node_latency.get(node).copied().unwrap_or(self.latency)
    }

    /// Writes the next segment (data or FIN) of the stream towards `to`.
    fn send_segment(&mut self, conn: &Arc<Conn>, ends: &mut [Inbound; 2], to: usize, s: Segment) {
        let lat = draw_latency(&mut self.rng, conn.latency);
        let end = &mut ends[to];
        let at = (self.now + lat).max(end.last_due);
        end.last_due = at;
        if matches!(s, Segment::Fin) {
            end.fin_written = true;
        }
        self.push(conn, to, at, Kind::Segment(s));
    }

    /// Sends a reset from `from` to the other end.
    fn send_reset(&mut self, conn: &Arc<Conn>, from: usize) {
        let at = self.now + draw_latency(&mut self.rng, conn.latency);
        self.push(conn, 1 - from, at, Kind::Reset);
    }

    fn push(&mut self, conn: &Arc<Conn>, to: usize, at: Duration, kind: Kind) {
        self.due.entry(at).or_default().push_back(Due {
            conn: conn.clone(),
            to,
            kind,
        });
    }
}

/// One end of an in-memory browser link: a byte stream with TCP's delivery, as the server and
/// the client read and write a turmoil `TcpStream`.
pub(crate) struct PipeEnd {
    net: Pipes,
    conn: Arc<Conn>,
    side: usize,
}

impl PipeEnd {
    /// The connection's number, the same at both ends (what [`crate::lossy::Resets`] keys
    /// a connection by).
    pub(crate) fn id(&self) -> u64 {
        self.conn.id
    }

    /// Offers the segments that arrive at this end to `absorber` while this end's reader
    /// waits idle.
    pub(crate) fn absorb_with(&self, absorber: impl Absorb + 'static) {
        lock(&self.conn.ends)[self.side].absorber = Some(Box::new(absorber));
    }
}

impl std::fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.side == BROWSER {
            "browser"
        } else {
            "server"
        };
        write!(f, "PipeEnd({} {side})", self.conn.id)
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")
}

impl AsyncRead for PipeEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut ends = lock(&self.conn.ends);
        let end = &mut ends[self.side];
        if end.reset {
            return Poll::Ready(Err(reset()));
        }
        let mut read = false;
        while buf.remaining() > 0 {
            let Some(Segment::Data(data)) = end.segments.front() else {
                break;
            };
            let n = (data.len() - end.offset).min(buf.remaining());
            buf.put_slice(&data[end.offset..end.offset + n]);
            end.offset += n;
            read = true;
            if end.offset == data.len() {
                end.segments.pop_front();
                end.offset = 0;
            }
        }
        // data, an empty buffer to fill, or the end of the stream (a FIN that arrived)
        if read || buf.remaining() == 0 || !end.segments.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if !end.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            end.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut net = lock(&self.net.0);
        let mut ends = lock(&self.conn.ends);
        let to = 1 - self.side;
        if ends[self.side].reset {
            return Poll::Ready(Err(reset()));
        }
        if ends[to].fin_written {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = net.share(buf);
        net.send_segment(&self.conn, &mut ends, to, Segment::Data(data));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut net = lock(&self.net.0);
        let mut ends = lock(&self.conn.ends);
        let to = 1 - self.side;
        if !ends[to].fin_written && !ends[self.side].reset {
            net.send_segment(&self.conn, &mut ends, to, Segment::Fin);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeEnd {
    /// As turmoil's TCP: unread data makes the close a reset, otherwise the writing side sends
    /// its FIN (unless it already did).
    fn drop(&mut self) {
        let mut net = lock(&self.net.0);
        let mut ends = lock(&self.conn.ends);
        let (me, to) = (self.side, 1 - self.side);
        let unread = matches!(ends[me].segments.front(), Some(Segment::Data(_)));
        let was_reset = ends[me].reset;
        let mine = &mut ends[me];
        mine.closed = true;
        mine.reader = None;
        // what arrived is dropped; what is still on its way is dropped when it arrives
        mine.segments.clear();
        if was_reset {
            return;
        }
        if unread {
            net.send_reset(&self.conn, me);
        } else if !ends[to].fin_written {
            net.send_segment(&self.conn, &mut ends, to, Segment::Fin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A current-thread runtime with paused time, as a simulated host has.
    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    }

    /// Runs `pipes`' deliveries every millisecond from `from` for `ms` milliseconds, letting
    /// the tasks run in between, as the driver does between steps.
    async fn run_for(pipes: &Pipes, from: &mut u64, ms: u64) {
        for _ in 0..ms {
            pipes.deliver(Duration::from_millis(*from));
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            *from += 1;
        }
    }

    /// A connected pair (the server's end from the listener).
    async fn pair(pipes: &Pipes, t: &mut u64) -> (PipeEnd, PipeEnd) {
        let mut rx = pipes.listen("a");
        let p = pipes.clone();
        let browser = tokio::spawn(async move { p.connect("a").await });
        run_for(pipes, t, 20).await;
        let browser = browser.await.expect("task").expect("connected");
        let server = rx.try_recv().expect("accepted");
        (browser, server)
    }

    #[test]
    fn bytes_arrive_in_order_after_the_latency_and_never_before() {
        rt().block_on(async {
            let pipes = Pipes::new(7, [3, 40], BTreeMap::new());
            let mut t = 0;
            let (mut browser, mut server) = pair(&pipes, &mut t).await;
            let sent_at = t;
            for i in 0..50u8 {
                browser.write_all(&[i; 3]).await.expect("write");
            }
            // nothing arrives before the smallest latency
            pipes.deliver(Duration::from_millis(sent_at + 2));
            let mut buf = [0u8; 1000];
            let n = tokio::time::timeout(Duration::from_millis(0), server.read(&mut buf)).await;
            assert!(n.is_err(), "read before any segment is due");
            run_for(&pipes, &mut t, 60).await;
            let mut got = Vec::new();
            while got.len() < 150 {
                let n = server.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
            }
            let want: Vec<u8> = (0..50u8).flat_map(|i| [i; 3]).collect();
            assert_eq!(got, want);
            assert_eq!(pipes.in_flight(), 0);
        });
    }

    /// Takes the segments that begin with `+` and refuses the others; keeps what it was
    /// offered.
    struct Taker(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Absorb for Taker {
        fn absorb(&self, segment: &[u8]) -> Absorbed {
            lock(&self.0).push(segment.to_vec());
            if segment.first() == Some(&b'+') {
                Absorbed::Quiet
            } else {
                Absorbed::No
            }
        }
    }

    #[test]
    fn only_a_segment_that_reaches_a_waiting_reader_first_is_offered() {
        rt().block_on(async {
            // one latency: what is written in one millisecond arrives in one delivery
            let pipes = Pipes::new(8, [2, 2], BTreeMap::new());
            let mut t = 0;
            let (mut browser, mut server) = pair(&pipes, &mut t).await;
            let offered = Arc::new(Mutex::new(Vec::new()));
            browser.absorb_with(Taker(offered.clone()));
            // nobody waits to read: nothing is offered, and everything is read in order
            server.write_all(b"+a").await.expect("write");
            server.write_all(b"b").await.expect("write");
            run_for(&pipes, &mut t, 5).await;
            assert!(lock(&offered).is_empty());
            let mut buf = [0u8; 16];
            let n = browser.read(&mut buf).await.expect("read");
            assert_eq!(&buf[..n], b"+ab");
            // a reader waits: a segment taken is never read; one refused arrives and wakes
            // the reader, and what arrives behind it is read after it, not offered
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 3 {
                    let mut buf = [0u8; 16];
                    let n = browser.read(&mut buf).await.expect("read");
                    got.extend_from_slice(&buf[..n]);
                }
                got
            });
            run_for(&pipes, &mut t, 1).await;
            server.write_all(b"+1").await.expect("write");
            server.write_all(b"x").await.expect("write");
            server.write_all(b"+2").await.expect("write");
            run_for(&pipes, &mut t, 5).await;
            assert_eq!(reader.await.expect("reader"), b"x+2");
            assert_eq!(*lock(&offered), vec![b"+1".to_vec(), b"x".to_vec()]);
            assert_eq!(pipes.absorbed(), 1);
        });
    }

    #[test]
    fn a_shutdown_is_an_end_of_stream_after_the_data() {
        rt().block_on(async {
            let pipes = Pipes::new(1, [1, 5], BTreeMap::new());
            let mut t = 0;
            let (mut browser, mut server) = pair(&pipes, &mut t).await;
            server.write_all(b"hello").await.expect("write");
            server.shutdown().await.expect("shutdown");
            assert!(
                server.write_all(b"more").await.is_err(),
                "write after shutdown"
            );
            run_for(&pipes, &mut t, 10).await;
            let mut got = Vec::new();
            browser.read_to_end(&mut got).await.expect("read to end");
            assert_eq!(got, b"hello");
        });
    }

    #[test]
    fn a_dropped_end_with_unread_data_resets_the_other() {
        rt().block_on(async {
            let pipes = Pipes::new(2, [1, 1], BTreeMap::new());
            let mut t = 0;
            let (mut browser, server) = pair(&pipes, &mut t).await;
            browser.write_all(b"join").await.expect("write");
            run_for(&pipes, &mut t, 3).await;
            drop(server);
            run_for(&pipes, &mut t, 3).await;
            let mut buf = [0u8; 8];
            let err = browser.read(&mut buf).await.expect_err("reset");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            assert!(browser.write_all(b"x").await.is_err());
        });
    }

    #[test]
    fn data_to_a_closed_end_is_answered_with_a_reset() {
        rt().block_on(async {
            let pipes = Pipes::new(3, [1, 1], BTreeMap::new());
            let mut t = 0;
            let (mut browser, server) = pair(&pipes, &mut t).await;
            drop(server);
            // the write goes out before the FIN arrives, and reaches a closed socket
            browser
                .write_all(b"late")
                .await
                .expect("write succeeds locally");
            run_for(&pipes, &mut t, 5).await;
            let mut buf = [0u8; 8];
            let err = browser.read(&mut buf).await.expect_err("reset");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        });
    }

    #[test]
    fn a_dropped_end_without_unread_data_closes_cleanly() {
        rt().block_on(async {
            let pipes = Pipes::new(4, [2, 2], BTreeMap::new());
            let mut t = 0;
            let (mut browser, server) = pair(&pipes, &mut t).await;
            drop(server);
            run_for(&pipes, &mut t, 5).await;
            let mut buf = [0u8; 8];
            assert_eq!(browser.read(&mut buf).await.expect("eof"), 0);
        });
    }

    #[test]
    fn a_node_that_stopped_listening_refuses_connections() {
        rt().block_on(async {
            let pipes = Pipes::new(5, [10, 10], BTreeMap::new());
            let mut t = 0;
            let rx = pipes.listen("a");
            drop(rx);
            let p = pipes.clone();
            let again = tokio::spawn(async move { p.connect("a").await });
            run_for(&pipes, &mut t, 30).await;
            let err = again.await.expect("task").expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
            let err = pipes.connect("nobody").await.expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        });
    }

    #[test]
    fn a_connect_takes_one_crossing_of_the_nodes_own_latency() {
        rt().block_on(async {
            let slow = BTreeMap::from([("a".to_owned(), [50, 50])]);
            let pipes = Pipes::new(6, [1, 1], slow);
            let _rx = pipes.listen("a");
            let start = tokio::time::Instant::now();
            pipes.connect("a").await.expect("connected");
            assert_eq!(start.elapsed(), Duration::from_millis(50));
        });
    }

    #[test]
    fn latency_draws_stay_in_range_and_lean_to_the_minimum() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let draws: Vec<u64> = (0..10_000)
            .map(|_| draw_latency(&mut rng, [1, 101]).as_millis() as u64)
            .collect();
        assert!(draws.iter().all(|d| (1..=101).contains(d)));
        let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
        // min + range / 5 for Exp(5), less the flooring and the cap
        assert!((19.0..22.0).contains(&mean), "mean {mean}");
        assert_eq!(draw_latency(&mut rng, [7, 7]), Duration::from_millis(7));
        assert_eq!(draw_latency(&mut rng, [9, 3]), Duration::from_millis(9));
    }
}
