//! `ghost` while the run goes: a presence whose owner is gone (no live node tracks it any
//! more), still listed by a node longer than the ghost bound after the later of the owner's exit
//! and the last scripted step.

use super::{Finding, FindingKind, GhostBound, Snapshot, finding};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub(super) struct Ghosts {
    /// topic → the refs whose owner was live at the last observation.
    live: BTreeMap<String, BTreeSet<String>>,
    /// topic → ref → when its owner was first seen gone (since it was last live).
    gone_at: BTreeMap<String, BTreeMap<String, u64>>,
    reported: BTreeSet<(String, String, String)>,
}

impl Ghosts {
    /// Records when live refs go: a ref live at the last observation and not now is gone from
    /// now on, and a gone ref seen live again is no longer gone.
    pub(super) fn track_gone(&mut self, live: &BTreeMap<&str, BTreeSet<&str>>, at_ms: u64) {
        let empty = BTreeSet::new();
        for (topic, was) in &self.live {
            let now = live.get(topic.as_str()).unwrap_or(&empty);
            for rf in was.iter().filter(|r| !now.contains(r.as_str())) {
                self.gone_at
                    .entry(topic.clone())
                    .or_default()
                    .insert(rf.clone(), at_ms);
            }
        }
        let mut next: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (topic, now) in live {
            let mut was = self.live.remove(*topic).unwrap_or_default();
            was.retain(|r| now.contains(r.as_str()));
            for rf in now {
                if !was.contains(*rf) {
                    // only a ref that was not live can be marked gone
                    if let Some(g) = self.gone_at.get_mut(*topic) {
                        g.remove(*rf);
                    }
                    was.insert((*rf).to_owned());
                }
            }
            next.insert((*topic).to_owned(), was);
        }
        self.live = next;
    }

    /// Reports every listed ref whose owner has been gone past the bound.
    pub(super) fn observe(&mut self, s: &Snapshot, bound: GhostBound, out: &mut Vec<Finding>) {
        for (node, ns) in &s.nodes {
            for (topic, list) in &ns.lists {
                let Some(gone_in_topic) = self.gone_at.get(topic) else {
                    continue;
                };
                for (key, refs) in list.iter() {
                    for rf in refs.keys() {
                        if let Some(&gone) = gone_in_topic.get(rf)
                            && bound.passed(gone, s.at_ms)
                            && self
                                .reported
                                .insert((node.clone(), topic.clone(), rf.clone()))
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
