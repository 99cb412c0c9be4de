//! `expectation`: every `[[expect.visible]]` of the scenario must hold at some sample inside
//! its window (widened by one sampling interval, so that a window shorter than the interval
//! still holds a sample).

use super::{Finding, FindingKind, Snapshot, finding};
use crate::scenario::VisibleExpectation;

pub(super) struct Visible {
    /// Each expectation, and whether a sample met it.
    expectations: Vec<(VisibleExpectation, bool)>,
}

impl Visible {
    pub(super) fn new(expectations: Vec<VisibleExpectation>) -> Self {
        Self {
            expectations: expectations.into_iter().map(|v| (v, false)).collect(),
        }
    }

    pub(super) fn observe(&mut self, s: &Snapshot, sample_ms: u64) {
        for (v, met) in self.expectations.iter_mut() {
            if *met || s.at_ms < v.at_ms || s.at_ms > v.at_ms + v.within_ms + sample_ms {
                continue;
            }
            let Some(ns) = s.nodes.get(&v.node) else {
                continue;
            };
            let list = ns.lists.get(v.topic.as_str()).cloned().unwrap_or_default();
            let keys: Vec<&str> = list.keys().map(|k| k.as_str()).collect();
            let mut want: Vec<&str> = v.keys.iter().map(String::as_str).collect();
            want.sort();
            let metas_ok = v.meta.as_ref().is_none_or(|fields| {
                list.iter()
                    .filter(|(k, _)| v.meta_of.as_ref().is_none_or(|m| m == *k))
                    .all(|(_, refs)| {
                        refs.values().any(|meta| {
                            let meta = meta.to_json();
                            fields.iter().all(|(f, val)| meta.get(f) == Some(val))
                        })
                    })
            });
            if keys == want && metas_ok {
                *met = true;
            }
        }
    }

    /// Every expectation no sample met.
    pub(super) fn finish(&self, end: u64, out: &mut Vec<Finding>) {
        for (v, _) in self.expectations.iter().filter(|(_, met)| !met) {
            out.push(finding(
                end,
                FindingKind::Expectation,
                &v.node,
                format!(
                    "{} did not list exactly {:?}{} between {} and {} ms",
                    v.topic,
                    v.keys,
                    v.meta
                        .as_ref()
                        .map(|m| format!(" with meta {m:?}"))
                        .unwrap_or_default(),
                    v.at_ms,
                    v.at_ms + v.within_ms
                ),
            ));
        }
    }
}
