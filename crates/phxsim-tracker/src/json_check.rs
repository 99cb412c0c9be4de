//! A quick check that text is exactly one JSON value, for the metas a node decodes by the
//! hundred thousand in one transfer. It answers `true` only for text `serde_json` accepts, and
//! is not meant to be complete: anything it does not accept (bad JSON, or nesting deeper than
//! [`MAX_DEPTH`]) goes to `serde_json`, which decides and says what is wrong. One pass over the
//! bytes, no allocation.

/// Deeper values are left to `serde_json` (which has its own limit).
const MAX_DEPTH: u32 = 64;

/// Is `text` one JSON value, surrounded by JSON whitespace at most?
pub(crate) fn surely_valid(text: &str) -> bool {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    if !s.value(0) {
        return false;
    }
    s.ws();
    s.i == s.b.len()
}

/// The top bit of every byte of `word` (little-endian) that a JSON string cannot hold as it is
/// (a quote, a backslash, a control byte), and maybe of bytes after the first such one (a
/// borrow may carry into them): the lowest bit set is exact, which is all a scan for the
/// first one needs.
fn specials(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    // bytes below `n`: subtracting `n` borrows from them alone (up to the first one)
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & TOPS;
    below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1)
        | below(word, 0x20)
}

/// Non-zero in the bytes of `word` (little-endian) that are not ASCII digits, exact up to the
/// first one: a digit is `0x3_` with a low half that stays below `0x_A` when 6 is added (adding
/// carries only out of a byte above `0xF9`, which is no digit).
fn non_digits(word: u64) -> u64 {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    ((word & HIGH) ^ THREES) | ((word.wrapping_add(SIXES) & HIGH) ^ THREES)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: u32) -> bool {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn word(&mut self, w: &[u8]) -> bool {
        let ok = self.b[self.i..].starts_with(w);
        self.i += w.len();
        ok
    }

    fn object(&mut self, depth: u32) -> bool {
        self.container(depth, b'}', |s| {
            if s.peek() != Some(b'"') || !s.string() {
                return false;
            }
            s.ws();
            if s.peek() != Some(b':') {
                return false;
            }
            s.i += 1;
            s.ws();
            s.value(depth)
        })
    }

    fn array(&mut self, depth: u32) -> bool {
        self.container(depth, b']', |s| s.value(depth))
    }

    /// An object or array from its opening byte at the cursor: `item`s separated by commas up
    /// to `close`, none at all allowed, a trailing comma not (as JSON has it).
    fn container(
        &mut self,
        depth: u32,
        close: u8,
        mut item: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return true;
        }
        loop {
            if !item(self) {
                return false;
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(c) if c == close => {
                    self.i += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn string(&mut self) -> bool {
        self.i += 1;
        loop {
            // eight bytes at a time, up to the first one that needs a look
            while let Some(chunk) = self.b.get(self.i..).and_then(<[u8]>::first_chunk::<8>) {
                let hits = specials(u64::from_le_bytes(*chunk));
                if hits != 0 {
                    self.i += (hits.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return true;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return false;
                            }
                            self.i += 5;
                        }
                        _ => return false,
                    }
                }
                // control characters must be escaped
                Some(c) if c >= 0x20 => self.i += 1,
                _ => return false,
            }
        }
    }

    /// One or more digits.
    fn digits(&mut self) -> bool {
        let start = self.i;
        // eight at a time, up to the first byte that is not a digit
        while let Some(chunk) = self.b.get(self.i..).and_then(<[u8]>::first_chunk::<8>) {
            let others = non_digits(u64::from_le_bytes(*chunk));
            if others != 0 {
                self.i += (others.trailing_zeros() / 8) as usize;
                return self.i > start;
            }
            self.i += 8;
        }
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i > start
    }

    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            // a leading zero stands alone: "01" stops after the 0 and the caller refuses the 1
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.digits() {
                return false;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.digits() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn accepts_what_serde_accepts_in_the_usual_cases() {
        for ok in [
            r#"{}"#,
            r#" {"online_at":1750000123,"phx_ref":"F1x-_aZ09"} "#,
            r#"{"a":[1,-0,0.5,-1.25e+10,2E-3,true,false,null,"\u00e9\n\"",{}],"b":{"c":[]}}"#,
            r#"{"é":"ünï","":""}"#,
        ] {
            assert!(surely_valid(ok), "{ok}");
            assert!(serde_accepts(ok), "{ok}");
        }
        for bad in [
            "",
            "{",
            "}",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            "[1,]",
            "01",
            "-",
            "1.",
            "1e",
            "1e+",
            r#""\x""#,
            r#""\u12g4""#,
            "\"\u{1}\"",
            "tru",
            "nul",
            "{} {}",
            r#"{a:1}"#,
            "+1",
            ".5",
            "[1 2]",
        ] {
            assert!(!surely_valid(bad), "{bad:?}");
            assert!(!serde_accepts(bad), "{bad:?}");
        }
        // strings scanned eight bytes at a time: a quote, an escape, a control byte or
        // non-ASCII text at every offset of a word, as serde_json judges them
        for at in 0..20 {
            for special in [
                "\"", "\\n", "\\", "\u{1f}", "\u{0}", "é", "\\u00e9", " ", "\u{7f}",
            ] {
                for tail in ["", "abcdefghij"] {
                    let text = format!(r#"{{"k":"{}{special}{tail}"}}"#, "a".repeat(at));
                    assert_eq!(surely_valid(&text), serde_accepts(&text), "{text:?}");
                }
            }
        }
        // digits read eight at a time: numbers of every length, each followed by every byte
        for len in 1..20 {
            for next in ["", ",", "]", ".5", "e3", "x", ":", "/", "\u{7f}", "é", " "] {
                let text = format!("[1{}{next}]", "9".repeat(len));
                assert_eq!(surely_valid(&text), serde_accepts(&text), "{text:?}");
            }
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(!surely_valid(&deep), "deep nesting is left to serde_json");
    }

    /// Valid JSON text from serde_json, to be broken in small ways.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[a-z\"\\\u{1}é/]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z]{0,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
        .prop_map(|v| serde_json::to_string(&v).unwrap())
    }

    proptest! {
        /// Never says yes where serde_json says no: valid text with one byte replaced, inserted
        /// or removed, from JSON's own characters and a control character.
        #[test]
        fn never_accepts_what_serde_refuses(
            text in json_text(),
            at in any::<prop::sample::Index>(),
            how in 0..3u8,
            with in prop::sample::select(&b"{}[]\":,.-+0123456789eEtfnu\\/ \x01"[..]),
        ) {
            let mut b = text.into_bytes();
            let i = at.index(b.len() + 1);
            match how {
                0 if i < b.len() => b[i] = with,
                1 => b.insert(i, with),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => {}
            }
            if let Ok(text) = String::from_utf8(b)
                && surely_valid(&text)
            {
                prop_assert!(serde_accepts(&text), "{:?}", text);
            }
        }

        /// And says yes to what serde_json writes.
        #[test]
        fn accepts_what_serde_writes(text in json_text()) {
            prop_assert!(surely_valid(&text), "{}", text);
        }
    }
}
