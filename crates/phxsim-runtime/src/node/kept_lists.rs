//! A topic's sampled lists kept from one answer to a sampler to the next, and patched instead
//! of built anew from the tracker's rows.
//!
//! Why: at 160 presences per topic nearly every topic changes between two samples, and
//! building its two lists from the rows (every row's meta block read for its key and
//! `phx_ref`, the entries sorted, every name made) took a sixth of a 16 000-client run.
//!
//! How, as [`super::topic_list`] does for `presence_state` payloads: the kept lists come with
//! the rows they were built from, in the table's `{pid, key}` order, each with whether it is
//! this replica's own. The next answer walks the topic's visible rows in that order and pairs
//! them with the kept ones by block identity, reading a block only where the two differ.
//! Whatever differs is a row gone or come; visibility is read from the rows, so replicas
//! going down, up or away need no event of their own. Only the keys of those rows are built
//! again, from their rows now; every other key's entries are copied.
//!
//! A key's rows now are its kept rows minus the gone ones plus the new ones. The kept rows
//! are read back from the list itself: while every row gives an entry of its own (a
//! `phx_ref`, and no other row of its key with the same ref) the list holds every row's
//! meta. A topic where that does not hold (a meta without a ref, a ref twice under a key:
//! neither happens with Phoenix's own refs) is built whole at each change. Every topic that
//! lists something keeps its lists ([`KEEP_FROM`]).

use super::sampled::phx_ref;
use super::sampled_list::normalized;
use super::{SampledEntry, SampledList};
use phxsim_tracker::{Meta, Name, State, warm_metas};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// One topic's two lists as last answered, with what they were built from.
pub(crate) struct KeptLists {
    /// The visible rows' metas in the table's `{pid, key}` order, each with whether it is
    /// this replica's own.
    rows: Vec<(Meta, bool)>,
    /// `list(topic)`.
    list: SampledList,
    /// This replica's own presences of the topic.
    local: SampledList,
    /// Every row gave an entry of its own: `list` holds every row's meta (see the module).
    lossless: bool,
    /// A planted bug for the tests: a key with a row gone loses all its kept rows.
    #[cfg(test)]
    drop_key_on_leave: bool,
}

/// What changed for one key: the metas gone and the rows come (with whether each is own).
#[derive(Default)]
struct KeyChange<'a> {
    gone: Vec<&'a Meta>,
    come: Vec<(&'a Meta, bool)>,
}

/// Topics that list fewer entries than this keep no lists between answers: their lists are
/// built anew each time ([`build`]). One: every topic that lists something keeps them. Kept
/// lists cost about 70 bytes per presence per node (the node's own copy of the entries, and
/// the rows); at 160 presences per topic they saved 7 % of a 16 000-client run. Small topics
/// kept nothing once (64 and up only): at 16 per topic that was 3 % faster while every topic
/// was walked and built again whenever a replica went up or down. Since a topic asked again
/// without a change costs one walk of its rows ([`KeptLists::update`]), keeping small topics
/// too makes the 16-node split-and-heal runs faster (pop_16k: 189 whole answers, 101 000 of
/// their 133 000 topics unchanged; 232 000 topics with a diff, patched instead of built)
/// for a few MB (pop_16k: about 293 to 300 MB).
pub(crate) const KEEP_FROM: usize = 1;

/// `topic`'s two lists built from its visible rows in `state`, every key anew, nothing kept.
pub(crate) fn build(state: &State, topic: &str) -> (SampledList, SampledList) {
    // the rows' metas with their origin: no tag (a replica name) is made per row, and while
    // no replica is down no row's replica is looked up
    let (mut list, mut local) = (Vec::new(), Vec::new());
    for (meta, own) in state.visible_metas_in_topic_with_origin(topic) {
        let entry = entry(meta.owner().1, meta);
        if own {
            local.push(entry.clone());
        }
        list.push(entry);
    }
    (
        SampledList::from_sorted(normalized(list)),
        SampledList::from_sorted(normalized(local)),
    )
}

impl KeptLists {
    /// `topic`'s lists built from its visible rows in `state`.
    #[cfg(test)]
    pub(crate) fn build(state: &State, topic: &str) -> KeptLists {
        let (list, local) = build(state, topic);
        KeptLists::keep(state, topic, list, local)
    }

    /// Keeps `list` and `local`, `topic`'s lists in `state` as it is now, to patch them later.
    pub(crate) fn keep(
        state: &State,
        topic: &str,
        list: SampledList,
        local: SampledList,
    ) -> KeptLists {
        let rows: Vec<(Meta, bool)> = state
            .visible_metas_in_topic_with_origin(topic)
            .map(|(m, own)| (m.clone(), own))
            .collect();
        let entries = list.entries();
        let lossless = entries.len() == rows.len() && entries.iter().all(|e| e.1.is_some());
        KeptLists {
            rows,
            list,
            local,
            lossless,
            #[cfg(test)]
            drop_key_on_leave: false,
        }
    }

    /// How many entries `list` holds.
    pub(crate) fn len(&self) -> usize {
        self.list.entries().len()
    }

    /// Both lists, as last built or patched.
    pub(crate) fn lists(&self) -> (SampledList, SampledList) {
        (self.list.clone(), self.local.clone())
    }

    /// Builds both lists from `rows`, every key anew.
    fn build_lists(&mut self) {
        let (mut list, mut local) = (Vec::with_capacity(self.rows.len()), Vec::new());
        for (meta, own) in &self.rows {
            let entry = entry(meta.owner().1, meta);
            if *own {
                local.push(entry.clone());
            }
            list.push(entry);
        }
        let list = normalized(list);
        self.lossless = list.len() == self.rows.len() && list.iter().all(|e| e.1.is_some());
        self.list = SampledList::from_sorted(list);
        self.local = SampledList::from_sorted(normalized(local));
    }

    /// Brings both lists up to `topic`'s visible rows in `state`.
    ///
    /// The rows kept up to the first one that differs stay where they are: a topic asked again
    /// without a change (every topic, when a replica went up or down) costs one walk of its
    /// rows, with no block's count touched and nothing allocated.
    pub(crate) fn update(&mut self, state: &State, topic: &str) {
        // the walk reads every row with comparisons in between: read them all ahead first
        state.warm_topic_rows(topic);
        let mut now = state.visible_metas_in_topic_with_origin(topic).peekable();
        let mut same = 0;
        while let (Some((m, own)), Some((o, o_own))) = (now.peek(), self.rows.get(same)) {
            if !(o.same_block(m) && o_own == own) {
                break;
            }
            now.next();
            same += 1;
        }
        if same == self.rows.len() && now.peek().is_none() {
            return;
        }
        // the same rows are moved over, their blocks' counts untouched
        let mut rows = Vec::with_capacity(self.rows.len() + 1);
        let mut old = std::mem::take(&mut self.rows).into_iter();
        rows.extend(old.by_ref().take(same));
        let (mut gone, mut come) = (Vec::new(), Vec::new());
        let mut old = old.peekable();
        for (m, own) in now {
            loop {
                match old.peek() {
                    // the same block of the same replica: unchanged, and no block read
                    Some((o, o_own)) if o.same_block(m) && *o_own == own => {
                        rows.extend(old.next());
                        break;
                    }
                    Some((o, _)) => match o.owner().cmp(&m.owner()) {
                        Ordering::Less => gone.extend(old.next()),
                        Ordering::Equal => {
                            // the same presence with another block or replica: replaced
                            gone.extend(old.next());
                            come.push((m.clone(), own));
                            rows.push((m.clone(), own));
                            break;
                        }
                        Ordering::Greater => {
                            come.push((m.clone(), own));
                            rows.push((m.clone(), own));
                            break;
                        }
                    },
                    None => {
                        come.push((m.clone(), own));
                        rows.push((m.clone(), own));
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
        if !self.lossless {
            self.build_lists();
            return;
        }
        let mut changes: BTreeMap<&str, KeyChange> = BTreeMap::new();
        for (m, _) in &gone {
            changes.entry(m.owner().1).or_default().gone.push(m);
        }
        for (m, own) in &come {
            changes.entry(m.owner().1).or_default().come.push((m, *own));
        }
        self.patch(&changes);
    }

    /// Both lists with the changed keys built from their rows now and every other key's
    /// entries copied.
    fn patch(&mut self, changes: &BTreeMap<&str, KeyChange>) {
        let (old_list, old_local) = (self.list.entries(), self.local.entries());
        // Copying an entry counts one more reference on its meta block, an atomic add that
        // waits for its cache miss before the next can start: the blocks are read ahead in a
        // plain loop, whose misses overlap.
        warm_metas(
            old_list
                .iter()
                .filter_map(|(_, e)| e.as_ref().map(|(_, m)| m)),
        );
        let grown: usize = changes.values().map(|c| c.come.len()).sum();
        let mut list = Vec::with_capacity(old_list.len() + grown);
        let mut local = Vec::with_capacity(old_local.len() + grown);
        let (mut at_list, mut at_local) = (0, 0);
        let mut lossless = true;
        for (key, change) in changes {
            let in_list = key_range(old_list, at_list, key);
            let in_local = key_range(old_local, at_local, key);
            list.extend_from_slice(&old_list[at_list..in_list.start]);
            local.extend_from_slice(&old_local[at_local..in_local.start]);
            (at_list, at_local) = (in_list.end, in_local.end);
            let own_kept = &old_local[in_local];
            let is_own = |m: &Meta| {
                own_kept
                    .iter()
                    .any(|(_, e)| e.as_ref().is_some_and(|(_, o)| o.same_block(m)))
            };
            #[cfg(test)]
            let lose_all = self.drop_key_on_leave && !change.gone.is_empty();
            #[cfg(not(test))]
            let lose_all = false;
            // The key's rows now, in pid order (a topic's rows of one key differ by pid).
            let mut rows: Vec<(&Meta, bool)> = old_list[in_list]
                .iter()
                .filter_map(|(_, e)| e.as_ref().map(|(_, m)| m))
                .filter(|m| !lose_all && !change.gone.iter().any(|g| g.same_block(m)))
                .map(|m| (m, is_own(m)))
                .chain(change.come.iter().copied())
                .collect();
            rows.sort_by(|a, b| a.0.owner().0.cmp(b.0.owner().0));
            let entries = normalized(rows.iter().map(|(m, _)| entry(key, m)).collect());
            lossless &= entries.len() == rows.len() && entries.iter().all(|e| e.1.is_some());
            list.extend(entries);
            local.extend(normalized(
                rows.iter()
                    .filter(|(_, own)| *own)
                    .map(|(m, _)| entry(key, m))
                    .collect(),
            ));
        }
        list.extend_from_slice(&old_list[at_list..]);
        local.extend_from_slice(&old_local[at_local..]);
        self.lossless = lossless;
        self.list = SampledList::from_sorted(list);
        self.local = SampledList::from_sorted(local);
    }
}

/// Where `key`'s entries lie in `entries` (sorted by key), looking from `from` on.
fn key_range(entries: &[SampledEntry], from: usize, key: &str) -> std::ops::Range<usize> {
    let rest = &entries[from..];
    let start = from + rest.partition_point(|e| e.0.as_str() < key);
    let end = start + entries[start..].partition_point(|e| e.0.as_str() <= key);
    start..end
}

/// A row's entry: its key with its ref and meta, or the key alone if the meta has no ref.
fn entry(key: &str, meta: &Meta) -> SampledEntry {
    (Name::from(key), phx_ref(meta).map(|r| (r, meta.clone())))
}

#[cfg(test)]
mod tests {
    use super::super::random_history::{History, Op, op};
    use super::*;
    use phxsim_tracker::{Mutation, ReplicaRef, ValueKey};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::json;

    /// Meta `n`: mostly a ref of its own, sometimes a ref shared with other metas (`n` of
    /// 240 and up: a key's two rows may then hold one ref) or none (`n` under 8).
    fn meta(n: u8) -> serde_json::Value {
        match n {
            0..8 => json!({"n": n}),
            240.. => json!({"phx_ref": format!("S{}", n % 2), "n": n}),
            _ => json!({"phx_ref": format!("R{n}"), "n": n, "s": "\u{e9}\"\\"}),
        }
    }

    /// Runs a history on `a`, patching the kept lists of `t` at every `Check` (and at the
    /// end) and comparing them with lists built anew, text for text.
    fn check(ops: &[Op], mutation: Option<Mutation>, plant: bool) -> Result<(), TestCaseError> {
        let mut h = History::new(mutation);
        let mut kept = KeptLists::build(&h.a, "t");
        kept.drop_key_on_leave = plant;
        for op in ops.iter().chain([&Op::Check]) {
            if h.apply(op, meta) {
                kept.update(&h.a, "t");
                let fresh = KeptLists::build(&h.a, "t");
                let ((list, local), (want_list, want_local)) = (kept.lists(), fresh.lists());
                prop_assert!(list.same_text(&want_list), "{list:?}\n!= {want_list:?}");
                prop_assert!(local.same_text(&want_local), "{local:?}\n!= {want_local:?}");
                prop_assert_eq!(kept.lossless, fresh.lossless);
                prop_assert_eq!(kept.rows.len(), fresh.rows.len());
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The patched lists are the lists built anew, entry for entry and text for text,
        /// whatever happened between two samples: tracks, leaves, updates (several rows per
        /// key, metas without a ref or sharing one, names that sort oddly), merges,
        /// transfers, replicas down, up, permanently down and restarted, and the planted
        /// tracker bug that never hides a down replica.
        #[test]
        fn the_patched_lists_are_the_lists_built_anew(
            ops in proptest::collection::vec(op(), 0..80),
            never_hide in any::<bool>(),
        ) {
            let mutation = never_hide.then_some(Mutation::NeverHideDown);
            check(&ops, mutation, false)?;
        }
    }

    /// The comparison catches a patch that loses a key's other rows when one of them leaves
    /// (a user with two tabs closing one): random histories find it.
    #[test]
    fn a_planted_patch_bug_is_caught() {
        let mut runner = TestRunner::new(Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = proptest::collection::vec(op(), 0..80);
        let result = runner.run(&strategy, |ops| check(&ops, None, true));
        assert!(result.is_err(), "the planted bug went unnoticed");
    }

    /// The shape the patch exists for: two tabs of one user, one leaves; the other stays,
    /// and the rows kept are the table's own blocks.
    #[test]
    fn a_key_keeps_its_other_rows_when_one_leaves() {
        let mut a = State::new(ReplicaRef::new("a", 1));
        let key = |pid: &str| ValueKey::new("t", pid, "user1");
        a.join(key("p1"), json!({"phx_ref": "F1"})).unwrap();
        a.join(key("p2"), json!({"phx_ref": "F2"})).unwrap();
        let mut kept = KeptLists::build(&a, "t");
        assert!(kept.lossless);
        a.leave(&key("p1"));
        kept.update(&a, "t");
        let (list, local) = kept.lists();
        let refs: Vec<&str> = list
            .entries()
            .iter()
            .map(|e| e.1.as_ref().unwrap().0.as_str())
            .collect();
        assert_eq!(refs, ["F2"]);
        assert!(local.same_text(&list));
        let rows: Vec<&Meta> = a.visible_metas_in_topic("t").collect();
        assert!(
            rows.iter()
                .zip(&kept.rows)
                .all(|(r, (k, _))| r.same_block(k))
        );
    }
}
