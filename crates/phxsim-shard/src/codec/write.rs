//! Encoding: borrowed frames into one buffer reserved up front.
//!
//! Layout (`v` = LEB128 varint, `s` = varint length + UTF-8):
//! - kind 0 tick: nothing; kind 1 hello: `s node, v vsn, v pool_size`
//! - kind 2 heartbeat: `v shard, table, v from, u8 has_delta, [delta], clock`
//! - kind 3 transfer_req: `v shard, v id, table, v from, clock`
//! - kind 4 transfer_ack: `v shard, v id, table, v from, u8 payload (0 delta, 1 full), delta|extract`
//! - kind 5 graceful_permdown: `v shard, s name, v vsn`
//! - table: `v count, (s name, v vsn)*`; clock: `v count, (v replica, v clock)*`
//! - clouds: `v count, (v replica, v dots, v dot*)*`, dots ascending
//! - values: `v count, (v replica, v clock, v topic length, v presence length, topic,
//!   presence)*`, in tag order; topic and presence are adjacent, so one UTF-8 check covers
//!   both. A presence is the tracker's meta block (`Meta::block_for`): the pid's and the key's
//!   lengths (six bits a byte, low bits first, `0x40` on every byte but the last, so ASCII),
//!   the pid, the key and the meta's JSON text. A receiver keeps those bytes as the
//!   presence's one heap block, with one copy, instead of rebuilding it from four fields.
//! - delta: `values, clouds, clock start, clock end`; extract: `clock context, clouds, values`

use super::HEADER_LEN;
use super::VERSION;
use crate::message::{Frame, NodeMessage, ShardMessage, TransferPayload};
use phxsim_tracker::{Clouds, Context, Delta, ReplicaRef, Tag, TrackedMeta};

pub(super) const TICK: u8 = 0;
pub(super) const HELLO: u8 = 1;
pub(super) const HEARTBEAT: u8 = 2;
pub(super) const TRANSFER_REQ: u8 = 3;
pub(super) const TRANSFER_ACK: u8 = 4;
pub(super) const GRACEFUL_PERMDOWN: u8 = 5;

/// The replica table of one message: refs in order of first use, looked up by pointer-cheap
/// comparison (a message names a handful of replicas).
#[derive(Default)]
struct Table<'a> {
    refs: Vec<&'a ReplicaRef>,
}

impl<'a> Table<'a> {
    fn add(&mut self, r: &'a ReplicaRef) {
        if !self.refs.contains(&r) {
            self.refs.push(r);
        }
    }

    fn add_clock(&mut self, c: &'a Context) {
        c.keys().for_each(|r| self.add(r));
    }

    fn add_delta(&mut self, d: &'a Delta) {
        self.add_values(&d.values);
        d.clouds.keys().for_each(|r| self.add(r));
        self.add_clock(&d.range.0);
        self.add_clock(&d.range.1);
    }

    fn add_values(&mut self, v: impl IntoIterator<Item = (&'a Tag, &'a TrackedMeta)>) {
        // Values are in tag order, so a replica's run is contiguous: compare with the last.
        let mut last: Option<&ReplicaRef> = None;
        for (t, _) in v {
            if last != Some(&t.replica) {
                self.add(&t.replica);
                last = Some(&t.replica);
            }
        }
    }

    fn index(&self, r: &ReplicaRef) -> u64 {
        self.refs.iter().position(|x| *x == r).unwrap_or(0) as u64
    }
}

/// An upper-bound-ish guess of the encoded size, so the buffer grows once, not by doubling.
fn values_size<'v>(v: impl IntoIterator<Item = (&'v Tag, &'v TrackedMeta)>) -> usize {
    v.into_iter()
        .map(|(_, p)| {
            // replica, clock, two lengths, the topic and the block (plus the owner, in case the
            // block has to be rebuilt for it); lengths only, so no block is read here
            24 + p.key.topic.len() + p.key.pid.len() + p.key.key.len() + p.meta.block_len()
        })
        .sum()
}

fn clouds_size(c: &Clouds) -> usize {
    c.values().map(|d| 8 + d.len() * 5).sum()
}

fn delta_size(d: &Delta) -> usize {
    values_size(&d.values) + clouds_size(&d.clouds) + 64
}

struct Writer<'a, 'b> {
    out: &'b mut Vec<u8>,
    table: Table<'a>,
}

impl<'a> Writer<'a, '_> {
    fn u8(&mut self, b: u8) {
        self.out.push(b);
    }

    fn varint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.out.push((x as u8) | 0x80);
            x >>= 7;
        }
        self.out.push(x as u8);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    fn table(&mut self) {
        self.varint(self.table.refs.len() as u64);
        for i in 0..self.table.refs.len() {
            let r = self.table.refs[i];
            self.str(&r.name);
            self.varint(r.vsn);
        }
    }

    fn replica(&mut self, r: &ReplicaRef) {
        let i = self.table.index(r);
        self.varint(i);
    }

    fn clock(&mut self, c: &Context) {
        self.varint(c.len() as u64);
        for (r, &v) in c {
            self.replica(r);
            self.varint(v);
        }
    }

    fn clouds(&mut self, c: &Clouds) {
        self.varint(c.len() as u64);
        for (r, dots) in c {
            self.replica(r);
            self.varint(dots.len() as u64);
            for &d in dots {
                self.varint(d);
            }
        }
    }

    fn values<'v>(
        &mut self,
        v: impl IntoIterator<Item = (&'v Tag, &'v TrackedMeta), IntoIter: ExactSizeIterator>,
    ) {
        let v = v.into_iter();
        self.varint(v.len() as u64);
        let mut last: Option<(&ReplicaRef, u64)> = None;
        for (t, p) in v {
            // runs of one replica: look its index up once per run
            let i = match last {
                Some((r, i)) if *r == t.replica => i,
                _ => self.table.index(&t.replica),
            };
            last = Some((&t.replica, i));
            self.varint(i);
            self.varint(t.clock);
            // the meta's block as the tracker holds it (nearly always already the presence's)
            let block = p.meta.block_for(&p.key.pid, &p.key.key);
            self.varint(p.key.topic.len() as u64);
            self.varint(block.len() as u64);
            self.out.extend_from_slice(p.key.topic.as_bytes());
            block.write_to(self.out);
        }
    }

    fn delta(&mut self, d: &Delta) {
        self.values(&d.values);
        self.clouds(&d.clouds);
        self.clock(&d.range.0);
        self.clock(&d.range.1);
    }
}

/// Appends `frame` to `out`, length prefix included.
pub(super) fn frame(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    let mut table = Table::default();
    let estimate = match frame {
        Frame::Shard(NodeMessage { body, .. }) => {
            table.add(body.from());
            match body {
                ShardMessage::Heartbeat { delta, clocks, .. } => {
                    if let Some(d) = delta {
                        table.add_delta(d);
                    }
                    table.add_clock(clocks);
                    delta.as_ref().map_or(0, delta_size)
                }
                ShardMessage::TransferReq { clocks, .. } => {
                    table.add_clock(clocks);
                    0
                }
                ShardMessage::TransferAck { payload, .. } => match payload {
                    TransferPayload::Delta(d) => {
                        table.add_delta(d);
                        delta_size(d)
                    }
                    TransferPayload::Full(e) => {
                        table.add_clock(&e.context);
                        e.clouds.keys().for_each(|r| table.add(r));
                        table.add_values(&e.values);
                        values_size(&e.values) + clouds_size(&e.clouds)
                    }
                },
                ShardMessage::GracefulPermdown { .. } => 0,
            }
        }
        Frame::Hello(h) => h.node.len(),
        Frame::Tick => 0,
    };
    out.reserve(HEADER_LEN + 64 + estimate);
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(VERSION);
    let mut w = Writer { out, table };
    match frame {
        Frame::Tick => w.u8(TICK),
        Frame::Hello(h) => {
            w.u8(HELLO);
            w.str(&h.node);
            w.varint(h.vsn);
            w.varint(u64::from(h.pool_size));
        }
        Frame::Shard(NodeMessage { shard, body }) => match body {
            ShardMessage::Heartbeat {
                from,
                delta,
                clocks,
            } => {
                w.u8(HEARTBEAT);
                w.varint(u64::from(*shard));
                w.table();
                w.replica(from);
                match delta {
                    Some(d) => {
                        w.u8(1);
                        w.delta(d);
                    }
                    None => w.u8(0),
                }
                w.clock(clocks);
            }
            ShardMessage::TransferReq { id, from, clocks } => {
                w.u8(TRANSFER_REQ);
                w.varint(u64::from(*shard));
                w.varint(*id);
                w.table();
                w.replica(from);
                w.clock(clocks);
            }
            ShardMessage::TransferAck { id, from, payload } => {
                w.u8(TRANSFER_ACK);
                w.varint(u64::from(*shard));
                w.varint(*id);
                w.table();
                w.replica(from);
                match payload {
                    TransferPayload::Delta(d) => {
                        w.u8(0);
                        w.delta(d);
                    }
                    TransferPayload::Full(e) => {
                        w.u8(1);
                        w.clock(&e.context);
                        w.clouds(&e.clouds);
                        w.values(&e.values);
                    }
                }
            }
            ShardMessage::GracefulPermdown { from } => {
                w.u8(GRACEFUL_PERMDOWN);
                w.varint(u64::from(*shard));
                w.str(&from.name);
                w.varint(from.vsn);
            }
        },
    }
    let len = u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}
