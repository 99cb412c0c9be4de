//! Coalescing a big topic's `presence_diff`s ([`super::Coalesce`]): while a diff of the topic
//! went out less than a window ago, later diffs are merged into one that goes out when the
//! window ends.
//!
//! Why: every change of a topic is a frame to every subscriber, so N sockets joining one topic
//! are N² frames (10⁸ for 10 000), which no server writes in seconds (Phoenix neither: it
//! sends one diff per track too). A merged diff carries the same changes in one frame.
//!
//! What a phoenix.js client sees: the same final state (`syncDiff` applies joins, then leaves,
//! and a join of a `phx_ref` it already holds or a leave of one it does not are harmless), but
//! fewer `onJoin`/`onLeave`/`onSync` calls, a presence that joined and left within one window
//! shows up in none of them, and `list()` orders the keys of one merged diff by key instead of
//! by arrival. A subscriber that joins during a window gets the pending diff too, including
//! changes already in its `presence_state`: that is the same harmless overlap.

use phxsim_shard::TrackerDiff;
use phxsim_shard::presence::phx_ref_of;
use serde_json::Value as Json;
use std::time::Duration;

/// How long a topic with `subscribers` waits between two diffs: the fan-out cost of a diff
/// grows with its subscribers, so small topics (conformance, the simulator's) see every diff
/// at once and only big ones are batched.
pub(crate) fn window(subscribers: usize, per_subscriber: Duration, max: Duration) -> Duration {
    let n = u32::try_from(subscribers).unwrap_or(u32::MAX);
    per_subscriber.saturating_mul(n).min(max)
}

/// Merges `next` (a later diff of the same topic) into `into`, so that applying `into` once
/// gives what applying both in order gives, from any state between the two.
///
/// A join of a `phx_ref` that left earlier in the batch takes the leave back (a replica that
/// came back up); a leave keeps the earlier join, so that a subscriber whose state already
/// holds the presence drops it too.
pub(crate) fn merge(into: &mut TrackerDiff, next: &TrackerDiff) {
    for (key, metas) in &next.joins {
        for meta in metas {
            let r = phx_ref_of(meta);
            if let Some(left) = into.leaves.get_mut(key) {
                left.retain(|m| !same_ref(r, m));
                if left.is_empty() {
                    into.leaves.remove(key);
                }
            }
            let joined = into.joins.entry(key.clone()).or_default();
            if !joined.iter().any(|m| same_ref(r, m)) {
                joined.push(meta.clone());
            }
        }
    }
    for (key, metas) in &next.leaves {
        for meta in metas {
            let r = phx_ref_of(meta);
            let left = into.leaves.entry(key.clone()).or_default();
            if !left.iter().any(|m| same_ref(r, m)) {
                left.push(meta.clone());
            }
        }
    }
}

/// A meta without a `phx_ref` is never taken for another.
fn same_ref(r: Option<&str>, m: &Json) -> bool {
    r.is_some() && phx_ref_of(m) == r
}

#[cfg(test)]
mod tests {
    use super::*;
    use phxsim_wire::sync::{sync_diff, sync_state};
    use phxsim_wire::{PresenceDiff, PresenceState, SyncState, list_by};
    use serde_json::json;
    use std::collections::BTreeMap;

    type List = BTreeMap<String, Vec<String>>;

    fn m(r: &str) -> Json {
        json!({"phx_ref": r})
    }

    fn diff(joins: &[(&str, &str)], leaves: &[(&str, &str)]) -> TrackerDiff {
        let mut d = TrackerDiff::default();
        for (k, r) in joins {
            d.joins.entry((*k).into()).or_default().push(m(r));
        }
        for (k, r) in leaves {
            d.leaves.entry((*k).into()).or_default().push(m(r));
        }
        d
    }

    /// The list a phoenix.js client holds after `syncDiff` of `d` (the project's exact port,
    /// `phxsim_wire::sync`), reduced to the refs of each key.
    fn apply(list: &mut List, d: &TrackerDiff) {
        let payload: serde_json::Map<String, Json> = list
            .iter()
            .map(|(k, refs)| {
                let metas: Vec<Json> = refs.iter().map(|r| m(r)).collect();
                (k.clone(), json!({ "metas": metas }))
            })
            .collect();
        let mut state = SyncState::default();
        let p = PresenceState::from_payload(Json::Object(payload)).expect("a valid state");
        sync_state(&mut state, p, &mut ());
        let diff = PresenceDiff::from_payload(d.to_json()).expect("a valid diff");
        sync_diff(&mut state, diff, &mut ());
        *list = list_by(&state, |k, p| {
            let refs = p
                .metas
                .iter()
                .filter_map(|m| m.phx_ref_str())
                .map(str::to_owned);
            (k.to_owned(), refs.collect())
        })
        .into_iter()
        .collect();
    }

    #[test]
    fn windows_grow_with_subscribers_up_to_the_cap() {
        let per = Duration::from_micros(5);
        let max = Duration::from_millis(50);
        assert_eq!(window(0, per, max), Duration::ZERO);
        assert_eq!(window(2, per, max), Duration::from_micros(10));
        assert_eq!(window(1000, per, max), Duration::from_millis(5));
        assert_eq!(window(1_000_000, per, max), max);
    }

    #[test]
    fn a_merged_diff_ends_where_the_sequence_ends_from_every_state_in_between() {
        // a: joins and leaves; b: leaves and comes back (a replica down, then up); c: updated
        // twice (leave + join with new refs); d: joins and stays.
        let seq = [
            diff(&[("a", "a1")], &[]),
            diff(&[], &[("b", "b1")]),
            diff(&[("c", "c2")], &[("c", "c1")]),
            diff(&[("b", "b1"), ("d", "d1")], &[]),
            diff(&[], &[("a", "a1")]),
            diff(&[("c", "c3")], &[("c", "c2")]),
        ];
        let mut start: List = BTreeMap::new();
        start.insert("b".into(), vec!["b1".into()]);
        start.insert("c".into(), vec!["c1".into()]);
        let mut merged = TrackerDiff::default();
        for d in &seq {
            merge(&mut merged, d);
        }
        // The states a subscriber may hold: the list before the batch, or after any prefix
        // of it (a presence_state taken mid-window).
        let mut truth = start.clone();
        let mut states = vec![start.clone()];
        for d in &seq {
            apply(&mut truth, d);
            states.push(truth.clone());
        }
        for s in states {
            let mut got = s.clone();
            apply(&mut got, &merged);
            assert_eq!(got, truth, "from {s:?}");
        }
        // A planted naive merge (union of joins and of leaves) fails it: b comes back up
        // and is then removed again.
        let mut naive = TrackerDiff::default();
        for d in &seq {
            for (k, v) in &d.joins {
                naive
                    .joins
                    .entry(k.clone())
                    .or_default()
                    .extend(v.iter().cloned());
            }
            for (k, v) in &d.leaves {
                naive
                    .leaves
                    .entry(k.clone())
                    .or_default()
                    .extend(v.iter().cloned());
            }
        }
        let mut got = start.clone();
        apply(&mut got, &naive);
        assert_ne!(got, truth);
    }
}
