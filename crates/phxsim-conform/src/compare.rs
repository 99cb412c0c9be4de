//! Expected against actual: a verdict per case, and the first differing frame when it fails.
//!
//! - Frames are compared per exchange and per connection, after normalization
//!   ([`crate::transcript`]), so arrival order *between* connections never matters.
//! - Phoenix itself sends a joiner's own `presence_diff` and its `presence_state` in either
//!   order. When the actual run has such an adjacent pair the other way round from the
//!   recording, it is put in the recording's order before refs are numbered, and a note says
//!   so; the verdict is unaffected.
//! - A case with a [`Looseness`] tolerates exactly that deviation; the verdict is then
//!   `non-strict` with the case's reason. Every other difference fails the case.

use crate::cases::{CaseScript, Looseness};
use crate::script::Observed;
use crate::transcript::{NormItem, NormTranscript, Transcript, normalize};
use phxsim_wire::message::{PRESENCE_DIFF, PRESENCE_STATE};
use phxsim_wire::{Codec, Frame, Serializer};
use serde::Serialize;
use serde_json::Value as Json;

/// The first place where actual and expected differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    /// Index of the exchange in the case.
    pub exchange: usize,
    /// The recorded step it belongs to.
    pub step: String,
    /// Whether that step is prelude (then the behaviour under test was not reached).
    pub prelude: bool,
    /// The connection.
    pub conn: String,
    /// Position among that connection's observations in the exchange (0-based).
    pub position: usize,
    /// The expected observation, if one was expected there.
    pub expected: Option<String>,
    /// The actual observation, if there was one.
    pub actual: Option<String>,
    /// The runner stopped waiting at its deadline in this exchange.
    pub timed_out: bool,
}

impl Difference {
    /// One paragraph for tables and failure messages.
    pub fn describe(&self) -> String {
        let place = format!(
            "step {:?}{}, connection {}, frame {}",
            self.step,
            if self.prelude { " (prelude)" } else { "" },
            self.conn,
            self.position + 1
        );
        let exp = self.expected.as_deref().unwrap_or("nothing");
        let act = match (&self.actual, self.timed_out) {
            (Some(a), _) => a.clone(),
            (None, true) => "nothing (timed out)".to_owned(),
            (None, false) => "nothing".to_owned(),
        };
        format!("{place}: expected {exp}, got {act}")
    }
}

/// The result of one case.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every observation matched.
    Pass,
    /// Matched except where the case allows it; the reason says why that is fine.
    NonStrict {
        /// The case's reason.
        reason: String,
        /// What actually differed, one line each.
        deviations: Vec<String>,
    },
    /// A difference the case does not allow.
    Fail(Difference),
}

impl Verdict {
    /// `pass`, `non-strict` or `fail`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NonStrict { .. } => "non-strict",
            Verdict::Fail(_) => "fail",
        }
    }

    /// Whether the case failed.
    pub fn failed(&self) -> bool {
        matches!(self, Verdict::Fail(_))
    }
}

/// A verdict with both normalized transcripts, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The verdict.
    pub verdict: Verdict,
    /// Things the reader should know that did not affect the verdict.
    pub notes: Vec<String>,
    /// The recording's transcript, normalized.
    pub expected: NormTranscript,
    /// The run's transcript, normalized (after order alignment).
    pub actual: NormTranscript,
}

/// Compares a run against its script.
pub fn compare(script: &CaseScript, actual: &Transcript) -> Comparison {
    let expected_raw = Transcript::expected(script);
    let mut actual = actual.clone();
    let notes = align_orders(&expected_raw, &mut actual, script.vsn);
    let expected = normalize(&expected_raw, script.prelude_len);
    let actual_n = normalize(&actual, script.prelude_len);
    let loose = script.case.loose;
    let verdict = verdict(&expected, &actual_n, loose);
    Comparison {
        verdict,
        notes,
        expected,
        actual: actual_n,
    }
}

enum ItemMatch {
    Equal,
    Tolerated(String),
    Differ,
}

fn item_match(e: &NormItem, a: &NormItem, loose: Option<Looseness>) -> ItemMatch {
    match (e, a) {
        (NormItem::Closed { code: ec, .. }, NormItem::Closed { code: ac, .. }) => {
            if ec == ac {
                ItemMatch::Equal
            } else if loose.is_some_and(|l| l == Looseness::CloseCode) {
                let show = |c: &Option<u16>| c.map_or("no code".to_owned(), |c| c.to_string());
                ItemMatch::Tolerated(format!(
                    "close code {} where Phoenix's web server sent {}",
                    show(ac),
                    show(ec)
                ))
            } else {
                ItemMatch::Differ
            }
        }
        _ if e == a => ItemMatch::Equal,
        _ => ItemMatch::Differ,
    }
}

fn verdict(
    expected: &NormTranscript,
    actual: &NormTranscript,
    loose: Option<(Looseness, &'static str)>,
) -> Verdict {
    let mut deviations = Vec::new();
    let n = expected.exchanges.len().max(actual.exchanges.len());
    for i in 0..n {
        let e = expected.exchanges.get(i);
        let a = actual.exchanges.get(i);
        let (step, prelude, timed_out) = match (e, a) {
            (Some(e), a) => (e.step.clone(), e.prelude, a.is_some_and(|a| a.timed_out)),
            (None, Some(a)) => (a.step.clone(), a.prelude, a.timed_out),
            (None, None) => continue,
        };
        // Connections in the expected order, then any the actual run adds.
        let mut conns: Vec<&str> = Vec::new();
        for ex in [e, a].into_iter().flatten() {
            for (c, _) in &ex.observed {
                if !conns.contains(&c.as_str()) {
                    conns.push(c);
                }
            }
        }
        let items = |ex: Option<&crate::transcript::NormExchange>, conn: &str| -> Vec<NormItem> {
            ex.and_then(|ex| ex.observed.iter().find(|(c, _)| c == conn))
                .map(|(_, items)| items.clone())
                .unwrap_or_default()
        };
        for conn in conns {
            let ei = items(e, conn);
            let ai = items(a, conn);
            for pos in 0..ei.len().max(ai.len()) {
                let differ = |exp: Option<&NormItem>, act: Option<&NormItem>| {
                    Verdict::Fail(Difference {
                        exchange: i,
                        step: step.clone(),
                        prelude,
                        conn: conn.to_owned(),
                        position: pos,
                        expected: exp.map(NormItem::render),
                        actual: act.map(NormItem::render),
                        timed_out,
                    })
                };
                match (ei.get(pos), ai.get(pos)) {
                    (Some(x), Some(y)) => match item_match(x, y, loose.map(|l| l.0)) {
                        ItemMatch::Equal => {}
                        ItemMatch::Tolerated(d) => deviations.push(format!("{conn}: {d}")),
                        ItemMatch::Differ => return differ(Some(x), Some(y)),
                    },
                    (x, y) => return differ(x, y),
                }
            }
        }
    }
    match (deviations.is_empty(), loose) {
        (true, _) | (false, None) => Verdict::Pass,
        (false, Some((_, reason))) => Verdict::NonStrict {
            reason: reason.to_owned(),
            deviations,
        },
    }
}

/// Puts adjacent (own `presence_diff`, `presence_state`) pairs of the actual run in the
/// recording's order; returns one note per pair it turned round.
fn align_orders(expected: &Transcript, actual: &mut Transcript, vsn: Serializer) -> Vec<String> {
    let codec = Codec::client(vsn);
    let mut notes = Vec::new();
    for (e_ex, a_ex) in expected.exchanges.iter().zip(actual.exchanges.iter_mut()) {
        for (conn, a_items) in &mut a_ex.observed {
            let Some((_, e_items)) = e_ex.observed.iter().find(|(c, _)| c == conn) else {
                continue;
            };
            let mut i = 0;
            while i + 1 < e_items.len().min(a_items.len()) {
                let ev = |o: &Observed| presence_payload(&codec, o);
                let (e0, e1) = (ev(&e_items[i]), ev(&e_items[i + 1]));
                let (a0, a1) = (ev(&a_items[i]), ev(&a_items[i + 1]));
                let swapped = match (e0, e1, a0, a1) {
                    (Some((ee0, _)), Some((ee1, _)), Some((ae0, ap0)), Some((ae1, ap1))) => {
                        ee0 != ee1 && ae0 == ee1 && ae1 == ee0 && own_pair(ae0, &ap0, ae1, &ap1)
                    }
                    _ => false,
                };
                if swapped {
                    a_items.swap(i, i + 1);
                    notes.push(format!(
                        "{conn}: presence_state and the joiner's own presence_diff came in the \
                         other order than in the recording (step {:?}); Phoenix sends either",
                        a_ex.step
                    ));
                    i += 2;
                } else {
                    i += 1;
                }
            }
        }
    }
    notes
}

/// `(event, payload)` of a presence_state or presence_diff frame.
fn presence_payload(codec: &Codec, obs: &Observed) -> Option<(&'static str, Json)> {
    let Observed::Frame(frame @ Frame::Text(_)) = obs else {
        return None;
    };
    let msg = codec.decode(frame).ok()?;
    let event = match msg.event.as_str() {
        PRESENCE_STATE => PRESENCE_STATE,
        PRESENCE_DIFF => PRESENCE_DIFF,
        _ => return None,
    };
    Some((event, msg.payload.as_json()?.clone()))
}

/// Whether a diff/state pair is "the joiner's own diff and its state": the diff only joins
/// keys the state holds, and leaves nothing.
fn own_pair(ev0: &str, p0: &Json, ev1: &str, p1: &Json) -> bool {
    let (diff, state) = match (ev0, ev1) {
        (PRESENCE_DIFF, PRESENCE_STATE) => (p0, p1),
        (PRESENCE_STATE, PRESENCE_DIFF) => (p1, p0),
        _ => return false,
    };
    let (Some(joins), Some(state)) = (
        diff.get("joins").and_then(Json::as_object),
        state.as_object(),
    ) else {
        return false;
    };
    let no_leaves = diff
        .get("leaves")
        .and_then(Json::as_object)
        .is_none_or(|l| l.is_empty());
    !joins.is_empty() && no_leaves && joins.keys().all(|k| state.contains_key(k))
}
