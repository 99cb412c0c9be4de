//! `Phoenix.Tracker.State`: an observed-remove map of `{topic, pid, key} => meta` with causal
//! contexts, compacted dot clouds and a pending delta. Plain data: no clock, no I/O, and every
//! iteration is in a defined order.

use crate::clock::{self, Context};
use crate::delta::{Clouds, Delta, cloud_insert, cloud_remove};
use crate::error::TrackerError;
use crate::mutation::Mutation;
use crate::shared::{Meta, Name};
use crate::table::{BulkBuild, RowId, Table, WARM_BATCH, same_bytes, warm_metas};
use crate::types::{Diff, ReplicaRef, Tag, TrackedMeta, Value, ValueKey};
use crate::values::TagValues;
use std::collections::{BTreeMap, BTreeSet};

/// How this state sees a remote replica. Down replicas' values are kept but hidden from reads
/// and from the clocks it advertises; a permdown deletes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Up,
    Down,
}

/// A full-state extract for one remote: every value of a replica the remote knows, with the
/// context and clouds restricted to those replicas. What a transfer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extract {
    pub context: Context,
    pub clouds: Clouds,
    pub values: TagValues,
}

/// A replica whose values a merge is reading: its context (if known here) and its cloud.
type ReplicaRun<'a> = (&'a ReplicaRef, Option<u64>, Option<&'a BTreeSet<u64>>);

/// What a merge reads of the remote's values: a delta's map or an extract's sorted vector.
trait RemoteValues {
    /// In tag order.
    fn entries(&self) -> impl Iterator<Item = (&Tag, &TrackedMeta)>;
    fn has(&self, tag: &Tag) -> bool;
    fn count(&self) -> usize;
}

impl RemoteValues for BTreeMap<Tag, TrackedMeta> {
    fn entries(&self) -> impl Iterator<Item = (&Tag, &TrackedMeta)> {
        self.iter()
    }
    fn has(&self, tag: &Tag) -> bool {
        self.contains_key(tag)
    }
    fn count(&self) -> usize {
        self.len()
    }
}

impl RemoteValues for TagValues {
    fn entries(&self) -> impl Iterator<Item = (&Tag, &TrackedMeta)> {
        self.iter()
    }
    fn has(&self, tag: &Tag) -> bool {
        self.contains_key(tag)
    }
    fn count(&self) -> usize {
        self.len()
    }
}

/// A change counter that takes no part in a state's equality: two states holding the same
/// rows are equal whatever their histories.
#[derive(Clone, Copy, Debug, Default)]
struct Revision(u64);

impl Revision {
    fn bump(&mut self) {
        self.0 = self.0.wrapping_add(1);
    }
}

impl PartialEq for Revision {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Revision {}

/// The CRDT state of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    replica: ReplicaRef,
    context: Context,
    clouds: Clouds,
    /// The values table: one row per `{topic, pid, key}`, in a slab with indexes by dot, by
    /// topic and by pid (see [`Table`]).
    table: Table,
    replicas: BTreeMap<ReplicaRef, Status>,
    delta: Delta,
    mutation: Option<Mutation>,
    /// Not Phoenix: refuse a remote value whose dot is older than the row held here for the
    /// same presence by the same replica (the fix for phoenix_pubsub #148, see
    /// [`State::with_superseded_guard`]).
    superseded_guard: bool,
    /// Not Phoenix: a remote dot that a merge removes stays in the cloud (see
    /// [`State::with_removed_dots_kept`]).
    keep_removed_dots: bool,
    /// Counts the changes to what this state can list: rows written or deleted, replicas
    /// marked up, down or forgotten. Clocks, clouds and the pending delta do not count, so a
    /// heartbeat that brings nothing new leaves it alone.
    revision: Revision,
    /// Counts the changes to the replicas' marks (up, down, forgotten), which show or hide
    /// rows without writing them: with [`State::topic_stamps`], all that moves a topic's
    /// visible rows.
    marks: Revision,
}

impl State {
    /// A fresh replica: its own clock at 0, nothing known of anyone else.
    pub fn new(replica: ReplicaRef) -> Self {
        let mut context = Context::new();
        context.insert(replica.clone(), 0);
        let delta = Delta::empty_at(context.clone());
        Self {
            replica,
            context,
            clouds: Clouds::new(),
            table: Table::default(),
            replicas: BTreeMap::new(),
            delta,
            mutation: None,
            superseded_guard: false,
            keep_removed_dots: false,
            revision: Revision::default(),
            marks: Revision::default(),
        }
    }

    /// Plants a known bug (tests and `--mutate` only): the checkers must catch it.
    pub fn with_mutation(mut self, mutation: Option<Mutation>) -> Self {
        self.mutation = mutation;
        self
    }

    /// Turns on the fix for phoenix_pubsub #148 (off, as in Phoenix, by default). A replica
    /// writes one row per presence and every update gives it a newer dot, so a remote value
    /// whose dot is older than the row held here for the same `{topic, pid, key}` by the same
    /// replica is stale: a lagging node's full transfer carries it, and upstream admits it
    /// because only the context and the clouds are consulted, overwriting the newer meta (and
    /// later losing the presence, or keeping a ghost). With the guard such a value is refused
    /// and its dot recorded as seen, so no later merge admits it either.
    pub fn with_superseded_guard(mut self, on: bool) -> Self {
        self.superseded_guard = on;
        self
    }

    /// Turns on the fix for the second known convergence failure (off, as in Phoenix, by
    /// default). Upstream's merge deletes the dot of every remote value it removes from its
    /// clouds after the union, so the only trace of that remove left here is the later dot of
    /// the remove itself. A full transfer from here then carries the later dot without the
    /// removed one: a receiver that still holds the value advances its context over the remove
    /// without applying it and keeps a ghost that no clock comparison ever reveals. With this
    /// on, a removed remote dot stays in the cloud (seen, not held), so every transfer carries
    /// the remove; compaction folds it into the context like any other seen dot.
    pub fn with_removed_dots_kept(mut self, on: bool) -> Self {
        self.keep_removed_dots = on;
        self
    }

    /// Does this state hold a newer row of the same replica for the same presence?
    fn supersedes(&self, tag: &Tag, key: &ValueKey) -> bool {
        self.table.find(key).is_some_and(|id| {
            let row = self.table.row(id);
            *self.table.replica_of(row) == tag.replica && row.clock > tag.clock
        })
    }

    pub fn replica(&self) -> &ReplicaRef {
        &self.replica
    }

    /// The own clock: how many local events this replica has made.
    pub fn clock(&self) -> u64 {
        self.context.get(&self.replica).copied().unwrap_or(0)
    }

    /// The full causal context, down replicas included.
    pub fn context(&self) -> &Context {
        &self.context
    }

    pub fn clouds(&self) -> &Clouds {
        &self.clouds
    }

    /// The context as advertised in heartbeats and transfer requests: down replicas left out,
    /// so that nobody sends this replica values it would hide (phoenix_pubsub #136).
    pub fn clocks(&self) -> Context {
        self.context
            .iter()
            .filter(|(r, _)| self.replicas.get(*r) != Some(&Status::Down))
            .map(|(r, c)| (r.clone(), *c))
            .collect()
    }

    pub fn status(&self, replica: &ReplicaRef) -> Option<Status> {
        self.replicas.get(replica).copied()
    }

    /// Replicas currently marked down.
    pub fn down_replicas(&self) -> impl Iterator<Item = &ReplicaRef> {
        self.replicas
            .iter()
            .filter(|(_, s)| **s == Status::Down)
            .map(|(r, _)| r)
    }

    /// Is every row visible (no replica down, or down replicas not hidden)? Readers then skip
    /// the per-row check.
    fn all_visible(&self) -> bool {
        self.mutation == Some(Mutation::NeverHideDown)
            || !self.replicas.values().any(|s| *s == Status::Down)
    }

    fn hidden(&self, replica: &ReplicaRef) -> bool {
        self.mutation != Some(Mutation::NeverHideDown)
            && self.replicas.get(replica) == Some(&Status::Down)
    }

    /// Every visible value, sorted by tag.
    pub fn online(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.table.len());
        let all = self.all_visible();
        out.extend(
            self.table
                .in_tag_order(|r| !all && self.hidden(r))
                .map(|(r, row)| Value {
                    key: self.table.key_of(row),
                    meta: row.meta.clone(),
                    tag: Tag::new(r.clone(), row.clock),
                }),
        );
        out
    }

    /// Every value including those of down replicas (Phoenix's `dirty_list`), sorted by tag.
    pub fn all_values(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.table.len());
        out.extend(self.table.in_tag_order(|_| false).map(|(r, row)| Value {
            key: self.table.key_of(row),
            meta: row.meta.clone(),
            tag: Tag::new(r.clone(), row.clock),
        }));
        out
    }

    /// Every topic with a row (hidden ones included), in order, without copying any value.
    pub fn topics(&self) -> Vec<Name> {
        self.table.topics().cloned().collect()
    }

    /// Number of rows, hidden ones included.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// [`State::get_by_topic`] without copying keys or metas: the visible rows of a topic, in
    /// the same order, as `(key, meta, tag)`, borrowed (a reader that builds its own shape clones only what it keeps).
    pub fn visible_in_topic<'a>(
        &'a self,
        topic: &str,
    ) -> impl Iterator<Item = (&'a str, &'a Meta, Tag)> + use<'a> {
        self.table
            .rows_of_topic(topic)
            .filter(|row| !self.hidden(self.table.replica_of(row)))
            .map(|row| (row.key(), &row.meta, self.table.tag_of(row)))
    }

    /// The metas of a topic's visible rows, in `{pid, key}` order, borrowed, without reading
    /// any meta block (a meta's pid and key live in its block): a reader that keeps the list
    /// it rendered last finds what changed by comparing blocks by identity
    /// ([`Meta::same_block`]), and reads only the blocks of the rows that did.
    pub fn visible_metas_in_topic<'a>(
        &'a self,
        topic: &str,
    ) -> impl Iterator<Item = &'a Meta> + use<'a> {
        let all = self.all_visible();
        self.table
            .rows_of_topic(topic)
            .filter(move |row| all || !self.hidden(self.table.replica_of(row)))
            .map(|row| &row.meta)
    }

    /// [`State::visible_metas_in_topic`] with whether each row is this replica's own (its dot
    /// is this replica's), still without reading any meta block.
    pub fn visible_metas_in_topic_with_origin<'a>(
        &'a self,
        topic: &str,
    ) -> impl Iterator<Item = (&'a Meta, bool)> + use<'a> {
        let all = self.all_visible();
        self.table
            .rows_of_topic(topic)
            .filter(move |row| all || !self.hidden(self.table.replica_of(row)))
            .map(|row| (&row.meta, self.table.replica_of(row) == &self.replica))
    }

    /// Brings a topic's rows into the cache ahead of a walk of them (see
    /// [`State::visible_metas_in_topic_with_origin`]): at a few hundred rows a topic, spread
    /// over the table, each one read alone is a cache miss of its own.
    pub fn warm_topic_rows(&self, topic: &str) {
        self.table.warm_rows_of_topic(topic);
    }

    /// The visible presences of a topic, in `{pid, key}` order.
    pub fn get_by_topic(&self, topic: &str) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.table.topic_len(topic));
        let all = self.all_visible();
        out.extend(
            self.table
                .rows_of_topic_warmed(topic)
                .filter(|row| all || !self.hidden(self.table.replica_of(row)))
                .map(|row| Value {
                    key: self.table.key_of(row),
                    meta: row.meta.clone(),
                    tag: self.table.tag_of(row),
                }),
        );
        out
    }

    /// The visible presences of one key of a topic, in pid order: a scan of the topic's
    /// rows (ordered by pid, then key), as Phoenix's match on the ordered values table does.
    pub fn get_by_key(&self, topic: &str, key: &str) -> Vec<Value> {
        self.table
            .rows_of_topic(topic)
            .filter(|row| row.key() == key && !self.hidden(self.table.replica_of(row)))
            .map(|row| Value {
                key: self.table.key_of(row),
                meta: row.meta.clone(),
                tag: self.table.tag_of(row),
            })
            .collect()
    }

    /// Every value of a pid (any topic), in `{topic, key}` order.
    pub fn get_by_pid(&self, pid: &str) -> Vec<Value> {
        self.table
            .rows_of_pid(pid)
            .into_iter()
            .map(|id| self.table.value(id))
            .collect()
    }

    /// The value of exactly one `{topic, pid, key}`, hidden or not.
    pub fn get(&self, key: &ValueKey) -> Option<Value> {
        self.table.find(key).map(|id| self.table.value(id))
    }

    /// The pending delta, exactly as the next heartbeat would carry it.
    pub fn delta(&self) -> &Delta {
        &self.delta
    }

    /// A number that changes whenever what [`State::get_by_topic`], [`State::all_values`] and
    /// the other readers of rows could answer changes (and, conservatively, at times when it
    /// does not). Readers that sample a state often (a simulator's observer) compare it to skip
    /// rebuilding a list that cannot have changed.
    pub fn revision(&self) -> u64 {
        self.revision.0
    }

    /// Every topic in order, with a stamp that moves whenever a row of the topic is written
    /// or deleted, whatever wrote it (a local op, a merge, a transfer, a permdown): together
    /// with [`State::marks`], a reader that kept a topic's lists knows whether they can have
    /// changed without trusting anyone to have reported the change.
    pub fn topic_stamps(&self) -> impl Iterator<Item = (&Name, u64)> {
        self.table.topic_stamps()
    }

    /// A number that moves whenever a replica is marked up, down or forgotten (which shows or
    /// hides its rows in every topic without writing them).
    pub fn marks(&self) -> u64 {
        self.marks.0
    }

    pub fn has_delta(&self) -> bool {
        self.delta.has_changes()
    }

    // ---- table maintenance -------------------------------------------------------------

    fn insert_row(&mut self, key: ValueKey, meta: Meta, tag: Tag) {
        self.revision.bump();
        self.table.insert(key, meta, &tag);
    }

    fn delete_row(&mut self, key: &ValueKey) -> Option<Value> {
        let id = self.table.find(key)?;
        self.revision.bump();
        Some(self.table.remove(id))
    }

    /// One local event: advance the own clock and record the dot in the pending delta.
    fn bump(&mut self) -> Tag {
        let c = self.clock() + 1;
        self.context.insert(self.replica.clone(), c);
        let tag = Tag::new(self.replica.clone(), c);
        cloud_insert(&mut self.delta.clouds, &tag);
        self.delta.range.1.insert(self.replica.clone(), c);
        tag
    }

    /// Forget a removed dot locally (unless removed dots are kept) and tombstone it in the
    /// pending delta, so the next heartbeat tells peers it is gone.
    fn tombstone(&mut self, tag: &Tag) {
        if !self.keep_removed_dots || tag.replica == self.replica {
            cloud_remove(&mut self.clouds, tag);
        }
        self.delta.tombstone(tag);
    }

    // ---- local operations ----------------------------------------------------------------

    /// Tracks a presence (one clock tick). Refuses a `{topic, pid, key}` already held, as
    /// `Tracker.track` does.
    pub fn join(&mut self, key: ValueKey, meta: impl Into<Meta>) -> Result<Tag, TrackerError> {
        // One block for the row and the pending delta.
        let meta = meta.into().for_owner(&key.pid, &key.key);
        if self.table.find(&key).is_some() {
            return Err(TrackerError::AlreadyTracked(key));
        }
        let tag = self.bump();
        self.delta.values.insert(
            tag.clone(),
            TrackedMeta {
                key: key.clone(),
                meta: meta.clone(),
            },
        );
        self.insert_row(key, meta, tag.clone());
        Ok(tag)
    }

    /// Untracks one presence (one tick); a no-op returning `None` when it is not held.
    pub fn leave(&mut self, key: &ValueKey) -> Option<Value> {
        let row = self.delete_row(key)?;
        if self.mutation == Some(Mutation::LeaveLosesTombstone) {
            cloud_remove(&mut self.clouds, &row.tag);
        } else {
            self.tombstone(&row.tag);
        }
        self.bump();
        Some(row)
    }

    /// Untracks every presence of `pid` (one tick each), as when its process exits. Returns
    /// what was removed, in `{topic, key}` order.
    pub fn leave_pid(&mut self, pid: &str) -> Vec<Value> {
        let keys: Vec<ValueKey> = self
            .table
            .rows_of_pid(pid)
            .into_iter()
            .map(|id| self.table.key_of(self.table.row(id)))
            .collect();
        keys.into_iter().filter_map(|k| self.leave(&k)).collect()
    }

    /// Replaces a presence's meta atomically (`leave_join`, two ticks): the old dot is
    /// tombstoned, the row is overwritten in place with a new dot, so readers never see a gap.
    pub fn update(
        &mut self,
        key: &ValueKey,
        meta: impl Into<Meta>,
    ) -> Result<(Value, Tag), TrackerError> {
        let meta = meta.into().for_owner(&key.pid, &key.key);
        let Some(id) = self.table.find(key) else {
            return Err(TrackerError::NoPresence(key.clone()));
        };
        let old = self.table.value(id);
        if self.mutation == Some(Mutation::UpdateStaysLocal) {
            cloud_remove(&mut self.clouds, &old.tag);
            self.bump();
            let tag = self.bump();
            self.insert_row(key.clone(), meta, tag.clone());
            return Ok((old, tag));
        }
        self.tombstone(&old.tag);
        self.bump();
        let tag = self.bump();
        self.delta.values.insert(
            tag.clone(),
            TrackedMeta {
                key: key.clone(),
                meta: meta.clone(),
            },
        );
        self.insert_row(key.clone(), meta, tag.clone());
        Ok((old, tag))
    }

    // ---- heartbeat path ------------------------------------------------------------------

    /// After a heartbeat broadcast: start a new empty delta at the current own clock.
    pub fn reset_delta(&mut self) {
        let mut ctx = Context::new();
        ctx.insert(self.replica.clone(), self.clock());
        self.delta = Delta::empty_at(ctx);
    }

    /// Folds cloud dots that became contiguous into the context (and drops those already
    /// covered). Dots beyond a gap stay in the cloud until the gap is filled.
    ///
    /// A cloud is sorted, so only its start can fold: the walk stops at the first dot beyond a
    /// gap and the rest is split off as it is. A receiver waiting for a transfer with a large
    /// cloud behind a gap pays for the dots it folds, not for the whole cloud at every merge.
    pub fn compact(&mut self) {
        for (replica, cloud) in self.clouds.iter_mut() {
            let mut ctx = self.context.get(replica).copied();
            let mut gap_at = None;
            for &dot in cloud.iter() {
                match ctx {
                    None if dot == 1 => ctx = Some(1),
                    Some(c) if c + 1 == dot => ctx = Some(dot),
                    Some(c) if c >= dot => {}
                    _ => {
                        gap_at = Some(dot);
                        break;
                    }
                }
            }
            if let Some(c) = ctx {
                self.context.insert(replica.clone(), c);
            }
            *cloud = match gap_at {
                Some(dot) => cloud.split_off(&dot),
                None => BTreeSet::new(),
            };
        }
        self.clouds.retain(|_, c| !c.is_empty());
    }

    /// The heartbeat's bookkeeping after broadcasting the delta (`reset_delta |> compact`),
    /// only if there was one. Returns the delta that was pending.
    pub fn flush(&mut self) -> Option<Delta> {
        if !self.has_delta() {
            return None;
        }
        let mut ctx = Context::new();
        ctx.insert(self.replica.clone(), self.clock());
        let pending = std::mem::replace(&mut self.delta, Delta::empty_at(ctx));
        self.compact();
        Some(pending)
    }

    // ---- replication ---------------------------------------------------------------------

    /// Merges a peer's pending delta, as carried by a heartbeat.
    pub fn merge_delta(&mut self, delta: &Delta) -> Diff {
        self.merge_remote(&delta.values, &Context::new(), &delta.clouds)
    }

    /// Merges a full-state extract, as carried by a transfer.
    pub fn merge_extract(&mut self, extract: &Extract) -> Diff {
        self.merge_remote(&extract.values, &extract.context, &extract.clouds)
    }

    fn merge_remote(
        &mut self,
        remote_values: &impl RemoteValues,
        remote_context: &Context,
        remote_clouds: &Clouds,
    ) -> Diff {
        let ignore_clouds = self.mutation == Some(Mutation::MergeIgnoresClouds);
        // 1. Joins: values of replicas we know, whose dot we have not seen. Only our own
        //    context and clouds are consulted: the root of phoenix_pubsub #148, unless the
        //    guard refuses values a newer row of their replica supersedes.
        //    Values come in tag order, so the context and cloud of a replica are looked up
        //    once per run of its values.
        let mut superseded: Vec<Tag> = Vec::new();
        // Into an empty table (a first transfer) nearly every value joins: the list is sized
        // once instead of growing through a dozen copies, and the table is built in bulk from
        // what is gathered of each join as it is read.
        let (mut join_values, mut bulk): (Vec<Value>, _) = if self.table.is_empty() {
            let n = remote_values.count();
            (Vec::with_capacity(n), Some(BulkBuild::with_capacity(n)))
        } else {
            (Vec::new(), None)
        };
        let mut run: Option<ReplicaRun> = None;
        let mut runs = 0;
        // The meta blocks are read ahead a batch at a time, so that their cache misses overlap
        // instead of each stalling the reference count bump of its clone (see `warm`).
        let mut ahead = remote_values.entries();
        for (i, (t, p)) in remote_values.entries().enumerate() {
            if i % WARM_BATCH == 0 {
                warm_metas(ahead.by_ref().take(WARM_BATCH).map(|(_, p)| &p.meta));
            }
            let (ctx, cloud) = match run {
                Some((r, ctx, cloud))
                    if r.vsn == t.replica.vsn
                        && same_bytes(r.name.as_bytes(), t.replica.name.as_bytes()) =>
                {
                    (ctx, cloud)
                }
                _ => {
                    let ctx = self.context.get(&t.replica).copied();
                    let cloud = if ignore_clouds {
                        None
                    } else {
                        self.clouds.get(&t.replica)
                    };
                    run = Some((&t.replica, ctx, cloud));
                    runs += 1;
                    (ctx, cloud)
                }
            };
            // values of replicas we do not know are not ours to add
            let Some(ctx) = ctx else { continue };
            if ctx >= t.clock || cloud.is_some_and(|c| c.contains(&t.clock)) {
                continue;
            }
            if self.superseded_guard && self.supersedes(t, &p.key) {
                superseded.push(t.clone());
                continue;
            }
            join_values.push(Value {
                key: p.key.clone(),
                meta: p.meta.clone(),
                tag: t.clone(),
            });
            if let Some(b) = bulk.as_mut() {
                b.push(runs, t, p);
            }
        }

        // 2. Leaves: another replica's value we hold, which the remote has seen (context or
        //    cloud) but no longer holds. Candidates come from the remote's context ranges and
        //    cloud dots, looked up in the dot index instead of scanning every row.
        let mut leave_tags: BTreeMap<Tag, RowId> = BTreeMap::new();
        for (r, &c) in remote_context {
            if r == &self.replica || c == 0 {
                continue;
            }
            for (clock, id) in self.table.rows_of_replica(r, 1, c) {
                let t = Tag::new(r.clone(), clock);
                if !remote_values.has(&t) {
                    leave_tags.insert(t, id);
                }
            }
        }
        if !ignore_clouds {
            for (r, dots) in remote_clouds {
                if r == &self.replica {
                    continue;
                }
                for &d in dots {
                    let t = Tag::new(r.clone(), d);
                    if let Some(id) = self.table.find_dot(&t)
                        && !remote_values.has(&t)
                    {
                        leave_tags.insert(t, id);
                    }
                }
            }
        }

        // 3. Clouds: union, for replicas we know; a refused stale dot counts as seen.
        if !ignore_clouds {
            for (r, dots) in remote_clouds {
                if self.context.contains_key(r) {
                    self.clouds
                        .entry(r.clone())
                        .or_default()
                        .extend(dots.iter().copied());
                }
            }
        }
        for t in superseded {
            self.clouds.entry(t.replica).or_default().insert(t.clock);
        }

        // 4–5. Remove the leaves (relaying each as a tombstone in our own delta: removes
        //      travel through third parties), then insert the joins, overwriting in place.
        let mut leaves = Vec::with_capacity(leave_tags.len());
        for (t, id) in leave_tags {
            // The ids found above still name their rows: only clouds changed since.
            self.revision.bump();
            let value = self.table.remove(id);
            self.tombstone(&t);
            leaves.push(value);
        }
        if let Some(b) = bulk
            && self.table.build_in_bulk(b, &join_values)
        {
            self.revision.bump();
        } else {
            for v in &join_values {
                self.insert_row(v.key.clone(), v.meta.clone(), v.tag.clone());
            }
        }

        // 6. Context: upper bound with what the remote knows of replicas we know; compact.
        for (r, &c) in remote_context {
            if let Some(local) = self.context.get_mut(r) {
                *local = (*local).max(c);
            }
        }
        self.compact();
        Diff {
            joins: join_values,
            leaves,
        }
    }

    /// Everything a remote with `remote_context` can use: values of the replicas it knows
    /// (never its own), with our context and clouds restricted to those replicas.
    pub fn extract(&self, remote: &ReplicaRef, remote_context: &Context) -> Extract {
        // Tag order in, tag order out: the dot index is read in order into one vector.
        let mut values: Vec<(Tag, TrackedMeta)> = Vec::with_capacity(self.table.len());
        for r in remote_context.keys().filter(|r| *r != remote) {
            self.table.extract_rows_of(r, &mut values);
        }
        Extract {
            context: clock::filter_replicas(&self.context, remote_context.keys()),
            clouds: self
                .clouds
                .iter()
                .filter(|(r, _)| remote_context.contains_key(*r))
                .map(|(r, c)| (r.clone(), c.clone()))
                .collect(),
            values: TagValues::from_sorted_trusted(values),
        }
    }

    fn values_of(&self, replica: &ReplicaRef) -> Vec<Value> {
        self.table
            .rows_of_replica(replica, 0, u64::MAX)
            .map(|(_, id)| self.table.value(id))
            .collect()
    }

    /// Marks `replica` up (known at clock 0 if new). Reports every value held for it as a
    /// join, even if it was up already: State's up is not idempotent, and the shard relies on
    /// calling it only on transitions.
    pub fn replica_up(&mut self, replica: &ReplicaRef) -> Result<Diff, TrackerError> {
        if replica == &self.replica {
            return Err(TrackerError::OwnReplica(replica.clone()));
        }
        self.context.entry(replica.clone()).or_insert(0);
        self.replicas.insert(replica.clone(), Status::Up);
        self.revision.bump();
        self.marks.bump();
        Ok(Diff {
            joins: self.values_of(replica),
            leaves: Vec::new(),
        })
    }

    /// Marks `replica` down: its values are hidden, not deleted, and reported as leaves.
    pub fn replica_down(&mut self, replica: &ReplicaRef) -> Result<Diff, TrackerError> {
        if replica == &self.replica {
            return Err(TrackerError::OwnReplica(replica.clone()));
        }
        self.replicas.insert(replica.clone(), Status::Down);
        self.revision.bump();
        self.marks.bump();
        Ok(Diff {
            joins: Vec::new(),
            leaves: self.values_of(replica),
        })
    }

    /// Permdown: deletes everything of a down replica (context, clouds, rows, pending delta
    /// entries). Reports nothing: the leaves were reported when it went down.
    pub fn remove_down(&mut self, replica: &ReplicaRef) -> Result<(), TrackerError> {
        if self.replicas.get(replica) != Some(&Status::Down) {
            return Err(TrackerError::NotDown(replica.clone()));
        }
        self.context.remove(replica);
        self.clouds.remove(replica);
        let keys: Vec<ValueKey> = self
            .table
            .rows_of_replica(replica, 0, u64::MAX)
            .map(|(_, id)| self.table.key_of(self.table.row(id)))
            .collect();
        for k in keys {
            self.delete_row(&k);
        }
        self.delta.remove_replica(replica);
        Ok(())
    }

    /// Forgets a replica entirely from the status map (the shard does this after permdown,
    /// and a later heartbeat from it is then a brand-new replica).
    pub fn forget_status(&mut self, replica: &ReplicaRef) {
        if self.replicas.remove(replica).is_some() {
            self.revision.bump();
            self.marks.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Compaction by its definition: every dot of the cloud in ascending order either extends
    /// the context, is covered by it, or stays.
    fn compact_by_definition(
        ctx: Option<u64>,
        cloud: &BTreeSet<u64>,
    ) -> (Option<u64>, BTreeSet<u64>) {
        let mut ctx = ctx;
        let mut keep = BTreeSet::new();
        for &dot in cloud {
            match ctx {
                None if dot == 1 => ctx = Some(1),
                Some(c) if c + 1 == dot => ctx = Some(dot),
                Some(c) if c >= dot => {}
                _ => {
                    keep.insert(dot);
                }
            }
        }
        (ctx, keep)
    }

    fn key(i: usize) -> ValueKey {
        ValueKey::new(
            format!("room:{}", i % 3),
            format!("pid:{i}"),
            format!("user:{}", i % 5),
        )
    }

    /// `a`'s whole state transferred twice into fresh replicas of "b": once into an empty one
    /// (built in bulk), once with its first value merged alone so that the rest goes row by
    /// row. Returns both replicas and the joins each reported.
    fn bulk_and_row_by_row(a: &State) -> ((State, Vec<Value>), (State, Vec<Value>)) {
        let fresh = || {
            let mut b = State::new(ReplicaRef::new("b", 1));
            b.replica_up(a.replica()).unwrap();
            b
        };
        let mut bulk = fresh();
        let extract = a.extract(bulk.replica(), &bulk.clocks());
        let bulk_joins = bulk.merge_extract(&extract).joins;
        let mut one_by_one = fresh();
        let (t1, p1) = extract.values.iter().next().unwrap();
        let first = Extract {
            context: [(a.replica().clone(), t1.clock)].into_iter().collect(),
            clouds: Clouds::new(),
            values: [(t1.clone(), p1.clone())].into_iter().collect(),
        };
        let mut joins = one_by_one.merge_extract(&first).joins;
        joins.extend(one_by_one.merge_extract(&extract).joins);
        ((bulk, bulk_joins), (one_by_one, joins))
    }

    #[test]
    fn a_bulk_merge_builds_the_same_state_as_row_by_row_merges() {
        let mut a = State::new(ReplicaRef::new("a", 1));
        for i in 0..40 {
            a.join(key(i), serde_json::json!({ "i": i })).unwrap();
        }
        a.leave(&key(7));
        a.update(&key(9), serde_json::json!({"i": "new"})).unwrap();
        a.flush();
        let ((mut bulk, bulk_joins), (one_by_one, joins)) = bulk_and_row_by_row(&a);
        assert_eq!(bulk_joins.len(), 39);
        assert_eq!(bulk, one_by_one);
        assert_eq!(bulk_joins, joins);
        assert_eq!(bulk.topics(), one_by_one.topics());
        for t in bulk.topics() {
            assert_eq!(bulk.get_by_topic(&t), one_by_one.get_by_topic(&t));
        }
        assert_eq!(bulk.get_by_pid("pid:3"), one_by_one.get_by_pid("pid:3"));
        assert_eq!(
            bulk.get_by_key("room:1", "user:1"),
            a.get_by_key("room:1", "user:1")
        );

        // A topic leaves with its last row.
        for v in bulk.get_by_topic("room:2") {
            bulk.delete_row(&v.key);
        }
        assert_eq!(bulk.topics().len(), 2);
        assert_eq!(bulk.table.topic_len("room:2"), 0);
        assert_eq!(bulk.table.topic_len("room:0"), 14);
        assert_eq!(bulk.get_by_topic("room:1").len(), 12);
    }

    #[test]
    fn a_bulk_merge_leaves_duplicate_keys_to_the_row_by_row_path() {
        // Short names, and long ones that only the text beyond their sort keys tells apart.
        let long = |k: &str| {
            ValueKey::new(
                "room:a-topic-name-longer-than-sixteen-bytes",
                format!("a-long-pid-name-shared-prefix-{k}"),
                format!("a-long-key-name-shared-prefix-{k}"),
            )
        };
        for (dup, other) in [(key(1), key(4)), (long("x"), long("y"))] {
            let mut b = State::new(ReplicaRef::new("b", 1));
            let a = ReplicaRef::new("a", 1);
            b.replica_up(&a).unwrap();
            let p = |k: &ValueKey, v: i64| TrackedMeta {
                key: k.clone(),
                meta: serde_json::json!({ "v": v }).into(),
            };
            let extract = Extract {
                context: [(a.clone(), 3)].into_iter().collect(),
                clouds: Clouds::new(),
                values: [
                    (Tag::new(a.clone(), 1), p(&dup, 1)),
                    (Tag::new(a.clone(), 2), p(&other, 0)),
                    (Tag::new(a.clone(), 3), p(&dup, 2)),
                ]
                .into_iter()
                .collect(),
            };
            let diff = b.merge_extract(&extract);
            assert_eq!(diff.joins.len(), 3, "all reported, as row by row");
            assert_eq!(b.len(), 2);
            assert_eq!(b.get(&dup).unwrap().meta, serde_json::json!({"v": 2}));
            assert_eq!(b.all_values().len(), 2);
            assert_eq!(b.get_by_topic(&dup.topic).len(), 2);
        }
    }

    proptest! {
        /// A transfer into an empty replica (built in bulk) leaves the same state and reports
        /// the same joins as the same values merged row by row, whatever the names: long ones
        /// that share their first fifteen bytes (where the sort keys defer to the text), empty
        /// ones, and more topics than the bulk build's first topic table holds.
        #[test]
        fn a_bulk_merge_matches_row_by_row_merges_for_any_names(
            picks in proptest::collection::vec((0usize..80, 0usize..6, 0usize..6), 2..250),
        ) {
            const NAMES: [&str; 6] = [
                "",
                "p",
                "pid:10",
                "a-long-name-that-shares-its-prefix-1",
                "a-long-name-that-shares-its-prefix-2",
                "a-long-name-that-",
            ];
            let mut a = State::new(ReplicaRef::new("a", 1));
            for &(t, pid, k) in &picks {
                let key = ValueKey::new(format!("topic:{t}"), NAMES[pid], NAMES[k]);
                // a `{topic, pid, key}` picked twice is refused, as Phoenix refuses it
                let _ = a.join(key, serde_json::json!({ "t": t, "p": pid }));
            }
            let ((bulk, bulk_joins), (one_by_one, joins)) = bulk_and_row_by_row(&a);
            prop_assert_eq!(&bulk_joins, &joins);
            prop_assert_eq!(&bulk, &one_by_one);
            prop_assert_eq!(bulk.topics(), a.topics());
            for t in a.topics() {
                prop_assert_eq!(bulk.get_by_topic(&t), a.get_by_topic(&t));
            }
            for pid in NAMES {
                prop_assert_eq!(bulk.get_by_pid(pid), a.get_by_pid(pid));
            }
            for v in a.all_values() {
                prop_assert_eq!(bulk.get(&v.key).map(|w| w.meta), Some(v.meta));
            }
        }
    }

    /// The memory budget of issue 15 (at most 150 bytes per presence, Phoenix's ETS takes
    /// about 450) on the workload of `bench-tracker`: 100 000 local joins over 100 topics, one
    /// pid and key each, a 53-byte meta. The bench's counting allocator measures the same
    /// state; this account says where the bytes go.
    #[test]
    fn a_presence_costs_at_most_150_bytes_of_table() {
        let n = 100_000;
        let mut a = State::new(ReplicaRef::new("a", 1));
        for i in 0..n {
            let meta = format!(
                r#"{{"online_at":{},"phx_ref":"{:016x}"}}"#,
                1_750_000_000 + i,
                i * 7_919
            );
            a.join(
                ValueKey::new(
                    format!("room:{}", i % 100),
                    format!("pid:{i}"),
                    format!("user:{i}"),
                ),
                Meta::parse(&meta).unwrap(),
            )
            .unwrap();
        }
        a.flush();
        let parts = a.table.heap_account();
        let per = |b: usize| b as f64 / n as f64;
        let total: usize = parts.iter().sum();
        println!(
            "bytes per presence: slab {:.1}, meta blocks {:.1}, dot index {:.1}, topic index \
             {:.1}, pid index {:.1}, rest {:.2}; total {:.1}",
            per(parts[0]),
            per(parts[1]),
            per(parts[2]),
            per(parts[3]),
            per(parts[4]),
            per(parts[5]),
            per(total)
        );
        assert!(per(total) <= 150.0, "{} bytes per presence", per(total));
    }

    proptest! {
        #[test]
        fn compact_stops_at_the_first_gap_and_keeps_the_rest(
            ctx in proptest::option::of(0u64..20),
            cloud in proptest::collection::btree_set(1u64..40, 0..25),
        ) {
            let a = ReplicaRef::new("a", 1);
            let mut s = State::new(ReplicaRef::new("b", 1));
            match ctx {
                Some(c) => {
                    s.context.insert(a.clone(), c);
                }
                None => {
                    s.context.remove(&a);
                }
            }
            s.clouds.insert(a.clone(), cloud.clone());
            s.compact();
            let (want_ctx, want_cloud) = compact_by_definition(ctx, &cloud);
            prop_assert_eq!(s.context.get(&a).copied(), want_ctx);
            prop_assert_eq!(s.clouds.get(&a).cloned().unwrap_or_default(), want_cloud);
        }
    }
}
