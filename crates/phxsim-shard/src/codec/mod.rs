//! The node-to-node codec: length-prefixed, versioned serde_json frames. Pure functions, no I/O.
//!
//! A frame is `[len: u32 big-endian][version: u8][JSON body]`, where `len` counts the version
//! byte and the body. The version sits outside the JSON so that a peer speaking another version
//! is refused before anything is parsed. Inside, replica refs are written once per message in a
//! table and dots refer to them by index, which keeps a 100 000-presence transfer small and
//! gives one place to check every reference.
//!
//! Nothing here trusts the peer: every malformed input is a [`CodecError`], never a panic, and
//! decoding checks what the CRDT relies on (dots start at 1, each dot once, metas are objects).

use crate::message::{Frame, Hello, NodeMessage, ShardMessage, TransferPayload};
use phxsim_tracker::{
    Clouds, Context, Delta, Extract, Meta, Name, Presence, ReplicaRef, Tag, ValueKey,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The only body version this build speaks.
pub const VERSION: u8 = 1;
/// The size of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Default bound on one frame: a full transfer of a few hundred thousand presences fits.
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024 * 1024;

/// Why bytes from a peer were refused. The link that sent them is dropped; nothing else is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// A length of 0 leaves no room for the version byte.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another version of this codec.
    #[error("unsupported codec version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The body is not the JSON of a known message.
    #[error("malformed frame body: {0}")]
    Json(String),
    /// A dot or clock names a replica outside the message's replica table.
    #[error("replica index {0} is outside the message's table")]
    BadReplicaIndex(u32),
    /// The same replica twice in a table or a clock would make the last entry win silently.
    #[error("replica {0} appears twice")]
    DuplicateReplica(ReplicaRef),
    /// Dots count from 1; clock 0 names no event.
    #[error("dot with clock 0 of replica {0}")]
    ZeroDot(ReplicaRef),
    /// One dot carried with two values.
    #[error("dot {0} appears twice")]
    DuplicateTag(Tag),
    /// Presence metas are JSON objects (they carry `phx_ref`).
    #[error("meta of dot {0} is not a JSON object")]
    MetaNotObject(Tag),
    /// A greeting without a node name cannot be addressed.
    #[error("hello with an empty node name")]
    EmptyNodeName,
}

// ---- wire forms -------------------------------------------------------------------------------

/// `[replica index, clock]`.
type WireClock = Vec<(u32, u64)>;

/// `[replica index, clock, topic, pid, key, meta]`: one value, as an array to keep it short.
#[derive(Serialize, Deserialize)]
struct WireValue(u32, u64, Name, Name, Name, Meta);

#[derive(Serialize, Deserialize)]
struct WireDelta {
    values: Vec<WireValue>,
    clouds: Vec<(u32, Vec<u64>)>,
    start: WireClock,
    end: WireClock,
}

#[derive(Serialize, Deserialize)]
struct WireExtract {
    context: WireClock,
    clouds: Vec<(u32, Vec<u64>)>,
    values: Vec<WireValue>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WirePayload {
    Delta(WireDelta),
    Full(WireExtract),
}

#[derive(Serialize, Deserialize)]
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

// ---- encoding -----------------------------------------------------------------------------------

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

    fn values(&mut self, v: &BTreeMap<Tag, Presence>) -> Vec<WireValue> {
        v.iter()
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

/// Encodes one frame, length prefix included.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out.push(VERSION);
    // Serialising plain structs, strings, integers and serde_json values into a Vec cannot fail.
    serde_json::to_writer(&mut out, &to_wire(frame)).unwrap_or_default();
    let len = u32::try_from(out.len() - HEADER_LEN).unwrap_or(u32::MAX);
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out
}

// ---- decoding -----------------------------------------------------------------------------------

/// The replica table of one message, checked once.
struct Table(Vec<ReplicaRef>);

impl Table {
    fn new(replicas: Vec<ReplicaRef>) -> Result<Self, CodecError> {
        let mut seen = BTreeSet::new();
        for r in &replicas {
            if !seen.insert(r) {
                return Err(CodecError::DuplicateReplica(r.clone()));
            }
        }
        Ok(Self(replicas))
    }

    fn get(&self, i: u32) -> Result<&ReplicaRef, CodecError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.0.get(i))
            .ok_or(CodecError::BadReplicaIndex(i))
    }

    fn clock(&self, c: WireClock) -> Result<Context, CodecError> {
        let mut out = Context::new();
        for (i, v) in c {
            let r = self.get(i)?;
            if out.insert(r.clone(), v).is_some() {
                return Err(CodecError::DuplicateReplica(r.clone()));
            }
        }
        Ok(out)
    }

    fn clouds(&self, c: Vec<(u32, Vec<u64>)>) -> Result<Clouds, CodecError> {
        let mut out = Clouds::new();
        for (i, dots) in c {
            let r = self.get(i)?;
            if dots.contains(&0) {
                return Err(CodecError::ZeroDot(r.clone()));
            }
            if out.insert(r.clone(), dots.into_iter().collect()).is_some() {
                return Err(CodecError::DuplicateReplica(r.clone()));
            }
        }
        Ok(out)
    }

    fn values(&self, v: Vec<WireValue>) -> Result<BTreeMap<Tag, Presence>, CodecError> {
        let mut out = BTreeMap::new();
        for WireValue(i, clock, topic, pid, key, meta) in v {
            let r = self.get(i)?;
            if clock == 0 {
                return Err(CodecError::ZeroDot(r.clone()));
            }
            let tag = Tag::new(r.clone(), clock);
            if !meta.is_object() {
                return Err(CodecError::MetaNotObject(tag));
            }
            let p = Presence {
                key: ValueKey { topic, pid, key },
                meta,
            };
            if out.insert(tag.clone(), p).is_some() {
                return Err(CodecError::DuplicateTag(tag));
            }
        }
        Ok(out)
    }

    fn delta(&self, d: WireDelta) -> Result<Delta, CodecError> {
        Ok(Delta {
            values: self.values(d.values)?,
            clouds: self.clouds(d.clouds)?,
            range: (self.clock(d.start)?, self.clock(d.end)?),
        })
    }
}

fn from_wire(w: WireFrame) -> Result<Frame, CodecError> {
    Ok(match w {
        WireFrame::Tick => Frame::Tick,
        WireFrame::Hello {
            node,
            vsn,
            pool_size,
        } => {
            if node.is_empty() {
                return Err(CodecError::EmptyNodeName);
            }
            Frame::Hello(Hello {
                node,
                vsn,
                pool_size,
            })
        }
        WireFrame::Heartbeat {
            shard,
            replicas,
            from,
            delta,
            clocks,
        } => {
            let t = Table::new(replicas)?;
            Frame::Shard(NodeMessage {
                shard,
                body: ShardMessage::Heartbeat {
                    from: t.get(from)?.clone(),
                    delta: delta.map(|d| t.delta(d)).transpose()?,
                    clocks: t.clock(clocks)?,
                },
            })
        }
        WireFrame::TransferReq {
            shard,
            id,
            replicas,
            from,
            clocks,
        } => {
            let t = Table::new(replicas)?;
            Frame::Shard(NodeMessage {
                shard,
                body: ShardMessage::TransferReq {
                    id,
                    from: t.get(from)?.clone(),
                    clocks: t.clock(clocks)?,
                },
            })
        }
        WireFrame::TransferAck {
            shard,
            id,
            replicas,
            from,
            payload,
        } => {
            let t = Table::new(replicas)?;
            let payload = match payload {
                WirePayload::Delta(d) => TransferPayload::Delta(t.delta(d)?),
                WirePayload::Full(e) => TransferPayload::Full(Extract {
                    context: t.clock(e.context)?,
                    clouds: t.clouds(e.clouds)?,
                    values: t.values(e.values)?,
                }),
            };
            Frame::Shard(NodeMessage {
                shard,
                body: ShardMessage::TransferAck {
                    id,
                    from: t.get(from)?.clone(),
                    payload,
                },
            })
        }
        WireFrame::GracefulPermdown { shard, from } => Frame::Shard(NodeMessage {
            shard,
            body: ShardMessage::GracefulPermdown { from },
        }),
    })
}

/// Reads a length prefix: how many bytes follow it, refused above `max_len`.
pub fn decode_header(header: [u8; HEADER_LEN], max_len: usize) -> Result<usize, CodecError> {
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(CodecError::Empty);
    }
    if len > max_len {
        return Err(CodecError::TooLarge { len, max: max_len });
    }
    Ok(len)
}

/// Decodes what follows a length prefix: the version byte and the JSON body.
pub fn decode_body(body: &[u8]) -> Result<Frame, CodecError> {
    let (&version, json) = body.split_first().ok_or(CodecError::Empty)?;
    if version != VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let wire: WireFrame =
        serde_json::from_slice(json).map_err(|e| CodecError::Json(e.to_string()))?;
    from_wire(wire)
}

/// Decodes the first frame of `buf`: `Ok(None)` if it is not complete yet, else the frame and
/// how many bytes it used.
pub fn decode_frame(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, CodecError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = decode_header(*header, max_len)?;
    let Some(body) = buf[HEADER_LEN..].get(..len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(n: &str, v: u64) -> ReplicaRef {
        ReplicaRef::new(n, v)
    }

    fn sample_delta() -> Delta {
        let mut values = BTreeMap::new();
        values.insert(
            Tag::new(r("a", 7), 3),
            Presence {
                key: ValueKey::new("lobby", "p1@a", "alice"),
                meta: json!({"phx_ref": "x", "status": "away"}).into(),
            },
        );
        let mut clouds = Clouds::new();
        clouds.insert(r("a", 7), [1, 2, 3].into_iter().collect());
        clouds.insert(r("b", 9), [4].into_iter().collect());
        let start: Context = [(r("a", 7), 0)].into_iter().collect();
        let end: Context = [(r("a", 7), 3)].into_iter().collect();
        Delta {
            values,
            clouds,
            range: (start, end),
        }
    }

    fn roundtrip(f: Frame) {
        let bytes = encode_frame(&f);
        let (back, used) = decode_frame(&bytes, DEFAULT_MAX_FRAME_LEN)
            .expect("decodes")
            .expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(back, f);
    }

    #[test]
    fn every_message_kind_roundtrips() {
        let ctx: Context = [(r("a", 7), 3), (r("b", 9), 5)].into_iter().collect();
        roundtrip(Frame::Hello(Hello {
            node: "a".into(),
            vsn: 7,
            pool_size: 8,
        }));
        roundtrip(Frame::Tick);
        roundtrip(Frame::Shard(NodeMessage {
            shard: 3,
            body: ShardMessage::Heartbeat {
                from: r("a", 7),
                delta: Some(sample_delta()),
                clocks: ctx.clone(),
            },
        }));
        roundtrip(Frame::Shard(NodeMessage {
            shard: 0,
            body: ShardMessage::Heartbeat {
                from: r("a", 7),
                delta: None,
                clocks: ctx.clone(),
            },
        }));
        roundtrip(Frame::Shard(NodeMessage {
            shard: 0,
            body: ShardMessage::TransferReq {
                id: 42,
                from: r("b", 9),
                clocks: ctx.clone(),
            },
        }));
        roundtrip(Frame::Shard(NodeMessage {
            shard: 0,
            body: ShardMessage::TransferAck {
                id: 42,
                from: r("a", 7),
                payload: TransferPayload::Delta(sample_delta()),
            },
        }));
        let d = sample_delta();
        roundtrip(Frame::Shard(NodeMessage {
            shard: 1,
            body: ShardMessage::TransferAck {
                id: 43,
                from: r("a", 7),
                payload: TransferPayload::Full(Extract {
                    context: ctx,
                    clouds: d.clouds,
                    values: d.values,
                }),
            },
        }));
        roundtrip(Frame::Shard(NodeMessage {
            shard: 2,
            body: ShardMessage::GracefulPermdown { from: r("b", 9) },
        }));
    }

    #[test]
    fn partial_input_waits_for_more() {
        let bytes = encode_frame(&Frame::Hello(Hello {
            node: "a".into(),
            vsn: 1,
            pool_size: 1,
        }));
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..cut], DEFAULT_MAX_FRAME_LEN), Ok(None));
        }
    }

    fn frame_of(json: &str) -> Vec<u8> {
        let mut out = ((json.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(VERSION);
        out.extend_from_slice(json.as_bytes());
        out
    }

    fn err_of(json: &str) -> CodecError {
        decode_frame(&frame_of(json), DEFAULT_MAX_FRAME_LEN).unwrap_err()
    }

    #[test]
    fn framing_errors_are_typed() {
        assert_eq!(
            decode_frame(&[0, 0, 0, 0], 10),
            Err(CodecError::Empty),
            "a zero length has no version byte"
        );
        assert_eq!(
            decode_frame(&[0, 0, 1, 0], 10),
            Err(CodecError::TooLarge { len: 256, max: 10 })
        );
        let mut bad_version = frame_of("{}");
        bad_version[4] = 2;
        assert_eq!(
            decode_frame(&bad_version, 100),
            Err(CodecError::UnsupportedVersion(2))
        );
        assert!(matches!(err_of("not json"), CodecError::Json(_)));
        assert!(matches!(err_of(r#"{"launch":{}}"#), CodecError::Json(_)));
        assert!(matches!(
            err_of(r#"{"hello":{"node":"a","vsn":-1,"pool_size":1}}"#),
            CodecError::Json(_)
        ));
    }

    #[test]
    fn semantic_errors_are_typed() {
        let hb = |body: &str| format!(r#"{{"heartbeat":{body}}}"#);
        assert_eq!(
            err_of(&hb(
                r#"{"shard":0,"replicas":[{"name":"a","vsn":1}],"from":1,"delta":null,"clocks":[]}"#
            )),
            CodecError::BadReplicaIndex(1)
        );
        assert_eq!(
            err_of(&hb(
                r#"{"shard":0,"replicas":[{"name":"a","vsn":1},{"name":"a","vsn":1}],"from":0,"delta":null,"clocks":[]}"#
            )),
            CodecError::DuplicateReplica(r("a", 1))
        );
        assert_eq!(
            err_of(&hb(
                r#"{"shard":0,"replicas":[{"name":"a","vsn":1}],"from":0,"delta":null,"clocks":[[0,1],[0,2]]}"#
            )),
            CodecError::DuplicateReplica(r("a", 1))
        );
        let delta = |values: &str, clouds: &str| {
            hb(&format!(
                r#"{{"shard":0,"replicas":[{{"name":"a","vsn":1}}],"from":0,"delta":{{"values":{values},"clouds":{clouds},"start":[],"end":[]}},"clocks":[]}}"#
            ))
        };
        assert_eq!(
            err_of(&delta(r#"[[0,0,"t","p","k",{}]]"#, "[]")),
            CodecError::ZeroDot(r("a", 1))
        );
        assert_eq!(
            err_of(&delta("[]", "[[0,[0]]]")),
            CodecError::ZeroDot(r("a", 1))
        );
        assert_eq!(
            err_of(&delta(
                r#"[[0,1,"t","p","k",{}],[0,1,"t","p","k2",{}]]"#,
                "[]"
            )),
            CodecError::DuplicateTag(Tag::new(r("a", 1), 1))
        );
        assert_eq!(
            err_of(&delta(r#"[[0,1,"t","p","k",[1]]]"#, "[]")),
            CodecError::MetaNotObject(Tag::new(r("a", 1), 1))
        );
        assert_eq!(
            err_of(r#"{"hello":{"node":"","vsn":1,"pool_size":1}}"#),
            CodecError::EmptyNodeName
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and every single-byte corruption of a real
        // frame decodes to a frame, an error, or "incomplete".
        let bytes = encode_frame(&Frame::Shard(NodeMessage {
            shard: 3,
            body: ShardMessage::Heartbeat {
                from: r("a", 7),
                delta: Some(sample_delta()),
                clocks: Context::new(),
            },
        }));
        for i in 0..bytes.len() {
            for b in [0u8, b'"', b'9', b'[', b'}', 0xff] {
                let mut m = bytes.clone();
                m[i] = b;
                let _ = decode_frame(&m, 1 << 20);
            }
        }
    }
}
