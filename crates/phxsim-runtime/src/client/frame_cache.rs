//! Decoded `presence_diff` frames shared by many clients of one process.
//!
//! A server frames a broadcast once and writes the same bytes to every socket of the topic,
//! so a thousand simulated browsers of one topic receive a thousand copies of one diff.
//! Decoding is a pure function of the bytes and the serializer: the first client to receive
//! a frame decodes it and keeps the result here, the others find it by its bytes and apply a
//! copy whose metas are shared (`Arc`). What a client does with the diff is unchanged.

use phxsim_wire::{PresenceDiff, Serializer};
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

#[derive(Default)]
struct Frames {
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
