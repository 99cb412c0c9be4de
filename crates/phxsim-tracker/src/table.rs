//! The values table of a [`crate::State`]: one row per `{topic, pid, key}`, kept in a slab and
//! found through small indexes of row ids.
//!
//! A row is 32 bytes: the presence's meta block (which also holds its pid and key, see
//! [`Meta`]), its clock, and two small numbers for its topic and its dot's replica. Topics and
//! replicas are numbered in the order the table first sees them (a topic's number is freed
//! with its last row), so a row holds no string of its own and many rows share one topic.
//! The indexes hold row ids (4 bytes each, in [`Chunked`] sequences), never a copy of a key:
//! the dot index maps each replica to its rows in clock order (fenced by the clock), the topic
//! index each topic to its rows in `{pid, key}` order (fenced by the pid's first eight bytes),
//! and the pid index holds `(hash of the pid, row id)` pairs packed in a `u64` (8 bytes, read
//! without touching a row), so that a pid's rows are one range. A search compares the probe
//! with the rows the ids name (the pid index compares its entries). Every index is ordered, so every read is in a defined order whatever the history
//! of the slab (which ids are free, which are reused).

use crate::chunked::Chunked;
use crate::shared::{Meta, Name};
use crate::types::{ReplicaRef, Tag, TrackedMeta, Value, ValueKey};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Index of a row in the slab.
pub(crate) type RowId = u32;

/// One presence: its meta block (with its pid and key), its topic and the dot that added it.
#[derive(Clone)]
pub(crate) struct Row {
    pub meta: Meta,
    pub clock: u64,
    /// Index of the topic in [`Table::topics`].
    topic: u32,
    /// Index of the dot's replica in [`Table::replicas`].
    replica: u32,
}

impl Row {
    pub fn key(&self) -> &str {
        self.meta.owner().1
    }
}

/// Rows per slab chunk.
const SLAB_CHUNK: usize = 1024;

/// Rows by id, in chunks of [`SLAB_CHUNK`]: a growing table never copies its rows and never
/// holds room for more than one chunk of rows it does not have.
#[derive(Clone, Default)]
struct Slots {
    chunks: Vec<Vec<Option<Row>>>,
}

impl Slots {
    fn get(&self, id: RowId) -> Option<&Row> {
        let id = id as usize;
        self.chunks
            .get(id / SLAB_CHUNK)?
            .get(id % SLAB_CHUNK)?
            .as_ref()
    }

    fn slot_mut(&mut self, id: RowId) -> &mut Option<Row> {
        let id = id as usize;
        &mut self.chunks[id / SLAB_CHUNK][id % SLAB_CHUNK]
    }

    fn row(&self, id: RowId) -> &Row {
        self.get(id).expect("an indexed row is live")
    }

    /// Appends a row in a new slot; returns its id.
    fn push(&mut self, row: Row) -> RowId {
        let full = self.chunks.last().is_none_or(|c| c.len() == SLAB_CHUNK);
        if full {
            let mut chunk = Vec::new();
            if !self.chunks.is_empty() {
                chunk.reserve_exact(SLAB_CHUNK);
            }
            self.chunks.push(chunk);
        }
        let id = (self.chunks.len() - 1) * SLAB_CHUNK + self.chunks.last().map_or(0, Vec::len);
        let id = RowId::try_from(id).expect("fewer than 2^32 rows");
        if let Some(last) = self.chunks.last_mut() {
            last.push(Some(row));
        }
        id
    }

    fn clear(&mut self) {
        self.chunks.clear();
    }
}

/// Rows per chunk of a topic index: smaller than the other indexes', because each step of
/// a search inside a chunk reads a row and then its meta block (two cache misses).
const TOPIC_CAP: usize = 32;

/// A topic's name and its rows in `{pid, key}` order.
#[derive(Clone)]
struct Topic {
    name: Name,
    rows: Chunked<RowId, TOPIC_CAP>,
    /// The table's change count when a row of this topic was last written or deleted (or the
    /// topic numbered): see [`Table::topic_stamps`].
    stamp: u64,
}

#[derive(Clone, Default)]
pub(crate) struct Table {
    slots: Slots,
    free: Vec<RowId>,
    live: usize,
    /// Every replica a row has named, by index; indexes are never reused, so an index in a row
    /// always names the same replica.
    replicas: Vec<ReplicaRef>,
    replica_ids: BTreeMap<ReplicaRef, u32>,
    /// Per replica index: its rows in clock order.
    by_dot: Vec<Chunked<RowId>>,
    /// Topics by index; a topic leaves with its last row and its index is reused.
    topics: Vec<Option<Topic>>,
    topic_ids: BTreeMap<Name, u32>,
    free_topics: Vec<u32>,
    /// Every row as `pid_hash << 32 | row id`, in order (see the module doc).
    by_pid: Chunked<u64>,
    /// Counts every write and delete of a row (and every topic numbered): never goes back, so
    /// a topic's stamp names one moment of the table's life.
    changes: u64,
}

/// Reads the first byte of each row's meta block: a loop with no work between the loads lets
/// the processor fetch many blocks at once.
pub(crate) fn warm<'a>(rows: impl Iterator<Item = &'a Row>) {
    let mut acc = 0u8;
    for row in rows {
        acc ^= row.meta.first_byte();
    }
    std::hint::black_box(acc);
}

/// Byte order of two strings, deciding most pairs on their first eight bytes without a call
/// to `memcmp`.
fn cmp_bytes(a: &[u8], b: &[u8]) -> Ordering {
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let o = u64::from_be_bytes(*x).cmp(&u64::from_be_bytes(*y));
        if o != Ordering::Equal {
            return o;
        }
    }
    a.cmp(b)
}

/// Are two short texts equal? Compared in a loop the compiler keeps inline, which beats a call
/// to `memcmp` for the few bytes of a pid, a key or a replica's name.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// How the row `id` orders against `{pid, key}` (UTF-8 bytes) in a topic.
fn cmp_pid_key(slots: &Slots, id: RowId, pid: &[u8], key: &[u8]) -> Ordering {
    let (p, k) = slots.row(id).meta.owner_bytes();
    cmp_bytes(p, pid).then_with(|| cmp_bytes(k, key))
}

/// A pid's 32-bit FNV-1a hash: fixed, so the pid index is laid out the same in every run.
fn pid_hash(pid: &[u8]) -> u32 {
    pid.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The pid index entry of row `id` with pid `pid`.
fn pid_entry(pid: &[u8], id: RowId) -> u64 {
    u64::from(pid_hash(pid)) << 32 | u64::from(id)
}

/// The first eight bytes of a text as a big-endian number (zero-padded): the topic index's
/// fence, which orders as the `{pid, key}` pairs do.
fn prefix(b: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = b.len().min(8);
    buf[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(buf)
}

fn pid_prefix(slots: &Slots, id: RowId) -> u64 {
    prefix(slots.row(id).meta.owner_bytes().0)
}

fn clock_of(slots: &Slots, id: RowId) -> u64 {
    slots.row(id).clock
}

fn cmp_clock(slots: &Slots, id: RowId, clock: u64) -> Ordering {
    slots.row(id).clock.cmp(&clock)
}

impl Table {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn row(&self, id: RowId) -> &Row {
        self.slots.row(id)
    }

    pub fn replica_of(&self, row: &Row) -> &ReplicaRef {
        &self.replicas[row.replica as usize]
    }

    pub fn topic_of(&self, row: &Row) -> &Name {
        &self.topics[row.topic as usize]
            .as_ref()
            .expect("a row's topic is live")
            .name
    }

    pub fn tag_of(&self, row: &Row) -> Tag {
        Tag::new(self.replica_of(row).clone(), row.clock)
    }

    /// The row's `{topic, pid, key}` as owned names.
    pub fn key_of(&self, row: &Row) -> ValueKey {
        let (pid, key) = row.meta.owner_names();
        ValueKey {
            topic: self.topic_of(row).clone(),
            pid,
            key,
        }
    }

    pub fn value(&self, id: RowId) -> Value {
        let row = self.row(id);
        Value {
            key: self.key_of(row),
            meta: row.meta.clone(),
            tag: self.tag_of(row),
        }
    }

    fn topic(&self, topic: &str) -> Option<&Topic> {
        let &t = self.topic_ids.get(topic)?;
        self.topics[t as usize].as_ref()
    }

    /// The row of exactly one `{topic, pid, key}`.
    pub fn find(&self, key: &ValueKey) -> Option<RowId> {
        let rows = &self.topic(&key.topic)?.rows;
        let (pid, k) = (key.pid.as_bytes(), key.key.as_bytes());
        let pos = rows
            .search(prefix(pid), |id| cmp_pid_key(&self.slots, id, pid, k))
            .ok()?;
        rows.get(pos)
    }

    /// The row a dot names.
    pub fn find_dot(&self, tag: &Tag) -> Option<RowId> {
        let r = *self.replica_ids.get(&tag.replica)?;
        let dots = &self.by_dot[r as usize];
        let pos = dots
            .search(tag.clock, |id| cmp_clock(&self.slots, id, tag.clock))
            .ok()?;
        dots.get(pos)
    }

    /// The rows of one replica with a clock in `lo..=hi`, in clock order.
    pub fn rows_of_replica(
        &self,
        replica: &ReplicaRef,
        lo: u64,
        hi: u64,
    ) -> impl Iterator<Item = (u64, RowId)> + '_ {
        let dots = match self.replica_ids.get(replica) {
            Some(&r) if lo <= hi => {
                let dots = &self.by_dot[r as usize];
                let (Ok(from) | Err(from)) = dots.search(lo, |id| cmp_clock(&self.slots, id, lo));
                Some(dots.iter_from(from))
            }
            _ => None,
        };
        dots.into_iter()
            .flatten()
            .map(|id| (self.slots.row(id).clock, id))
            .take_while(move |&(c, _)| c <= hi)
    }

    /// Every row in tag order (replica, then clock), with its replica; `skip` leaves out the
    /// rows of the replicas it answers true for (checked once per replica, not per row).
    pub fn in_tag_order<'a>(
        &'a self,
        skip: impl Fn(&ReplicaRef) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a ReplicaRef, &'a Row)> + 'a {
        self.replica_ids
            .iter()
            .filter(move |(r, _)| !skip(r))
            .flat_map(move |(r, &i)| {
                self.by_dot[i as usize]
                    .iter()
                    .map(move |id| (r, self.slots.row(id)))
            })
    }

    pub fn topics(&self) -> impl Iterator<Item = &Name> {
        self.topic_ids.keys()
    }

    /// Every topic in order with its stamp: a number that differs from the one read earlier
    /// whenever a row of the topic was written or deleted in between (rows only: whether a
    /// row is visible is the state's business). A reader that keeps a topic's rows, or
    /// something made of them, knows from it without a look at the rows whether they moved,
    /// whatever moved them.
    pub fn topic_stamps(&self) -> impl Iterator<Item = (&Name, u64)> {
        self.topic_ids
            .iter()
            .filter_map(|(name, &t)| Some((name, self.topics[t as usize].as_ref()?.stamp)))
    }

    /// Number of rows of a topic.
    pub fn topic_len(&self, topic: &str) -> usize {
        self.topic(topic).map_or(0, |t| t.rows.len())
    }

    /// The rows of a topic in `{pid, key}` order.
    pub fn rows_of_topic<'a>(&'a self, topic: &str) -> impl Iterator<Item = &'a Row> + use<'a> {
        self.topic(topic)
            .into_iter()
            .flat_map(|t| t.rows.iter())
            .map(|id| self.slots.row(id))
    }

    /// Reads every row of a topic in a tight loop, so that their cache misses overlap before a
    /// reader that walks them one by one with work in between (and that needs the rows, not
    /// their meta blocks).
    pub fn warm_rows_of_topic(&self, topic: &str) {
        let mut acc = 0u32;
        for row in self.rows_of_topic(topic) {
            acc ^= row.replica;
        }
        std::hint::black_box(acc);
    }

    /// [`Table::rows_of_topic`] for a reader that copies every row out: the rows' meta blocks
    /// are read once in a tight loop first, so that their cache misses overlap instead of
    /// coming one at a time between the copies.
    pub fn rows_of_topic_warmed<'a>(
        &'a self,
        topic: &str,
    ) -> impl Iterator<Item = &'a Row> + use<'a> {
        if let Some(t) = self.topic(topic) {
            warm(t.rows.iter().map(|id| self.slots.row(id)));
        }
        self.rows_of_topic(topic)
    }

    /// The rows of a pid, in `{topic, key}` order.
    pub fn rows_of_pid(&self, pid: &str) -> Vec<RowId> {
        let pid = pid.as_bytes();
        let first = pid_entry(pid, 0);
        let (Ok(from) | Err(from)) = self.by_pid.search(first, |e| e.cmp(&first));
        let mut ids: Vec<RowId> = self
            .by_pid
            .iter_from(from)
            .take_while(|&e| e >> 32 == first >> 32)
            .map(|e| e as RowId)
            .filter(|&id| self.slots.row(id).meta.owner_bytes().0 == pid)
            .collect();
        ids.sort_by(|&a, &b| {
            let (a, b) = (self.row(a), self.row(b));
            (self.topic_of(a), a.key()).cmp(&(self.topic_of(b), b.key()))
        });
        ids
    }

    fn replica_index(&mut self, replica: &ReplicaRef) -> u32 {
        if let Some(&i) = self.replica_ids.get(replica) {
            return i;
        }
        let i = u32::try_from(self.replicas.len()).expect("fewer than 2^32 replicas");
        self.replicas.push(replica.clone());
        self.replica_ids.insert(replica.clone(), i);
        self.by_dot.push(Chunked::default());
        i
    }

    /// The index of a topic, numbering it (with no rows yet) if it is new.
    fn topic_index(&mut self, topic: &Name) -> u32 {
        if let Some(&t) = self.topic_ids.get(topic) {
            return t;
        }
        self.changes += 1;
        let slot = Some(Topic {
            name: topic.clone(),
            rows: Chunked::default(),
            stamp: self.changes,
        });
        let t = match self.free_topics.pop() {
            Some(t) => {
                self.topics[t as usize] = slot;
                t
            }
            None => {
                self.topics.push(slot);
                u32::try_from(self.topics.len() - 1).expect("fewer than 2^32 topics")
            }
        };
        self.topic_ids.insert(topic.clone(), t);
        t
    }

    /// Topic `t`'s rows change now.
    fn stamp_topic(&mut self, t: u32) {
        self.changes += 1;
        if let Some(topic) = self.topics[t as usize].as_mut() {
            topic.stamp = self.changes;
        }
    }

    fn alloc(&mut self, row: Row) -> RowId {
        self.live += 1;
        match self.free.pop() {
            Some(id) => {
                *self.slots.slot_mut(id) = Some(row);
                id
            }
            None => self.slots.push(row),
        }
    }

    /// Puts row `id` (already in its slot) into replica `r`'s dot index. A row already named
    /// by that dot gives its place up, as a map's insert would.
    fn index_dot(&mut self, r: u32, clock: u64, id: RowId) {
        let dots = &mut self.by_dot[r as usize];
        let slots = &self.slots;
        match dots.search(clock, |x| cmp_clock(slots, x, clock)) {
            Ok(pos) => dots.replace(pos, id),
            Err(pos) => dots.insert(pos, id, |x| clock_of(slots, x)),
        }
    }

    /// Takes row `id` out of replica `r`'s dot index, if it is there.
    fn unindex_dot(&mut self, r: u32, clock: u64, id: RowId) {
        let dots = &mut self.by_dot[r as usize];
        let slots = &self.slots;
        if let Some(pos) = dots.position_of(clock, |x| cmp_clock(slots, x, clock), id) {
            dots.remove(pos, |x| clock_of(slots, x));
        }
    }

    /// Writes a row; a row already held for the same `{topic, pid, key}` is overwritten in
    /// place (a remote update, or the stale re-add of phoenix_pubsub #148), and its old dot no
    /// longer names a row.
    pub fn insert(&mut self, key: ValueKey, meta: Meta, tag: &Tag) {
        let r = self.replica_index(&tag.replica);
        let meta = meta.for_owner(&key.pid, &key.key);
        let t = self.topic_index(&key.topic);
        self.stamp_topic(t);
        let (pid, k) = (key.pid.as_bytes(), key.key.as_bytes());
        let slots = &self.slots;
        let topic = self.topics[t as usize]
            .as_ref()
            .expect("topic just numbered");
        let at = match topic
            .rows
            .search(prefix(pid), |x| cmp_pid_key(slots, x, pid, k))
        {
            Ok(pos) => {
                let id = topic.rows.get(pos).expect("a found position holds a row");
                let row = self.slots.row(id);
                let (old_r, old_clock) = (row.replica, row.clock);
                self.unindex_dot(old_r, old_clock, id);
                if let Some(row) = self.slots.slot_mut(id) {
                    row.meta = meta;
                    row.replica = r;
                    row.clock = tag.clock;
                }
                self.index_dot(r, tag.clock, id);
                return;
            }
            Err(pos) => pos,
        };
        let id = self.alloc(Row {
            meta,
            clock: tag.clock,
            topic: t,
            replica: r,
        });
        let slots = &self.slots;
        if let Some(topic) = self.topics[t as usize].as_mut() {
            topic.rows.insert(at, id, |x| pid_prefix(slots, x));
        }
        let entry = pid_entry(pid, id);
        if let Err(pos) = self.by_pid.search(entry, |e| e.cmp(&entry)) {
            self.by_pid.insert(pos, entry, |e| e);
        }
        self.index_dot(r, tag.clock, id);
    }

    /// Deletes a row and its index entries; returns it as a value.
    pub fn remove(&mut self, id: RowId) -> Value {
        let row = self.slots.row(id).clone();
        let value = Value {
            key: self.key_of(&row),
            meta: row.meta.clone(),
            tag: self.tag_of(&row),
        };
        let (pid, key) = row.meta.owner_bytes();
        self.stamp_topic(row.topic);
        self.unindex_dot(row.replica, row.clock, id);
        let slots = &self.slots;
        let entry = pid_entry(pid, id);
        if let Ok(pos) = self.by_pid.search(entry, |e| e.cmp(&entry)) {
            self.by_pid.remove(pos, |e| e);
        }
        let t = row.topic as usize;
        if let Some(topic) = self.topics[t].as_mut() {
            if let Some(pos) =
                topic
                    .rows
                    .position_of(prefix(pid), |x| cmp_pid_key(slots, x, pid, key), id)
            {
                topic.rows.remove(pos, |x| pid_prefix(slots, x));
            }
            if topic.rows.is_empty() {
                self.topic_ids.remove(&topic.name);
                self.topics[t] = None;
                self.free_topics.push(row.topic);
            }
        }
        *self.slots.slot_mut(id) = None;
        self.live -= 1;
        self.free.push(id);
        if self.live == 0 {
            self.slots.clear();
            self.free.clear();
        }
        value
    }

    /// Appends every row of `replica`, in clock order, as an extract carries it. Works a
    /// chunk of the dot index at a time: the chunk's meta blocks are read first in a tight
    /// loop, so that their cache misses overlap, and only then copied (each copy bumps the
    /// block's reference count, an atomic operation that would otherwise wait for each miss
    /// in turn).
    pub fn extract_rows_of(&self, replica: &ReplicaRef, out: &mut Vec<(Tag, TrackedMeta)>) {
        let Some(&r) = self.replica_ids.get(replica) else {
            return;
        };
        for chunk in self.by_dot[r as usize].chunks() {
            warm(chunk.iter().map(|&id| self.slots.row(id)));
            out.extend(chunk.iter().map(|&id| {
                let row = self.slots.row(id);
                (
                    Tag::new(replica.clone(), row.clock),
                    TrackedMeta {
                        key: self.key_of(row),
                        meta: row.meta.clone(),
                    },
                )
            }));
        }
    }

    /// Fills an empty table in one go from a [`BulkBuild`] fed every join of a merge (`joins`,
    /// in the same order), which is what a full transfer into a fresh replica costs. Refuses
    /// (and changes nothing) when the table is not empty or two joins share a
    /// `{topic, pid, key}`, where the row-by-row path decides which one stays.
    ///
    /// No general sort: the joins were numbered by topic as they came, are grouped by topic
    /// with a counting sort, and only each topic's joins (a few hundred or thousand) are sorted
    /// by `{pid, key}`, on sort keys that hold short pids whole. The rows go into the slab in
    /// join order (row id = join index), so each replica's dot index is one run already in
    /// order, and the pid index is sorted by a radix sort of its hashes.
    pub fn build_in_bulk(&mut self, build: BulkBuild<'_>, joins: &[Value]) -> bool {
        let n = build.len;
        if !self.is_empty() || n < 2 || n != joins.len() {
            return false;
        }
        let BulkBuild {
            numbers,
            mut by_topic,
            mut slots,
            pids,
            runs,
            len: _,
        } = build;
        // 1. Each topic's joins in `{pid, key}` order; a `{topic, pid, key}` twice refuses.
        //    The keys' texts are read only for joins of one pid (or long pids that tie).
        let cmp = |a: &(SortKey, RowId), b: &(SortKey, RowId)| {
            let (ka, kb) = (&joins[a.1 as usize].key, &joins[b.1 as usize].key);
            a.0.cmp_text(&b.0, || (ka.pid.as_bytes(), kb.pid.as_bytes()))
                .then_with(|| ka.key.as_bytes().cmp(kb.key.as_bytes()))
        };
        for entries in &mut by_topic {
            entries.sort_unstable_by(cmp);
            if entries
                .windows(2)
                .any(|w| cmp(&w[0], &w[1]) == Ordering::Equal)
            {
                return false;
            }
        }
        // From here on the table changes. Topics and replicas get their table numbers.
        let table_topic: Vec<u32> = numbers
            .names
            .iter()
            .map(|&(_, name)| self.topic_index(name))
            .collect();
        let table_replica: Vec<u32> = runs
            .iter()
            .map(|&(_, replica, _)| self.replica_index(replica))
            .collect();
        // 2. The rows, in join (tag) order: row id = join index.
        for row in slots.chunks.iter_mut().flatten().flatten() {
            row.topic = table_topic[row.topic as usize];
            row.replica = table_replica[row.replica as usize];
        }
        self.slots = slots;
        self.free.clear();
        self.live = n;
        // 3. Topic indexes, fenced by the pid's first eight bytes (the sort key's high half).
        for (entries, &t) in by_topic.iter().zip(&table_topic) {
            self.stamp_topic(t);
            if let Some(topic) = self.topics[t as usize].as_mut() {
                topic.rows =
                    Chunked::from_sorted_fenced(entries.iter().map(|e| (e.1, e.0.fence())));
            }
        }
        drop(by_topic);
        // 4. Dot index: each replica's run of clocks ascends (tag order).
        for (i, &(_, _, start)) in runs.iter().enumerate() {
            let end = runs.get(i + 1).map_or(n, |r| r.2);
            let r = table_replica[i];
            let run = (start..end).map(|id| id as RowId);
            let dots = &mut self.by_dot[r as usize];
            if dots.is_empty() {
                *dots = Chunked::from_sorted(run, |id| joins[id as usize].tag.clock);
            } else {
                for id in run {
                    self.index_dot(r, joins[id as usize].tag.clock, id);
                }
            }
        }
        // 5. Pid index.
        self.by_pid = Chunked::from_sorted(sort_by_hash(pids), |e| e);
        true
    }
}

/// What a bulk build needs of each join, gathered while the merge reads it (its meta block is
/// then in the cache): the rows in a slab of their own, each topic's pid sort keys (topics
/// numbered in the order first seen), the pid index entries, and the runs of joins by
/// replica. Nothing of it is one large block: the slab and the topics' lists grow in small
/// pieces the allocator has at hand, instead of fresh pages the kernel must clear.
pub(crate) struct BulkBuild<'a> {
    numbers: TopicNumbers<'a>,
    /// Per topic: `(pid's sort key, row id)`.
    by_topic: Vec<Vec<(SortKey, RowId)>>,
    /// With the local topic number and the index of the replica's run.
    slots: Slots,
    pids: Vec<u64>,
    /// `(run number given by the merge, replica, first join)`.
    runs: Vec<(usize, &'a ReplicaRef, usize)>,
    len: usize,
}

impl<'a> BulkBuild<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            numbers: TopicNumbers::default(),
            by_topic: Vec::new(),
            slots: Slots::default(),
            pids: Vec::with_capacity(n),
            runs: Vec::new(),
            len: 0,
        }
    }

    /// The next join, the value `tag => p`; `run` numbers the merge's runs of one replica.
    pub fn push(&mut self, run: usize, tag: &'a Tag, p: &'a TrackedMeta) {
        let id = self.len as RowId;
        self.len += 1;
        if self.runs.last().is_none_or(|last| last.0 != run) {
            self.runs.push((run, &tag.replica, id as usize));
        }
        let pid = p.key.pid.as_bytes();
        let topic = self.numbers.number(&p.key.topic);
        if topic as usize == self.by_topic.len() {
            self.by_topic.push(Vec::new());
        }
        self.by_topic[topic as usize].push((SortKey::of(pid), id));
        self.pids.push(pid_entry(pid, id));
        // The block of a presence that comes from a table or a decoded frame already names
        // its owner: a short comparison inline instead of two calls to `memcmp`.
        let (owner_pid, owner_key) = p.meta.owner_bytes();
        let meta = if same_bytes(owner_pid, pid) && same_bytes(owner_key, p.key.key.as_bytes()) {
            p.meta.clone()
        } else {
            p.meta.for_owner(&p.key.pid, &p.key.key)
        };
        self.slots.push(Row {
            meta,
            clock: tag.clock,
            topic,
            replica: (self.runs.len() - 1) as u32,
        });
    }
}

/// Rows whose meta blocks are read ahead together (see [`warm`]).
pub(crate) const WARM_BATCH: usize = 64;

/// Reads the first bytes of each meta block (see [`warm`]): for a reader about to touch many
/// blocks one at a time (a copy's reference counts, a walk with work in between).
pub fn warm_metas<'a>(metas: impl Iterator<Item = &'a Meta>) {
    let mut acc = 0u8;
    for meta in metas {
        acc ^= meta.first_byte();
    }
    std::hint::black_box(acc);
}

/// Pid index entries (`hash << 32 | row id`) listed in ascending row id, sorted: a stable
/// counting sort of the hash, 11 bits a pass, leaves equal hashes in row id order, which is
/// the entries' full order.
fn sort_by_hash(mut entries: Vec<u64>) -> Vec<u64> {
    debug_assert!(entries.windows(2).all(|w| (w[0] as u32) < (w[1] as u32)));
    const BITS: u32 = 11;
    let mut out = vec![0u64; entries.len()];
    for shift in (32..64).step_by(BITS as usize) {
        let digit = |e: u64| ((e >> shift) & ((1 << BITS) - 1)) as usize;
        let mut at = [0usize; 1 << BITS];
        for &e in &entries {
            at[digit(e)] += 1;
        }
        let mut sum = 0;
        for a in at.iter_mut() {
            (*a, sum) = (sum, sum + *a);
        }
        for &e in &entries {
            let d = digit(e);
            out[at[d]] = e;
            at[d] += 1;
        }
        std::mem::swap(&mut entries, &mut out);
    }
    entries
}

/// Topic names numbered in the order first seen, found again through a small open-addressing
/// table of their sort keys (a presence's topic is looked up once per join of a bulk build,
/// and the joins of a transfer come in dot order, so their topics come in no order). A sort
/// key holds a short name whole, so most lookups compare two numbers and never the text.
/// Never iterated, so its layout cannot leak into any output.
#[derive(Default)]
struct TopicNumbers<'a> {
    names: Vec<(SortKey, &'a Name)>,
    /// `number + 1` of the name hashed there, 0 for an empty slot; a power of two long.
    slots: Vec<u32>,
    last: Option<(SortKey, u32)>,
}

impl<'a> TopicNumbers<'a> {
    fn number(&mut self, topic: &'a Name) -> u32 {
        let key = SortKey::of(topic.as_bytes());
        if let Some((k, t)) = self.last
            && k == key
            && (key.whole() || self.names[t as usize].1 == topic)
        {
            return t;
        }
        if self.names.len() * 2 >= self.slots.len() {
            self.grow();
        }
        let t = self.find_or_add(key, topic);
        self.last = Some((key, t));
        t
    }

    fn find_or_add(&mut self, key: SortKey, topic: &'a Name) -> u32 {
        let mask = self.slots.len() - 1;
        let mut i = key.hash() & mask;
        loop {
            match self.slots[i] {
                0 => {
                    self.names.push((key, topic));
                    let t = u32::try_from(self.names.len() - 1).expect("fewer than 2^32 topics");
                    self.slots[i] = t + 1;
                    return t;
                }
                s if self.names[s as usize - 1].0 == key
                    && (key.whole() || self.names[s as usize - 1].1 == topic) =>
                {
                    return s - 1;
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(64);
        self.slots = vec![0; len];
        let mask = len - 1;
        for (t, (key, _)) in self.names.iter().enumerate() {
            let mut i = key.hash() & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = t as u32 + 1;
        }
    }
}

/// A string's first 15 bytes as a big-endian number over its length capped at 16, in one
/// `u128`: comparing two of them orders the strings exactly as their text unless both are at
/// least 16 bytes long and share those 15 bytes, and then the text decides. (Zero padding
/// sorts a shorter string first, as a prefix sorts first.)
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey(u128);

impl SortKey {
    const PREFIX: usize = 15;

    fn of(b: &[u8]) -> Self {
        let mut buf = [0u8; 16];
        let n = b.len().min(Self::PREFIX);
        buf[..n].copy_from_slice(&b[..n]);
        buf[15] = b.len().min(Self::PREFIX + 1) as u8;
        SortKey(u128::from_be_bytes(buf))
    }

    /// How the two texts order; `texts` gives them, read only when the keys alone cannot tell.
    fn cmp_text<'t>(&self, other: &Self, texts: impl FnOnce() -> (&'t [u8], &'t [u8])) -> Ordering {
        Ord::cmp(self, other).then_with(|| {
            if !self.whole() {
                let (a, b) = texts();
                a.cmp(b)
            } else {
                Ordering::Equal
            }
        })
    }

    /// Does the key hold its whole text (so that equal keys mean equal texts)?
    fn whole(&self) -> bool {
        self.0 as u8 as usize <= Self::PREFIX
    }

    /// A hash of the key (a multiplicative one, fixed: nothing iterates what it places).
    fn hash(&self) -> usize {
        let folded = (self.0 as u64) ^ ((self.0 >> 64) as u64).rotate_left(29);
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
    }

    /// The text's first eight bytes as [`prefix`] gives them.
    fn fence(&self) -> u64 {
        (self.0 >> 64) as u64
    }
}

#[cfg(test)]
impl Table {
    /// Heap bytes held by the table's parts (capacities, as an allocator counts them), for the
    /// memory budget test: `[slab, meta blocks, dot index, topic index, pid index, rest]`.
    pub(crate) fn heap_account(&self) -> [usize; 6] {
        let slab = self.slots.chunks.capacity() * std::mem::size_of::<Vec<Option<Row>>>()
            + self
                .slots
                .chunks
                .iter()
                .map(|c| c.capacity() * std::mem::size_of::<Option<Row>>())
                .sum::<usize>();
        // a triomphe block: an 8-byte count and the text, padded to 8
        let blocks = self
            .in_tag_order(|_| false)
            .map(|(_, row)| (8 + row.meta.block_len()).next_multiple_of(8))
            .sum();
        let dots = self.by_dot.iter().map(Chunked::heap_bytes).sum();
        let topics = self
            .topics
            .iter()
            .flatten()
            .map(|t| t.rows.heap_bytes())
            .sum();
        let rest = self.free.capacity() * 4
            + self.topics.capacity() * std::mem::size_of::<Option<Topic>>()
            + self.by_dot.capacity() * std::mem::size_of::<Chunked<RowId>>();
        [slab, blocks, dots, topics, self.by_pid.heap_bytes(), rest]
    }
}

/// Two tables are equal when they hold the same rows with the same dots, whatever their slab
/// layout or the order replicas and topics were numbered in.
impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .in_tag_order(|_| false)
                .zip(other.in_tag_order(|_| false))
                .all(|((ra, a), (rb, b))| {
                    ra == rb
                        && a.clock == b.clock
                        && self.key_of(a) == other.key_of(b)
                        && a.meta == b.meta
                })
            && self.topic_ids.len() == other.topic_ids.len()
    }
}

impl Eq for Table {}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.in_tag_order(|_| false).map(|(r, row)| Value {
                key: self.key_of(row),
                meta: row.meta.clone(),
                tag: Tag::new(r.clone(), row.clock),
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_order_as_the_text() {
        let words = [
            "",
            "a",
            "a\0",
            "ab",
            "b",
            "pid:1",
            "pid:10",
            "pid:9",
            "0123456789abcdef",
            "0123456789abcdef\0",
            "0123456789abcdefX",
            "0123456789abcdefY",
            "0123456789abcdeg",
            "0123456789abcde",
            "0123456789abcde\0",
            "0123456789abcdf",
            "0123456789abcd",
            "\u{7f}\u{7f}",
            "é",
        ];
        for a in words {
            for b in words {
                assert_eq!(
                    SortKey::of(a.as_bytes())
                        .cmp_text(&SortKey::of(b.as_bytes()), || (a.as_bytes(), b.as_bytes())),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
