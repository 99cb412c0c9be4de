//! The client message stream: every presence message a client receives is replayed, as refs
//! held (reporting the reference's anomalies `duplicate_join` and `duplicate_leave`) and through
//! the phoenix.js-exact sync; at the end the replay must give exactly what the client shows
//! (`diff_stream`), and a malformed message is a `diff_stream` finding at once.

use super::truth::short;
use super::{ClientMessage, Finding, FindingKind, PresenceList, Snapshot, finding};
use crate::snapshot::{Name, meta_of_fields};
use phxsim_wire::sync::PresenceInstance;
use std::collections::{BTreeMap, BTreeSet};

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

#[derive(Default)]
pub(super) struct DiffStreams {
    replays: BTreeMap<String, ClientReplay>,
}

impl DiffStreams {
    /// A client received a presence message (or rejoined).
    pub(super) fn message(
        &mut self,
        at_ms: u64,
        client: &str,
        msg: ClientMessage,
        out: &mut Vec<Finding>,
    ) {
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
            out.push(finding(at_ms, kind, client, detail));
        }
    }

    /// Every joined client's replayed messages must give exactly the list it shows at the end.
    pub(super) fn finish(
        &self,
        last: &Snapshot,
        final_views: &BTreeMap<String, PresenceList>,
        out: &mut Vec<Finding>,
    ) {
        for (name, c) in last.clients.iter() {
            if !c.joined {
                continue;
            }
            if let (Some(inst), Some(view)) = (
                self.replays
                    .get(name.as_str())
                    .and_then(|r| r.instance.as_ref()),
                final_views.get(name.as_str()),
            ) {
                let replayed = list_of_instance(inst);
                if &replayed != view {
                    out.push(finding(
                        last.at_ms,
                        FindingKind::DiffStream,
                        name,
                        format!(
                            "its messages replay to {} but it shows {}",
                            short(&replayed),
                            short(view)
                        ),
                    ));
                }
            }
        }
    }
}

/// A phoenix.js-exact instance's state as a `PresenceList`.
pub fn list_of_instance(inst: &PresenceInstance) -> PresenceList {
    let mut out = PresenceList::new();
    for (key, presence) in inst.list_by(|k, p| (k.to_owned(), p.clone())) {
        let metas = out.entry(Name::from(key)).or_default();
        for m in &presence.metas {
            if let Some(rf) = m.phx_ref_str() {
                metas.insert(Name::from(rf), meta_of_fields(m.as_map()));
            }
        }
    }
    out
}
