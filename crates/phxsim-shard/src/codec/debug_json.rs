//! A JSON rendering of any frame for people reading traces and logs: the same fields as the
//! binary form (a replica table per message, dots as `[replica index, clock]`), one value per
//! line-friendly array. Not a wire format: nothing decodes it.

use crate::message::{Frame, NodeMessage, ShardMessage, TransferPayload};
use phxsim_tracker::{Clouds, Context, Delta, Meta, Name, ReplicaRef, Tag, TrackedMeta};
use serde::Serialize;
use std::collections::BTreeMap;

/// The frame as one line of JSON.
pub fn debug_json(frame: &Frame) -> String {
    // Serialising plain structs, strings, integers and JSON values cannot fail.
    serde_json::to_string(&to_wire(frame)).unwrap_or_default()
}

/// `[replica index, clock]`.
type WireClock = Vec<(u32, u64)>;

/// `[replica index, clock, topic, pid, key, meta]`: one value, as an array to keep it short.
#[derive(Serialize)]
struct WireValue(u32, u64, Name, Name, Name, Meta);

#[derive(Serialize)]
struct WireDelta {
    values: Vec<WireValue>,
    clouds: Vec<(u32, Vec<u64>)>,
    start: WireClock,
    end: WireClock,
}

#[derive(Serialize)]
struct WireExtract {
    context: WireClock,
    clouds: Vec<(u32, Vec<u64>)>,
    values: Vec<WireValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WirePayload {
    Delta(WireDelta),
    Full(WireExtract),
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WireFrame {
    Hello {
        node: String,
        vsn: u64,
        pool_size: u32,
    },
    Heartbeat {
        shard: u32,
        replicas: Vec<ReplicaRef>,
        from: u32,
        delta: Option<WireDelta>,
        clocks: WireClock,
    },
    TransferReq {
        shard: u32,
        id: u64,
        replicas: Vec<ReplicaRef>,
        from: u32,
        clocks: WireClock,
    },
    TransferAck {
        shard: u32,
        id: u64,
        replicas: Vec<ReplicaRef>,
        from: u32,
        payload: WirePayload,
    },
    GracefulPermdown {
        shard: u32,
        from: ReplicaRef,
    },
    Tick,
}

/// Interns replica refs so each is written once per message.
#[derive(Default)]
struct Interner {
    index: BTreeMap<ReplicaRef, u32>,
    table: Vec<ReplicaRef>,
}

impl Interner {
    fn id(&mut self, r: &ReplicaRef) -> u32 {
        if let Some(&i) = self.index.get(r) {
            return i;
        }
        // A message cannot name 2^32 replicas: each would need its own heartbeat entry.
        let i = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
        self.index.insert(r.clone(), i);
        self.table.push(r.clone());
        i
    }

    fn clock(&mut self, c: &Context) -> WireClock {
        c.iter().map(|(r, &v)| (self.id(r), v)).collect()
    }

    fn clouds(&mut self, c: &Clouds) -> Vec<(u32, Vec<u64>)> {
        c.iter()
            .map(|(r, dots)| (self.id(r), dots.iter().copied().collect()))
            .collect()
    }

    fn values<'v>(
        &mut self,
        v: impl IntoIterator<Item = (&'v Tag, &'v TrackedMeta)>,
    ) -> Vec<WireValue> {
        v.into_iter()
            .map(|(t, p)| {
                WireValue(
                    self.id(&t.replica),
                    t.clock,
                    p.key.topic.clone(),
                    p.key.pid.clone(),
                    p.key.key.clone(),
                    p.meta.clone(),
                )
            })
            .collect()
    }

    fn delta(&mut self, d: &Delta) -> WireDelta {
        WireDelta {
            values: self.values(&d.values),
            clouds: self.clouds(&d.clouds),
            start: self.clock(&d.range.0),
            end: self.clock(&d.range.1),
        }
    }
}

fn to_wire(frame: &Frame) -> WireFrame {
    let mut int = Interner::default();
    match frame {
        Frame::Tick => WireFrame::Tick,
        Frame::Hello(h) => WireFrame::Hello {
            node: h.node.clone(),
            vsn: h.vsn,
            pool_size: h.pool_size,
        },
        Frame::Shard(NodeMessage { shard, body }) => {
            let shard = *shard;
            match body {
                ShardMessage::Heartbeat {
                    from,
                    delta,
                    clocks,
                } => {
                    let from = int.id(from);
                    let delta = delta.as_ref().map(|d| int.delta(d));
                    let clocks = int.clock(clocks);
                    WireFrame::Heartbeat {
                        shard,
                        replicas: int.table,
                        from,
                        delta,
                        clocks,
                    }
                }
                ShardMessage::TransferReq { id, from, clocks } => {
                    let from = int.id(from);
                    let clocks = int.clock(clocks);
                    WireFrame::TransferReq {
                        shard,
                        id: *id,
                        replicas: int.table,
                        from,
                        clocks,
                    }
                }
                ShardMessage::TransferAck { id, from, payload } => {
                    let from = int.id(from);
                    let payload = match payload {
                        TransferPayload::Delta(d) => WirePayload::Delta(int.delta(d)),
                        TransferPayload::Full(e) => WirePayload::Full(WireExtract {
                            context: int.clock(&e.context),
                            clouds: int.clouds(&e.clouds),
                            values: int.values(&e.values),
                        }),
                    };
                    WireFrame::TransferAck {
                        shard,
                        id: *id,
                        replicas: int.table,
                        from,
                        payload,
                    }
                }
                ShardMessage::GracefulPermdown { from } => WireFrame::GracefulPermdown {
                    shard,
                    from: from.clone(),
                },
            }
        }
    }
}
