//! The values table of a [`crate::State`]: one row per `{topic, pid, key}`, kept in a slab and
//! found through small indexes of row ids.
//!
//! A row is stored once. The indexes hold its id (a `u32`), never a copy of the row: the dot
//! index maps `replica index → clock → row`, the topic index `topic → (pid, key) → row`, and
//! the pid index `(pid, row)`. Replicas are numbered in the order the table first sees them, so
//! a row's dot is a `(u32, u64)` pair and the dot index needs no string comparison at all.
//! Every index is ordered, so every read is in a defined order whatever the history of the
//! slab (which ids are free, which are reused).

use crate::shared::{Meta, Name};
use crate::types::{ReplicaRef, Tag, Value, ValueKey};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Index of a row in the slab.
pub(crate) type RowId = u32;

/// One presence: its `{topic, pid, key}`, its meta and the dot that added it.
#[derive(Clone)]
pub(crate) struct Row {
    pub key: ValueKey,
    pub meta: Meta,
    /// Index of the dot's replica in [`Table::replicas`].
    replica: u32,
    pub clock: u64,
}

/// `(pid, key) → row` for one topic, in `{pid, key}` order.
type TopicRows = BTreeMap<(Name, Name), RowId>;

#[derive(Clone, Default)]
pub(crate) struct Table {
    slots: Vec<Option<Row>>,
    free: Vec<RowId>,
    live: usize,
    /// Every replica a row has named, by index; indexes are never reused, so an index in a row
    /// always names the same replica.
    replicas: Vec<ReplicaRef>,
    replica_ids: BTreeMap<ReplicaRef, u32>,
    /// Per replica index: clock → row.
    by_dot: Vec<BTreeMap<u64, RowId>>,
    /// Topic → its rows. A topic leaves with its last row; rows share the topic's string.
    by_topic: BTreeMap<Name, TopicRows>,
    /// `(pid, row)`: what a pid's exit removes, as one range.
    by_pid: BTreeSet<(Name, RowId)>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn row(&self, id: RowId) -> &Row {
        self.slots[id as usize]
            .as_ref()
            .expect("an indexed row is live")
    }

    pub fn replica_of(&self, row: &Row) -> &ReplicaRef {
        &self.replicas[row.replica as usize]
    }

    pub fn tag_of(&self, row: &Row) -> Tag {
        Tag::new(self.replica_of(row).clone(), row.clock)
    }

    pub fn value(&self, id: RowId) -> Value {
        let row = self.row(id);
        Value {
            key: row.key.clone(),
            meta: row.meta.clone(),
            tag: self.tag_of(row),
        }
    }

    /// The row of exactly one `{topic, pid, key}`.
    pub fn find(&self, key: &ValueKey) -> Option<RowId> {
        self.by_topic
            .get(&key.topic)?
            .get(&(key.pid.clone(), key.key.clone()))
            .copied()
    }

    /// The row a dot names.
    pub fn find_dot(&self, tag: &Tag) -> Option<RowId> {
        let r = *self.replica_ids.get(&tag.replica)?;
        self.by_dot[r as usize].get(&tag.clock).copied()
    }

    /// The rows of one replica with a clock in `lo..=hi`, in clock order.
    pub fn rows_of_replica(
        &self,
        replica: &ReplicaRef,
        lo: u64,
        hi: u64,
    ) -> impl Iterator<Item = (u64, RowId)> + '_ {
        let dots = match self.replica_ids.get(replica) {
            Some(&r) if lo <= hi => Some(self.by_dot[r as usize].range(lo..=hi)),
            _ => None,
        };
        dots.into_iter().flatten().map(|(&c, &id)| (c, id))
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
                    .values()
                    .map(move |&id| (r, self.row(id)))
            })
    }

    pub fn topics(&self) -> impl Iterator<Item = &Name> {
        self.by_topic.keys()
    }

    /// Number of rows of a topic.
    pub fn topic_len(&self, topic: &str) -> usize {
        self.by_topic
            .get(&Name::from(topic))
            .map_or(0, BTreeMap::len)
    }

    /// The rows of a topic in `{pid, key}` order.
    pub fn rows_of_topic<'a>(&'a self, topic: &str) -> impl Iterator<Item = &'a Row> + use<'a> {
        self.by_topic
            .get(&Name::from(topic))
            .into_iter()
            .flat_map(|rows| rows.values())
            .map(|&id| self.row(id))
    }

    /// The rows of a pid, in `{topic, key}` order.
    pub fn rows_of_pid(&self, pid: &str) -> Vec<RowId> {
        let pid = Name::from(pid);
        let mut ids: Vec<RowId> = self
            .by_pid
            .range((pid.clone(), 0)..=(pid, RowId::MAX))
            .map(|(_, id)| *id)
            .collect();
        ids.sort_by(|&a, &b| {
            let (a, b) = (&self.row(a).key, &self.row(b).key);
            (&a.topic, &a.key).cmp(&(&b.topic, &b.key))
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
        self.by_dot.push(BTreeMap::new());
        i
    }

    fn alloc(&mut self, row: Row) -> RowId {
        self.live += 1;
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(row);
                id
            }
            None => {
                let id = RowId::try_from(self.slots.len()).expect("fewer than 2^32 rows");
                self.slots.push(Some(row));
                id
            }
        }
    }

    /// Writes a row; a row already held for the same `{topic, pid, key}` is overwritten in
    /// place (a remote update, or the stale re-add of phoenix_pubsub #148), and its old dot no
    /// longer names a row.
    pub fn insert(&mut self, key: ValueKey, meta: Meta, tag: &Tag) {
        let r = self.replica_index(&tag.replica);
        if let Some(id) = self.find(&key) {
            let row = self.slots[id as usize]
                .as_mut()
                .expect("an indexed row is live");
            let (old_r, old_clock) = (row.replica, row.clock);
            row.meta = meta;
            row.replica = r;
            row.clock = tag.clock;
            self.by_dot[old_r as usize].remove(&old_clock);
            self.by_dot[r as usize].insert(tag.clock, id);
            return;
        }
        let mut key = key;
        let rows = match self.by_topic.get_key_value(&key.topic) {
            Some((t, _)) => {
                key.topic = t.clone();
                self.by_topic.get_mut(&key.topic).expect("topic just found")
            }
            None => self.by_topic.entry(key.topic.clone()).or_default(),
        };
        let pid_key = (key.pid.clone(), key.key.clone());
        let pid = key.pid.clone();
        // The id is the next free slot; reserve it before the row moves in.
        let id = match self.free.last() {
            Some(&id) => id,
            None => RowId::try_from(self.slots.len()).expect("fewer than 2^32 rows"),
        };
        rows.insert(pid_key, id);
        let got = self.alloc(Row {
            key,
            meta,
            replica: r,
            clock: tag.clock,
        });
        debug_assert_eq!(got, id);
        self.by_pid.insert((pid, id));
        self.by_dot[r as usize].insert(tag.clock, id);
    }

    /// Deletes a row and its index entries; returns it as a value.
    pub fn remove(&mut self, id: RowId) -> Value {
        let row = self.slots[id as usize]
            .take()
            .expect("an indexed row is live");
        self.live -= 1;
        self.free.push(id);
        if self.live == 0 {
            self.slots.clear();
            self.free.clear();
        }
        self.by_dot[row.replica as usize].remove(&row.clock);
        self.by_pid.remove(&(row.key.pid.clone(), id));
        if let Some(rows) = self.by_topic.get_mut(&row.key.topic) {
            rows.remove(&(row.key.pid.clone(), row.key.key.clone()));
            if rows.is_empty() {
                self.by_topic.remove(&row.key.topic);
            }
        }
        let tag = Tag::new(self.replicas[row.replica as usize].clone(), row.clock);
        Value {
            key: row.key,
            meta: row.meta,
            tag,
        }
    }

    /// Fills an empty table from `joins` (sorted by tag, as merges produce them) in one go:
    /// each index is collected from a sorted sequence instead of being grown row by row, which
    /// is what a full transfer into a fresh replica costs. Refuses (and changes nothing) when
    /// the table is not empty or two joins share a `{topic, pid, key}`, where the row-by-row
    /// path decides which one stays.
    pub fn build_in_bulk(&mut self, joins: &[Value]) -> bool {
        if !self.is_empty() || joins.len() < 2 {
            return false;
        }
        // Sort keys first: most comparisons end at a 16-byte prefix held inline.
        let mut order: Vec<(SortKey, SortKey, SortKey, u32)> = joins
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    SortKey::of(v.key.topic.as_bytes()),
                    SortKey::of(v.key.pid.as_bytes()),
                    SortKey::of(v.key.key.as_bytes()),
                    i as u32,
                )
            })
            .collect();
        let key_of = |i: u32| &joins[i as usize].key;
        order.sort_unstable_by(|a, b| {
            let (ka, kb) = (key_of(a.3), key_of(b.3));
            a.0.cmp(&b.0, &ka.topic, &kb.topic)
                .then_with(|| a.1.cmp(&b.1, &ka.pid, &kb.pid))
                .then_with(|| a.2.cmp(&b.2, &ka.key, &kb.key))
        });
        if order.windows(2).any(|w| key_of(w[0].3) == key_of(w[1].3)) {
            return false;
        }
        // Replica indexes, and the rows in join (tag) order: row id = join index.
        let mut ids = Vec::with_capacity(joins.len());
        for v in joins {
            ids.push(self.replica_index(&v.tag.replica));
        }
        self.slots.clear();
        self.free.clear();
        self.slots.reserve_exact(joins.len());
        // Topic strings shared by their rows: the first row of each topic (in sorted order)
        // lends its string to the others.
        let mut shared_topic: Vec<Option<Name>> = vec![None; joins.len()];
        let mut current: Option<&Name> = None;
        for &(_, _, _, i) in &order {
            let t = &key_of(i).topic;
            match current {
                Some(c) if c == t => shared_topic[i as usize] = Some(c.clone()),
                _ => {
                    current = Some(t);
                    shared_topic[i as usize] = Some(t.clone());
                }
            }
        }
        for ((v, r), topic) in joins.iter().zip(&ids).zip(shared_topic) {
            let mut key = v.key.clone();
            if let Some(t) = topic {
                key.topic = t;
            }
            self.slots.push(Some(Row {
                key,
                meta: v.meta.clone(),
                replica: *r,
                clock: v.tag.clock,
            }));
        }
        self.live = joins.len();
        // Topic index: runs of the sorted order.
        let mut start = 0;
        while start < order.len() {
            let topic = self.row(order[start].3).key.topic.clone();
            let mut end = start;
            while end < order.len() && self.row(order[end].3).key.topic == topic {
                end += 1;
            }
            let rows: TopicRows = order[start..end]
                .iter()
                .map(|&(_, _, _, id)| {
                    let k = &self.row(id).key;
                    ((k.pid.clone(), k.key.clone()), id)
                })
                .collect();
            self.by_topic.insert(topic, rows);
            start = end;
        }
        // Pid index, sorted by pid then row id.
        let mut pids: Vec<(SortKey, u32)> = self
            .slots
            .iter()
            .enumerate()
            .map(|(id, row)| {
                let row = row.as_ref().expect("just written");
                (SortKey::of(row.key.pid.as_bytes()), id as u32)
            })
            .collect();
        pids.sort_unstable_by(|a, b| {
            let (pa, pb) = (&self.row(a.1).key.pid, &self.row(b.1).key.pid);
            a.0.cmp(&b.0, pa, pb).then(a.1.cmp(&b.1))
        });
        self.by_pid = pids
            .into_iter()
            .map(|(_, id)| (self.row(id).key.pid.clone(), id))
            .collect();
        // Dot index: the joins come in tag order, so each replica's run of clocks ascends and
        // is collected in bulk.
        let mut start = 0;
        while start < joins.len() {
            let r = ids[start];
            let end = start + ids[start..].iter().take_while(|&&x| x == r).count();
            let run = (start..end).map(|id| (joins[id].tag.clock, id as u32));
            if self.by_dot[r as usize].is_empty() {
                self.by_dot[r as usize] = run.collect();
            } else {
                self.by_dot[r as usize].extend(run);
            }
            start = end;
        }
        true
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

    fn cmp(&self, other: &Self, a: &Name, b: &Name) -> Ordering {
        Ord::cmp(self, other).then_with(|| {
            if self.0 as u8 as usize > Self::PREFIX {
                a.cmp(b)
            } else {
                Ordering::Equal
            }
        })
    }
}

/// Two tables are equal when they hold the same rows with the same dots, whatever their slab
/// layout or the order replicas were numbered in.
impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .in_tag_order(|_| false)
                .zip(other.in_tag_order(|_| false))
                .all(|((ra, a), (rb, b))| {
                    ra == rb && a.clock == b.clock && a.key == b.key && a.meta == b.meta
                })
            && self.by_topic.len() == other.by_topic.len()
    }
}

impl Eq for Table {}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.in_tag_order(|_| false).map(|(r, row)| Value {
                key: row.key.clone(),
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
                    SortKey::of(a.as_bytes()).cmp(
                        &SortKey::of(b.as_bytes()),
                        &Name::from(a),
                        &Name::from(b)
                    ),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
