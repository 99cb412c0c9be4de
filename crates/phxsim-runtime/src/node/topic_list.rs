//! A topic's `presence_state` payload kept between joins and patched, instead of written anew
//! from the tracker's rows at every join.
//!
//! Why: in a join storm on one topic every join changes the topic, so each joiner's list is a
//! new one; rendered from scratch it read every row's meta block (cache misses), sorted the
//! presences by key and copied every meta text: about 300 ns per presence, 1 500 presences per
//! join on average in `pop_3000_one_topic`, which was most of the node's time.
//!
//! How: the last rendering keeps the metas it was made from, in the table's `{pid, key}` row
//! order. The next one walks the topic's visible rows in that order and pairs them with the
//! kept ones by block identity ([`Meta::same_block`]: a block is immutable, so the same block
//! renders the same), reading a block only where the two lists differ. Whatever differs is a
//! presence gone (left, replaced, hidden with its replica) or come (joined, updated, shown
//! again): visibility is read from the rows as the full rendering reads it, so replicas going
//! down, up or away need no event of their own. The new payload copies the old text of
//! every unchanged key in runs and writes only the changed keys.
//!
//! The result equals the full rendering byte for byte ([`full`]); debug builds check every
//! patch against it, and the tests below do over random histories.

use crate::state_frame::StatePayload;
use bytes::Bytes;
use phxsim_tracker::{Meta, Name, State};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Topics that list fewer keys than this keep no list between joins. A kept list costs about
/// 150 bytes per presence per node for as long as the topic has subscribers (its text, and the
/// metas it holds); a full rendering costs about 0.3 µs per presence. Below this size a join's
/// full rendering takes under 80 µs, and the 16-node shapes (16 to 160 presences per topic,
/// 1 000 topics on every node) would hold up to 400 MB of kept lists for almost no time saved.
pub(crate) const KEEP_FROM: usize = 256;

/// `topic`'s payload now: the kept list patched, if the topic has one; a big topic's first
/// rendering keeps one, and a topic that shrank well below [`KEEP_FROM`] drops it.
pub(crate) fn render(
    kept: &mut Option<TopicList>,
    state: &State,
    topic: &str,
) -> Arc<StatePayload> {
    if let Some(list) = kept {
        list.update(state, topic);
        let payload = list.payload();
        if payload.keys().len() < KEEP_FROM / 2 {
            *kept = None;
        }
        return payload;
    }
    let payload = full(state, topic);
    if payload.keys().len() < KEEP_FROM {
        return Arc::new(payload);
    }
    let mut list = TopicList::default();
    list.update(state, topic);
    let payload = list.payload();
    *kept = Some(list);
    payload
}

/// One topic's payload as last rendered, with what it was rendered from.
pub(crate) struct TopicList {
    /// The visible rows' metas, in the table's `{pid, key}` order.
    rows: Vec<Meta>,
    /// The same metas in list order: by key, then by pid.
    by_key: Vec<Meta>,
    /// Per key of the payload, in order: where its metas start in `by_key`.
    first: Vec<usize>,
    payload: Arc<StatePayload>,
}

impl Default for TopicList {
    fn default() -> Self {
        TopicList {
            rows: Vec::new(),
            by_key: Vec::new(),
            first: Vec::new(),
            payload: Arc::new(StatePayload::from_texts([])),
        }
    }
}

/// What changed for one key: the metas gone (as kept) and come (as the rows hold them), each
/// in pid order.
#[derive(Default)]
struct KeyChange<'a> {
    gone: Vec<&'a Meta>,
    come: Vec<&'a Meta>,
}

/// The pid and key of a block, in the order the table keeps a topic's rows (bytewise).
fn owner_order(a: &Meta, b: &Meta) -> Ordering {
    a.owner().cmp(&b.owner())
}

fn pid(m: &Meta) -> &str {
    m.owner().0
}

impl TopicList {
    /// The payload as last rendered.
    pub(crate) fn payload(&self) -> Arc<StatePayload> {
        Arc::clone(&self.payload)
    }

    /// How many presences the payload lists.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Brings the payload up to `topic`'s visible rows in `state`.
    pub(crate) fn update(&mut self, state: &State, topic: &str) {
        let old_rows = std::mem::take(&mut self.rows);
        let mut rows = Vec::with_capacity(old_rows.len() + 1);
        let (mut gone, mut come) = (Vec::new(), Vec::new());
        let mut old = old_rows.into_iter().peekable();
        for m in state.visible_metas_in_topic(topic) {
            loop {
                match old.peek() {
                    // the same block: unchanged, and no block read
                    Some(o) if o.same_block(m) => {
                        rows.extend(old.next());
                        break;
                    }
                    Some(o) => match owner_order(o, m) {
                        Ordering::Less => gone.extend(old.next()),
                        Ordering::Equal => {
                            // the same presence with another block: replaced
                            gone.extend(old.next());
                            come.push(m.clone());
                            rows.push(m.clone());
                            break;
                        }
                        Ordering::Greater => {
                            come.push(m.clone());
                            rows.push(m.clone());
                            break;
                        }
                    },
                    None => {
                        come.push(m.clone());
                        rows.push(m.clone());
                        break;
                    }
                }
            }
        }
        gone.extend(old);
        self.rows = rows;
        if gone.is_empty() && come.is_empty() {
            return;
        }
        // Grouped by key; within a key, in pid order (the rows' order).
        let mut changes: BTreeMap<&str, KeyChange> = BTreeMap::new();
        for m in &gone {
            changes.entry(m.owner().1).or_default().gone.push(m);
        }
        for m in &come {
            changes.entry(m.owner().1).or_default().come.push(m);
        }
        self.patch(&changes);
    }

    /// Writes the payload anew from the old one and the changed keys: the text of unchanged
    /// keys copied in runs, the changed ones written from their metas.
    fn patch(&mut self, changes: &BTreeMap<&str, KeyChange>) {
        let old = Arc::clone(&self.payload);
        let (old_text, old_keys) = (old.text(), old.keys());
        let old_by_key = std::mem::take(&mut self.by_key);
        let old_first = std::mem::take(&mut self.first);
        let old_total = old_by_key.len();
        let meta_end = |i: usize| old_first.get(i + 1).copied().unwrap_or(old_total);
        // Moved out in order: an unchanged meta's block is not touched (no count to bump).
        let mut old_metas = old_by_key.into_iter();

        let grown: usize = changes
            .values()
            .flat_map(|c| &c.come)
            .map(|m| m.as_str().len() + 16)
            .sum();
        let mut text: Vec<u8> = Vec::with_capacity(old_text.len() + grown);
        let mut keys = Vec::with_capacity(old_keys.len() + changes.len());
        let mut by_key: Vec<Meta> = Vec::with_capacity(self.rows.len());
        let mut first = Vec::with_capacity(old_keys.len() + changes.len());
        text.push(b'{');

        let mut changed = changes.iter().peekable();
        let mut i = 0;
        while i < old_keys.len() || changed.peek().is_some() {
            let next_change = changed.peek().map(|(k, _)| **k);
            let order = match (old_keys.get(i), next_change) {
                (Some((k, _, _)), Some(c)) => k.as_str().cmp(c),
                (Some(_), None) => Ordering::Less,
                (None, _) => Ordering::Greater,
            };
            match order {
                Ordering::Less => {
                    // A run of unchanged keys: one copy of their text, offsets moved.
                    let from = i;
                    while i < old_keys.len()
                        && next_change.is_none_or(|c| old_keys[i].0.as_str() < c)
                    {
                        i += 1;
                    }
                    if text.len() > 1 {
                        text.push(b',');
                    }
                    let (start, end) = (old_keys[from].1, old_keys[i - 1].2 + 2);
                    let dest = text.len();
                    text.extend_from_slice(&old_text[start..end]);
                    let base = by_key.len();
                    for j in from..i {
                        let (k, s, c) = &old_keys[j];
                        keys.push((k.clone(), s - start + dest, c - start + dest));
                        first.push(base + old_first[j] - old_first[from]);
                    }
                    by_key.extend(old_metas.by_ref().take(meta_end(i - 1) - old_first[from]));
                }
                Ordering::Equal | Ordering::Greater => {
                    let Some((key, change)) = changed.next() else {
                        break;
                    };
                    let kept: Vec<Meta> = if order == Ordering::Equal {
                        let n = meta_end(i) - old_first[i];
                        i += 1;
                        old_metas
                            .by_ref()
                            .take(n)
                            .filter(|m| !change.gone.iter().any(|g| g.same_block(m)))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let metas = merge_by_pid(kept, &change.come);
                    if metas.is_empty() {
                        continue;
                    }
                    if text.len() > 1 {
                        text.push(b',');
                    }
                    let start = text.len();
                    text.extend_from_slice(
                        serde_json::to_string(key).unwrap_or_default().as_bytes(),
                    );
                    text.extend_from_slice(b":{\"metas\":[");
                    for (j, m) in metas.iter().enumerate() {
                        if j > 0 {
                            text.push(b',');
                        }
                        text.extend_from_slice(m.as_str().as_bytes());
                    }
                    keys.push((Name::from(*key), start, text.len()));
                    text.extend_from_slice(b"]}");
                    first.push(by_key.len());
                    by_key.extend(metas);
                }
            }
        }
        text.push(b'}');
        self.by_key = by_key;
        self.first = first;
        self.payload = Arc::new(StatePayload::from_parts(Bytes::from(text), keys));
    }
}

/// One key's kept metas and its new ones, each in pid order, merged in pid order.
fn merge_by_pid(kept: Vec<Meta>, come: &[&Meta]) -> Vec<Meta> {
    if come.is_empty() {
        return kept;
    }
    let mut out = Vec::with_capacity(kept.len() + come.len());
    let mut come = come.iter().peekable();
    for m in kept {
        while let Some(c) = come.next_if(|c| pid(c) < pid(&m)) {
            out.push((*c).clone());
        }
        out.push(m);
    }
    out.extend(come.map(|c| (*c).clone()));
    out
}

/// The payload rendered from scratch from the rows: the metas' texts grouped by key in the
/// order `Tracker::list` gives (what [`TopicList::update`] must equal).
pub(crate) fn full(state: &State, topic: &str) -> StatePayload {
    let mut texts: Vec<(&str, &str)> = state
        .visible_in_topic(topic)
        .map(|(key, meta, _)| (key, meta.as_str()))
        .collect();
    // Stable: a key's metas keep the rows' (pid) order.
    texts.sort_by(|a, b| a.0.cmp(b.0));
    StatePayload::from_texts(texts)
}

#[cfg(test)]
mod tests {
    use super::super::random_history::{History, Op, op};
    use super::*;
    use phxsim_tracker::{Mutation, ReplicaRef, ValueKey};
    use proptest::prelude::*;
    use serde_json::json;

    fn meta(n: u8) -> serde_json::Value {
        json!({"phx_ref": format!("R{n}"), "n": n, "s": "\u{e9}\"\\"})
    }

    /// Runs a history, rendering the list at every `Check` (and at the end) both ways.
    fn check(ops: &[Op], mutation: Option<Mutation>) -> Result<(), TestCaseError> {
        let mut h = History::new(mutation);
        let mut list = TopicList::default();
        for op in ops.iter().chain([&Op::Check]) {
            if h.apply(op, meta) {
                list.update(&h.a, "t");
                let (got, want) = (list.payload(), full(&h.a, "t"));
                prop_assert_eq!(
                    String::from_utf8_lossy(got.text()),
                    String::from_utf8_lossy(want.text())
                );
                prop_assert_eq!(&*got, &want);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The patched payload is the full rendering, byte for byte and key for key, whatever
        /// happened between two joins: tracks, leaves, updates (several metas per key, keys
        /// and pids that need escaping or sort oddly), merges, transfers, replicas down, up,
        /// permanently down and restarted, and the planted bug that never hides a down replica.
        #[test]
        fn the_patched_payload_is_the_full_rendering(
            ops in proptest::collection::vec(op(), 0..80),
            never_hide in any::<bool>(),
        ) {
            let mutation = never_hide.then_some(Mutation::NeverHideDown);
            check(&ops, mutation)?;
        }
    }

    /// A topic keeps a list once it is big, patches it while it stays so, and drops it when
    /// it shrinks; every payload is the full rendering.
    #[test]
    fn only_big_topics_keep_a_list() {
        let mut a = State::new(ReplicaRef::new("a", 1));
        let mut kept = None;
        let key = |i: usize| ValueKey::new("t", format!("p{i:04}"), format!("user{i}"));
        for i in 0..KEEP_FROM + 10 {
            a.join(key(i), meta(i as u8)).unwrap();
            assert_eq!(*render(&mut kept, &a, "t"), full(&a, "t"));
            assert_eq!(kept.is_some(), i + 1 >= KEEP_FROM, "{i}");
        }
        for i in (0..KEEP_FROM + 10).rev() {
            a.leave(&key(i));
            assert_eq!(*render(&mut kept, &a, "t"), full(&a, "t"));
            assert_eq!(kept.is_some(), i >= KEEP_FROM / 2, "{i}");
        }
    }

    /// A join storm's shape: one key per joiner, every join rendered; the kept metas are the
    /// rows' own blocks, so nothing is copied per unchanged presence.
    #[test]
    fn a_join_storm_patches_one_key_per_join() {
        let mut a = State::new(ReplicaRef::new("a", 1));
        let mut list = TopicList::default();
        for i in (0..300).rev() {
            let key = ValueKey::new("t", format!("p{i:04}"), format!("user{i}"));
            a.join(key, meta(i as u8)).unwrap();
            list.update(&a, "t");
            assert_eq!(*list.payload(), full(&a, "t"));
        }
        let rows: Vec<&Meta> = a.visible_metas_in_topic("t").collect();
        assert_eq!(rows.len(), list.len());
        assert!(rows.iter().zip(&list.rows).all(|(r, k)| r.same_block(k)));
    }
}
