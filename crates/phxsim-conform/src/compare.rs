//! Expected against actual: a verdict per case, and the first differing frame when it fails.
//!
//! - Frames are compared per exchange and per connection, after normalization
//!   ([`crate::transcript`]), so arrival order *between* connections never matters.
//! - Phoenix does not fix every order ([`crate::races`]): the run is first matched against the
//!   set of orderings the case allows (reorders and optional frames, each citing its race); the
//!   expected transcript is then put in the ordering the run followed, and every frame is
//!   compared exactly: contents, key order (V1's `event, payload, ref, topic`, metas with
//!   `phx_ref` first) and refs. A note names each race the run showed; the verdict is
//!   unaffected. A run that fits no allowed ordering fails where the recording's order and
//!   the run first differ, and the failure lists what was allowed there.
//! - A case with a [`Looseness`] tolerates exactly that deviation; the verdict is then
//!   `non-strict` with the case's reason. Every other difference fails the case.

use crate::cases::{CaseScript, Looseness};
use crate::races::{self, Alignment, Match, Plan};
use crate::script::Observed;
use crate::transcript::{NormItem, NormTranscript, Transcript, normalize};
use serde::Serialize;

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
    /// What Phoenix allows this connection to see in this exchange, one line per frame or
    /// group (see [`crate::races`]).
    pub allowed: Vec<String>,
    /// What this connection actually saw in this exchange, in arrival order.
    pub came: Vec<String>,
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
        let mut out = format!("{place}: expected {exp}, got {act}");
        if !self.allowed.is_empty() {
            out.push_str(&format!("; allowed here: [{}]", self.allowed.join("; ")));
        }
        if !self.came.is_empty() {
            out.push_str(&format!("; came: [{}]", self.came.join("; ")));
        }
        out
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
    /// The run's transcript, normalized, in arrival order.
    pub actual: NormTranscript,
    /// The run's transcript with each exchange in the recording's order where the run took
    /// another allowed one (optional frames last): stable across runs, for snapshots.
    pub actual_canonical: NormTranscript,
}

/// Compares a run against its script: finds the allowed ordering ([`races`]) the run followed,
/// then compares every frame exactly (contents, key order, refs) in that ordering.
pub fn compare(script: &CaseScript, actual: &Transcript) -> Comparison {
    let plan = races::plan(script);
    let alignment = races::align(&plan, actual);
    let realized = realize(script, &plan, &alignment, actual);
    let notes = order_notes(&plan, &alignment, actual);
    let expected = normalize(&realized, script.prelude_len);
    let actual_n = normalize(actual, script.prelude_len);
    let loose = script.case.loose;
    let mut verdict = verdict(&expected, &actual_n, loose);
    if let Some((j, conn)) = &alignment.failed_at
        && !verdict.failed()
    {
        // Every frame is right but in an order no race explains.
        let ex = actual.exchanges.get(*j);
        verdict = Verdict::Fail(Difference {
            exchange: *j,
            step: ex.map(|e| e.step.clone()).unwrap_or_default(),
            prelude: *j < script.prelude_len,
            conn: conn.clone(),
            position: 0,
            expected: Some("an allowed ordering".to_owned()),
            actual: Some("the frames in an order Phoenix does not produce".to_owned()),
            timed_out: ex.is_some_and(|e| e.timed_out),
            allowed: Vec::new(),
            came: Vec::new(),
        });
    }
    if let Verdict::Fail(d) = &mut verdict {
        d.allowed = plan.describe(d.exchange, &d.conn);
        d.came = actual_n
            .exchanges
            .get(d.exchange)
            .and_then(|e| e.observed.iter().find(|(c, _)| *c == d.conn))
            .map(|(_, items)| items.iter().map(NormItem::render).collect())
            .unwrap_or_default();
    }
    let canonical = normalize(
        &canonical_actual(script, &alignment, actual),
        script.prelude_len,
    );
    Comparison {
        verdict,
        notes,
        expected,
        actual: actual_n,
        actual_canonical: canonical,
    }
}

/// The expected transcript in the order the run followed where it followed an allowed one
/// (optional frames included where they came), and in the recording's order from the first
/// exchange that fits none.
fn realize(
    script: &CaseScript,
    plan: &Plan,
    alignment: &Alignment,
    actual: &Transcript,
) -> Transcript {
    let mut out = Transcript::expected(script);
    let failed = alignment.failed_at.as_ref().map(|(j, _)| *j);
    for (j, ex) in out.exchanges.iter_mut().enumerate() {
        let Some(p) = plan.exchanges.get(j) else {
            continue;
        };
        let aligned = alignment.exchanges.get(j).filter(|_| failed != Some(j));
        let mut per: Vec<(String, Vec<Observed>)> = Vec::new();
        for conn in &script.conns {
            let items: Vec<Observed> = match aligned.and_then(|a| a.iter().find(|(c, _)| c == conn))
            {
                Some((_, matches)) => matches
                    .iter()
                    .filter_map(|m| match m {
                        Match::Required(k) | Match::Repeat(k) => {
                            p.conn(conn).and_then(|c| c.items.get(*k)).cloned()
                        }
                        Match::Float(e, i) | Match::FloatRepeat(e, i) => {
                            plan.float(*e, conn, *i).map(|f| f.frame.clone())
                        }
                    })
                    .collect(),
                None => p.conn(conn).map(|c| c.items.clone()).unwrap_or_default(),
            };
            if !items.is_empty() {
                per.push((conn.clone(), items));
            }
        }
        ex.observed = per;
    }
    // An actual run may have more exchanges' worth of nothing; keep lengths as they are.
    let _ = actual;
    out
}

/// The run with each exchange's observations put in the recording's order (optional frames
/// last): stable across runs where Phoenix's order varies, for snapshots.
fn canonical_actual(script: &CaseScript, alignment: &Alignment, actual: &Transcript) -> Transcript {
    let mut out = actual.clone();
    for (j, ex) in out.exchanges.iter_mut().enumerate() {
        let Some(aligned) = alignment.exchanges.get(j) else {
            continue;
        };
        for (conn, items) in &mut ex.observed {
            let Some((_, matches)) = aligned.iter().find(|(c, _)| c == conn) else {
                continue;
            };
            if matches.len() != items.len() {
                continue;
            }
            let mut keyed: Vec<(usize, Observed)> = matches
                .iter()
                .zip(items.iter())
                .enumerate()
                .map(|(arrival, (m, o))| {
                    let key = match m {
                        Match::Required(k) => *k,
                        Match::Float(..) | Match::Repeat(..) | Match::FloatRepeat(..) => {
                            10_000 + arrival
                        }
                    };
                    (key, o.clone())
                })
                .collect();
            keyed.sort_by_key(|(k, _)| *k);
            *items = keyed.into_iter().map(|(_, o)| o).collect();
        }
    }
    let _ = script;
    out
}

/// One note per exchange and connection where the run took another allowed order than the
/// recording, or received an optional frame.
fn order_notes(plan: &Plan, alignment: &Alignment, actual: &Transcript) -> Vec<String> {
    let mut notes = Vec::new();
    for (j, per) in alignment.exchanges.iter().enumerate() {
        let step = actual.exchanges.get(j).map_or("", |e| e.step.as_str());
        for (conn, matches) in per {
            let cp = plan.exchanges.get(j).and_then(|p| p.conn(conn));
            let required: Vec<usize> = matches
                .iter()
                .filter_map(|m| match m {
                    Match::Required(k) => Some(*k),
                    Match::Float(..) | Match::Repeat(..) | Match::FloatRepeat(..) => None,
                })
                .collect();
            if required.windows(2).any(|w| w[0] > w[1]) {
                let races: Vec<String> = cp
                    .map(|c| {
                        c.groups
                            .iter()
                            .filter(|(s, e, _)| {
                                let order: Vec<usize> = required
                                    .iter()
                                    .copied()
                                    .filter(|k| s <= k && k < e)
                                    .collect();
                                order.windows(2).any(|w| w[0] > w[1])
                            })
                            .map(|(_, _, r)| format!("{}: {}", r.label(), r.cite()))
                            .collect()
                    })
                    .unwrap_or_default();
                notes.push(format!(
                    "{conn}: step {step:?}: frames came in another order Phoenix allows ({})",
                    races.join("; ")
                ));
            }
            for m in matches {
                if let Match::Float(e, i) = m
                    && let Some(f) = plan.float(*e, conn, *i)
                {
                    notes.push(format!(
                        "{conn}: step {step:?}: also received its own leave diff ({}: {})",
                        f.race.label(),
                        f.race.cite()
                    ));
                }
                if let (Match::Repeat(_) | Match::FloatRepeat(..), Some(race)) =
                    (m, cp.and_then(|c| c.repeats))
                {
                    notes.push(format!(
                        "{conn}: step {step:?}: received a presence_diff twice ({}: the ended \
                         channel's subscription had not been dropped yet)",
                        race.label()
                    ));
                }
            }
        }
    }
    notes
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
        // Key order counts (Phoenix's V1 `event, payload, ref, topic`, metas `phx_ref` first):
        // serde_json's map equality ignores it, the rendered text does not.
        (NormItem::Json(x), NormItem::Json(y)) => {
            if ordered_text(x) == ordered_text(y) {
                ItemMatch::Equal
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
                        allowed: Vec::new(),
                        came: Vec::new(),
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

/// A JSON value's text, keys in their order (the map's own equality ignores it).
fn ordered_text(v: &serde_json::Value) -> String {
    v.to_string()
}
