//! An ordered sequence of small `Copy` items (row ids) kept in chunks of at most `CAP`: the
//! indexes of the values table.
//!
//! The items do not carry their sort key: the order lives in the rows they name, so every search
//! takes a closure that compares an item with the probe. That keeps an index entry at 4 bytes
//! (a `u32` row id) instead of a copy of the key, which is what a presence's memory budget
//! allows. Comparing means reading a row (a likely cache miss), so each chunk also keeps a
//! *fence*: a `u64` summary of its first item's key, given by the index (a clock, a hash, the
//! first bytes of a text), that orders as the keys do (`a <= b` gives `fence(a) <= fence(b)`).
//! A search picks its chunk among the fences and reads rows only where fences tie and inside
//! one chunk. Chunks bound the cost of an insert or a remove to moving at most `CAP` items,
//! and an index built from a sorted sequence, or grown at its end (a replica's clocks), fills
//! its chunks to the brim.

use std::cmp::Ordering;

/// Items per chunk at most, unless an index says otherwise. A power of two, so that a chunk
/// grown one push at a time reaches it exactly; small, so that a search reads few rows inside
/// its chunk (each chunk costs a fence and a `Vec` header, 32 bytes).
pub(crate) const DEFAULT_CAP: usize = 64;

/// Where an item is, or where a probe would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    chunk: usize,
    at: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Chunked<T, const CAP: usize = DEFAULT_CAP> {
    chunks: Vec<Vec<T>>,
    /// Per chunk: the fence of its first item.
    fences: Vec<u64>,
    len: usize,
}

impl<T, const CAP: usize> Default for Chunked<T, CAP> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            fences: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Copy, const CAP: usize> Chunked<T, CAP> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items already in order, packed into full chunks.
    pub fn from_sorted(items: impl IntoIterator<Item = T>, fence: impl Fn(T) -> u64) -> Self {
        Self::from_sorted_fenced(items.into_iter().map(|x| (x, fence(x))))
    }

    /// [`Chunked::from_sorted`] for items that come with their fences.
    pub fn from_sorted_fenced(items: impl IntoIterator<Item = (T, u64)>) -> Self {
        let mut out = Self::default();
        let mut chunk = Vec::new();
        for (x, fence) in items {
            if chunk.len() == CAP {
                out.chunks.push(std::mem::take(&mut chunk));
            }
            if chunk.is_empty() {
                chunk.reserve_exact(CAP);
                out.fences.push(fence);
            }
            chunk.push(x);
            out.len += 1;
        }
        if !chunk.is_empty() {
            chunk.shrink_to_fit();
            out.chunks.push(chunk);
        }
        out
    }

    /// Binary search for a probe whose fence is `fence`: `cmp(item)` tells how an item orders
    /// against the probe. `Ok` is the position of an item equal to it, `Err` where it would be
    /// inserted. A probe past the last item (an index growing in order) is answered with one
    /// comparison.
    pub fn search(&self, fence: u64, mut cmp: impl FnMut(T) -> Ordering) -> Result<Pos, Pos> {
        let Some(last) = self.chunks.last() else {
            return Err(Pos { chunk: 0, at: 0 });
        };
        if last.last().is_some_and(|&x| cmp(x) == Ordering::Less) {
            return Err(Pos {
                chunk: self.chunks.len() - 1,
                at: last.len(),
            });
        }
        let chunk = self.chunk_for(fence, &mut cmp);
        match self.chunks[chunk].binary_search_by(|&x| cmp(x)) {
            Ok(at) => Ok(Pos { chunk, at }),
            Err(at) => Err(Pos { chunk, at }),
        }
    }

    /// Where `item` itself is, for a remover that knows it: the chunk is picked as
    /// [`Chunked::search`] picks it, and then found by scanning the chunk's items for it, so
    /// that no row is read inside the chunk.
    pub fn position_of(
        &self,
        fence: u64,
        mut cmp: impl FnMut(T) -> Ordering,
        item: T,
    ) -> Option<Pos>
    where
        T: PartialEq,
    {
        let chunk = self.chunk_for(fence, &mut cmp);
        let at = self.chunks.get(chunk)?.iter().position(|&x| x == item)?;
        Some(Pos { chunk, at })
    }

    /// The chunk that holds, or would hold, a probe whose fence is `fence`: chunks before `lo`
    /// start below the probe, chunks from `hi` on above it; between, the fences tie and the
    /// first items are read. The last chunk starting at or below the probe (or the first).
    fn chunk_for(&self, fence: u64, cmp: &mut impl FnMut(T) -> Ordering) -> usize {
        let lo = self.fences.partition_point(|&f| f < fence);
        let hi = lo + self.fences[lo..].partition_point(|&f| f <= fence);
        let starts_at_or_below = lo
            + self.chunks[lo..hi]
                .partition_point(|c| c.first().is_some_and(|&x| cmp(x) != Ordering::Greater));
        starts_at_or_below.saturating_sub(1)
    }

    /// The item at `pos` (a position `search` answered `Ok`).
    pub fn get(&self, pos: Pos) -> Option<T> {
        self.chunks.get(pos.chunk)?.get(pos.at).copied()
    }

    /// Puts `x` in place of the item at `pos` (a position `search` answered `Ok`), an item
    /// with the same fence.
    pub fn replace(&mut self, pos: Pos, x: T) {
        self.chunks[pos.chunk][pos.at] = x;
    }

    /// Puts `x` at `pos` (a position `search` answered `Err`). A full chunk grown at either end
    /// gets a new neighbour, so that an index growing in order keeps full chunks; one grown in
    /// the middle is split in two.
    pub fn insert(&mut self, pos: Pos, x: T, fence: impl Fn(T) -> u64) {
        self.len += 1;
        let Some(chunk) = self.chunks.get_mut(pos.chunk) else {
            self.chunks.push(vec![x]);
            self.fences.push(fence(x));
            return;
        };
        if chunk.len() < CAP {
            chunk.insert(pos.at, x);
            if pos.at == 0 {
                self.fences[pos.chunk] = fence(x);
            }
        } else if pos.at == chunk.len() {
            self.chunks.insert(pos.chunk + 1, vec![x]);
            self.fences.insert(pos.chunk + 1, fence(x));
        } else if pos.at == 0 {
            self.chunks.insert(pos.chunk, vec![x]);
            self.fences.insert(pos.chunk, fence(x));
        } else {
            let mut right = chunk.split_off(CAP / 2);
            if pos.at <= CAP / 2 {
                chunk.insert(pos.at, x);
            } else {
                right.insert(pos.at - CAP / 2, x);
            }
            self.fences.insert(pos.chunk + 1, fence(right[0]));
            self.chunks.insert(pos.chunk + 1, right);
        }
    }

    /// Takes out the item at `pos` (a position `search` answered `Ok`). A chunk that empties
    /// goes; one that falls under a quarter full joins a neighbour it fits in.
    pub fn remove(&mut self, pos: Pos, fence: impl Fn(T) -> u64) -> T {
        let chunk = &mut self.chunks[pos.chunk];
        let x = chunk.remove(pos.at);
        self.len -= 1;
        let left = chunk.len();
        if left == 0 {
            self.chunks.remove(pos.chunk);
            self.fences.remove(pos.chunk);
            return x;
        }
        if pos.at == 0 {
            self.fences[pos.chunk] = fence(chunk[0]);
        }
        if left < CAP / 4 {
            let i = pos.chunk;
            if self
                .chunks
                .get(i + 1)
                .is_some_and(|n| n.len() + left <= CAP)
            {
                let next = self.chunks.remove(i + 1);
                self.fences.remove(i + 1);
                self.chunks[i].extend(next);
            } else if i > 0 && self.chunks[i - 1].len() + left <= CAP {
                let this = self.chunks.remove(i);
                self.fences.remove(i);
                self.chunks[i - 1].extend(this);
            }
        }
        x
    }

    /// Every item in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = T> + '_ {
        self.chunks.iter().flatten().copied()
    }

    /// The chunks in order, each a slice of items: a reader that works a chunk at a time
    /// (first bringing the rows its items name into the cache, then copying them).
    pub fn chunks(&self) -> impl Iterator<Item = &[T]> + '_ {
        self.chunks.iter().map(Vec::as_slice)
    }

    /// The items from `pos` on, in order.
    pub fn iter_from(&self, pos: Pos) -> impl Iterator<Item = T> + '_ {
        let first = self
            .chunks
            .get(pos.chunk)
            .map_or(&[][..], |c| c.get(pos.at..).unwrap_or_default());
        let rest = self.chunks.get(pos.chunk + 1..).unwrap_or_default();
        first.iter().chain(rest.iter().flatten()).copied()
    }

    /// Heap bytes of the chunks (their capacity), for memory accounts and tests.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
            + self.fences.capacity() * 8
            + self
                .chunks
                .iter()
                .map(|c| c.capacity() * std::mem::size_of::<T>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A coarse fence, so that fences tie often (as text prefixes do).
    fn fence(x: u32) -> u64 {
        u64::from(x / 100)
    }

    fn insert(c: &mut Chunked<u32>, x: u32) -> bool {
        match c.search(fence(x), |y| y.cmp(&x)) {
            Ok(_) => false,
            Err(pos) => {
                c.insert(pos, x, fence);
                true
            }
        }
    }

    fn remove(c: &mut Chunked<u32>, x: u32) -> bool {
        match c.search(fence(x), |y| y.cmp(&x)) {
            Ok(pos) => {
                assert_eq!(c.position_of(fence(x), |y| y.cmp(&x), x), Some(pos));
                assert_eq!(c.remove(pos, fence), x);
                true
            }
            Err(_) => {
                assert_eq!(c.position_of(fence(x), |y| y.cmp(&x), x), None);
                false
            }
        }
    }

    proptest! {
        #[test]
        fn behaves_as_an_ordered_set(
            ops in proptest::collection::vec((any::<bool>(), 0u32..3_000), 0..4_000),
            start in proptest::collection::btree_set(0u32..3_000, 0..1_500),
        ) {
            let mut c = Chunked::from_sorted(start.iter().copied(), fence);
            let mut model = start.clone();
            for (add, x) in ops {
                if add {
                    prop_assert_eq!(insert(&mut c, x), model.insert(x));
                } else {
                    prop_assert_eq!(remove(&mut c, x), model.remove(&x));
                }
                prop_assert_eq!(c.len(), model.len());
            }
            prop_assert!(c.chunks.iter().all(|ch| !ch.is_empty() && ch.len() <= DEFAULT_CAP));
            prop_assert!(c.chunks.iter().zip(&c.fences).all(|(ch, &f)| fence(ch[0]) == f));
            prop_assert_eq!(c.chunks.len(), c.fences.len());
            prop_assert!(c.iter().eq(model.iter().copied()));
            let probe = 1_234;
            let from = match c.search(fence(probe), |y| y.cmp(&probe)) {
                Ok(p) | Err(p) => p,
            };
            prop_assert!(c.iter_from(from).eq(model.range(probe..).copied()));
        }
    }

    #[test]
    fn an_index_grown_in_order_keeps_full_chunks() {
        let mut c = Chunked::default();
        for x in 0..10 * (DEFAULT_CAP as u32) {
            assert!(insert(&mut c, x));
        }
        assert_eq!(c.chunks.len(), 10);
        assert!(c.heap_bytes() < 10 * DEFAULT_CAP * 4 + 1_024);
        assert_eq!(c.fences.len(), 10);
        let mut d = Chunked::default();
        for x in (0..3 * (DEFAULT_CAP as u32)).rev() {
            assert!(insert(&mut d, x));
        }
        assert_eq!(d.chunks.len(), 3);
        assert!(d.iter().eq(0..3 * (DEFAULT_CAP as u32)));
        // emptied in the middle: chunks merge, none stays empty
        for x in (DEFAULT_CAP as u32) / 2..5 * (DEFAULT_CAP as u32) / 2 {
            assert!(remove(&mut d, x));
        }
        assert!(d.chunks.iter().all(|ch| !ch.is_empty()));
        let want: BTreeSet<u32> = (0..(DEFAULT_CAP as u32) / 2)
            .chain(5 * (DEFAULT_CAP as u32) / 2..3 * (DEFAULT_CAP as u32))
            .collect();
        assert!(d.iter().eq(want.iter().copied()));
    }
}
