//! Packet loss as TCP shows it to an application: late data, never missing data.
//!
//! turmoil drops a lost TCP segment for good (no retransmission), which turns any loss into a
//! broken connection. A real kernel retransmits: a lost segment arrives one retransmission
//! timeout later, and, because TCP delivers in order, everything written after it on that
//! connection waits too (head-of-line blocking). [`LossyStream`] models exactly that on the
//! sending side of a stream: each write is a segment, lost with probability `loss`, and a lost
//! one (with the writes queued behind it) goes out `rto` later. Each retransmission may be
//! lost again, doubling the timeout as TCP's backoff does. The draws come from a seeded RNG,
//! so a run stays reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The loss rate of a run's node links, shared by all of them so that a timeline step can
/// change it while the run goes (`loss = 0.01`, then `loss = 0.0`).
#[derive(Clone, Debug, Default)]
pub struct LossRate(Arc<AtomicU64>);

impl LossRate {
    #[cfg(test)]
    pub fn new(rate: f64) -> Self {
        Self(Arc::new(AtomicU64::new(rate.to_bits())))
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, rate: f64) {
        self.0.store(rate.to_bits(), Ordering::Relaxed);
    }
}

/// How a lossy link behaves: probability that a segment is lost, and the first retransmission
/// timeout (Linux's minimum RTO is 200 ms).
#[derive(Clone, Debug)]
pub struct Loss {
    pub rate: LossRate,
    pub rto: Duration,
}

/// Told of every lost segment: the total delay its retransmissions add.
pub type LossReport = Arc<dyn Fn(Duration) + Send + Sync>;

/// A stream whose writes are delayed as lost-and-retransmitted TCP segments would be.
pub struct LossyStream<S> {
    inner: S,
    loss: Loss,
    /// The seed of `rng`.
    seed: u64,
    /// The draws, made from `seed` at the first segment that meets a loss rate above zero:
    /// until then none was drawn, so the sequence is the one an RNG made at once would give.
    /// Most links never lose a segment, and the RNG (330 bytes) was a third of a simulated
    /// server connection's stream.
    rng: Option<Box<ChaCha8Rng>>,
    report: Option<LossReport>,
    /// The write being retransmitted: it and everything behind it wait for this timer.
    retransmit: Option<Pin<Box<Sleep>>>,
    /// The current write has been given its fate (lost once or more, or delivered).
    decided: bool,
    /// Set when the peer reset the connection ([`Resets`]): every write fails from then on.
    reset: Option<Arc<AtomicBool>>,
}

/// Browser connections that a `drop_mid_join` step resets. A browser killed in the middle
/// of its join makes its kernel answer with a reset, and the server's next write on that
/// connection fails; turmoil only resets a connection one round trip after data reaches a
/// closed socket, by which time a join is long done, so the simulator marks the server's end
/// of the connection itself (at the instant of the drop). Kept only in runs with such steps.
#[derive(Default)]
pub(crate) struct Resets {
    /// The server's end of each browser connection, by the browser's address.
    by_peer: BTreeMap<BrowserConn, Arc<AtomicBool>>,
    /// Each client's address on its latest connection.
    client_addr: BTreeMap<String, BrowserConn>,
}

/// A browser connection as both of its ends can name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum BrowserConn {
    /// A turmoil TCP connection, by the browser's address.
    Tcp(SocketAddr),
    /// An in-memory link (`crate::pipe`), by its number.
    Memory(u64),
}

impl Resets {
    /// The flag of the server's end of a connection from `peer`.
    pub(crate) fn register(&mut self, peer: BrowserConn) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.by_peer.insert(peer, flag.clone());
        flag
    }

    /// `client` connected from `addr`.
    pub(crate) fn connected(&mut self, client: &str, addr: BrowserConn) {
        self.client_addr.insert(client.to_owned(), addr);
    }

    /// Resets `client`'s latest connection: the server's writes on it fail from now on.
    pub(crate) fn reset(&mut self, client: &str) {
        if let Some(flag) = self
            .client_addr
            .remove(client)
            .and_then(|a| self.by_peer.remove(&a))
        {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")
}

impl<S> LossyStream<S> {
    pub fn new(inner: S, loss: Loss, seed: u64) -> Self {
        Self {
            inner,
            loss,
            seed,
            rng: None,
            report: None,
            retransmit: None,
            decided: false,
            reset: None,
        }
    }

    /// Fails every write once `flag` is set (see [`Resets`]).
    pub(crate) fn resettable(mut self, flag: Arc<AtomicBool>) -> Self {
        self.reset = Some(flag);
        self
    }

    fn is_reset(&self) -> bool {
        self.reset
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Calls `report` for every lost segment (for the transcript).
    pub fn reporting(mut self, report: LossReport) -> Self {
        self.report = Some(report);
        self
    }

    /// Draws the fate of a new segment: the total delay of its retransmissions, if any.
    fn draw_delay(&mut self) -> Option<Duration> {
        let rate = self.loss.rate.get().clamp(0.0, 1.0);
        if rate <= 0.0 {
            return None;
        }
        let seed = self.seed;
        let rng = self
            .rng
            .get_or_insert_with(|| Box::new(ChaCha8Rng::seed_from_u64(seed)));
        let mut delay = Duration::ZERO;
        let mut rto = self.loss.rto;
        // TCP gives up after ~15 retransmissions; the cap also bounds a rate of 1.0.
        for _ in 0..15 {
            if !rng.gen_bool(rate) {
                break;
            }
            delay += rto;
            rto = (rto * 2).min(Duration::from_secs(120));
        }
        (!delay.is_zero()).then_some(delay)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LossyStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LossyStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.is_reset() {
            return Poll::Ready(Err(reset_error()));
        }
        if buf.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if !this.decided {
            this.decided = true;
            if let Some(delay) = this.draw_delay() {
                if let Some(report) = &this.report {
                    report(delay);
                }
                this.retransmit = Some(Box::pin(tokio::time::sleep(delay)));
            }
        }
        if let Some(timer) = this.retransmit.as_mut() {
            ready!(timer.as_mut().poll(cx));
            this.retransmit = None;
        }
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        // the next write is a new segment
        this.decided = false;
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_reset() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio::time::Instant;

    async fn arrival_delays(rate: f64, writes: usize) -> Vec<Duration> {
        let (a, mut b) = duplex(1 << 16);
        let loss = Loss {
            rate: LossRate::new(rate),
            rto: Duration::from_millis(200),
        };
        let mut a = LossyStream::new(a, loss, 7);
        let start = Instant::now();
        let mut delays = Vec::new();
        for i in 0..writes {
            a.write_all(&[i as u8]).await.expect("write");
            let mut byte = [0u8; 1];
            b.read_exact(&mut byte).await.expect("read");
            assert_eq!(byte[0], i as u8, "in order, nothing lost");
            delays.push(Instant::now() - start);
        }
        delays
    }

    #[tokio::test(start_paused = true)]
    async fn a_lossless_link_delivers_at_once() {
        let d = arrival_delays(0.0, 50).await;
        assert!(d.iter().all(|d| d.is_zero()), "{d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn lost_segments_arrive_one_rto_later_in_order() {
        let d = arrival_delays(0.2, 400).await;
        let late = d.windows(2).filter(|w| w[1] > w[0]).count();
        // about a fifth of the writes are late, each by a multiple of the RTO
        assert!((40..=130).contains(&late), "{late} late writes");
        assert!(
            d.iter().all(|d| d.as_millis() % 200 == 0),
            "delays are whole RTOs"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_lost_segment_is_reported_with_its_delay() {
        use std::sync::Mutex;
        let (a, mut b) = duplex(1 << 16);
        let loss = Loss {
            rate: LossRate::new(0.3),
            rto: Duration::from_millis(200),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut a =
            LossyStream::new(a, loss, 3).reporting(Arc::new(move |d| log.lock().unwrap().push(d)));
        let mut late = Vec::new();
        for i in 0..100u8 {
            let start = Instant::now();
            a.write_all(&[i]).await.expect("write");
            let mut byte = [0u8; 1];
            b.read_exact(&mut byte).await.expect("read");
            let waited = Instant::now() - start;
            if !waited.is_zero() {
                late.push(waited);
            }
        }
        assert!(!late.is_empty());
        assert_eq!(
            *seen.lock().unwrap(),
            late,
            "one report per late write, its delay"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn certain_loss_still_delivers_after_the_backoff_cap() {
        let d = arrival_delays(1.0, 1).await;
        assert!(d[0] >= Duration::from_secs(60), "{d:?}");
    }
}

#[cfg(test)]
mod lazy_rng {
    use super::*;

    /// The draws of an RNG made at once, as the stream made it before it made it lazily.
    fn eager_delays(seed: u64, rates: &[f64], rto: Duration) -> Vec<Option<Duration>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rates
            .iter()
            .map(|&rate| {
                let rate = rate.clamp(0.0, 1.0);
                if rate <= 0.0 {
                    return None;
                }
                let mut delay = Duration::ZERO;
                let mut step = rto;
                for _ in 0..15 {
                    if !rng.gen_bool(rate) {
                        break;
                    }
                    delay += step;
                    step = (step * 2).min(Duration::from_secs(120));
                }
                (!delay.is_zero()).then_some(delay)
            })
            .collect()
    }

    #[test]
    fn the_lazy_rng_draws_what_an_eager_one_did() {
        let rto = Duration::from_millis(200);
        // lossless segments first (no draw), then losses, lossless again, losses again
        let mut rates = vec![0.0; 5];
        rates.extend([0.3; 40]);
        rates.extend([0.0; 3]);
        rates.extend([0.6; 40]);
        for seed in [1, 7, 1234] {
            let rate = LossRate::default();
            let loss = Loss {
                rate: rate.clone(),
                rto,
            };
            let (a, _b) = tokio::io::duplex(64);
            let mut stream = LossyStream::new(a, loss, seed);
            let lazy: Vec<_> = rates
                .iter()
                .map(|&r| {
                    rate.set(r);
                    stream.draw_delay()
                })
                .collect();
            assert_eq!(lazy, eager_delays(seed, &rates, rto), "seed {seed}");
            assert!(lazy.iter().any(Option::is_some));
        }
    }
}

#[cfg(test)]
mod rate_changes {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_rate_set_to_zero_stops_the_loss_at_once() {
        let (a, mut b) = duplex(1 << 16);
        let rate = LossRate::new(1.0);
        let loss = Loss {
            rate: rate.clone(),
            rto: Duration::from_millis(200),
        };
        let mut a = LossyStream::new(a, loss, 1);
        rate.set(0.0);
        let start = Instant::now();
        a.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        b.read_exact(&mut byte).await.expect("read");
        assert_eq!(Instant::now(), start, "no retransmission once lossless");
    }
}
