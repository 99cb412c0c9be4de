//! A topic's diffs on their way to its subscribers: one log per topic, read by every
//! subscriber at its own place, instead of a channel per subscriber.
//!
//! Why: a join storm on one topic sends every diff to every subscriber. With a tokio channel
//! per subscriber, each diff was pushed into a thousand channels and popped out of them, each
//! pop a cache miss on that channel's own block (about 3.5 % of `pop_3000_one_topic`), and
//! each channel cost about a kilobyte per socket. Here a diff is appended once, and a
//! subscriber's read is an index into the one log every subscriber reads.
//!
//! It behaves as the channels did, so that tasks wake in the same order and a simulated run
//! keeps its bytes: a send wakes the subscribers that wait (those whose last read found
//! nothing), in subscription order; a read takes one unit of the task's tokio budget as a
//! channel's does (and yields when it is spent); `try_recv` takes none; a subscriber that is
//! gone is dropped at the next send; when the node's side goes away, every waiting
//! subscriber wakes and reads what is left, then the end.

use super::PresenceUpdate;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::mpsc::error::TryRecvError;

/// One subscriber's place in the log.
struct Reader {
    id: u64,
    /// Sequence number of the next update it reads.
    next: u64,
    /// Set when its last read found nothing; taken by the next send.
    waker: Option<Waker>,
    /// Its [`Diffs`] was dropped: removed at the next send.
    gone: bool,
}

struct Log {
    /// Updates some subscriber has not read yet; the first has sequence number `base`.
    updates: VecDeque<PresenceUpdate>,
    base: u64,
    /// In subscription order (ids grow), so wake-ups go out in that order.
    readers: Vec<Reader>,
    next_id: u64,
    /// The node's side ([`Feed`]) is gone: no update will come.
    closed: bool,
}

impl Log {
    /// Where reader `id` is, trying `hint` (where it was last) first: readers are only ever
    /// appended and removed, so a reader's place only moves down, and between two sends it
    /// does not move at all. A binary search over a big topic's thousands of readers cost a
    /// dozen cache misses per read, two reads per wake-up of every subscriber.
    fn find(&self, id: u64, hint: &mut usize) -> Option<usize> {
        if self.readers.get(*hint).is_some_and(|r| r.id == id) {
            return Some(*hint);
        }
        let i = self.readers.binary_search_by_key(&id, |r| r.id).ok()?;
        *hint = i;
        Some(i)
    }
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    // A panic while holding the lock leaves the log consistent (every step is complete
    // before the next), so a poisoned lock is still good.
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// The node's side of one topic's log.
pub(crate) struct Feed {
    log: Arc<Mutex<Log>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            log: Arc::new(Mutex::new(Log {
                updates: VecDeque::new(),
                base: 0,
                readers: Vec::new(),
                next_id: 0,
                closed: false,
            })),
        }
    }
}

impl Feed {
    /// How many subscribers it has, counting those gone since the last send (as a channel
    /// per subscriber counted their senders until a send failed).
    pub(crate) fn len(&self) -> usize {
        lock(&self.log).readers.len()
    }

    /// A new subscriber, which reads every update sent from now on.
    pub(crate) fn subscribe(&self) -> Diffs {
        let mut log = lock(&self.log);
        let id = log.next_id;
        log.next_id += 1;
        let next = log.base + log.updates.len() as u64;
        log.readers.push(Reader {
            id,
            next,
            waker: None,
            gone: false,
        });
        let at = log.readers.len() - 1;
        Diffs {
            log: Arc::clone(&self.log),
            id,
            at,
        }
    }

    /// Appends an update for every subscriber and wakes those waiting, in subscription
    /// order; false when no subscriber is left (then nothing is kept).
    pub(crate) fn send(&self, update: PresenceUpdate) -> bool {
        let wake: Vec<Waker> = {
            let mut log = lock(&self.log);
            log.readers.retain(|r| !r.gone);
            if log.readers.is_empty() {
                log.updates.clear();
                return false;
            }
            log.updates.push_back(update);
            // What every subscriber has read goes.
            let oldest = log.readers.iter().map(|r| r.next).min().unwrap_or(log.base);
            while log.base < oldest && log.updates.pop_front().is_some() {
                log.base += 1;
            }
            waiting(&mut log)
        };
        wake.into_iter().for_each(Waker::wake);
        true
    }
}

/// The wakers of the subscribers that wait, in subscription order, taken out of the log (they
/// are woken after the lock is released).
fn waiting(log: &mut Log) -> Vec<Waker> {
    log.readers
        .iter_mut()
        .filter_map(|r| r.waker.take())
        .collect()
}

impl Drop for Feed {
    fn drop(&mut self) {
        let wake: Vec<Waker> = {
            let mut log = lock(&self.log);
            log.closed = true;
            waiting(&mut log)
        };
        wake.into_iter().for_each(Waker::wake);
    }
}

/// A subscriber's side: every `presence_diff` of the topic on the node after the instant of
/// subscribing, in order. Dropping it unsubscribes.
pub struct Diffs {
    log: Arc<Mutex<Log>>,
    id: u64,
    /// Where its reader was in the log's list last time (see [`Log::find`]).
    at: usize,
}

impl std::fmt::Debug for Diffs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diffs").field("id", &self.id).finish()
    }
}

impl Diffs {
    /// The next update without waiting: `Empty` when none has come, `Disconnected` once the
    /// node's side is gone and everything was read.
    pub fn try_recv(&mut self) -> Result<PresenceUpdate, TryRecvError> {
        let mut log = lock(&self.log);
        let found = log.find(self.id, &mut self.at);
        match found.and_then(|i| take(&mut log, i)) {
            Some(u) => Ok(u),
            None if log.closed => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next update, or `None` once the node's side is gone and everything was read.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<PresenceUpdate>> {
        // One unit of the task's budget per read, as a tokio channel's receive takes.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let mut log = lock(&self.log);
        let found = log.find(self.id, &mut self.at);
        if let Some(u) = found.and_then(|i| take(&mut log, i)) {
            coop.made_progress();
            return Poll::Ready(Some(u));
        }
        if log.closed {
            coop.made_progress();
            return Poll::Ready(None);
        }
        if let Some(r) = found.and_then(|i| log.readers.get_mut(i)) {
            match &r.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => r.waker = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }

    /// [`Diffs::poll_recv`] as a future.
    pub async fn recv(&mut self) -> Option<PresenceUpdate> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// The next update of the reader at `i`, moving its place on.
fn take(log: &mut Log, i: usize) -> Option<PresenceUpdate> {
    let at = usize::try_from(log.readers.get(i)?.next.saturating_sub(log.base)).ok()?;
    let update = log.updates.get(at)?.clone();
    log.readers[i].next += 1;
    Some(update)
}

impl Drop for Diffs {
    fn drop(&mut self) {
        let mut log = lock(&self.log);
        let found = log.find(self.id, &mut self.at);
        if let Some(r) = found.and_then(|i| log.readers.get_mut(i)) {
            r.gone = true;
            r.waker = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use std::task::Wake;

    /// A waker that writes its name into a shared list when woken.
    struct Named(&'static str, Arc<StdMutex<Vec<&'static str>>>);
    impl Wake for Named {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    fn update(n: u8) -> PresenceUpdate {
        PresenceUpdate::new(Arc::from(format!("t{n}").as_str()), Arc::default())
    }

    fn poll(d: &mut Diffs, w: &Waker) -> Poll<Option<PresenceUpdate>> {
        d.poll_recv(&mut Context::from_waker(w))
    }

    /// Sends wake only the subscribers whose last read found nothing, in subscription order,
    /// and each reads every update in order; a dropped one is gone at the next send.
    #[test]
    fn sends_wake_waiting_subscribers_in_order() {
        let woken = Arc::new(StdMutex::new(Vec::new()));
        let feed = Feed::default();
        let (mut a, mut b, c) = (feed.subscribe(), feed.subscribe(), feed.subscribe());
        let wa = Waker::from(Arc::new(Named("a", woken.clone())));
        let wb = Waker::from(Arc::new(Named("b", woken.clone())));
        assert!(poll(&mut b, &wb).is_pending());
        assert!(poll(&mut a, &wa).is_pending());
        assert!(feed.send(update(1)));
        // a, then b: subscription order, not the order they waited in (b first)
        assert_eq!(*woken.lock().unwrap(), ["a", "b"]);
        assert!(feed.send(update(2)));
        // nobody waits any more
        assert_eq!(woken.lock().unwrap().len(), 2);
        assert_eq!(feed.len(), 3);
        drop(c);
        assert_eq!(
            feed.len(),
            3,
            "a gone subscriber counts until the next send"
        );
        for d in [&mut a, &mut b] {
            assert_eq!(&*d.try_recv().unwrap().topic, "t1");
            assert_eq!(&*d.try_recv().unwrap().topic, "t2");
            assert_eq!(d.try_recv().unwrap_err(), TryRecvError::Empty);
        }
        // a subscriber that comes late reads only what comes after it
        let mut late = feed.subscribe();
        assert!(feed.send(update(3)));
        assert_eq!(feed.len(), 3);
        assert_eq!(&*late.try_recv().unwrap().topic, "t3");
        assert_eq!(late.try_recv().unwrap_err(), TryRecvError::Empty);
        drop((a, b, late));
        assert!(!feed.send(update(4)), "no subscriber left");
    }

    /// When the node's side goes, a waiting subscriber wakes, reads what is left, then the end.
    #[test]
    fn the_end_comes_after_what_is_left() {
        let woken = Arc::new(StdMutex::new(Vec::new()));
        let feed = Feed::default();
        let mut a = feed.subscribe();
        let mut b = feed.subscribe();
        let wb = Waker::from(Arc::new(Named("b", woken.clone())));
        assert!(feed.send(update(1)));
        assert!(poll(&mut b, &wb).is_ready());
        assert!(poll(&mut b, &wb).is_pending());
        drop(feed);
        assert_eq!(*woken.lock().unwrap(), ["b"]);
        assert!(matches!(poll(&mut b, &wb), Poll::Ready(None)));
        assert_eq!(&*a.try_recv().unwrap().topic, "t1");
        assert_eq!(a.try_recv().unwrap_err(), TryRecvError::Disconnected);
    }

    /// Subscribers come and go between sends, reads and polls in a random order; each reads
    /// exactly the updates sent while it was subscribed, in order (what a channel per
    /// subscriber gave), however the readers' places in the log moved under their hints.
    #[test]
    fn every_subscriber_reads_what_was_sent_while_it_was_there() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        #[derive(Clone, Debug)]
        enum Op {
            Subscribe,
            Drop(usize),
            Send,
            Read(usize),
            Poll(usize),
        }
        let op = prop_oneof![
            2 => Just(Op::Subscribe),
            2 => any::<usize>().prop_map(Op::Drop),
            3 => Just(Op::Send),
            3 => any::<usize>().prop_map(Op::Read),
            2 => any::<usize>().prop_map(Op::Poll),
        ];
        let mut runner = TestRunner::new(Config {
            cases: 256,
            ..Config::default()
        });
        runner
            .run(&proptest::collection::vec(op, 1..120), |ops| {
                let feed = Feed::default();
                // each live subscriber with the updates it must still read
                let mut subs: Vec<(Diffs, VecDeque<u8>)> = Vec::new();
                let waker = Waker::noop();
                let mut n = 0u8;
                for op in ops {
                    match op {
                        Op::Subscribe => subs.push((feed.subscribe(), VecDeque::new())),
                        Op::Drop(i) if !subs.is_empty() => {
                            subs.remove(i % subs.len());
                        }
                        Op::Send => {
                            n = n.wrapping_add(1);
                            let kept = feed.send(update(n));
                            prop_assert_eq!(kept, !subs.is_empty());
                            for (_, want) in &mut subs {
                                want.push_back(n);
                            }
                        }
                        Op::Read(i) | Op::Poll(i) if !subs.is_empty() => {
                            let len = subs.len();
                            let (d, want) = &mut subs[i % len];
                            let got = match op {
                                Op::Read(_) => d.try_recv().ok(),
                                _ => match poll(d, waker) {
                                    Poll::Ready(u) => u,
                                    Poll::Pending => None,
                                },
                            };
                            let want = want.pop_front().map(|n| format!("t{n}"));
                            prop_assert_eq!(got.map(|u| u.topic.to_string()), want);
                        }
                        _ => {}
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    /// A read takes one unit of the task's budget, as a tokio channel's receive does: a
    /// task that reads without end yields after its budget of 128.
    #[tokio::test]
    async fn reads_take_the_task_s_budget() {
        let feed = Feed::default();
        let mut a = feed.subscribe();
        for n in 0..200 {
            feed.send(update(n as u8));
        }
        let mut read = 0;
        std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(_)) = a.poll_recv(cx) {
                read += 1;
            }
            Poll::Ready(())
        })
        .await;
        assert_eq!(read, 128);
    }
}
