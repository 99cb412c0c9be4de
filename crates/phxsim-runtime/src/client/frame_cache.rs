//! Decoded `presence_diff` frames shared by many clients of one process.
//!
//! A server frames a broadcast once and writes the same bytes to every socket of the topic,
//! so a thousand simulated browsers of one topic receive a thousand copies of one diff.
//! Decoding is a pure function of the bytes and the serializer: the first client to receive
//! a frame decodes it and keeps the result here, the others find it by its bytes and apply a
//! copy whose metas are shared (`Arc`). What a client does with the diff is unchanged.
//!
//! A `presence_state` is different for every socket (it carries the join_ref), so each client
//! decodes its own; its metas are then swapped for equal ones already held ([`FrameCache::
//! share_metas`]), so a thousand clients listing one presence hold its fields once.

use phxsim_wire::{Meta, PresenceDiff, Presences, Serializer};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

/// How many frames are kept (oldest forgotten first): the copies of one broadcast reach their
/// sockets within a few simulation steps, so a few hundred cover every topic in flight.
const MAX_FRAMES: usize = 256;
/// And at most this many bytes of frame text.
const MAX_BYTES: usize = 4 << 20;

/// What the envelope of a cached frame says.
#[derive(Debug)]
pub(crate) struct CachedDiff {
    pub(crate) join_ref: Option<String>,
    pub(crate) ref_: Option<String>,
    pub(crate) topic: String,
    pub(crate) diff: PresenceDiff,
}

/// Metas held by some client, by presence key and `phx_ref`.
#[derive(Default)]
struct Metas {
    by_ref: BTreeMap<String, BTreeMap<String, Meta>>,
    len: usize,
    /// Unused metas are dropped when `len` reaches this.
    prune_at: usize,
}

/// Pruning starts at this many metas, and happens again each time their number doubles.
const PRUNE_MIN: usize = 1024;

#[derive(Default)]
struct Frames {
    metas: Metas,
    /// Per serializer (V1, V2), the frames by their text.
    by_text: [BTreeMap<Arc<str>, Arc<CachedDiff>>; 2],
    /// Oldest first.
    order: VecDeque<(usize, Arc<str>)>,
    bytes: usize,
}

/// A cache of decoded `presence_diff` text frames; cloning gives another handle to the same
/// cache. Give one to every client of a host ([`super::ClientConfig::frame_cache`]).
#[derive(Clone, Default)]
pub struct FrameCache(Arc<Mutex<Frames>>);

impl fmt::Debug for FrameCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCache")
            .field("frames", &self.frames())
            .finish()
    }
}

fn index(serializer: Serializer) -> usize {
    match serializer {
        Serializer::V1 => 0,
        Serializer::V2 => 1,
    }
}

impl FrameCache {
    /// An empty cache.
    pub fn new() -> Self {
        FrameCache::default()
    }

    /// How many frames are kept.
    pub fn frames(&self) -> usize {
        self.0.lock().map(|f| f.order.len()).unwrap_or_default()
    }

    /// Swaps every meta of `presences` that equals one already held by a client of this cache
    /// for that one (they then share their fields), and keeps the others for the next
    /// clients. Metas are compared whole: a `phx_ref` only finds the candidate.
    pub(crate) fn share_metas(&self, presences: &mut Presences) {
        let Ok(mut frames) = self.0.lock() else {
            return;
        };
        let metas = &mut frames.metas;
        for (key, presence) in presences.iter_mut() {
            for meta in &mut presence.metas {
                let Some(phx_ref) = meta.phx_ref_str() else {
                    continue;
                };
                match metas.by_ref.get(key.as_str()).and_then(|m| m.get(phx_ref)) {
                    Some(held) if held == meta => *meta = held.clone(),
                    Some(_) => {}
                    None => {
                        let phx_ref = phx_ref.to_owned();
                        metas
                            .by_ref
                            .entry(key.clone())
                            .or_default()
                            .insert(phx_ref, meta.clone());
                        metas.len += 1;
                    }
                }
            }
        }
        if metas.len >= metas.prune_at.max(PRUNE_MIN) {
            // a meta only this cache holds is no client's any more
            metas.by_ref.retain(|_, by_ref| {
                by_ref.retain(|_, m| m.copies() > 1);
                !by_ref.is_empty()
            });
            metas.len = metas.by_ref.values().map(BTreeMap::len).sum();
            metas.prune_at = 2 * metas.len;
        }
    }

    pub(crate) fn get(&self, serializer: Serializer, text: &str) -> Option<Arc<CachedDiff>> {
        let frames = self.0.lock().ok()?;
        frames.by_text[index(serializer)].get(text).cloned()
    }

    pub(crate) fn insert(&self, serializer: Serializer, text: &str, diff: Arc<CachedDiff>) {
        let Ok(mut frames) = self.0.lock() else {
            return;
        };
        let i = index(serializer);
        if frames.by_text[i].contains_key(text) || text.len() > MAX_BYTES {
            return;
        }
        let key: Arc<str> = text.into();
        frames.bytes += text.len();
        frames.order.push_back((i, key.clone()));
        frames.by_text[i].insert(key, diff);
        while frames.order.len() > MAX_FRAMES || frames.bytes > MAX_BYTES {
            let Some((i, old)) = frames.order.pop_front() else {
                break;
            };
            frames.bytes -= old.len();
            frames.by_text[i].remove(&old);
        }
    }
}
