//! Golden tests of the four report formats on fixed results (one pass, one non-strict, one
//! failure per serializer, fixed durations), kept in `snapshots/conform/reports/`; and escaping
//! of hostile server text in each format.

mod common;

use common::insta_settings;
use phxsim_conform::cases::DEFAULT_TOPIC_PREFIX;
use phxsim_conform::report::{render_html, render_json, render_junit, render_table};
use phxsim_conform::script::Observed;
use phxsim_conform::{CaseResult, CaseScript, Report, Transcript, VsnRun, catalogue, compare};
use phxsim_wire::{Frame, Serializer};
use serde_json::Value as Json;
use std::time::Duration;

const URL: &str = "ws://127.0.0.1:4000/socket/websocket";

fn script(vsn: Serializer, id: u8) -> CaseScript {
    catalogue(vsn, DEFAULT_TOPIC_PREFIX)
        .unwrap()
        .into_iter()
        .find(|s| s.case.id == id)
        .unwrap()
}

fn result(script: CaseScript, t: &Transcript, ms: u64) -> CaseResult {
    CaseResult {
        comparison: compare(&script, t),
        script,
        elapsed: Duration::from_millis(ms),
    }
}

/// Sets the close frame on `conn` (code and reason) wherever the transcript has one.
fn close_with(t: &mut Transcript, conn: &str, code: u16, reason: &str) {
    for ex in &mut t.exchanges {
        for (c, items) in &mut ex.observed {
            for item in items {
                if c == conn && matches!(item, Observed::Closed { .. }) {
                    *item = Observed::Closed {
                        code: Some(code),
                        reason: reason.to_owned(),
                    };
                }
            }
        }
    }
}

fn drop_phx_ref_prev(t: &mut Transcript) {
    for ex in &mut t.exchanges {
        for (_, items) in &mut ex.observed {
            for item in items {
                if let Observed::Frame(Frame::Text(text)) = item {
                    *text = text.replace(r#""phx_ref_prev":"#, r#""dropped":"#);
                }
            }
        }
    }
}

fn fixed_report(reason: &str) -> Report {
    let runs = [Serializer::V1, Serializer::V2]
        .into_iter()
        .map(|vsn| {
            let pass = script(vsn, 4);
            let pass_t = Transcript::expected(&pass);
            let loose = script(vsn, 20);
            let mut loose_t = Transcript::expected(&loose);
            close_with(&mut loose_t, "F", 1007, reason);
            let fail = script(vsn, 3);
            let mut fail_t = Transcript::expected(&fail);
            drop_phx_ref_prev(&mut fail_t);
            VsnRun {
                vsn,
                results: vec![
                    result(fail, &fail_t, 21),
                    result(pass, &pass_t, 3),
                    result(loose, &loose_t, 1234),
                ],
            }
        })
        .collect();
    Report {
        url: URL.to_owned(),
        runs,
    }
}

#[test]
fn reports_match_their_golden_files() {
    let report = fixed_report("malformed frame: not JSON");
    assert!(report.failed());
    let s = report.summary();
    assert_eq!((s.pass, s.non_strict, s.fail), (2, 2, 2));
    let settings = insta_settings("reports");
    settings.bind(|| {
        insta::assert_snapshot!("table.txt", render_table(&report));
        insta::assert_snapshot!("report.json", render_json(&report));
        insta::assert_snapshot!("junit.xml", render_junit(&report));
        insta::assert_snapshot!("report.html", render_html(&report));
    });
}

#[test]
fn the_json_report_is_machine_readable() {
    let report = fixed_report("x");
    let v: Json = serde_json::from_str(&render_json(&report)).unwrap();
    assert_eq!(v["summary"]["fail"], 2);
    let cases = v["runs"][1]["cases"].as_array().unwrap();
    let fail = cases.iter().find(|c| c["result"] == "fail").unwrap();
    assert_eq!(fail["name"], "03-update-meta");
    assert_eq!(fail["first_difference"]["conn"], "A");
    assert_eq!(fail["first_difference"]["prelude"], false);
    let loose = cases.iter().find(|c| c["result"] == "non-strict").unwrap();
    assert!(loose["reason"].as_str().unwrap().contains("Bandit"));
}

#[test]
fn server_text_is_escaped_in_every_format() {
    let hostile = "</pre><script>alert(1)</script>\"&'\u{1}";
    let report = fixed_report(hostile);
    let html = render_html(&report);
    assert!(!html.contains("<script>"), "raw script tag in HTML");
    assert!(html.contains("&lt;script&gt;"));
    let junit = render_junit(&report);
    assert!(!junit.contains("<script>"));
    assert!(!junit.contains('\u{1}'), "control characters are not XML");
    let json = render_json(&report);
    let v: Json = serde_json::from_str(&json).expect("still valid JSON");
    let actual = v["runs"][0]["cases"][2]["actual"].as_array().unwrap();
    assert!(
        actual
            .iter()
            .any(|l| l.as_str().unwrap().contains("<script>"))
    );
}
