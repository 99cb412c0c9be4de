//! The stable form of a transcript, for snapshots: `phx_ref`s (random per seed and per run of
//! the generator) become `<ref1>`, `<ref2>`… in order of first appearance, times are rounded
//! down to the scenario's broadcast period, and node-to-node chatter is left out, so a snapshot
//! changes only when behaviour on the wire does.

use crate::event::Line;
use std::collections::BTreeMap;

/// Event kinds a wire snapshot keeps.
const KEPT: [&str; 9] = [
    "frame",
    "segment_lost",
    "step",
    "replica_up",
    "replica_down",
    "replica_permdown",
    "finding",
    "channel",
    "node_start",
];

/// Finds every `phx_ref` / `phx_ref_prev` value in `text`, in order (escaped or not).
fn refs_in(text: &str, out: &mut Vec<String>) {
    for pat in [
        "phx_ref\\\":\\\"",
        "phx_ref_prev\\\":\\\"",
        "phx_ref\":\"",
        "phx_ref_prev\":\"",
    ] {
        let mut rest = text;
        while let Some(i) = rest.find(pat) {
            let after = &rest[i + pat.len()..];
            let end = after.find(['"', '\\']).unwrap_or(after.len());
            if end > 0 {
                out.push(after[..end].to_owned());
            }
            rest = &after[end..];
        }
    }
}

/// Normalizes transcript lines (JSON) into the snapshot text.
pub fn wire_snapshot(lines: &[String], tick_ms: u64) -> String {
    let tick = tick_ms.max(1);
    let kept: Vec<Line> = lines
        .iter()
        .filter_map(|l| Line::parse(l))
        .filter(|l| KEPT.contains(&l.event.name()))
        .collect();
    // placeholders in order of first appearance
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut order = Vec::new();
    let kept: Vec<(u64, String)> = kept.into_iter().map(|l| (l.t, l.to_json())).collect();
    for (_, l) in &kept {
        let mut found = Vec::new();
        refs_in(l, &mut found);
        for r in found {
            if !names.contains_key(&r) {
                names.insert(r.clone(), format!("<ref{}>", names.len() + 1));
                order.push(r);
            }
        }
    }
    // longest first, so that no ref is replaced inside another
    order.sort_by_key(|r| std::cmp::Reverse(r.len()));
    let mut out = String::new();
    for (t, l) in kept {
        // the time is the line's first field: rounding it leaves the rest as written
        let rounded = format!("{{\"t\":{}", t / tick * tick);
        let mut text = match l.strip_prefix(&format!("{{\"t\":{t}")) {
            Some(rest) => rounded + rest,
            None => l,
        };
        for r in &order {
            text = text.replace(r.as_str(), &names[r]);
        }
        out.push_str(&text);
        out.push('\n');
    }
    out
}
