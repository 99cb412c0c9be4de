//! The catalogue, normalization and comparison, on the Phoenix recordings alone (no server):
//! every case's expected transcript is snapshotted under `snapshots/conform/recorded/`, every
//! case is self-contained, and the comparison accepts what Phoenix varies and nothing else.

mod common;

use common::insta_settings;
use phxsim_conform::cases::{DEFAULT_TOPIC_PREFIX, all_cases, catalogue};
use phxsim_conform::recording::reference;
use phxsim_conform::script::Observed;
use phxsim_conform::transcript::{NormItem, normalize_frame};
use phxsim_conform::{CaseScript, Transcript, Verdict, compare, normalize};
use phxsim_wire::{Frame, Serializer};
use serde_json::Value as Json;
use std::collections::BTreeSet;

const BOTH: [Serializer; 2] = [Serializer::V1, Serializer::V2];

fn scripts(vsn: Serializer) -> Vec<CaseScript> {
    catalogue(vsn, DEFAULT_TOPIC_PREFIX).expect("every case's steps are in the recording")
}

fn script(vsn: Serializer, id: u8) -> CaseScript {
    scripts(vsn)
        .into_iter()
        .find(|s| s.case.id == id)
        .expect("case exists")
}

fn vtag(vsn: Serializer) -> &'static str {
    match vsn {
        Serializer::V1 => "v1",
        Serializer::V2 => "v2",
    }
}

/// Applies `f` to every text frame the transcript observed.
fn map_text(t: &mut Transcript, f: &mut impl FnMut(&str) -> String) {
    for ex in &mut t.exchanges {
        for (_, items) in &mut ex.observed {
            for item in items {
                if let Observed::Frame(Frame::Text(text)) = item {
                    *text = f(text);
                }
            }
        }
    }
}

/// Every `phx_ref`/`phx_ref_prev` string in a JSON value, in document order.
fn refs_in(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match v {
                    Json::String(s) if k == "phx_ref" || k == "phx_ref_prev" => out.push(s.clone()),
                    other => refs_in(other, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| refs_in(i, out)),
        _ => {}
    }
}

#[test]
fn the_catalogue_is_numbered_and_named_once() {
    let cases = all_cases().unwrap();
    let ids: Vec<u8> = cases.iter().map(|c| c.id).collect();
    let expected: Vec<u8> = (1..=u8::try_from(cases.len()).unwrap()).collect();
    assert_eq!(ids, expected);
    let slugs: BTreeSet<&str> = cases.iter().map(|c| c.slug).collect();
    assert_eq!(slugs.len(), cases.len());
    // The catalogue for Phoenix 1.7.21 holds at least 75 cases per serializer.
    let v2_only = cases.iter().filter(|c| c.v2_only).count();
    assert_eq!(scripts(Serializer::V2).len(), cases.len());
    assert_eq!(scripts(Serializer::V1).len(), cases.len() - v2_only);
    assert!(
        scripts(Serializer::V1).len() >= 75,
        "{}",
        scripts(Serializer::V1).len()
    );
    for c in &cases {
        assert!(!c.steps.is_empty(), "{} tests no step", c.name());
    }
}

#[test]
fn every_expected_transcript_matches_its_snapshot() {
    let settings = insta_settings("recorded");
    for vsn in BOTH {
        for s in scripts(vsn) {
            let t = normalize(&Transcript::expected(&s), s.prelude_len);
            let name = format!("{}-{}", vtag(vsn), s.case.name());
            settings.bind(|| insta::assert_snapshot!(name, t.render()));
        }
    }
}

/// A prelude may leave out recorded steps only if they change no presence: then every ref a
/// case expects is created inside the case, as the `phx_ref` of a join (never first seen as a
/// `phx_ref_prev` or in `leaves`), and every user in a `presence_state` joined in the case.
#[test]
fn every_case_creates_the_presences_it_expects() {
    for vsn in BOTH {
        for s in scripts(vsn) {
            let mut known: BTreeSet<String> = BTreeSet::new();
            let t = Transcript::expected(&s);
            for ex in &t.exchanges {
                for (conn, items) in &ex.observed {
                    for item in items {
                        let Observed::Frame(Frame::Text(text)) = item else {
                            continue;
                        };
                        let Ok(v) = serde_json::from_str::<Json>(text) else {
                            continue;
                        };
                        let payload = match &v {
                            Json::Array(a) => a.get(4).cloned(),
                            Json::Object(o) => o.get("payload").cloned(),
                            _ => None,
                        }
                        .unwrap_or(Json::Null);
                        if let Some(joins) = payload.get("joins") {
                            let mut new = Vec::new();
                            for (_, p) in joins.as_object().into_iter().flatten() {
                                for meta in p["metas"].as_array().into_iter().flatten() {
                                    if let Some(r) = meta["phx_ref"].as_str() {
                                        new.push(r.to_owned());
                                    }
                                }
                            }
                            known.extend(new);
                        }
                        let mut seen = Vec::new();
                        refs_in(&payload, &mut seen);
                        for r in seen {
                            assert!(
                                known.contains(&r),
                                "{vsn:?} {}: {conn} sees ref {r} that no join in the case created \
                                 (step {:?})",
                                s.case.name(),
                                ex.step
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Normalizing a frame is idempotent: a frame already in normal form (refs replaced by
/// placeholders, keys sorted) is its own normal form. A normalization that depended on the
/// refs' spelling, or that sorted or renamed only part of a frame, would fail here. (Across
/// frames, refs are renamed consistently: see the next test.)
#[test]
fn normalizing_a_normalized_frame_changes_nothing() {
    let normal_text = |text: &str| -> String {
        let n = normalize_frame(text).unwrap_or_else(|| panic!("normalizes: {text}"));
        serde_json::to_string(&n).expect("JSON")
    };
    let rec = reference(Serializer::V2).unwrap();
    let mut frames = 0;
    for step in &rec.steps {
        for e in &step.entries {
            if let phxsim_conform::recording::EntryKind::Recv(Frame::Text(text)) = &e.kind {
                let once = normal_text(text);
                assert_eq!(normal_text(&once), once, "{text}");
                frames += 1;
            }
        }
    }
    assert!(frames > 50, "a recording worth checking: {frames} frames");
}

#[test]
fn different_random_refs_normalize_equal_and_merged_refs_do_not() {
    // Case 25 has the most refs: joins, an update, a duplicate join, a crash and rejoin.
    for vsn in BOTH {
        let s = script(vsn, 25);
        let original = Transcript::expected(&s);
        let mut refs = Vec::new();
        for ex in &original.exchanges {
            for (_, items) in &ex.observed {
                for item in items {
                    if let Observed::Frame(Frame::Text(t)) = item {
                        refs_in(&serde_json::from_str(t).unwrap(), &mut refs);
                    }
                }
            }
        }
        let distinct: BTreeSet<String> = refs.iter().cloned().collect();
        assert!(distinct.len() >= 5, "{distinct:?}");
        // A consistent renaming (another run of Phoenix) normalizes to the same transcript.
        let mut renamed = original.clone();
        map_text(&mut renamed, &mut |text| {
            let mut out = text.to_owned();
            for (i, r) in distinct.iter().enumerate() {
                out = out.replace(r.as_str(), &format!("Zz{i:02}otherRunRef"));
            }
            out
        });
        assert_ne!(renamed, original);
        assert_eq!(
            normalize(&renamed, s.prelude_len),
            normalize(&original, s.prelude_len)
        );
        assert_eq!(compare(&s, &renamed).verdict, Verdict::Pass);
        // Giving two different metas the same ref is a different transcript.
        let mut merged = original.clone();
        let mut it = distinct.iter();
        let (a, b) = (it.next().unwrap().clone(), it.next().unwrap().clone());
        map_text(&mut merged, &mut |text| text.replace(&b, &a));
        assert_ne!(
            normalize(&merged, s.prelude_len),
            normalize(&original, s.prelude_len)
        );
        assert!(compare(&s, &merged).verdict.failed());
    }
}

#[test]
fn key_order_is_kept_and_values_count() {
    let a = r#"[null,null,"t","presence_diff",{"joins":{"u":{"metas":[{"phx_ref":"X1","name":"A","status":"online"}]}},"leaves":{}}]"#;
    let b = r#"[null,null,"t","presence_diff",{"leaves":{},"joins":{"u":{"metas":[{"status":"online","name":"A","phx_ref":"Q9"}]}}}]"#;
    let text = |s: &str| serde_json::to_string(&normalize_frame(s).unwrap()).unwrap();
    // Same values, other key order: the normalized text differs (the comparison uses it).
    assert_ne!(text(a), text(b));
    assert_eq!(text(a), text(&a.replace("X1", "Y2")));
    let c = a.replace("online", "away");
    assert_ne!(text(a), text(&c));
    assert_eq!(
        text(a),
        r#"[null,null,"t","presence_diff",{"joins":{"u":{"metas":[{"phx_ref":"<ref1>","name":"A","status":"online"}]}},"leaves":{}}]"#
    );
}

#[test]
fn each_case_passes_against_its_own_recording() {
    for vsn in BOTH {
        for s in scripts(vsn) {
            let c = compare(&s, &Transcript::expected(&s));
            assert_eq!(c.verdict, Verdict::Pass, "{}", s.case.name());
            assert!(c.notes.is_empty());
        }
    }
}

/// The observations of connection `conn` in the exchange of `script` whose step title
/// contains `step`, and whose action is on `action_conn`.
fn items_mut<'a>(
    t: &'a mut Transcript,
    step: &str,
    nth_exchange: usize,
    conn: &str,
) -> &'a mut Vec<Observed> {
    let ex = t
        .exchanges
        .iter_mut()
        .filter(|e| e.step.contains(step))
        .nth(nth_exchange)
        .expect("exchange");
    &mut ex
        .observed
        .iter_mut()
        .find(|(c, _)| c == conn)
        .expect("connection")
        .1
}

#[test]
fn the_joiners_own_diff_and_state_are_accepted_in_either_order() {
    for vsn in BOTH {
        let s = script(vsn, 2);
        let mut t = Transcript::expected(&s);
        let b = items_mut(&mut t, "B connect", 1, "B");
        // reply, own diff, state -> reply, state, own diff
        assert_eq!(b.len(), 3);
        b.swap(1, 2);
        let c = compare(&s, &t);
        assert_eq!(c.verdict, Verdict::Pass, "{vsn:?}");
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        assert!(c.notes[0].contains("join order"), "{:?}", c.notes);
        // The reply is not part of that freedom.
        let mut t = Transcript::expected(&s);
        items_mut(&mut t, "B connect", 1, "B").swap(0, 1);
        let Verdict::Fail(d) = compare(&s, &t).verdict else {
            panic!("a diff before the join reply must fail");
        };
        assert_eq!((d.conn.as_str(), d.position, d.prelude), ("B", 0, false));
    }
}

#[test]
fn a_diff_that_is_not_the_joiners_own_keeps_its_place() {
    // In the duplicate join, B sees the old meta leave and the new one join: the order of two
    // diffs is meaningful and must not be swapped.
    let s = script(Serializer::V2, 12);
    let mut t = Transcript::expected(&s);
    let b = items_mut(&mut t, "duplicate join", 0, "B");
    assert_eq!(b.len(), 2);
    b.swap(0, 1);
    assert!(compare(&s, &t).verdict.failed());
}

#[test]
fn missing_extra_and_changed_frames_fail_at_the_first_difference() {
    let s = script(Serializer::V2, 3);
    // Missing: the update's diff never reaches B.
    let mut t = Transcript::expected(&s);
    items_mut(&mut t, "update_meta", 0, "B").clear();
    let ex = t
        .exchanges
        .iter_mut()
        .rev()
        .find(|e| e.step.contains("update_meta"))
        .unwrap();
    ex.observed.retain(|(c, _)| c != "B");
    ex.timed_out = true;
    let Verdict::Fail(d) = compare(&s, &t).verdict else {
        panic!("missing frame must fail");
    };
    assert_eq!(d.conn, "B");
    assert!(d.actual.is_none() && d.timed_out);
    assert!(
        d.describe().contains("nothing (timed out)"),
        "{}",
        d.describe()
    );
    // Extra: a second reply.
    let mut t = Transcript::expected(&s);
    let a = items_mut(&mut t, "update_meta", 0, "A");
    let dup = a[0].clone();
    a.push(dup);
    let Verdict::Fail(d) = compare(&s, &t).verdict else {
        panic!("extra frame must fail");
    };
    assert_eq!((d.conn.as_str(), d.position), ("A", 2));
    assert!(d.expected.is_none());
    // Changed: phx_ref_prev dropped (what ServerMutation::DropPhxRefPrev does).
    let mut t = Transcript::expected(&s);
    map_text(&mut t, &mut |text| {
        let mut v: Json = serde_json::from_str(text).unwrap();
        strip(&mut v, "phx_ref_prev");
        serde_json::to_string(&v).unwrap()
    });
    let Verdict::Fail(d) = compare(&s, &t).verdict else {
        panic!("a missing phx_ref_prev must fail");
    };
    assert!(d.step.contains("update_meta") && !d.prelude, "{d:?}");
    assert!(d.expected.as_deref().unwrap().contains("phx_ref_prev"));
    assert!(!d.actual.as_deref().unwrap().contains("phx_ref_prev"));
}

fn strip(v: &mut Json, key: &str) {
    match v {
        Json::Object(m) => {
            m.remove(key);
            m.values_mut().for_each(|v| strip(v, key));
        }
        Json::Array(a) => a.iter_mut().for_each(|v| strip(v, key)),
        _ => {}
    }
}

fn set_close_code(t: &mut Transcript, conn: &str, to: Option<u16>) {
    let mut hit = false;
    for ex in &mut t.exchanges {
        for (c, items) in &mut ex.observed {
            for item in items {
                if let Observed::Closed { code, reason } = item
                    && c == conn
                {
                    *code = to;
                    *reason = "because".into();
                    hit = true;
                }
            }
        }
    }
    assert!(hit, "no close on {conn}");
}

#[test]
fn close_codes_are_loose_only_where_the_case_says_so() {
    for vsn in BOTH {
        // Case 20 (non-JSON frame) allows another close code: non-strict, with the reason.
        let s = script(vsn, 20);
        let mut t = Transcript::expected(&s);
        set_close_code(&mut t, "F", Some(1007));
        match compare(&s, &t).verdict {
            Verdict::NonStrict { reason, deviations } => {
                assert!(reason.contains("1011"), "{reason}");
                assert_eq!(
                    deviations,
                    ["F: close code 1007 where Phoenix's web server sent 1011"]
                );
            }
            other => panic!("expected non-strict, got {other:?}"),
        }
        // The reason text alone is never a difference.
        let mut t = Transcript::expected(&s);
        set_close_code(&mut t, "F", Some(1011));
        assert_eq!(compare(&s, &t).verdict, Verdict::Pass);
        // A close is still required: the stream just ending fails.
        let mut t = Transcript::expected(&s);
        for ex in &mut t.exchanges {
            for (c, items) in &mut ex.observed {
                for item in items.iter_mut() {
                    if c == "F" && matches!(item, Observed::Closed { .. }) {
                        *item = Observed::Ended {
                            detail: "reset".into(),
                        };
                    }
                }
            }
        }
        assert!(compare(&s, &t).verdict.failed());
        // Case 25 (graceful close) is strict: the answer to a client's 1000 is 1000.
        let s = script(vsn, 25);
        let mut t = Transcript::expected(&s);
        set_close_code(&mut t, "A", Some(1001));
        let Verdict::Fail(d) = compare(&s, &t).verdict else {
            panic!("a strict case must fail on another close code");
        };
        assert_eq!(d.expected.as_deref(), Some("close 1000 \"\""));
        assert_eq!(d.actual.as_deref(), Some("close 1001 \"because\""));
    }
}

#[test]
fn binary_frames_compare_by_content() {
    let s = script(Serializer::V2, 13);
    let mut t = Transcript::expected(&s);
    let reply = items_mut(&mut t, "binary push", 0, "A");
    let Observed::Frame(Frame::Binary(bytes)) = &mut reply[0] else {
        panic!("binary reply expected");
    };
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let Verdict::Fail(d) = compare(&s, &t).verdict else {
        panic!("a changed payload byte must fail");
    };
    assert!(
        d.expected
            .as_deref()
            .unwrap()
            .starts_with("binary reply join_ref=\"11\"")
    );
    assert!(matches!(
        normalize(&Transcript::expected(&s), 0)
            .exchanges
            .last()
            .unwrap()
            .observed[0]
            .1[0],
        NormItem::Binary(_)
    ));
}

/// The leave diff of `user` that another connection got in the exchange at `nth` of `step`.
fn leave_diff_of(t: &Transcript, step: &str, nth: usize, user: &str, not_conn: &str) -> Observed {
    let ex = t
        .exchanges
        .iter()
        .filter(|e| e.step.contains(step))
        .nth(nth)
        .expect("exchange");
    ex.observed
        .iter()
        .filter(|(c, _)| c != not_conn)
        .flat_map(|(_, items)| items)
        .find(|o| match o {
            Observed::Frame(Frame::Text(t)) => {
                t.contains("presence_diff")
                    && t.contains(r#""joins":{}"#)
                    && t.contains(&format!(r#""leaves":{{"{user}""#))
            }
            _ => false,
        })
        .cloned()
        .expect("a leave diff")
}

#[test]
fn race_d_the_replaced_presences_leave_may_also_reach_the_joiner() {
    for vsn in BOTH {
        let s = script(vsn, 12);
        let base = Transcript::expected(&s);
        let leave = leave_diff_of(&base, "duplicate join", 0, "alice", "A");
        // After the reply, after phx_close, between the join diff and the state, at the end.
        for at in 1..=4 {
            let mut t = base.clone();
            let a = items_mut(&mut t, "duplicate join", 0, "A");
            assert_eq!(a.len(), 4, "{vsn:?}");
            a.insert(at, leave.clone());
            let c = compare(&s, &t);
            assert_eq!(c.verdict, Verdict::Pass, "{vsn:?} at {at}: {:?}", c.verdict);
            assert!(
                c.notes.iter().any(|n| n.contains("race D")),
                "{:?}",
                c.notes
            );
        }
        // Not before the reply to the join (the new channel has not subscribed yet).
        let mut t = base.clone();
        items_mut(&mut t, "duplicate join", 0, "A").insert(0, leave.clone());
        assert!(compare(&s, &t).verdict.failed(), "{vsn:?}");
        // Twice at most (the real server sent it twice once: see the lingering subscription).
        let mut t = base.clone();
        let a = items_mut(&mut t, "duplicate join", 0, "A");
        a.insert(2, leave.clone());
        a.insert(3, leave.clone());
        a.insert(4, leave.clone());
        assert!(compare(&s, &t).verdict.failed(), "{vsn:?}");
        // Another frame in its place is still a failure.
        let mut t = base.clone();
        let other = match &leave {
            Observed::Frame(Frame::Text(x)) => {
                Observed::Frame(Frame::Text(x.replace("away", "gone")))
            }
            o => o.clone(),
        };
        items_mut(&mut t, "duplicate join", 0, "A").insert(2, other);
        assert!(compare(&s, &t).verdict.failed(), "{vsn:?}");
    }
}

#[test]
fn race_d_a_late_leave_diff_may_come_in_a_later_exchange() {
    // Case 13 runs the duplicate join as prelude, then the binary push: the leave diff may
    // arrive with the push's reply.
    let s = script(Serializer::V2, 13);
    let base = Transcript::expected(&s);
    let leave = leave_diff_of(&base, "duplicate join", 0, "alice", "A");
    let mut t = base.clone();
    items_mut(&mut t, "binary push", 0, "A").insert(0, leave.clone());
    let c = compare(&s, &t);
    assert_eq!(c.verdict, Verdict::Pass, "{:?}", c.verdict);
    // The canonical transcript puts it last, so a snapshot does not move.
    let last = c.actual_canonical.exchanges.last().unwrap();
    assert!(last.observed[0].1[1].render().contains("presence_diff"));
}

#[test]
fn race_u_the_updaters_own_diff_may_overtake_its_reply() {
    for vsn in BOTH {
        let s = script(vsn, 3);
        let mut t = Transcript::expected(&s);
        let a = items_mut(&mut t, "update_meta", 0, "A");
        assert_eq!(a.len(), 2);
        a.swap(0, 1);
        let c = compare(&s, &t);
        assert_eq!(c.verdict, Verdict::Pass, "{vsn:?}");
        assert!(
            c.notes.iter().any(|n| n.contains("race U")),
            "{:?}",
            c.notes
        );
        // The observer's diff has no such freedom: it must come, exactly once.
        let mut t = Transcript::expected(&s);
        let b = items_mut(&mut t, "update_meta", 0, "B");
        let dup = b[0].clone();
        b.push(dup);
        assert!(compare(&s, &t).verdict.failed());
    }
}

#[test]
fn race_l_the_leavers_own_leave_diff_may_also_come() {
    for vsn in BOTH {
        let s = script(vsn, 14);
        let base = Transcript::expected(&s);
        let leave = leave_diff_of(&base, "phx_leave", 0, "bob", "B");
        let mut t = base.clone();
        items_mut(&mut t, "phx_leave", 0, "B").push(leave.clone());
        let c = compare(&s, &t);
        assert_eq!(c.verdict, Verdict::Pass, "{vsn:?}: {:?}", c.verdict);
        assert!(
            c.notes.iter().any(|n| n.contains("race L")),
            "{:?}",
            c.notes
        );
        // Before the reply it cannot come: the channel had not left yet.
        let mut t = base.clone();
        items_mut(&mut t, "phx_leave", 0, "B").insert(0, leave.clone());
        let Verdict::Fail(d) = compare(&s, &t).verdict else {
            panic!("{vsn:?}: a leave diff before the leave's reply must fail");
        };
        // The failure says what was allowed.
        assert!(
            d.allowed.iter().any(|a| a.contains("race L")),
            "{:?}",
            d.allowed
        );
        assert!(d.describe().contains("allowed here"), "{}", d.describe());
    }
}

/// Rewrites every V1 frame's top-level keys into phoenix.js's client order (topic, event,
/// payload, ref): a server that emits that order instead of Phoenix's must fail.
#[test]
fn v1_key_order_is_checked() {
    let s = script(Serializer::V1, 5);
    let mut t = Transcript::expected(&s);
    map_text(&mut t, &mut |text| {
        let v: Json = serde_json::from_str(text).unwrap();
        let o = v.as_object().unwrap();
        let mut m = serde_json::Map::new();
        for k in ["topic", "event", "payload", "ref"] {
            m.insert(k.to_owned(), o[k].clone());
        }
        Json::Object(m).to_string()
    });
    let Verdict::Fail(d) = compare(&s, &t).verdict else {
        panic!("V1 keys in another order must fail");
    };
    assert!(
        d.expected.as_deref().unwrap().starts_with(r#"{"event":"#),
        "{d:?}"
    );
    assert!(
        d.actual.as_deref().unwrap().starts_with(r#"{"topic":"#),
        "{d:?}"
    );
    // Inside a meta too: phx_ref comes first in Phoenix.
    let s = script(Serializer::V2, 1);
    let mut t = Transcript::expected(&s);
    map_text(&mut t, &mut |text| {
        let mut v: Json = serde_json::from_str(text).unwrap();
        reorder_metas(&mut v);
        v.to_string()
    });
    assert!(
        compare(&s, &t).verdict.failed(),
        "metas with phx_ref last must fail"
    );
}

fn reorder_metas(v: &mut Json) {
    match v {
        Json::Object(m) => {
            if let Some(r) = m.shift_remove("phx_ref") {
                m.insert("phx_ref".into(), r);
            }
            m.values_mut().for_each(reorder_metas);
        }
        Json::Array(a) => a.iter_mut().for_each(reorder_metas),
        _ => {}
    }
}

#[test]
fn race_d_without_a_witness_the_leave_diff_is_built_from_the_joiners_meta() {
    // Case 12 with B's frames removed from the duplicate join: the allowed leave diff must be
    // the very frame B got (built from A's own join diff, in Phoenix's key order).
    for vsn in BOTH {
        let s = script(vsn, 12);
        let mut lone = s.clone();
        for ex in &mut lone.exchanges {
            if ex.step.contains("duplicate join") {
                ex.expect.retain(|(c, _)| c != "B");
            }
        }
        let plan = phxsim_conform::races::plan(&lone);
        let j = lone
            .exchanges
            .iter()
            .position(|e| e.step.contains("duplicate join"))
            .unwrap();
        let floats = &plan.exchanges[j].conn("A").unwrap().floats;
        assert_eq!(floats.len(), 1, "{vsn:?}");
        let witnessed = leave_diff_of(&Transcript::expected(&s), "duplicate join", 0, "alice", "A");
        assert_eq!(floats[0].frame, witnessed, "{vsn:?}");
    }
}

#[test]
fn race_d_the_lingering_subscription_may_deliver_a_diff_twice() {
    // Seen on the real server, after reply and phx_close (the old channel's subscription had
    // not been dropped yet, so both channels pushed what was broadcast):
    // - the replaced meta's leave, then the new join diff twice, then the state;
    // - the replaced meta's leave twice (CI, case 25 V2), then the new join diff.
    for vsn in BOTH {
        let s = script(vsn, 12);
        let base = Transcript::expected(&s);
        let leave = leave_diff_of(&base, "duplicate join", 0, "alice", "A");
        let join_diff = items_mut(&mut base.clone(), "duplicate join", 0, "A")[2].clone();
        for twice in [&join_diff, &leave] {
            let mut t = base.clone();
            let a = items_mut(&mut t, "duplicate join", 0, "A");
            a.insert(2, leave.clone());
            a.insert(3, twice.clone());
            let c = compare(&s, &t);
            assert_eq!(c.verdict, Verdict::Pass, "{vsn:?}: {:?}", c.verdict);
            assert!(c.notes.iter().any(|n| n.contains("twice")), "{:?}", c.notes);
            // Three times is not a race.
            items_mut(&mut t, "duplicate join", 0, "A").insert(3, twice.clone());
            assert!(compare(&s, &t).verdict.failed(), "{vsn:?}");
        }
        // Nor is a twice-delivered diff on a socket whose channel did not end.
        let s = script(vsn, 3);
        let mut t = Transcript::expected(&s);
        let b = items_mut(&mut t, "update_meta", 0, "B");
        let d = b[0].clone();
        b.push(d);
        assert!(compare(&s, &t).verdict.failed(), "{vsn:?}");
    }
}

#[test]
fn race_l_applies_to_numeric_refs_too() {
    for vsn in BOTH {
        let s = script(vsn, 41);
        let base = Transcript::expected(&s);
        let leave = leave_diff_of(&base, "leaves with numeric refs", 0, "alice", "A");
        let mut t = base.clone();
        items_mut(&mut t, "leaves with numeric refs", 0, "A").push(leave);
        let c = compare(&s, &t);
        assert_eq!(c.verdict, Verdict::Pass, "{vsn:?}: {:?}", c.verdict);
    }
}
