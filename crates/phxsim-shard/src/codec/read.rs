//! Decoding: a cursor over the body that refuses anything [`super::write`] would not produce.

use super::CodecError;
use super::write::{GRACEFUL_PERMDOWN, HEARTBEAT, HELLO, TICK, TRANSFER_ACK, TRANSFER_REQ};
use crate::message::{Frame, Hello, NodeMessage, ShardMessage, TransferPayload};
use phxsim_tracker::{
    Clouds, Context, Delta, Extract, Meta, MetaError, MetaInterner, Name, ReplicaRef, Tag,
    TagValues, TrackedMeta, ValueKey,
};
use std::collections::BTreeSet;

struct Reader<'a> {
    buf: &'a [u8],
    table: Vec<ReplicaRef>,
    /// Where presence blocks met before are found (see [`MetaInterner`]), if anywhere.
    interner: Option<&'a mut MetaInterner>,
}

impl<'a> Reader<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        // (no `ok_or`: an error built on every byte read is also dropped on every byte read)
        let Some((&b, rest)) = self.buf.split_first() else {
            return Err(CodecError::Truncated(what));
        };
        self.buf = rest;
        Ok(b)
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(CodecError::BadFlag(b, what)),
        }
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        // most are lengths and indexes under 128: one byte
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        let mut x: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(CodecError::IntegerTooLarge(what));
            }
            x |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err(CodecError::IntegerTooLarge(what))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        u32::try_from(self.varint(what)?).map_err(|_| CodecError::IntegerTooLarge(what))
    }

    /// A count of items each taking at least `min_item` bytes: refused if the rest of the
    /// frame could not hold them, so a forged count cannot make us reserve memory.
    fn count(&mut self, what: &'static str, min_item: usize) -> Result<usize, CodecError> {
        let n = self.varint(what)?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_item) <= self.buf.len() => Ok(n),
            _ => Err(CodecError::CountTooLarge(what)),
        }
    }

    fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if len > self.buf.len() {
            return Err(CodecError::Truncated(what));
        }
        let (b, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(b)
    }

    /// A length of bytes to come (refused later by [`Reader::bytes`] if they do not).
    fn len(&mut self, what: &'static str) -> Result<usize, CodecError> {
        usize::try_from(self.varint(what)?).map_err(|_| CodecError::Truncated(what))
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        let len = self.len(what)?;
        std::str::from_utf8(self.bytes(len, what)?).map_err(|_| CodecError::NotUtf8(what))
    }

    fn table(&mut self) -> Result<(), CodecError> {
        let n = self.count("replica table", 2)?;
        let mut table = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str("replica name")?;
            let vsn = self.varint("replica vsn")?;
            let r = ReplicaRef::new(name, vsn);
            if table.contains(&r) {
                return Err(CodecError::DuplicateReplica(r));
            }
            table.push(r);
        }
        self.table = table;
        Ok(())
    }

    fn replica(&mut self) -> Result<ReplicaRef, CodecError> {
        let i = self.varint("replica index")?;
        match usize::try_from(i).ok().and_then(|i| self.table.get(i)) {
            Some(r) => Ok(r.clone()),
            None => Err(CodecError::BadReplicaIndex(i)),
        }
    }

    fn clock(&mut self) -> Result<Context, CodecError> {
        let n = self.count("clock", 2)?;
        let mut out = Context::new();
        for _ in 0..n {
            let r = self.replica()?;
            let v = self.varint("clock value")?;
            if out.contains_key(&r) {
                return Err(CodecError::DuplicateReplica(r));
            }
            out.insert(r, v);
        }
        Ok(out)
    }

    fn clouds(&mut self) -> Result<Clouds, CodecError> {
        let n = self.count("clouds", 2)?;
        let mut out = Clouds::new();
        for _ in 0..n {
            let r = self.replica()?;
            let k = self.count("cloud dots", 1)?;
            let mut dots = Vec::with_capacity(k);
            for _ in 0..k {
                let d = self.varint("cloud dot")?;
                if d == 0 {
                    return Err(CodecError::ZeroDot(r));
                }
                if dots.last().is_some_and(|&last| last >= d) {
                    return Err(CodecError::OutOfOrder("cloud dots"));
                }
                dots.push(d);
            }
            if out.contains_key(&r) {
                return Err(CodecError::DuplicateReplica(r));
            }
            // ascending, so the set is built in bulk
            out.insert(r, dots.into_iter().collect::<BTreeSet<u64>>());
        }
        Ok(out)
    }

    fn values(&mut self) -> Result<TagValues, CodecError> {
        // replica, clock, an empty topic, a block length, two empty owner lengths and "{}"
        let n = self.count("values", 8)?;
        let mut out = TagValues::with_capacity(n);
        for _ in 0..n {
            let replica = self.replica()?;
            let clock = self.varint("dot clock")?;
            if clock == 0 {
                return Err(CodecError::ZeroDot(replica));
            }
            let tag = Tag::new(replica, clock);
            let topic_len = self.len("topic length")?;
            let block_len = self.len("presence length")?;
            let text = self.bytes(topic_len.saturating_add(block_len), "presence")?;
            let text = std::str::from_utf8(text).map_err(|_| CodecError::NotUtf8("presence"))?;
            if !text.is_char_boundary(topic_len) {
                return Err(CodecError::NotUtf8("topic"));
            }
            let (topic, block) = text.split_at(topic_len);
            let topic = Name::from(topic);
            // The block holds the pid, the key and the meta: kept as the row's heap block.
            let made = match self.interner.as_deref_mut() {
                Some(interner) => interner.from_block(block),
                None => Meta::from_block(block),
            };
            let (meta, pid, key) = made.map_err(|e| match e {
                MetaError::NotObject => CodecError::MetaNotObject(tag.clone()),
                MetaError::NotJson(error) => CodecError::MetaNotJson {
                    tag: tag.clone(),
                    error,
                },
                MetaError::BadOwner => CodecError::BadOwner(tag.clone()),
            })?;
            let value = TrackedMeta {
                key: ValueKey { topic, pid, key },
                meta,
            };
            // each tag is compared with the last one, while both are in the cache
            if let Err((tag, _)) = out.push_ascending(tag, value) {
                return Err(match out.keys().next_back() {
                    Some(last) if *last == tag => CodecError::DuplicateTag(tag),
                    _ => CodecError::OutOfOrder("values"),
                });
            }
        }
        Ok(out)
    }

    fn delta(&mut self) -> Result<Delta, CodecError> {
        Ok(Delta {
            // strictly ascending, so the map is built in bulk
            values: self.values()?.into_iter().collect(),
            clouds: self.clouds()?,
            range: (self.clock()?, self.clock()?),
        })
    }

    fn end(&self) -> Result<(), CodecError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(CodecError::TrailingBytes(n)),
        }
    }
}

/// Decodes a message: the kind byte and what follows it.
pub(super) fn frame<'a>(
    buf: &'a [u8],
    interner: Option<&'a mut MetaInterner>,
) -> Result<Frame, CodecError> {
    let mut r = Reader {
        buf,
        table: Vec::new(),
        interner,
    };
    let frame = match r.u8("message kind")? {
        TICK => Frame::Tick,
        HELLO => {
            let node = r.str("node name")?.to_owned();
            if node.is_empty() {
                return Err(CodecError::EmptyNodeName);
            }
            let vsn = r.varint("vsn")?;
            let pool_size = r.u32("pool size")?;
            Frame::Hello(Hello {
                node,
                vsn,
                pool_size,
            })
        }
        HEARTBEAT => {
            let shard = r.u32("shard")?;
            r.table()?;
            let from = r.replica()?;
            let delta = if r.flag("delta flag")? {
                Some(r.delta()?)
            } else {
                None
            };
            let clocks = r.clock()?;
            Frame::Shard(NodeMessage {
                shard,
                body: ShardMessage::Heartbeat {
                    from,
                    delta,
                    clocks,
                },
            })
        }
        TRANSFER_REQ => {
            let shard = r.u32("shard")?;
            let id = r.varint("transfer id")?;
            r.table()?;
            let from = r.replica()?;
            let clocks = r.clock()?;
            Frame::Shard(NodeMessage {
                shard,
                body: ShardMessage::TransferReq { id, from, clocks },
            })
        }
        TRANSFER_ACK => {
            let shard = r.u32("shard")?;
            let id = r.varint("transfer id")?;
            r.table()?;
            let from = r.replica()?;
            let payload = if r.flag("payload kind")? {
                TransferPayload::Full(Extract {
                    context: r.clock()?,
                    clouds: r.clouds()?,
                    values: r.values()?,
                })
            } else {
                TransferPayload::Delta(r.delta()?)
            };
            Frame::Shard(NodeMessage {
                shard,
                body: ShardMessage::TransferAck { id, from, payload },
            })
        }
        GRACEFUL_PERMDOWN => {
            let shard = r.u32("shard")?;
            let name = r.str("replica name")?;
            let vsn = r.varint("replica vsn")?;
            Frame::Shard(NodeMessage {
                shard,
                body: ShardMessage::GracefulPermdown {
                    from: ReplicaRef::new(name, vsn),
                },
            })
        }
        k => return Err(CodecError::UnknownKind(k)),
    };
    r.end()?;
    Ok(frame)
}
