//! One heap block per meta text among the replicas of one process.
//!
//! Why: every replica that learns a presence from the wire keeps its own copy of the
//! presence's block ([`Meta::from_block`]). A simulation runs all its nodes in one process, so
//! at 16 nodes a presence's block exists 16 times (about 1.4 KB per presence at 160 a topic),
//! and whatever compares two nodes' lists (the sampler sharing equal lists, the agreement
//! checker) reads both blocks of every meta, since two blocks are one text only by reading them.
//! Given one interner, the nodes of a process decode a text they have already met into the
//! block they met it as: then a presence is one block on every replica that learnt it from
//! the wire, and telling two metas equal costs one pointer comparison
//! ([`Meta::same_block`]).
//!
//! Nothing changes but sharing: a block is immutable and holds its pid, key and meta text, so
//! two rows holding one block read exactly as with two copies. Within one replica, the readers
//! that pair rows by block identity (a topic's kept payload and sampled lists) still see one
//! row per block: a topic holds one row per `{pid, key}`, and the block names both.
//!
//! The interner keeps a reference to each block it hands out. It lets go of the blocks nothing
//! else holds any more when it has grown to twice what it kept at its last sweep, so it holds
//! at most about twice the live blocks, and sweeps in amortised constant time per block.

use crate::shared::{Meta, MetaError, Name};
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// How texts are hashed: foldhash with its fixed seed (what is found does not depend on it).
type TextHash = foldhash::fast::FixedState;

fn hash_text(text: &str) -> u64 {
    TextHash::default().hash_one(text.as_bytes())
}

/// The first sweep comes after this many blocks.
const FIRST_SWEEP: usize = 4096;

/// A set of meta blocks found by their text (see the module docs).
pub struct MetaInterner {
    blocks: HashTable<Meta>,
    /// The next sweep comes when `blocks` holds this many.
    sweep_at: usize,
    /// Blocks found already held, for tests and accounts.
    hits: u64,
}

impl Default for MetaInterner {
    fn default() -> Self {
        MetaInterner {
            blocks: HashTable::new(),
            sweep_at: FIRST_SWEEP,
            hits: 0,
        }
    }
}

impl std::fmt::Debug for MetaInterner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaInterner")
            .field("blocks", &self.blocks.len())
            .field("hits", &self.hits)
            .finish()
    }
}

impl MetaInterner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`Meta::from_block`] through the interner: a block text met before gives the block it
    /// was met as (checked then, so not again), any other is checked, made and kept.
    pub fn from_block(&mut self, block: &str) -> Result<(Meta, Name, Name), MetaError> {
        let hash = hash_text(block);
        if let Some(found) = self.blocks.find(hash, |m| m.block_text() == block) {
            self.hits += 1;
            let (pid, key) = found.owner_names();
            return Ok((found.clone(), pid, key));
        }
        let made = Meta::from_block(block)?;
        if self.blocks.len() >= self.sweep_at {
            self.sweep();
        }
        self.blocks
            .insert_unique(hash, made.0.clone(), |m| hash_text(m.block_text()));
        Ok(made)
    }

    /// Lets go of every block that only the interner holds.
    fn sweep(&mut self) {
        self.blocks.retain(|m| !m.is_only_copy());
        self.blocks.shrink_to(0, |m| hash_text(m.block_text()));
        self.sweep_at = (2 * self.blocks.len()).max(FIRST_SWEEP);
    }

    /// How many blocks it holds (some may be held by nothing else until the next sweep).
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether it holds no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// How many texts were found already held.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block a node frame carries for this presence.
    fn block(pid: &str, key: &str, text: &str) -> String {
        let meta = Meta::parse(text).unwrap();
        let mut out = Vec::new();
        meta.block_for(&Name::from(pid), &Name::from(key))
            .write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_text_is_one_block_with_its_owner() {
        let mut i = MetaInterner::new();
        let b = block("conn1/ch1", "alice", r#"{"phx_ref":"r1","v":1}"#);
        let (m1, pid1, key1) = i.from_block(&b).unwrap();
        let (m2, pid2, key2) = i.from_block(&b.clone()).unwrap();
        assert!(m1.same_block(&m2));
        assert_eq!((pid1.as_str(), key1.as_str()), ("conn1/ch1", "alice"));
        assert_eq!((pid2, key2), (pid1, key1));
        assert_eq!(i.hits(), 1);
        // another owner of the same meta text is another block
        let (m3, _, key3) = i
            .from_block(&block("conn1/ch1", "bob", r#"{"phx_ref":"r1","v":1}"#))
            .unwrap();
        assert!(!m3.same_block(&m1));
        assert_eq!(key3.as_str(), "bob");
        // the same as without the interner, whatever is asked
        let direct = Meta::from_block(&b).unwrap();
        assert_eq!(direct.0.block_text(), m1.block_text());
        assert_eq!(direct.0, m1);
    }

    #[test]
    fn a_bad_block_is_refused_and_not_kept() {
        let mut i = MetaInterner::new();
        let good = block("p", "k", r#"{"phx_ref":"r"}"#);
        let bad = good.replace('{', "[");
        assert_eq!(i.from_block(&bad).err(), Meta::from_block(&bad).err());
        assert!(i.from_block(&bad).is_err(), "refused again, not found");
        assert!(i.is_empty());
    }

    /// Blocks nobody else holds go at the sweep, the others stay and are still found.
    #[test]
    fn a_sweep_keeps_only_blocks_held_elsewhere() {
        let mut i = MetaInterner::new();
        let held: Vec<Meta> = (0..10)
            .map(|n| {
                let b = block("p", &format!("held{n}"), r#"{"phx_ref":"r"}"#);
                i.from_block(&b).unwrap().0
            })
            .collect();
        for n in 0..FIRST_SWEEP - held.len() {
            let b = block("p", &format!("gone{n}"), r#"{"phx_ref":"r"}"#);
            drop(i.from_block(&b).unwrap());
        }
        // the next new block sweeps first
        let last = i
            .from_block(&block("p", "last", r#"{"phx_ref":"r"}"#))
            .unwrap();
        assert_eq!(i.len(), held.len() + 1);
        for (n, m) in held.iter().enumerate() {
            let b = block("p", &format!("held{n}"), r#"{"phx_ref":"r"}"#);
            assert!(i.from_block(&b).unwrap().0.same_block(m));
        }
        assert!(!last.0.is_only_copy());
    }
}
