//! Checkers: passive readers of a run's one event stream ([`Event`]). Of it they read the
//! scripted steps, the sampled snapshots of what every node lists and every client sees, and
//! the replayed clients' channel states and presence messages as they arrive; they report
//! findings. Pure: no I/O, no clock, deterministic order.
//!
//! One module per checker, each owning its state: [`convergence`] (`no_convergence`),
//! [`ghost`] (`ghost` while the run goes), [`sockets`] (`ghost` by socket truth),
//! [`diff_stream`] (`diff_stream`, `duplicate_join`, `duplicate_leave`), [`end_state`]
//! (`lost`, `stale_meta`, `ghost` and `client_view` at the end) and [`visible`]
//! (`expectation`). [`Checkers`] feeds them in order and collects what they find.

mod agreement;
mod convergence;
mod diff_stream;
mod end_state;
mod ghost;
mod sockets;
mod truth;
mod visible;

use crate::event::Event;
use crate::scenario::VisibleExpectation;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use crate::finding::{Finding, FindingKind};
pub use crate::snapshot::{
    ClientSnapshot, NodeList, NodeSnapshot, PresenceList, Snapshot, presence_list,
};
pub use diff_stream::list_of_instance;

/// A presence message as one client received it, read from the stream.
#[derive(Clone, Debug, PartialEq)]
enum ClientMessage {
    /// The channel (re)joined with this join_ref.
    Joined(String),
    State(Json),
    Diff(Json),
}

/// Bounds the checkers judge by, derived from the tracker settings.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// After the last step, the cluster must agree within this.
    pub convergence_ms: u64,
    /// A gone owner's presence may stay visible at most this long.
    pub ghost_ms: u64,
    /// How long a healed link may take to carry heartbeats again (a stalled stream's idle
    /// timeout, then redials): after a step that reopens links, a ghost bound starts only
    /// once this has passed, as the convergence bound does.
    pub link_recovery_ms: u64,
    /// Sampling interval: an `[[expect.visible]]` window is widened by it, so that a window
    /// shorter than the interval still contains a sample.
    pub sample_ms: u64,
}

/// When a gone owner's presence has been listed too long: the bound runs from the later of
/// the owner's exit and the last scripted step (while faults and heals are still settling,
/// Phoenix legitimately shows a down replica's stale values again at replica_up until a
/// transfer removes them; a ghost is one that outlives the settling).
#[derive(Clone, Copy, Debug)]
pub(super) struct GhostBound {
    last_step_ms: u64,
    ghost_ms: u64,
    /// When links may carry heartbeats again after the last step that reopened them (a heal,
    /// a repair, a release, a restart): until then, a replica cut off before the step may
    /// still list what its peer has dropped.
    links_back_ms: u64,
}

impl GhostBound {
    /// Whether something gone at `gone_ms` and still there at `now_ms` is a ghost.
    pub(super) fn passed(self, gone_ms: u64, now_ms: u64) -> bool {
        now_ms > gone_ms.max(self.last_step_ms).max(self.links_back_ms) + self.ghost_ms
    }
}

/// Whether a timeline step, as [`crate::Action::label`] words it, reopens node links that
/// may have stalled: the checkers read steps from the event stream, where only the label
/// travels. `Action::reopens_links` is the typed twin; a test keeps the two in step.
pub fn step_reopens_links(label: &str) -> bool {
    matches!(
        label.split_whitespace().next(),
        Some("heal" | "repair" | "release" | "restart")
    )
}

/// The checkers of one run.
pub struct Checkers {
    bounds: Bounds,
    findings: Vec<Finding>,
    convergence: convergence::Convergence,
    agreement: agreement::Agreement,
    ghosts: ghost::Ghosts,
    sockets: sockets::SocketTruth,
    streams: diff_stream::DiffStreams,
    visible: visible::Visible,
    last_step_ms: u64,
    /// See [`GhostBound::links_back_ms`].
    links_back_ms: u64,
    last: Option<Snapshot>,
    /// The clients whose messages are replayed; `None`: every client.
    replayed: Option<BTreeSet<String>>,
}

/// A finding of `kind` about `subject` at `at_ms`.
fn finding(at_ms: u64, kind: FindingKind, subject: &str, detail: String) -> Finding {
    Finding {
        at_ms,
        kind,
        subject: subject.to_owned(),
        detail,
    }
}

impl Checkers {
    pub fn new(bounds: Bounds, visible: Vec<VisibleExpectation>) -> Self {
        Self {
            bounds,
            findings: Vec::new(),
            convergence: convergence::Convergence::default(),
            agreement: agreement::Agreement::default(),
            ghosts: ghost::Ghosts::default(),
            sockets: sockets::SocketTruth::default(),
            streams: diff_stream::DiffStreams::default(),
            visible: visible::Visible::new(visible),
            last_step_ms: 0,
            links_back_ms: 0,
            last: None,
            replayed: None,
        }
    }

    /// Replays the messages of these clients only (a sample of a population); the default is
    /// every client.
    pub fn replaying(mut self, clients: Option<BTreeSet<String>>) -> Self {
        self.replayed = clients;
        self
    }

    /// Reads the next event of the run's stream, emitted at `at_ms`; kinds the checkers do not
    /// read pass by.
    pub fn event(&mut self, at_ms: u64, event: Event) {
        match event {
            Event::Step { action } => {
                if step_reopens_links(&action) {
                    self.links_back_ms = at_ms + self.bounds.link_recovery_ms;
                }
                self.step(at_ms)
            }
            Event::Snapshot(snapshot) => self.observe(snapshot),
            Event::Channel {
                client,
                state,
                join_ref,
            } if state == "Joined" && self.replays(&client) => {
                let msg = ClientMessage::Joined(join_ref.unwrap_or_default());
                self.streams
                    .message(at_ms, &client, msg, &mut self.findings);
            }
            Event::Presence {
                client,
                event,
                payload,
            } if self.replays(&client) => {
                let msg = if event == "presence_state" {
                    ClientMessage::State(payload)
                } else {
                    ClientMessage::Diff(payload)
                };
                self.streams
                    .message(at_ms, &client, msg, &mut self.findings);
            }
            _ => {}
        }
    }

    fn replays(&self, client: &str) -> bool {
        self.replayed.as_ref().is_none_or(|r| r.contains(client))
    }

    /// A scripted step or fault happened: the convergence clock restarts.
    fn step(&mut self, at_ms: u64) {
        self.last_step_ms = at_ms;
        self.convergence.step();
    }

    /// Observes the world at one instant.
    fn observe(&mut self, snapshot: Snapshot) {
        let s = &snapshot;
        // The same nodes handing in the same lists as last time: the truth, the live refs and
        // the agreement are what they were. Only what depends on time is judged again.
        let unchanged = self.last.as_ref().is_some_and(|last| {
            last.nodes.len() == s.nodes.len()
                && last
                    .nodes
                    .iter()
                    .zip(&s.nodes)
                    .all(|((n1, a), (n2, b))| n1 == n2 && Arc::ptr_eq(a, b))
        });
        let agree = if unchanged {
            self.convergence.last_agree()
        } else {
            self.agreement.observe(s, &mut self.ghosts)
        };
        let bound = GhostBound {
            last_step_ms: self.last_step_ms,
            ghost_ms: self.bounds.ghost_ms,
            links_back_ms: self.links_back_ms,
        };
        self.ghosts.observe(s, bound, &mut self.findings);
        self.sockets.observe(s, bound, &mut self.findings);
        self.convergence.observe(agree, s.at_ms);
        self.visible.observe(s, self.bounds.sample_ms);
        self.last = Some(snapshot);
    }

    /// The lists of clients at the end against their nodes' in the last sample, for clients
    /// whose lists are not handed to [`Checkers::finish`] (population clients whose messages
    /// are not replayed): the same `client_view` finding, without holding every client's list
    /// at once. All of `names` hold `view`; it is compared once with each node's list of each
    /// topic they are on, not once per client (a topic's clients mostly hold the same list).
    pub fn client_views_of(&mut self, names: &[&str], view: &PresenceList) {
        if let Some(last) = &self.last {
            end_state::shared_client_view(last, names, view, &mut self.findings);
        }
    }

    /// Ends the run; returns every finding, in time order. `final_views` are the clients'
    /// lists read after the last step of the simulation, when every message they logged has
    /// been applied: the replay of their messages must give exactly these.
    pub fn finish(
        mut self,
        final_views: &BTreeMap<String, PresenceList>,
    ) -> (Vec<Finding>, Option<u64>) {
        let Some(last) = self.last.take() else {
            return (self.findings, None);
        };
        let end = last.at_ms;
        let converged_at = self.convergence.finish(
            end,
            self.last_step_ms,
            self.bounds.convergence_ms,
            &mut self.findings,
        );
        end_state::nodes(&last, &mut self.findings);
        end_state::client_views(&last, final_views, &mut self.findings);
        self.streams.finish(&last, final_views, &mut self.findings);
        self.visible.finish(end, &mut self.findings);
        self.findings.sort();
        (self.findings, converged_at)
    }
}
