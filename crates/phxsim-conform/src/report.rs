//! Reports of a conformance run: a plain-text table for the terminal, JSON, JUnit XML for CI
//! systems, and an HTML page laid out like Autobahn|Testsuite's (a matrix of cases against
//! protocol versions, then every case with its expected and actual frames side by side).
//!
//! Every renderer is a pure function of a [`Report`], so they are tested against golden files;
//! all text that came from the server is escaped for its format.

use crate::compare::{Difference, Verdict};
use crate::junit::{self, Failure, Suite, TestCase};
use crate::recording::{PHOENIX_VERSION, reference_source};
use crate::runner::CaseResult;
use crate::transcript::NormTranscript;
use phxsim_wire::Serializer;
use serde::Serialize;

/// All results of one `phxsim conform` invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The server under test.
    pub url: String,
    /// One run per serializer, V1 first.
    pub runs: Vec<VsnRun>,
}

/// The results for one serializer.
#[derive(Clone, Debug, PartialEq)]
pub struct VsnRun {
    /// The serializer.
    pub vsn: Serializer,
    /// Results in case order.
    pub results: Vec<CaseResult>,
}

/// Counts of each verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Cases that matched exactly.
    pub pass: usize,
    /// Cases that matched except where allowed.
    pub non_strict: usize,
    /// Cases that failed.
    pub fail: usize,
}

impl Summary {
    fn total(&self) -> usize {
        self.pass + self.non_strict + self.fail
    }
}

impl Report {
    /// Counts over every run.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for r in self.runs.iter().flat_map(|r| &r.results) {
            match r.comparison.verdict {
                Verdict::Pass => s.pass += 1,
                Verdict::NonStrict { .. } => s.non_strict += 1,
                Verdict::Fail(_) => s.fail += 1,
            }
        }
        s
    }

    /// Whether any case failed (the exit code depends on it).
    pub fn failed(&self) -> bool {
        self.summary().fail > 0
    }

    /// Every case id that ran in any serializer, in order.
    fn case_rows(&self) -> Vec<(u8, String)> {
        let mut rows: Vec<(u8, String)> = Vec::new();
        for r in self.runs.iter().flat_map(|r| &r.results) {
            let id = r.script.case.id;
            if !rows.iter().any(|(i, _)| *i == id) {
                rows.push((id, r.script.case.name()));
            }
        }
        rows.sort();
        rows
    }

    fn result(&self, vsn: Serializer, id: u8) -> Option<&CaseResult> {
        self.runs
            .iter()
            .find(|r| r.vsn == vsn)
            .and_then(|r| r.results.iter().find(|c| c.script.case.id == id))
    }
}

/// `V1` / `V2`.
pub fn vsn_label(vsn: Serializer) -> &'static str {
    match vsn {
        Serializer::V1 => "V1",
        Serializer::V2 => "V2",
    }
}

/// `1.0.0` / `2.0.0`.
pub fn vsn_number(vsn: Serializer) -> &'static str {
    match vsn {
        Serializer::V1 => "1.0.0",
        Serializer::V2 => "2.0.0",
    }
}

// ---------------------------------------------------------------------------------------------
// Plain text

/// The terminal table: one row per case, one column per serializer, then the reasons of
/// non-strict results and the first difference of each failure.
pub fn render_table(report: &Report) -> String {
    let rows = report.case_rows();
    let width = rows.iter().map(|(_, n)| n.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "phxsim conform {} (expected frames: Phoenix {PHOENIX_VERSION} recordings)\n\n",
        report.url
    );
    out.push_str(&format!("{:width$}", "case"));
    for run in &report.runs {
        out.push_str(&format!("  {:<10}", vsn_label(run.vsn)));
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    for (id, name) in &rows {
        out.push_str(&format!("{name:width$}"));
        for run in &report.runs {
            let cell = report
                .result(run.vsn, *id)
                .map_or("-", |r| r.comparison.verdict.label());
            out.push_str(&format!("  {cell:<10}"));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    let mut loose = String::new();
    let mut fails = String::new();
    for run in &report.runs {
        for r in &run.results {
            let who = format!("{} {}", r.script.case.name(), vsn_label(run.vsn));
            match &r.comparison.verdict {
                Verdict::Pass => {}
                Verdict::NonStrict { reason, deviations } => {
                    loose.push_str(&format!("  {who}: {}\n", deviations.join("; ")));
                    loose.push_str(&format!("    why that is accepted: {reason}\n"));
                }
                Verdict::Fail(d) => {
                    fails.push_str(&format!("  {who}: {}\n", d.describe()));
                }
            }
        }
    }
    if !loose.is_empty() {
        out.push_str("\nnon-strict:\n");
        out.push_str(&loose);
    }
    if !fails.is_empty() {
        out.push_str("\nfailures (first differing frame):\n");
        out.push_str(&fails);
    }
    let s = report.summary();
    out.push_str(&format!(
        "\n{} cases: {} pass, {} non-strict, {} fail\n",
        s.total(),
        s.pass,
        s.non_strict,
        s.fail
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// JSON

#[derive(Serialize)]
struct JsonReport<'a> {
    tool: &'static str,
    url: &'a str,
    reference: String,
    summary: Summary,
    runs: Vec<JsonRun>,
}

#[derive(Serialize)]
struct JsonRun {
    vsn: &'static str,
    recording: &'static str,
    cases: Vec<JsonCase>,
}

#[derive(Serialize)]
struct JsonCase {
    id: u8,
    name: String,
    title: String,
    topic: String,
    result: &'static str,
    reason: Option<String>,
    deviations: Vec<String>,
    notes: Vec<String>,
    first_difference: Option<Difference>,
    duration_ms: u64,
    expected: Vec<String>,
    actual: Vec<String>,
}

fn lines(t: &NormTranscript) -> Vec<String> {
    t.render().lines().map(str::to_owned).collect()
}

fn millis(r: &CaseResult) -> u64 {
    u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// The whole report as pretty JSON.
pub fn render_json(report: &Report) -> String {
    let runs = report
        .runs
        .iter()
        .map(|run| JsonRun {
            vsn: vsn_number(run.vsn),
            recording: reference_source(run.vsn),
            cases: run
                .results
                .iter()
                .map(|r| {
                    let (reason, deviations, diff) = match &r.comparison.verdict {
                        Verdict::Pass => (None, Vec::new(), None),
                        Verdict::NonStrict { reason, deviations } => {
                            (Some(reason.clone()), deviations.clone(), None)
                        }
                        Verdict::Fail(d) => (None, Vec::new(), Some(d.clone())),
                    };
                    let mut notes = r.comparison.notes.clone();
                    if let Some(n) = r.script.case.note {
                        notes.insert(0, n.to_owned());
                    }
                    JsonCase {
                        id: r.script.case.id,
                        name: r.script.case.name(),
                        title: squash(r.script.case.title),
                        topic: r.script.topic.clone(),
                        result: r.comparison.verdict.label(),
                        reason,
                        deviations,
                        notes,
                        first_difference: diff,
                        duration_ms: millis(r),
                        expected: lines(&r.comparison.expected),
                        actual: lines(&r.comparison.actual),
                    }
                })
                .collect(),
        })
        .collect();
    let doc = JsonReport {
        tool: "phxsim conform",
        url: &report.url,
        reference: format!("Phoenix {PHOENIX_VERSION} recordings"),
        summary: report.summary(),
        runs,
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
        // Serializing plain structs of strings and numbers cannot fail; say so if it does.
        format!("{{\"error\":{}}}", crate::transcript::quote(&e.to_string()))
    });
    text.push('\n');
    text
}

/// Collapses the runs of spaces that line-wrapped string literals leave.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// JUnit

/// JUnit XML: one test suite per serializer, one test case per conformance case. A non-strict
/// case passes, with its reason in a property and in `system-out`.
pub fn render_junit(report: &Report) -> String {
    let suites: Vec<Suite> = report
        .runs
        .iter()
        .map(|run| Suite {
            name: format!(
                "conform {} (vsn={})",
                vsn_label(run.vsn),
                vsn_number(run.vsn)
            ),
            properties: vec![
                ("url".into(), report.url.clone()),
                ("recording".into(), reference_source(run.vsn).into()),
            ],
            cases: run.results.iter().map(|r| junit_case(run.vsn, r)).collect(),
        })
        .collect();
    junit::render_suites("phxsim conform", &suites)
}

fn junit_case(vsn: Serializer, r: &CaseResult) -> TestCase {
    let mut case = TestCase {
        classname: format!("conform.{}", vsn_label(vsn).to_lowercase()),
        name: r.script.case.name(),
        time_ms: millis(r),
        ..TestCase::default()
    };
    match &r.comparison.verdict {
        Verdict::Pass => {}
        Verdict::NonStrict { reason, deviations } => {
            case.properties = vec![("non-strict".into(), reason.clone())];
            case.system_out = Some(format!("non-strict: {}\n{reason}", deviations.join("; ")));
        }
        Verdict::Fail(d) => {
            case.failure = Some(Failure {
                message: d.describe(),
                kind: Some("conformance".into()),
                text: format!(
                    "expected:\n{}\nactual:\n{}",
                    r.comparison.expected.render(),
                    r.comparison.actual.render()
                ),
            });
        }
    }
    case
}

// ---------------------------------------------------------------------------------------------
// HTML

fn html(s: &str) -> String {
    junit::markup(s, "&#39;", false)
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
table.matrix{border-collapse:collapse}\
table.matrix td,table.matrix th{border:1px solid #bbb;padding:.2em .6em;text-align:left}\
td.pass,td.non-strict,td.fail{white-space:nowrap}td.pass{background:#0a0;color:#fff}td.non-strict{background:#e6c300}\
td.fail{background:#c00;color:#fff}td.na{background:#eee;color:#888}\
td a{color:inherit}\
.verdict{font-weight:bold}.pass .verdict,span.pass{color:#080}\
span.non-strict{color:#a60}span.fail{color:#c00}\
div.frames{display:flex;gap:1em}div.frames>div{flex:1;min-width:0}\
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-all;font-size:.8em;line-height:1.35}\
pre .step{color:#555;font-weight:bold}pre .diff{background:#fcc;display:block}\
p.note{color:#555;font-size:.9em}";

/// The HTML page: summary, matrix, then every case.
pub fn render_html(report: &Report) -> String {
    let s = report.summary();
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<title>phxsim conform report</title>\n");
    out.push_str(&format!("<style>{CSS}</style>\n</head>\n<body>\n"));
    out.push_str("<h1>phxsim conform: Phoenix Channels wire conformance</h1>\n");
    out.push_str(&format!(
        "<p>Server <code>{}</code>, compared with the frames of a real Phoenix {PHOENIX_VERSION} \
         (refs normalized). {} cases: <span class=\"pass\">{} pass</span>, \
         <span class=\"non-strict\">{} non-strict</span>, <span class=\"fail\">{} fail</span>.</p>\n",
        html(&report.url),
        s.total(),
        s.pass,
        s.non_strict,
        s.fail
    ));
    out.push_str("<table class=\"matrix\">\n<tr><th>case</th><th>what happens</th>");
    for run in &report.runs {
        out.push_str(&format!("<th>{}</th>", vsn_label(run.vsn)));
    }
    out.push_str("</tr>\n");
    for (id, name) in report.case_rows() {
        let title = report
            .runs
            .iter()
            .find_map(|r| report.result(r.vsn, id))
            .map(|r| squash(r.script.case.title))
            .unwrap_or_default();
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td>",
            html(&name),
            html(&title)
        ));
        for run in &report.runs {
            match report.result(run.vsn, id) {
                Some(r) => {
                    let label = r.comparison.verdict.label();
                    out.push_str(&format!(
                        "<td class=\"{label}\"><a href=\"#{}\">{label}</a> <small>{} ms</small></td>",
                        anchor(run.vsn, &name),
                        millis(r)
                    ));
                }
                None => out.push_str("<td class=\"na\">n/a</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    for run in &report.runs {
        for r in &run.results {
            out.push_str(&case_section(run.vsn, r));
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn anchor(vsn: Serializer, name: &str) -> String {
    format!("{}-{name}", vsn_label(vsn).to_lowercase())
}

fn case_section(vsn: Serializer, r: &CaseResult) -> String {
    let case = &r.script.case;
    let name = case.name();
    let label = r.comparison.verdict.label();
    let mut out = format!(
        "<h2 id=\"{}\">{} {} <span class=\"{label}\">{label}</span></h2>\n",
        anchor(vsn, &name),
        html(&name),
        vsn_label(vsn)
    );
    out.push_str(&format!(
        "<p>{} <small>(topic <code>{}</code>, {} ms)</small></p>\n",
        html(&squash(case.title)),
        html(&r.script.topic),
        millis(r)
    ));
    let diff = match &r.comparison.verdict {
        Verdict::Pass => None,
        Verdict::NonStrict { reason, deviations } => {
            out.push_str(&format!(
                "<p class=\"verdict\">non-strict: {}</p>\n<p class=\"note\">Accepted because {}</p>\n",
                html(&deviations.join("; ")),
                html(reason)
            ));
            None
        }
        Verdict::Fail(d) => {
            out.push_str(&format!(
                "<p class=\"verdict\">first difference: {}</p>\n",
                html(&d.describe())
            ));
            Some(d)
        }
    };
    if let Some(n) = case.note {
        out.push_str(&format!("<p class=\"note\">{}</p>\n", html(&squash(n))));
    }
    for n in &r.comparison.notes {
        out.push_str(&format!("<p class=\"note\">{}</p>\n", html(n)));
    }
    out.push_str("<div class=\"frames\">\n");
    out.push_str(&format!(
        "<div><h3>expected (Phoenix {PHOENIX_VERSION})</h3>\n{}</div>\n",
        transcript_pre(&r.comparison.expected, diff)
    ));
    out.push_str(&format!(
        "<div><h3>actual</h3>\n{}</div>\n",
        transcript_pre(&r.comparison.actual, diff)
    ));
    out.push_str("</div>\n");
    out
}

/// A transcript in a `<pre>`, the first differing observation highlighted.
fn transcript_pre(t: &NormTranscript, diff: Option<&Difference>) -> String {
    let mut out = String::from("<pre>");
    let mut last_step: Option<&str> = None;
    for (i, ex) in t.exchanges.iter().enumerate() {
        if last_step != Some(ex.step.as_str()) {
            let tag = if ex.prelude { " (prelude)" } else { "" };
            out.push_str(&format!(
                "<span class=\"step\">## {}{tag}</span>\n",
                html(&ex.step)
            ));
            last_step = Some(&ex.step);
        }
        out.push_str(&format!("{} {}\n", html(&ex.conn), html(&ex.action)));
        for (conn, items) in &ex.observed {
            for (pos, item) in items.iter().enumerate() {
                let line = format!("  {} &lt;- {}", html(conn), html(&item.render()));
                let hit =
                    diff.is_some_and(|d| d.exchange == i && d.conn == *conn && d.position == pos);
                if hit {
                    out.push_str(&format!("<span class=\"diff\">{line}</span>"));
                } else {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        if ex.timed_out {
            out.push_str("  (timed out waiting for the rest; the case stopped here)\n");
        }
    }
    out.push_str("</pre>\n");
    out
}
