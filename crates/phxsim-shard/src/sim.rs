//! A scripted in-memory network for [`Tracker`]s: virtual time, per-direction links that can be
//! cut and healed, a fixed latency and an optional loss filter. No tasks, no sockets, no clock:
//! a test (or the simulator) advances time explicitly and everything happens in one defined
//! order, so a script replays identically.
//!
//! Links follow distributed Erlang: a message is delivered only if the link is up both when it
//! is sent and when it arrives (a disconnect drops what is in flight), and a broadcast reaches
//! the nodes connected at the time of sending.

use crate::message::NodeMessage;
use crate::shard::Destination;
use crate::tracker::{InboundError, Tracker, TrackerEvent};
use std::collections::{BTreeMap, BTreeSet};

/// A message between two nodes, as the loss filter and the record see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub from: String,
    pub to: String,
    pub msg: NodeMessage,
}

/// Everything that happened, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimRecord {
    /// An event of `node`'s tracker.
    Event {
        at: u64,
        node: String,
        event: TrackerEvent,
    },
    /// A message handed to a link that was up (it may still be lost later).
    Sent {
        at: u64,
        from: String,
        to: String,
        shard: u32,
        kind: &'static str,
    },
    /// A message a node refused.
    Refused {
        at: u64,
        node: String,
        error: InboundError,
    },
}

type LossFilter = Box<dyn FnMut(u64, &Delivery) -> bool>;

/// The network and the nodes on it.
pub struct SimNet {
    now: u64,
    latency: u64,
    tick_lag: u64,
    nodes: BTreeMap<String, Tracker>,
    links: BTreeSet<(String, String)>,
    queue: BTreeMap<(u64, u64), Delivery>,
    seq: u64,
    records: Vec<SimRecord>,
    lose: Option<LossFilter>,
}

impl SimNet {
    /// An empty network at time 0. Every message takes `latency` ms; every tick is handled
    /// `tick_lag` ms after it is due (0 for an ideal timer; 1 reproduces the BEAM, whose
    /// re-armed `send_after` ran the reference's 100 ms ticks every 101 ms).
    pub fn new(latency: u64, tick_lag: u64) -> Self {
        Self {
            now: 0,
            latency,
            tick_lag,
            nodes: BTreeMap::new(),
            links: BTreeSet::new(),
            queue: BTreeMap::new(),
            seq: 0,
            records: Vec::new(),
            lose: None,
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    /// Adds a node, connected to nobody yet. Replaces (crashes) a node of the same name.
    pub fn add(&mut self, tracker: Tracker) {
        self.nodes.insert(tracker.node().to_owned(), tracker);
    }

    /// Removes a node without a word to its peers, as a crash or a halt does.
    pub fn crash(&mut self, name: &str) -> Option<Tracker> {
        self.nodes.remove(name)
    }

    pub fn node(&self, name: &str) -> &Tracker {
        &self.nodes[name]
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Tracker> {
        self.nodes.values()
    }

    /// Runs a local operation on `name` now, then sends what it produced.
    pub fn with<R>(&mut self, name: &str, f: impl FnOnce(&mut Tracker) -> R) -> R {
        let now = self.now;
        let node = self.nodes.get_mut(name).expect("no such node");
        let r = f(node);
        node.schedule_eager(now);
        self.pump(name);
        r
    }

    pub fn connect(&mut self, a: &str, b: &str) {
        self.links.insert((a.into(), b.into()));
        self.links.insert((b.into(), a.into()));
    }

    /// Connects every pair of current nodes.
    pub fn connect_all(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for a in &names {
            for b in &names {
                if a != b {
                    self.links.insert((a.clone(), b.clone()));
                }
            }
        }
    }

    pub fn disconnect(&mut self, a: &str, b: &str) {
        self.links.remove(&(a.to_owned(), b.to_owned()));
        self.links.remove(&(b.to_owned(), a.to_owned()));
    }

    /// Cuts one direction only: `from`'s messages stop reaching `to`.
    pub fn disconnect_oneway(&mut self, from: &str, to: &str) {
        self.links.remove(&(from.to_owned(), to.to_owned()));
    }

    /// Cuts `name` off from every other node.
    pub fn isolate(&mut self, name: &str) {
        self.links.retain(|(a, b)| a != name && b != name);
    }

    pub fn is_connected(&self, from: &str, to: &str) -> bool {
        self.links.contains(&(from.to_owned(), to.to_owned()))
    }

    /// Drops every delivery for which `f(now, delivery)` is true (after it was sent).
    pub fn set_loss(&mut self, f: impl FnMut(u64, &Delivery) -> bool + 'static) {
        self.lose = Some(Box::new(f));
    }

    pub fn clear_loss(&mut self) {
        self.lose = None;
    }

    pub fn records(&self) -> &[SimRecord] {
        &self.records
    }

    /// The events of one node since `since`, with their times.
    pub fn events_of(&self, node: &str, since: u64) -> Vec<(u64, TrackerEvent)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                SimRecord::Event { at, node: n, event } if n == node && *at >= since => {
                    Some((*at, event.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Messages sent since `since`: `(at, from, to, kind)`.
    pub fn sent_since(&self, since: u64) -> Vec<(u64, String, String, &'static str)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                SimRecord::Sent {
                    at, from, to, kind, ..
                } if *at >= since => Some((*at, from.clone(), to.clone(), *kind)),
                _ => None,
            })
            .collect()
    }

    fn pump(&mut self, name: &str) {
        let Some(t) = self.nodes.get_mut(name) else {
            return;
        };
        let mut out = Vec::new();
        while let Some(tx) = t.poll_transmit() {
            out.push(tx);
        }
        while let Some(event) = t.poll_event() {
            self.records.push(SimRecord::Event {
                at: self.now,
                node: name.to_owned(),
                event,
            });
        }
        for tx in out {
            let targets: Vec<String> = match &tx.to {
                Destination::Broadcast => self
                    .nodes
                    .keys()
                    .filter(|n| n.as_str() != name)
                    .cloned()
                    .collect(),
                Destination::Node(n) => vec![n.clone()],
            };
            for to in targets {
                if !self.is_connected(name, &to) {
                    continue;
                }
                self.records.push(SimRecord::Sent {
                    at: self.now,
                    from: name.to_owned(),
                    to: to.clone(),
                    shard: tx.msg.shard,
                    kind: tx.msg.body.kind(),
                });
                self.seq += 1;
                self.queue.insert(
                    (self.now + self.latency, self.seq),
                    Delivery {
                        from: name.to_owned(),
                        to,
                        msg: tx.msg.clone(),
                    },
                );
            }
        }
    }

    /// When the next thing happens, if anything is scheduled.
    pub fn next_at(&self) -> Option<u64> {
        let msg = self.queue.keys().next().map(|&(t, _)| t);
        let tick = self
            .nodes
            .values()
            .filter_map(|t| t.poll_timeout())
            .min()
            .map(|t| t + self.tick_lag);
        match (msg, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Processes the next scheduled thing (all deliveries due at that instant come before
    /// ticks due at it). Returns its time, or `None` if nothing is scheduled before `limit`.
    pub fn step(&mut self, limit: u64) -> Option<u64> {
        let at = self.next_at().filter(|&t| t <= limit)?;
        self.now = self.now.max(at);
        if let Some((&key, _)) = self.queue.iter().next().filter(|((t, _), _)| *t <= at) {
            let d = self.queue.remove(&key).expect("key just seen");
            self.deliver(d);
            return Some(at);
        }
        let due: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, t)| t.poll_timeout().is_some_and(|x| x + self.tick_lag <= at))
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            if let Some(t) = self.nodes.get_mut(&n) {
                t.handle_timeout(at);
            }
            self.pump(&n);
        }
        Some(at)
    }

    fn deliver(&mut self, d: Delivery) {
        if !self.is_connected(&d.from, &d.to) || !self.nodes.contains_key(&d.to) {
            return;
        }
        if let Some(lose) = self.lose.as_mut()
            && lose(self.now, &d)
        {
            return;
        }
        let now = self.now;
        let Some(t) = self.nodes.get_mut(&d.to) else {
            return;
        };
        if let Err(error) = t.handle_message(now, &d.from, d.msg) {
            self.records.push(SimRecord::Refused {
                at: now,
                node: d.to.clone(),
                error,
            });
        }
        self.pump(&d.to);
    }

    /// Runs everything scheduled up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: u64) {
        while self.step(t).is_some() {}
        self.now = self.now.max(t);
    }

    /// Runs until `cond` holds (checked before each step and after it) or `limit` passes.
    /// Returns the time it first held.
    pub fn run_until_cond(
        &mut self,
        limit: u64,
        mut cond: impl FnMut(&SimNet) -> bool,
    ) -> Option<u64> {
        if cond(self) {
            return Some(self.now);
        }
        while let Some(at) = self.step(limit) {
            if cond(self) {
                return Some(at);
            }
        }
        self.now = self.now.max(limit);
        None
    }
}
