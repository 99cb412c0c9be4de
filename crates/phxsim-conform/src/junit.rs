//! JUnit XML: the one writer of every phxsim JUnit report (`conform`, `run`, `explore`). A
//! report is a tree of [`Suite`]s and [`TestCase`]s with their text unescaped; the writer
//! escapes every attribute and body with [`xml`], so no caller can forget to (control
//! characters from a server or a finding included).

/// Text for an XML attribute or element: the five entities escaped, and the control
/// characters XML 1.0 cannot carry even escaped written as `\u{..}`.
pub fn xml(s: &str) -> String {
    markup(s, "&apos;", true)
}

/// `&`, `<`, `>`, `"` and `'` (as `apos`) escaped; with `control`, also the control
/// characters other than newline, tab and carriage return, as `\u{..}` (XML 1.0 cannot carry
/// them, even escaped). The HTML report escapes with it too.
pub(crate) fn markup(s: &str, apos: &str, control: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str(apos),
            c if control && (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds as JUnit's seconds with three decimals.
pub fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// A `<testsuite>`: its cases, and properties that hold for all of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Suite {
    pub name: String,
    pub properties: Vec<(String, String)>,
    pub cases: Vec<TestCase>,
}

/// A `<testcase>`. A passing case with no properties and no output is written self-closed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestCase {
    pub classname: String,
    pub name: String,
    pub time_ms: u64,
    pub properties: Vec<(String, String)>,
    pub failure: Option<Failure>,
    pub system_out: Option<String>,
}

/// Why a case failed: JUnit's `message` and `type` attributes and the element's text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Failure {
    pub message: String,
    pub kind: Option<String>,
    pub text: String,
}

impl Suite {
    fn failures(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_some()).count()
    }

    fn time_ms(&self) -> u64 {
        self.cases.iter().map(|c| c.time_ms).sum()
    }
}

/// A document whose root is one suite (`run`, `explore`).
pub fn render_suite(suite: &Suite) -> String {
    let mut out = header();
    write_suite(&mut out, suite, 0);
    out
}

/// A document whose root is `<testsuites name=...>` holding `suites` (`conform`: one suite
/// per serializer).
pub fn render_suites(name: &str, suites: &[Suite]) -> String {
    let mut out = header();
    let tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(Suite::failures).sum();
    let ms: u64 = suites.iter().map(Suite::time_ms).sum();
    out.push_str(&format!(
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{}\">\n",
        xml(name),
        secs(ms)
    ));
    for s in suites {
        write_suite(&mut out, s, 1);
    }
    out.push_str("</testsuites>\n");
    out
}

fn header() -> String {
    String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
}

fn write_properties(out: &mut String, properties: &[(String, String)], pad: &str) {
    if properties.is_empty() {
        return;
    }
    out.push_str(&format!("{pad}<properties>\n"));
    for (name, value) in properties {
        out.push_str(&format!(
            "{pad}  <property name=\"{}\" value=\"{}\"/>\n",
            xml(name),
            xml(value)
        ));
    }
    out.push_str(&format!("{pad}</properties>\n"));
}

fn write_suite(out: &mut String, s: &Suite, depth: usize) {
    let pad = "  ".repeat(depth);
    out.push_str(&format!(
        "{pad}<testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" time=\"{}\">\n",
        xml(&s.name),
        s.cases.len(),
        s.failures(),
        secs(s.time_ms())
    ));
    write_properties(out, &s.properties, &format!("{pad}  "));
    for c in &s.cases {
        write_case(out, c, depth + 1);
    }
    out.push_str(&format!("{pad}</testsuite>\n"));
}

fn write_case(out: &mut String, c: &TestCase, depth: usize) {
    let pad = "  ".repeat(depth);
    out.push_str(&format!(
        "{pad}<testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
        xml(&c.classname),
        xml(&c.name),
        secs(c.time_ms)
    ));
    if c.properties.is_empty() && c.failure.is_none() && c.system_out.is_none() {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    let inner = format!("{pad}  ");
    write_properties(out, &c.properties, &inner);
    if let Some(f) = &c.failure {
        let kind = f
            .kind
            .as_ref()
            .map(|k| format!(" type=\"{}\"", xml(k)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{inner}<failure message=\"{}\"{kind}>{}</failure>\n",
            xml(&f.message),
            xml(&f.text)
        ));
    }
    if let Some(text) = &c.system_out {
        out.push_str(&format!("{inner}<system-out>{}</system-out>\n", xml(text)));
    }
    out.push_str(&format!("{pad}</testcase>\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_is_escaped_control_characters_included() {
        let suite = Suite {
            name: "s<1>".into(),
            properties: vec![("url".into(), "ws://x?a=1&b=\"2\"".into())],
            cases: vec![
                TestCase {
                    classname: "c".into(),
                    name: "ok".into(),
                    time_ms: 1500,
                    ..TestCase::default()
                },
                TestCase {
                    classname: "c".into(),
                    name: "it's".into(),
                    time_ms: 7,
                    failure: Some(Failure {
                        message: "bad\u{1b}[31m".into(),
                        kind: Some("conformance".into()),
                        text: "a < b\n\u{0}".into(),
                    }),
                    system_out: Some("x&y".into()),
                    ..TestCase::default()
                },
            ],
        };
        assert_eq!(
            render_suite(&suite),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <testsuite name=\"s&lt;1&gt;\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"1.507\">\n  \
             <properties>\n    <property name=\"url\" value=\"ws://x?a=1&amp;b=&quot;2&quot;\"/>\n  </properties>\n  \
             <testcase classname=\"c\" name=\"ok\" time=\"1.500\"/>\n  \
             <testcase classname=\"c\" name=\"it&apos;s\" time=\"0.007\">\n    \
             <failure message=\"bad\\u{1b}[31m\" type=\"conformance\">a &lt; b\n\\u{0}</failure>\n    \
             <system-out>x&amp;y</system-out>\n  </testcase>\n\
             </testsuite>\n"
        );
        let nested = render_suites("all", &[suite.clone(), suite]);
        assert!(nested.contains(
            "<testsuites name=\"all\" tests=\"4\" failures=\"2\" errors=\"0\" time=\"3.014\">\n  <testsuite "
        ));
        assert!(nested.contains("\n    <testcase classname=\"c\" name=\"ok\""));
        assert!(nested.ends_with("  </testsuite>\n</testsuites>\n"));
    }
}
