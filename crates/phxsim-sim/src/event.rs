//! Every event of a run, typed: the one stream of a run. The harness, the client glue and the
//! lossy links emit each event once; the checkers read the stream as it goes, and the printed
//! kinds become the transcript, which the snapshot normalizer, the Perfetto trace and the
//! latency tool read back. On the wire (`--transcript FILE`, snapshots) each printed event is
//! one JSON line, `{"t": MS, "ev": KIND, ...fields}`, with the fields in the order declared
//! here. Two kinds are for the checkers only and never printed (see [`Event::is_printed`]):
//! a client's presence message, whose frame line already carries it, and a sampled
//! [`Snapshot`] of what every node lists, which is the checkers' view of the world and not an
//! event of the protocol (printing it would double the transcript and move every snapshot).

use crate::finding::FindingKind;
use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// One transcript event (without its time, see [`Line`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The first line: the scenario's title and every knob of the run, in knob order.
    Run {
        title: String,
        knobs: Map<String, Json>,
    },
    /// A node (re)starts as replica `vsn`.
    NodeStart {
        node: String,
        vsn: u64,
    },
    /// A `[[population]]` of the scenario (one line each, after `run`): its shape and the
    /// clients of it whose messages the checkers replay.
    Population {
        population: usize,
        count: usize,
        nodes: Vec<String>,
        topics: usize,
        join_ms: [u64; 2],
        leave_ms: Option<[u64; 2]>,
        replayed: Vec<String>,
        /// What its browsers talk to their nodes over.
        #[serde(default)]
        transport: crate::population::Transport,
    },
    /// A scripted step of the timeline, as [`crate::Action::label`] words it.
    Step {
        action: String,
    },
    /// A WebSocket frame a client sent (`dir` "out") or received ("in").
    Frame {
        client: String,
        dir: String,
        #[serde(flatten)]
        body: FrameBody,
    },
    /// A client's channel changed state.
    Channel {
        client: String,
        state: String,
        join_ref: Option<String>,
    },
    Connected {
        client: String,
    },
    Disconnected {
        client: String,
        reason: String,
        reconnect: bool,
    },
    /// A push of the client got no reply in time.
    Timeout {
        client: String,
        event: String,
    },
    ReplicaUp {
        node: String,
        remote: String,
        vsn: u64,
    },
    ReplicaDown {
        node: String,
        remote: String,
        vsn: u64,
    },
    ReplicaPermdown {
        node: String,
        remote: String,
        vsn: u64,
    },
    LinkUp {
        node: String,
        peer: String,
        vsn: u64,
    },
    LinkDown {
        node: String,
        peer: String,
        reason: String,
    },
    /// A node-to-node message left `from`.
    NodeSend {
        from: String,
        to: String,
        kind: String,
    },
    /// A node-to-node message reached `to`.
    NodeRecv {
        from: String,
        to: String,
        kind: String,
    },
    /// A lossy link lost a segment from `from` (a node, or a browser when `sender` is
    /// "browser"); its retransmissions add `delay_ms`.
    SegmentLost {
        sender: String,
        from: String,
        to: String,
        delay_ms: u64,
    },
    /// A checker's finding (written at the end of the run).
    Finding {
        kind: FindingKind,
        subject: String,
        detail: String,
    },
    /// A presence message (`presence_state` or `presence_diff`, as `event` says) a client
    /// whose messages the checkers replay received. Not printed: its frame line carries it.
    #[serde(skip)]
    Presence {
        client: String,
        event: String,
        payload: Json,
    },
    /// What every node lists and every client holds at one instant, sampled on simulated
    /// time for the checkers. Not printed (see the module doc).
    #[serde(skip)]
    Snapshot(Snapshot),
}

/// What a frame carried: text (with its Channels event name if it has one), or binary bytes
/// as hex.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FrameBody {
    Text { event: Option<String>, data: String },
    Binary { data_hex: String },
}

/// A transcript line: an event at `t` simulated milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub t: u64,
    #[serde(flatten)]
    pub event: Event,
}

impl Line {
    /// The line's JSON text, `t` first.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A transcript line read back; `None` for a line that is not one (a transcript is our own
    /// output, but a file may have been edited).
    pub fn parse(text: &str) -> Option<Line> {
        serde_json::from_str(text).ok()
    }
}

impl Event {
    /// The `ev` name of the event.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Run { .. } => "run",
            Event::NodeStart { .. } => "node_start",
            Event::Population { .. } => "population",
            Event::Step { .. } => "step",
            Event::Frame { .. } => "frame",
            Event::Channel { .. } => "channel",
            Event::Connected { .. } => "connected",
            Event::Disconnected { .. } => "disconnected",
            Event::Timeout { .. } => "timeout",
            Event::ReplicaUp { .. } => "replica_up",
            Event::ReplicaDown { .. } => "replica_down",
            Event::ReplicaPermdown { .. } => "replica_permdown",
            Event::LinkUp { .. } => "link_up",
            Event::LinkDown { .. } => "link_down",
            Event::NodeSend { .. } => "node_send",
            Event::NodeRecv { .. } => "node_recv",
            Event::SegmentLost { .. } => "segment_lost",
            Event::Finding { .. } => "finding",
            Event::Presence { .. } => "presence",
            Event::Snapshot(_) => "snapshot",
        }
    }

    /// Whether the transcript prints the event; the others feed the checkers only.
    pub fn is_printed(&self) -> bool {
        !matches!(self, Event::Presence { .. } | Event::Snapshot(_))
    }

    /// Whether the checkers read the event; a run without a transcript keeps only these.
    pub fn feeds_checkers(&self) -> bool {
        matches!(
            self,
            Event::Step { .. }
                | Event::Channel { .. }
                | Event::Presence { .. }
                | Event::Snapshot(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_writes_t_then_ev_then_the_fields_and_reads_back() {
        let lines = [
            Line {
                t: 7,
                event: Event::Frame {
                    client: "carol".into(),
                    dir: "in".into(),
                    body: FrameBody::Text {
                        event: None,
                        data: "x".into(),
                    },
                },
            },
            Line {
                t: 8,
                event: Event::Frame {
                    client: "carol".into(),
                    dir: "out".into(),
                    body: FrameBody::Binary {
                        data_hex: "00ff".into(),
                    },
                },
            },
            Line {
                t: 9,
                event: Event::Finding {
                    kind: FindingKind::StaleMeta,
                    subject: "a".into(),
                    detail: "d".into(),
                },
            },
        ];
        let text: Vec<String> = lines.iter().map(Line::to_json).collect();
        assert_eq!(
            text,
            [
                r#"{"t":7,"ev":"frame","client":"carol","dir":"in","event":null,"data":"x"}"#,
                r#"{"t":8,"ev":"frame","client":"carol","dir":"out","data_hex":"00ff"}"#,
                r#"{"t":9,"ev":"finding","kind":"stale_meta","subject":"a","detail":"d"}"#,
            ]
        );
        for (l, t) in lines.iter().zip(&text) {
            assert_eq!(Line::parse(t).as_ref(), Some(l));
        }
        assert_eq!(Line::parse(r#"{"t":1,"ev":"nope"}"#), None);
    }
}
