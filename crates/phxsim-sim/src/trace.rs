//! Chrome / Perfetto trace export of a run: open the JSON in `chrome://tracing` or
//! ui.perfetto.dev and a run becomes a timeline. Nodes and clients are tracks, node-to-node
//! messages are flow arrows from the sender's track to the receiver's, client frames and replica
//! changes are instants on their track, and faults and findings are global marks.
//!
//! Built from the transcript alone, so any recorded run (or a transcript file) can be turned
//! into a trace.

use crate::event::{Event, FrameBody, Line};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, VecDeque};

const NODES_PID: u64 = 1;
const CLIENTS_PID: u64 = 2;

/// Assigns a stable thread id to each node or client name, in order of appearance.
#[derive(Default)]
struct Tracks {
    ids: BTreeMap<(u64, String), u64>,
    next: u64,
}

impl Tracks {
    fn id(&mut self, pid: u64, name: &str) -> u64 {
        if let Some(&id) = self.ids.get(&(pid, name.to_owned())) {
            return id;
        }
        self.next += 1;
        self.ids.insert((pid, name.to_owned()), self.next);
        self.next
    }
}

fn us(t_ms: u64) -> u64 {
    t_ms * 1000
}

/// Converts transcript lines into a Chrome trace document. Lines that are not JSON objects
/// with a `t` are skipped (a transcript is our own output, but the file may have been edited).
pub fn chrome_trace<'a>(lines: impl IntoIterator<Item = &'a str>) -> Json {
    let mut tracks = Tracks::default();
    let mut out: Vec<Json> = Vec::new();
    // node_send waiting for their node_recv, per (from, to, kind), first in first out
    let mut in_flight: BTreeMap<(String, String, String), VecDeque<u64>> = BTreeMap::new();
    let mut next_flow = 0u64;
    for text in lines {
        let Some(line) = Line::parse(text) else {
            continue;
        };
        let t = line.t;
        let args = serde_json::to_value(&line).unwrap_or_default();
        match &line.event {
            Event::NodeSend { from, to, kind } | Event::NodeRecv { from, to, kind } => {
                let send = matches!(line.event, Event::NodeSend { .. });
                let key = (from.clone(), to.clone(), kind.clone());
                let (node, phase, id) = if send {
                    next_flow += 1;
                    in_flight.entry(key).or_default().push_back(next_flow);
                    (from, "s", next_flow)
                } else {
                    let Some(id) = in_flight.get_mut(&key).and_then(VecDeque::pop_front) else {
                        continue;
                    };
                    (to, "f", id)
                };
                let tid = tracks.id(NODES_PID, node);
                let name = format!("{kind} {from}→{to}");
                out.push(json!({"name": name, "cat": "node", "ph": "X", "ts": us(t), "dur": 200, "pid": NODES_PID, "tid": tid}));
                let mut flow = json!({"name": kind, "cat": "node", "ph": phase, "id": id, "ts": us(t), "pid": NODES_PID, "tid": tid});
                if phase == "f" {
                    flow["bp"] = json!("e");
                }
                out.push(flow);
            }
            Event::ReplicaUp { node, remote, .. }
            | Event::ReplicaDown { node, remote, .. }
            | Event::ReplicaPermdown { node, remote, .. }
            | Event::LinkUp {
                node, peer: remote, ..
            }
            | Event::LinkDown {
                node, peer: remote, ..
            } => {
                let tid = tracks.id(NODES_PID, node);
                let name = format!("{} {remote}", line.event.name());
                out.push(json!({"name": name, "cat": "replica", "ph": "i", "s": "t", "ts": us(t), "pid": NODES_PID, "tid": tid, "args": args}));
            }
            Event::NodeStart { node, .. } => {
                let tid = tracks.id(NODES_PID, node);
                out.push(json!({"name": "node_start ", "cat": "replica", "ph": "i", "s": "t", "ts": us(t), "pid": NODES_PID, "tid": tid, "args": args}));
            }
            Event::SegmentLost {
                sender,
                from,
                to,
                delay_ms,
            } => {
                // on the sender's track: a node's, or a browser's
                let pid = if sender == "browser" {
                    CLIENTS_PID
                } else {
                    NODES_PID
                };
                let tid = tracks.id(pid, from);
                let name = format!("segment lost {from}→{to} (+{delay_ms} ms)");
                out.push(json!({"name": name, "cat": "loss", "ph": "i", "s": "t", "ts": us(t), "pid": pid, "tid": tid, "args": args}));
            }
            Event::Frame { client, dir, body } => {
                let tid = tracks.id(CLIENTS_PID, client);
                let event = match body {
                    FrameBody::Text { event: Some(e), .. } => e.as_str(),
                    _ => "frame",
                };
                let name = format!("{dir} {event}");
                out.push(json!({"name": name, "cat": "frame", "ph": "i", "s": "t", "ts": us(t), "pid": CLIENTS_PID, "tid": tid, "args": args}));
            }
            Event::Step { action } => {
                out.push(json!({"name": action, "cat": "step", "ph": "i", "s": "g", "ts": us(t), "pid": NODES_PID, "tid": 0, "args": args}));
            }
            Event::Finding { kind, detail, .. } => {
                let name = format!("{kind}: {detail}");
                out.push(json!({"name": name, "cat": "finding", "ph": "i", "s": "g", "ts": us(t), "pid": NODES_PID, "tid": 0, "args": args}));
            }
            _ => {}
        }
    }
    // name the processes and tracks
    out.push(
        json!({"name": "process_name", "ph": "M", "pid": NODES_PID, "args": {"name": "nodes"}}),
    );
    out.push(
        json!({"name": "process_name", "ph": "M", "pid": CLIENTS_PID, "args": {"name": "clients"}}),
    );
    for ((pid, name), tid) in &tracks.ids {
        out.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}));
    }
    json!({"traceEvents": out, "displayTimeUnit": "ms"})
}
