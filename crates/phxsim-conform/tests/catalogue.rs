//! The catalogue, normalization and comparison, on the Phoenix recordings alone (no server):
//! every case's expected transcript is snapshotted under `snapshots/conform/recorded/`, every
//! case is self-contained, and the comparison accepts what Phoenix varies and nothing else.

mod common;

use common::insta_settings;
use phxsim_conform::cases::{CASES, DEFAULT_TOPIC_PREFIX, catalogue};
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
    let ids: Vec<u8> = CASES.iter().map(|c| c.id).collect();
    let expected: Vec<u8> = (1..=u8::try_from(CASES.len()).unwrap()).collect();
    assert_eq!(ids, expected);
    let slugs: BTreeSet<&str> = CASES.iter().map(|c| c.slug).collect();
    assert_eq!(slugs.len(), CASES.len());
    assert_eq!(scripts(Serializer::V2).len(), CASES.len());
    // Only the binary push is V2-only.
    assert_eq!(scripts(Serializer::V1).len(), CASES.len() - 1);
    for c in CASES {
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
fn key_order_does_not_matter_but_values_do() {
    let a = r#"[null,null,"t","presence_diff",{"joins":{"u":{"metas":[{"phx_ref":"X1","name":"A","status":"online"}]}},"leaves":{}}]"#;
    let b = r#"[null,null,"t","presence_diff",{"leaves":{},"joins":{"u":{"metas":[{"status":"online","name":"A","phx_ref":"Q9"}]}}}]"#;
    assert_eq!(normalize_frame(a), normalize_frame(b));
    let c = b.replace("online", "away");
    assert_ne!(normalize_frame(a), normalize_frame(&c));
    assert_eq!(
        serde_json::to_string(&normalize_frame(a).unwrap()).unwrap(),
        r#"[null,null,"t","presence_diff",{"joins":{"u":{"metas":[{"name":"A","phx_ref":"<ref1>","status":"online"}]}},"leaves":{}}]"#
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
        assert!(c.notes[0].contains("either"));
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
