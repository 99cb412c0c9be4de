//! What a node's last answer to a sampler held, so that the next answer carries only the
//! topics whose lists changed since. A simulator samples every node every few tens of
//! milliseconds; at a thousand topics, rebuilding every topic's lists each time a node's
//! revision moves cost most of a run.
//!
//! A topic's lists (`list` and `local_list`) are made of its visible rows: they change only
//! when a row of the topic is written or deleted, which moves the topic's stamp in the
//! tracker's table ([`phxsim_tracker::State::topic_stamps`]), or when a replica is marked up,
//! down or forgotten, which moves the state's marks ([`phxsim_tracker::State::marks`]) and
//! makes the next answer whole. Both are read off the state itself, not off what the tracker
//! reported: the sampler's lists are the checkers' ground truth, and a tracker bug that changed
//! rows without a `presence_diff` (exactly what the checkers exist to catch) must show in them.
//!
//! Each topic's lists are kept from one answer to the next and patched from the rows
//! ([`super::kept_lists`]), not built anew.

#[cfg(debug_assertions)]
use super::RefList;
use super::kept_lists::{self, KEEP_FROM, KeptLists};
use super::{ListsChange, SampledTopic, TopicSnapshot};
use phxsim_shard::Tracker;
use phxsim_tracker::{Meta, Name};
#[cfg(any(debug_assertions, test))]
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// Tracking starts with the first answer: a node nobody samples pays nothing per change.
pub(crate) struct Sampled {
    /// The revision of the last answer.
    revision: u64,
    /// Every topic of the last answer with its stamp, in order.
    topics: Vec<(Name, u64)>,
    /// The replicas' marks at the last answer (summed over the shards; each only grows).
    marks: u64,
    /// Every topic's lists as last answered, but those of topics that list nothing.
    kept: BTreeMap<Name, KeptLists>,
    /// Debug builds check that every topic left out is what the last answer held.
    #[cfg(debug_assertions)]
    lists:
        std::collections::BTreeMap<String, (phxsim_shard::TrackerList, phxsim_shard::TrackerList)>,
}

/// Every topic of every shard with its stamp, in order, each once: names held inline when
/// short, so that an answer allocates no string per topic.
fn topics(tracker: &Tracker) -> Vec<(Name, u64)> {
    let mut topics: Vec<(Name, u64)> = Vec::new();
    for shard in tracker.shards() {
        topics.extend(shard.state().topic_stamps().map(|(t, s)| (t.clone(), s)));
    }
    // one shard's topics come in order; several shards' are merged (a topic lives in one)
    if !topics.is_sorted_by(|a, b| a.0 <= b.0) {
        topics.sort_by(|a, b| a.0.cmp(&b.0));
        topics.dedup_by(|a, b| a.0 == b.0);
    }
    topics
}

/// The replicas' marks of every shard, summed: moves whenever one of them does.
fn marks(tracker: &Tracker) -> u64 {
    tracker
        .shards()
        .iter()
        .fold(0u64, |sum, s| sum.wrapping_add(s.state().marks()))
}

/// Answers a sampler that holds the lists of revision `since`, and remembers the answer in
/// `sampled` for the next one.
///
/// The topics now and the topics of the last answer are both in order: one walk of the two
/// finds the topics to answer (new ones, and those whose stamp moved), with no lookup per
/// topic (at a thousand topics and sixteen nodes, looking every topic up in sets cost more
/// than the lists of the few that changed).
pub(crate) fn answer(
    tracker: &Tracker,
    sampled: &mut Option<Sampled>,
    since: Option<u64>,
) -> (u64, ListsChange) {
    let revision = tracker.revision();
    // The revision only grows within an incarnation: equal means nothing changed since.
    if since == Some(revision) {
        return (revision, ListsChange::Same);
    }
    let topics = topics(tracker);
    let marks = marks(tracker);
    let mut last = sampled.take();
    // the kept lists move on into the new answer's record
    let mut kept = last
        .as_mut()
        .map(|l| std::mem::take(&mut l.kept))
        .unwrap_or_default();
    let mut lists = |topic: &Name| {
        let state = tracker.shards()[tracker.shard_index(topic)].state();
        // a topic's lists are patched from the last ones, those of a new topic built anew
        let (list, local) = match kept.get_mut(topic) {
            Some(k) => {
                k.update(state, topic);
                let lists = k.lists();
                if k.len() < KEEP_FROM {
                    kept.remove(topic);
                }
                lists
            }
            None => {
                let (list, local) = kept_lists::build(state, topic);
                if list.entries().len() >= KEEP_FROM {
                    let k = KeptLists::keep(state, topic, list.clone(), local.clone());
                    kept.insert(topic.clone(), k);
                }
                (list, local)
            }
        };
        #[cfg(debug_assertions)]
        {
            let (want, want_local) = tracker.list_and_local(topic);
            debug_assert!(
                list.same_as(&indexed(want)) && local.same_as(&indexed(want_local)),
                "{topic}: the patched lists differ from list_and_local's"
            );
        }
        SampledTopic {
            topic: topic.clone(),
            list,
            local,
        }
    };
    let change = match &last {
        Some(last) if Some(last.revision) == since && last.marks == marks => {
            let (mut changed, mut removed) = (Vec::new(), Vec::new());
            let mut before = last.topics.iter().peekable();
            for (t, stamp) in &topics {
                // the last answer's topics before this one are gone
                while let Some((gone, _)) = before.next_if(|b| b.0 < *t) {
                    removed.push(gone.clone());
                }
                let was = before.next_if(|b| b.0 == *t).map(|b| b.1);
                if was != Some(*stamp) {
                    changed.push(lists(t));
                }
            }
            removed.extend(before.map(|b| b.0.clone()));
            // the stamps themselves are checked: a topic left out holds what it held
            #[cfg(debug_assertions)]
            for (t, _) in topics
                .iter()
                .filter(|t| last.topics.binary_search(t).is_ok())
            {
                debug_assert!(
                    last.lists.get(t.as_str()) == Some(&tracker.list_and_local(t)),
                    "{t} changed and its stamp did not move"
                );
            }
            for gone in &removed {
                kept.remove(gone);
            }
            ListsChange::Some { changed, removed }
        }
        _ => {
            let all = ListsChange::All(topics.iter().map(|(t, _)| lists(t)).collect());
            // the lists of topics gone are forgotten
            kept.retain(|t, _| topics.binary_search_by(|x| x.0.cmp(t)).is_ok());
            all
        }
    };
    *sampled = Some(Sampled {
        revision,
        #[cfg(debug_assertions)]
        lists: topics
            .iter()
            .map(|(t, _)| (t.to_string(), tracker.list_and_local(t)))
            .collect(),
        topics,
        marks,
        kept,
    });
    (revision, change)
}

/// Every topic with its two lists, as [`super::Node::snapshot`] answers.
pub(crate) fn snapshot(tracker: &Tracker) -> Vec<TopicSnapshot> {
    tracker
        .topics()
        .into_iter()
        .map(|topic| {
            let (list, local) = tracker.list_and_local(&topic);
            TopicSnapshot { topic, list, local }
        })
        .collect()
}

/// `meta.to_json().get("phx_ref").and_then(Json::as_str)`, as a [`Name`], without the JSON
/// tree: the text is walked once, every other field skipped, and the ref's string is read
/// where it lies (parsed only if it holds an escape). As for a parsed object, the last of
/// duplicate `phx_ref` fields counts.
pub(crate) fn phx_ref(meta: &Meta) -> Option<Name> {
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::value::RawValue;
    use std::fmt;

    /// A field name: whether it is `phx_ref`, read without allocating.
    struct IsRef(bool);
    impl<'de> de::Deserialize<'de> for IsRef {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = IsRef;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<IsRef, E> {
                    Ok(IsRef(v == "phx_ref"))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// A JSON value's text as a string, if it is one.
    fn string(raw: &RawValue) -> Option<Name> {
        let text = raw.get();
        let inner = text.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            serde_json::from_str::<String>(text).ok().map(Name::from)
        } else {
            Some(Name::from(inner))
        }
    }

    /// The object's last `phx_ref` field, if it is a string.
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Option<Name>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(IsRef(is_ref)) = map.next_key()? {
                if is_ref {
                    found = string(map.next_value::<&RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut text = serde_json::Deserializer::from_str(meta.as_str());
    // a meta's text is always one JSON object; anything else has no ref
    text.deserialize_map(Fields).ok().flatten()
}

/// What [`by_ref`] must equal: the grouped list, each key's metas indexed by `phx_ref`.
#[cfg(debug_assertions)]
fn indexed(list: phxsim_shard::TrackerList) -> RefList {
    let mut out = RefList::new();
    for (key, metas) in list.0 {
        let refs = out.entry(Name::from(key)).or_default();
        for m in metas {
            if let Some(r) = m.get("phx_ref").and_then(Json::as_str) {
                refs.insert(Name::from(r), Meta::new(m));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::SampledList;
    use phxsim_shard::TrackerConfig;
    use proptest::prelude::*;
    use serde_json::json;

    /// What a sampler holds: every topic's two lists, from the last whole answer with every
    /// later answer applied.
    type Held = BTreeMap<Name, (SampledList, SampledList)>;

    /// Applies an answer to what a sampler holds, as `phxsim_sim::sampler` does.
    fn apply(held: &mut Held, change: ListsChange) {
        match change {
            ListsChange::Same => {}
            ListsChange::All(topics) => {
                held.clear();
                held.extend(topics.into_iter().map(|t| (t.topic, (t.list, t.local))));
            }
            ListsChange::Some { changed, removed } => {
                for t in &removed {
                    held.remove(t);
                }
                held.extend(changed.into_iter().map(|t| (t.topic, (t.list, t.local))));
            }
        }
    }

    /// One step: a track, untrack or update of (topic, owner, key) with meta `n`, or an answer.
    fn step() -> impl Strategy<Value = (u8, usize, usize, usize, u8)> {
        (0..5u8, 0..12usize, 0..3usize, 0..2usize, any::<u8>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Answers that carry only the topics moved since the last one add up, at every
        /// answer, to the lists a whole answer gives (the topics in order, each list text for
        /// text): over topics of one shard or spread over several (whose topic lists are
        /// merged), topics appearing and emptying, lists kept and patched or built anew.
        #[test]
        fn answers_since_the_last_add_up_to_a_whole_answer(
            steps in proptest::collection::vec(step(), 0..150),
            pool_size in 1..4u32,
        ) {
            let cfg = TrackerConfig { pool_size, ..TrackerConfig::default() };
            let mut tracker = Tracker::new(cfg, "n", 1, 0, 7).unwrap();
            let (mut sampled, mut held, mut since) = (None::<Sampled>, Held::new(), None);
            for (i, &(op, topic, owner, key, n)) in steps.iter().enumerate() {
                let (topic, owner, key) = (format!("topic{topic}"), format!("o{owner}"), format!("k{key}"));
                let meta = json!({"n": n, "s": "x".repeat(usize::from(n % 3) * 20)});
                let meta = meta.as_object().unwrap();
                // refusals (a track already made, an update of nothing) change nothing
                let _ = match op {
                    0 | 1 => tracker.track(&owner, &topic, &key, meta).map(drop),
                    2 => tracker.untrack(&owner, &topic, &key),
                    3 => tracker.update(&owner, &topic, &key, meta).map(drop),
                    _ => Ok(()),
                };
                // nothing tells the record what changed: it reads the stamps
                while tracker.poll_event().is_some() {}
                if op == 4 || i + 1 == steps.len() {
                    let (revision, change) = answer(&tracker, &mut sampled, since);
                    apply(&mut held, change);
                    since = Some(revision);
                    let (_, ListsChange::All(whole)) = answer(&tracker, &mut None, None) else {
                        panic!("a first answer is whole");
                    };
                    prop_assert_eq!(held.len(), whole.len());
                    for (t, (list, local)) in whole.iter().map(|t| (&t.topic, (&t.list, &t.local))) {
                        let Some((l, o)) = held.get(t) else {
                            return Err(TestCaseError::fail(format!("{t} missing")));
                        };
                        prop_assert!(l.same_text(list) && o.same_text(local), "{}: {:?} != {:?}", t, l, list);
                    }
                }
            }
        }
    }

    /// The ref read from the text is the one the parsed object gives, in every shape.
    #[test]
    fn phx_ref_reads_what_the_parsed_meta_holds() {
        let texts = [
            r#"{"phx_ref":"F1","online_at":1}"#,
            r#"{"a":{"phx_ref":"inner"},"phx_ref":"outer","b":[1,"x",{"c":null}]}"#,
            r#"{"phx_ref":"first","phx_ref":"last"}"#,
            r#"{"phx_ref":"str","phx_ref":7}"#,
            r#"{"phx_ref":"esc\"aped\u00e9"}"#,
            r#"{"phx_ref":null}"#,
            r#"{"nested":{"phx_ref":"no"}}"#,
            r#"{}"#,
            r#" { "phx_ref" : "spaced" } "#,
            r#"{"phx_ref":"a ref longer than the twenty-two bytes held inline"}"#,
            r#"{"phx_ref":"\\"}"#,
        ];
        for text in texts {
            let meta = Meta::parse(text).unwrap();
            let want = meta
                .to_json()
                .get("phx_ref")
                .and_then(Json::as_str)
                .map(Name::from);
            assert_eq!(phx_ref(&meta), want, "{text}");
        }
        assert_eq!(
            phx_ref(&Meta::new(json!({"phx_ref": "R"}))).as_deref(),
            Some("R")
        );
        // a meta that is no object (the tracker keeps what it is given) has no ref
        assert_eq!(phx_ref(&Meta::new(json!(["phx_ref", "R"]))), None);
    }
}
