//! Checkers: passive observers of a run. The harness feeds them snapshots of what every node
//! lists and every client sees (sampled on simulated time) and each client's presence messages
//! as they arrive; they report findings. Pure: no I/O, no clock, deterministic order.

use crate::scenario::VisibleExpectation;
use phxsim_wire::sync::PresenceInstance;
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// `key → phx_ref → meta`: a presence list as a node or a client holds it for one topic.
pub type PresenceList = BTreeMap<String, BTreeMap<String, Json>>;

/// A list of metas grouped by key (a node's `PresenceState`, a client's view) as a
/// [`PresenceList`], metas moved; a meta without a `phx_ref` is no presence and is left out.
pub fn presence_list(by_key: BTreeMap<String, Vec<Json>>) -> PresenceList {
    let mut out = PresenceList::new();
    for (key, metas) in by_key {
        let entry = out.entry(key).or_default();
        for m in metas {
            if let Some(r) = m.get("phx_ref").and_then(Json::as_str) {
                entry.insert(r.to_owned(), m);
            }
        }
    }
    out
}

/// What a running node shows at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSnapshot {
    /// Per topic, the node's `Presence.list` (down replicas hidden).
    pub lists: BTreeMap<String, PresenceList>,
    /// Per topic, the presences this node tracks for its own sockets: the ground truth.
    pub local: BTreeMap<String, PresenceList>,
}

/// What a client holds at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSnapshot {
    pub node: String,
    pub topic: String,
    pub user: String,
    /// Connected and joined (the join reply arrived and the channel is not closed).
    pub joined: bool,
    /// Its phoenix.js-exact presence list (the harness leaves it empty in samples and passes
    /// the lists read at the end to [`Checkers::finish`]).
    pub view: PresenceList,
}

/// The whole world at `at_ms`. Crashed nodes are absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub at_ms: u64,
    /// Shared: a node that did not change since the last sample hands in the same
    /// allocation, and the checkers skip what only depends on the lists.
    pub nodes: BTreeMap<String, Arc<NodeSnapshot>>,
    /// Shared like the nodes: samples in which no client joined or left reuse one map.
    pub clients: Arc<BTreeMap<String, ClientSnapshot>>,
}

/// A presence message as one client received it.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// The channel (re)joined with this join_ref.
    Joined(String),
    State(Json),
    Diff(Json),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Nodes did not agree with the live presences within the bound after the last step.
    NoConvergence,
    /// A joined client's list differs from its node's list at the end.
    ClientView,
    /// A presence whose owner is gone is still listed after the bound.
    Ghost,
    /// A live presence is missing after convergence should have happened.
    Lost,
    /// A presence is listed with an older meta (phx_ref) than its owner holds.
    StaleMeta,
    /// A client's messages do not replay to what it shows, or are malformed.
    DiffStream,
    /// A leave of a ref the client does not hold (reference anomaly 1).
    DuplicateLeave,
    /// A join of a ref the client already holds (reference anomaly 2).
    DuplicateJoin,
    /// An `[[expect.visible]]` did not hold.
    Expectation,
}

impl FindingKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [FindingKind; 9] = [
        FindingKind::NoConvergence,
        FindingKind::ClientView,
        FindingKind::Ghost,
        FindingKind::Lost,
        FindingKind::StaleMeta,
        FindingKind::DiffStream,
        FindingKind::DuplicateLeave,
        FindingKind::DuplicateJoin,
        FindingKind::Expectation,
    ];

    /// The kind named `name` (as [`FindingKind::name`] spells it).
    pub fn from_name(name: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            FindingKind::NoConvergence => "no_convergence",
            FindingKind::ClientView => "client_view",
            FindingKind::Ghost => "ghost",
            FindingKind::Lost => "lost",
            FindingKind::StaleMeta => "stale_meta",
            FindingKind::DiffStream => "diff_stream",
            FindingKind::DuplicateLeave => "duplicate_leave",
            FindingKind::DuplicateJoin => "duplicate_join",
            FindingKind::Expectation => "expectation",
        }
    }

    /// Anomalies are what the reference itself does; everything else is a violation.
    pub fn is_anomaly(self) -> bool {
        matches!(
            self,
            FindingKind::DuplicateLeave | FindingKind::DuplicateJoin
        )
    }

    /// No convergence is its own failure class (distinct exit code).
    pub fn is_liveness(self) -> bool {
        matches!(self, FindingKind::NoConvergence)
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub at_ms: u64,
    pub kind: FindingKind,
    /// The node or client it is about.
    pub subject: String,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} ms] {} at {}: {}",
            self.at_ms, self.kind, self.subject, self.detail
        )
    }
}

/// Bounds the checkers judge by, derived from the tracker settings.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// After the last step, the cluster must agree within this.
    pub convergence_ms: u64,
    /// A gone owner's presence may stay visible at most this long.
    pub ghost_ms: u64,
    /// Sampling interval: an `[[expect.visible]]` window is widened by it, so that a window
    /// shorter than the interval still contains a sample.
    pub sample_ms: u64,
}

/// Per-client replay state for the diff-stream checker.
#[derive(Default)]
struct ClientReplay {
    /// refs held per key, as the messages say (state applied, then diffs).
    held: BTreeMap<String, BTreeSet<String>>,
    has_state: bool,
    /// Diffs that came before the state, applied after it as phoenix.js does with its
    /// pending diffs. The state may not hold what they join: it was read when the channel
    /// subscribed, and a change between the subscription and the join's track reaches the
    /// client only as one of these diffs.
    pending: Vec<phxsim_wire::PresenceDiff>,
    /// The phoenix.js-exact replay of the same messages.
    instance: Option<PresenceInstance>,
    join_ref: String,
}

/// Applies a diff to the refs a client holds: joins, then leaves, as phoenix.js does. Returns
/// the reference anomalies it shows: a join of a ref already held, a leave of one not held.
fn hold(
    held: &mut BTreeMap<String, BTreeSet<String>>,
    diff: &phxsim_wire::PresenceDiff,
) -> Vec<(FindingKind, String)> {
    let mut found = Vec::new();
    for (k, p) in diff.joins.iter() {
        for m in &p.metas {
            let Some(rf) = m.phx_ref_str() else { continue };
            if !held.entry(k.to_owned()).or_default().insert(rf.to_owned()) {
                found.push((
                    FindingKind::DuplicateJoin,
                    format!("join of {k}/{rf}, already held"),
                ));
            }
        }
    }
    for (k, p) in diff.leaves.iter() {
        for m in &p.metas {
            let Some(rf) = m.phx_ref_str() else { continue };
            if !held.get_mut(k).is_some_and(|s| s.remove(rf)) {
                found.push((
                    FindingKind::DuplicateLeave,
                    format!("leave of {k}/{rf}, not held"),
                ));
            }
        }
        if held.get(k).is_some_and(BTreeSet::is_empty) {
            held.remove(k);
        }
    }
    found
}

/// The checkers of one run.
pub struct Checkers {
    bounds: Bounds,
    visible: Vec<(VisibleExpectation, bool)>,
    findings: Vec<Finding>,
    /// topic → the refs whose owner was live at the last observation.
    live: BTreeMap<String, BTreeSet<String>>,
    /// topic → ref → when its owner was first seen gone (since it was last live).
    gone_at: BTreeMap<String, BTreeMap<String, u64>>,
    ghost_reported: BTreeSet<(String, String, String)>,
    /// (node, topic, key) → since when the node tracks more presences for that user than the
    /// user has joined sockets on it (a socket gone, its presence kept).
    orphans_since: BTreeMap<(String, String, String), u64>,
    orphan_reported: BTreeSet<(String, String, String)>,
    replays: BTreeMap<String, ClientReplay>,
    /// First time every node agreed with the truth since the last step, if still so.
    agreed_since: Option<u64>,
    last_step_ms: u64,
    last: Option<Snapshot>,
    /// Whether every node agreed with the truth at the last observation.
    last_agree: bool,
}

/// [`truth`] borrowed from the snapshot: `topic → key → phx_ref → meta`.
type TruthRef<'a> = BTreeMap<&'a str, BTreeMap<&'a str, BTreeMap<&'a str, &'a Json>>>;

/// The union of every live node's local presences, per topic, without cloning: what
/// [`truth`] gives, borrowed.
fn truth_ref(s: &Snapshot) -> TruthRef<'_> {
    let mut out: TruthRef<'_> = BTreeMap::new();
    for n in s.nodes.values() {
        for (topic, list) in &n.local {
            let t = out.entry(topic.as_str()).or_default();
            for (k, refs) in list {
                t.entry(k.as_str())
                    .or_default()
                    .extend(refs.iter().map(|(r, m)| (r.as_str(), m)));
            }
        }
    }
    out.retain(|_, l| !l.is_empty());
    out
}

/// `lists` (empty topics ignored) equals the borrowed `truth` (which has none).
fn same_lists_ref(lists: &BTreeMap<String, PresenceList>, truth: &TruthRef<'_>) -> bool {
    fn same_list(l: &PresenceList, t: &BTreeMap<&str, BTreeMap<&str, &Json>>) -> bool {
        l.len() == t.len()
            && l.iter().zip(t).all(|((k1, r1), (k2, r2))| {
                k1 == k2
                    && r1.len() == r2.len()
                    && r1
                        .iter()
                        .zip(r2)
                        .all(|((f1, m1), (f2, m2))| f1 == f2 && m1 == *m2)
            })
    }
    let mut mine = lists.iter().filter(|(_, l)| !l.is_empty());
    let mut theirs = truth.iter();
    loop {
        match (mine.next(), theirs.next()) {
            (None, None) => return true,
            (Some((t1, l1)), Some((t2, l2))) if t1 == t2 && same_list(l1, l2) => {}
            _ => return false,
        }
    }
}

/// The union of every live node's local presences, per topic.
fn truth(s: &Snapshot) -> BTreeMap<String, PresenceList> {
    let mut out: BTreeMap<String, PresenceList> = BTreeMap::new();
    for n in s.nodes.values() {
        for (topic, list) in &n.local {
            let t = out.entry(topic.clone()).or_default();
            for (k, refs) in list {
                t.entry(k.clone()).or_default().extend(refs.clone());
            }
        }
    }
    out.retain(|_, l| !l.is_empty());
    out
}

fn nonempty(lists: &BTreeMap<String, PresenceList>) -> BTreeMap<String, PresenceList> {
    lists
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(t, l)| (t.clone(), l.clone()))
        .collect()
}

fn short(list: &PresenceList) -> String {
    let parts: Vec<String> = list
        .iter()
        .map(|(k, refs)| {
            format!(
                "{k}[{}]",
                refs.keys().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    format!("{{{}}}", parts.join(" "))
}

impl Checkers {
    pub fn new(bounds: Bounds, visible: Vec<VisibleExpectation>) -> Self {
        Self {
            bounds,
            visible: visible.into_iter().map(|v| (v, false)).collect(),
            findings: Vec::new(),
            live: BTreeMap::new(),
            gone_at: BTreeMap::new(),
            ghost_reported: BTreeSet::new(),
            orphans_since: BTreeMap::new(),
            orphan_reported: BTreeSet::new(),
            replays: BTreeMap::new(),
            agreed_since: None,
            last_step_ms: 0,
            last: None,
            last_agree: false,
        }
    }

    /// A scripted step or fault happened: the convergence clock restarts.
    pub fn step(&mut self, at_ms: u64) {
        self.last_step_ms = at_ms;
        self.agreed_since = None;
    }

    fn report(&mut self, at_ms: u64, kind: FindingKind, subject: &str, detail: String) {
        self.findings.push(Finding {
            at_ms,
            kind,
            subject: subject.to_owned(),
            detail,
        });
    }

    /// A client received a presence message (or rejoined).
    pub fn client_message(&mut self, at_ms: u64, client: &str, msg: ClientMessage) {
        let r = self.replays.entry(client.to_owned()).or_default();
        let mut found: Vec<(FindingKind, String)> = Vec::new();
        match msg {
            ClientMessage::Joined(join_ref) => {
                r.join_ref = join_ref;
                r.held.clear();
                r.has_state = false;
                r.pending.clear();
                r.instance.get_or_insert_with(PresenceInstance::new);
            }
            ClientMessage::State(payload) => {
                // parsed once, for the refs held and for the replay (which would refuse a
                // malformed payload just the same)
                match phxsim_wire::PresenceState::from_payload(payload) {
                    Ok(state) => {
                        r.held = state
                            .presences
                            .iter()
                            .map(|(k, p)| {
                                let refs = p
                                    .metas
                                    .iter()
                                    .filter_map(|m| m.phx_ref_str().map(String::from))
                                    .collect();
                                (k.to_owned(), refs)
                            })
                            .collect();
                        r.has_state = true;
                        // the buffered diffs, after the state; a join the state holds already
                        // (the joiner's own, or a change the state caught) is no anomaly here
                        for diff in std::mem::take(&mut r.pending) {
                            let _ = hold(&mut r.held, &diff);
                        }
                        if let Some(inst) = r.instance.as_mut() {
                            inst.handle_state(Some(&r.join_ref), state, &mut ());
                        }
                    }
                    Err(e) => {
                        found.push((FindingKind::DiffStream, format!("bad presence_state: {e}")))
                    }
                }
            }
            ClientMessage::Diff(payload) => {
                let diff = phxsim_wire::PresenceDiff::from_payload(payload);
                match &diff {
                    Ok(diff) if r.has_state => found.extend(hold(&mut r.held, diff)),
                    // before the state: phoenix.js buffers it and applies it after the state
                    Ok(diff) => r.pending.push(diff.clone()),
                    Err(e) => {
                        found.push((FindingKind::DiffStream, format!("bad presence_diff: {e}")))
                    }
                }
                if let (Ok(diff), Some(inst)) = (diff, r.instance.as_mut()) {
                    inst.handle_diff(Some(&r.join_ref), diff, &mut ());
                }
            }
        }
        for (kind, detail) in found {
            self.report(at_ms, kind, client, detail);
        }
    }

    /// Observes the world at one instant.
    pub fn observe(&mut self, snapshot: Snapshot) {
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
            self.last_agree
        } else {
            let truth = truth_ref(s);
            // ghosts: refs whose owner is gone, still listed past the bound
            let live: BTreeMap<&str, BTreeSet<&str>> = truth
                .iter()
                .map(|(t, l)| {
                    (
                        *t,
                        l.values().flat_map(|refs| refs.keys().copied()).collect(),
                    )
                })
                .collect();
            self.track_gone(&live, s.at_ms);
            s.nodes.values().all(|n| same_lists_ref(&n.lists, &truth))
        };
        let mut ghosts = Vec::new();
        for (node, ns) in &s.nodes {
            for (topic, list) in &ns.lists {
                let Some(gone_in_topic) = self.gone_at.get(topic) else {
                    continue;
                };
                for (key, refs) in list {
                    for rf in refs.keys() {
                        // The bound runs from the later of the owner's exit and the last
                        // scripted step: while faults and heals are still settling, Phoenix
                        // legitimately shows a down replica's stale values again at replica_up
                        // until a transfer removes them; a ghost is one that outlives the
                        // settling.
                        if let Some(&gone) = gone_in_topic.get(rf)
                            && s.at_ms > gone.max(self.last_step_ms) + self.bounds.ghost_ms
                            && self
                                .ghost_reported
                                .insert((node.clone(), topic.clone(), rf.clone()))
                        {
                            ghosts.push((
                                node.clone(),
                                format!(
                                    "{topic} {key}/{rf}: owner gone at {gone} ms, still listed"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for (node, detail) in ghosts {
            self.report(s.at_ms, FindingKind::Ghost, &node, detail);
        }
        self.check_sockets(s);

        // convergence: every node lists exactly the truth
        self.last_agree = agree;
        match (agree, self.agreed_since) {
            (true, None) => self.agreed_since = Some(s.at_ms),
            (false, Some(_)) => self.agreed_since = None,
            _ => {}
        }

        // [[expect.visible]]
        for (v, met) in self.visible.iter_mut() {
            if *met || s.at_ms < v.at_ms || s.at_ms > v.at_ms + v.within_ms + self.bounds.sample_ms
            {
                continue;
            }
            let Some(ns) = s.nodes.get(&v.node) else {
                continue;
            };
            let list = ns.lists.get(&v.topic).cloned().unwrap_or_default();
            let keys: Vec<&String> = list.keys().collect();
            let mut want: Vec<&String> = v.keys.iter().collect();
            want.sort();
            let metas_ok = v.meta.as_ref().is_none_or(|fields| {
                list.iter()
                    .filter(|(k, _)| v.meta_of.as_ref().is_none_or(|m| m == *k))
                    .all(|(_, refs)| {
                        refs.values()
                            .any(|meta| fields.iter().all(|(f, val)| meta.get(f) == Some(val)))
                    })
            });
            if keys == want && metas_ok {
                *met = true;
            }
        }
        self.last = Some(snapshot);
    }

    /// Records when live refs go: a ref live at the last observation and not now is gone from
    /// now on, and a gone ref seen live again is no longer gone.
    fn track_gone(&mut self, live: &BTreeMap<&str, BTreeSet<&str>>, at_ms: u64) {
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

    /// Socket truth: a node must track exactly one presence per joined socket of its own. More
    /// (for longer than the ghost bound) is a ghost whose socket is gone, a server that forgot
    /// to untrack; the node-level truth cannot see it, since the node itself still holds it.
    fn check_sockets(&mut self, s: &Snapshot) {
        let mut joined: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
        for c in s.clients.values().filter(|c| c.joined) {
            *joined
                .entry((c.node.as_str(), c.topic.as_str(), c.user.as_str()))
                .or_default() += 1;
        }
        let mut excess = BTreeMap::new();
        for (node, ns) in &s.nodes {
            for (topic, list) in &ns.local {
                for (key, refs) in list {
                    let sockets = joined
                        .get(&(node.as_str(), topic.as_str(), key.as_str()))
                        .copied()
                        .unwrap_or(0);
                    if refs.len() > sockets {
                        excess.insert(
                            (node.clone(), topic.clone(), key.clone()),
                            (refs.len(), sockets),
                        );
                    }
                }
            }
        }
        self.orphans_since.retain(|id, _| excess.contains_key(id));
        let mut found = Vec::new();
        for (id, (tracked, sockets)) in excess {
            let since = *self.orphans_since.entry(id.clone()).or_insert(s.at_ms);
            if s.at_ms > since.max(self.last_step_ms) + self.bounds.ghost_ms
                && self.orphan_reported.insert(id.clone())
            {
                let (node, topic, key) = id;
                found.push((node, format!(
                    "{topic} {key}: {tracked} presence(s) tracked for {sockets} joined socket(s) since {since} ms"
                )));
            }
        }
        for (node, detail) in found {
            self.report(s.at_ms, FindingKind::Ghost, &node, detail);
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
        let converged_at = self.agreed_since;
        let deadline = self.last_step_ms + self.bounds.convergence_ms;
        match converged_at {
            Some(t) if t <= deadline => {}
            Some(t) => self.report(end, FindingKind::NoConvergence, "cluster", format!(
                "converged at {t} ms, {} ms after the last step (bound {} ms)",
                t - self.last_step_ms, self.bounds.convergence_ms
            )),
            None if end >= deadline => self.report(end, FindingKind::NoConvergence, "cluster", format!(
                "not converged {} ms after the last step (bound {} ms)",
                end - self.last_step_ms, self.bounds.convergence_ms
            )),
            None => self.report(end, FindingKind::NoConvergence, "cluster", format!(
                "the run ended {} ms after the last step, before the bound of {} ms; not converged",
                end - self.last_step_ms, self.bounds.convergence_ms
            )),
        }

        // classify what differs at the end: lost, stale, ghost
        let truth = truth(&last);
        let mut end_findings = Vec::new();
        for (node, ns) in &last.nodes {
            let lists = nonempty(&ns.lists);
            let topics: BTreeSet<&String> = lists.keys().chain(truth.keys()).collect();
            for topic in topics {
                let have = lists.get(topic).cloned().unwrap_or_default();
                let want = truth.get(topic).cloned().unwrap_or_default();
                let keys: BTreeSet<&String> = have.keys().chain(want.keys()).collect();
                for key in keys {
                    let h: BTreeSet<&String> = have
                        .get(key)
                        .map(|m| m.keys().collect())
                        .unwrap_or_default();
                    let w: BTreeSet<&String> = want
                        .get(key)
                        .map(|m| m.keys().collect())
                        .unwrap_or_default();
                    if h == w {
                        continue;
                    }
                    let missing: Vec<_> = w.difference(&h).collect();
                    let extra: Vec<_> = h.difference(&w).collect();
                    let (kind, what) = if !missing.is_empty() && !extra.is_empty() {
                        (
                            FindingKind::StaleMeta,
                            format!("lists {extra:?} where the owner holds {missing:?}"),
                        )
                    } else if !missing.is_empty() {
                        (FindingKind::Lost, format!("misses live {missing:?}"))
                    } else {
                        (
                            FindingKind::Ghost,
                            format!("lists {extra:?}, whose owner is gone"),
                        )
                    };
                    end_findings.push((kind, node.clone(), format!("{topic} {key}: {what}")));
                }
            }
        }
        for (kind, node, detail) in end_findings {
            let dup = kind == FindingKind::Ghost
                && self
                    .findings
                    .iter()
                    .any(|f| f.kind == kind && f.subject == node && detail.contains(&f.detail));
            if !dup {
                self.report(end, kind, &node, detail);
            }
        }

        // client views at the end: the client's list equals its node's, and the replay of its
        // messages through phoenix.js-exact sync equals what it shows
        let mut client_findings = Vec::new();
        for (name, c) in last.clients.iter() {
            if !c.joined {
                continue;
            }
            let Some(view) = final_views.get(name) else {
                continue;
            };
            if let Some(ns) = last.nodes.get(&c.node) {
                let node_list = ns.lists.get(&c.topic).cloned().unwrap_or_default();
                if &node_list != view {
                    client_findings.push((
                        FindingKind::ClientView,
                        name.clone(),
                        format!(
                            "shows {} but {} lists {}",
                            short(view),
                            c.node,
                            short(&node_list)
                        ),
                    ));
                }
            }
            if let (Some(inst), Some(view)) = (
                self.replays.get(name).and_then(|r| r.instance.as_ref()),
                final_views.get(name),
            ) {
                let replayed = list_of_instance(inst);
                if &replayed != view {
                    client_findings.push((
                        FindingKind::DiffStream,
                        name.clone(),
                        format!(
                            "its messages replay to {} but it shows {}",
                            short(&replayed),
                            short(view)
                        ),
                    ));
                }
            }
        }
        for (kind, name, detail) in client_findings {
            self.report(end, kind, &name, detail);
        }

        let unmet: Vec<_> = self
            .visible
            .iter()
            .filter(|(_, met)| !met)
            .map(|(v, _)| v.clone())
            .collect();
        for v in unmet {
            self.report(
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
            );
        }
        self.findings.sort();
        (self.findings, converged_at)
    }
}

/// A phoenix.js-exact instance's state as a `PresenceList`.
pub fn list_of_instance(inst: &PresenceInstance) -> PresenceList {
    let mut out = PresenceList::new();
    for (key, presence) in inst.list_by(|k, p| (k.to_owned(), p.clone())) {
        let metas = out.entry(key).or_default();
        for m in &presence.metas {
            if let Some(rf) = m.phx_ref_str() {
                metas.insert(rf.to_owned(), Json::Object(m.as_map().clone()));
            }
        }
    }
    out
}
