//! `ghost` while the run goes: a presence whose owner is gone (no live node tracks it any
//! more), still listed by a node longer than the ghost bound after the later of the owner's exit
//! and the last scripted step.

use super::{Finding, FindingKind, GhostBound, Snapshot, finding};
use crate::snapshot::Name;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub(super) struct Ghosts {
    /// topic → the refs whose owner was live at the last observation.
    live: BTreeMap<String, BTreeSet<Name>>,
    /// topic → ref → when its owner was first seen gone (since it was last live).
    gone_at: BTreeMap<String, BTreeMap<Name, u64>>,
    reported: BTreeSet<(String, String, String)>,
}

impl Ghosts {
    /// Records when the live refs of `topic` go: a ref live at the last observation of the
    /// topic and not now is gone from now on, and a gone ref seen live again is no longer gone.
    pub(super) fn track_topic(&mut self, topic: &str, now: BTreeSet<Name>, at_ms: u64) {
        let was = self.live.remove(topic).unwrap_or_default();
        for rf in was.iter().filter(|r| !now.contains(*r)) {
            self.gone_at
                .entry(topic.to_owned())
                .or_default()
                .insert(rf.clone(), at_ms);
        }
        if let Some(g) = self.gone_at.get_mut(topic) {
            for rf in now.iter().filter(|r| !was.contains(*r)) {
                g.remove(rf);
            }
        }
        if !now.is_empty() {
            self.live.insert(topic.to_owned(), now);
        }
    }

    /// Reports every listed ref whose owner has been gone past the bound.
    pub(super) fn observe(&mut self, s: &Snapshot, bound: GhostBound, out: &mut Vec<Finding>) {
        // only topics with a gone ref are read: usually few of many
        for (topic, gone_in_topic) in self.gone_at.iter().filter(|(_, g)| !g.is_empty()) {
            for (node, ns) in &s.nodes {
                let Some(list) = ns.lists.get(topic.as_str()) else {
                    continue;
                };
                for (key, refs) in list.iter() {
                    for rf in refs.keys() {
                        if let Some(&gone) = gone_in_topic.get(rf)
                            && bound.passed(gone, s.at_ms)
                            && self
                                .reported
                                .insert((node.clone(), topic.clone(), rf.to_string()))
                        {
                            out.push(finding(
                                s.at_ms,
                                FindingKind::Ghost,
                                node,
                                format!(
                                    "{topic} {key}/{rf}: owner gone at {gone} ms, still listed"
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
}
