//! Shared immutable values: the strings (topics, pids, keys, replica names) and metas that a
//! presence carries. One presence is held by its row, several indexes, the pending delta, the
//! delta generations, extracts and the joins/leaves of every merge; these types make each of
//! those copies a copy of a few bytes (a short name) or a reference-count bump (a long name, a
//! meta) instead of a deep copy of a string or a JSON tree.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as Json;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A string of the tracker (topic, pid, key, replica name), ordered and compared as its text
/// (so it sorts exactly as `String`).
///
/// Short strings, which most pids, keys and topics are, are held inline: a copy is a copy of
/// 24 bytes, with no heap block to allocate, count or chase. Longer ones are shared by
/// reference count, so one presence held by a row, its indexes, deltas and diffs still costs
/// one heap block.
#[derive(Clone)]
pub struct Name(Repr);

/// The longest string held inline (the enum is then 24 bytes, as a `String`).
const INLINE: usize = 22;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // as `str` hashes, since a `Name` is looked up by `&str` (`Borrow<str>`)
        self.as_str().hash(state);
    }
}

impl Name {
    fn new(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Name(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Name(Repr::Shared(Arc::from(s)))
        }
    }

    /// The name `text[start..end]`, cut out of a `str` at character boundaries (a meta
    /// block's pid or key). A short one is copied without a check (every read checks inline
    /// bytes), as a whole 22-byte window when the text is long enough: one fixed-size copy
    /// instead of a call to `memcpy` (the bytes past `len` are never read). A long one is
    /// checked once.
    pub(crate) fn cut(text: &[u8], start: usize, end: usize) -> Self {
        let b = text.get(start..end).unwrap_or_default();
        if b.len() > INLINE {
            return Name::new(std::str::from_utf8(b).unwrap_or_default());
        }
        let mut bytes = [0; INLINE];
        match text.get(start..start + INLINE) {
            Some(window) => bytes.copy_from_slice(window),
            None => bytes[..b.len()].copy_from_slice(b),
        }
        Name(Repr::Inline {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Shared(s) => s,
            // Built from a `&str` cut at its own length, so always UTF-8.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
        }
    }

    /// The length in bytes, without re-checking the text (as `str::len` through `Deref`
    /// would, for an inline name).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The UTF-8 bytes, without re-checking them.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Shared(s) => s.as_bytes(),
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
        }
    }

    /// Is this a copy of the same shared string (true only for long, shared names)?
    fn same_block(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Shared(a), Repr::Shared(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Default for Name {
    fn default() -> Self {
        Name::new("")
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.same_block(other) || self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.same_block(other) {
            Ordering::Equal
        } else {
            // UTF-8 byte order is `str` order
            self.as_bytes().cmp(other.as_bytes())
        }
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.as_str() == **other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.as_str()
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name::new(s)
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        if s.len() <= INLINE {
            Name::new(&s)
        } else {
            Name(Repr::Shared(Arc::from(s)))
        }
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Name::new(s)
    }
}

impl From<&Name> for Name {
    fn from(s: &Name) -> Self {
        s.clone()
    }
}

impl From<Name> for String {
    fn from(s: Name) -> Self {
        s.as_str().to_owned()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

/// A presence's meta: a JSON object kept as its compact JSON text and shared by every copy of
/// the presence. The tracker never looks inside a meta, so it holds about the 50 bytes of a
/// typical meta's text instead of a tree of maps and strings, and a node frame carries the text
/// as it is. Readers that need the fields parse it ([`Meta::to_json`]).
///
/// The one heap block of a meta may also hold the pid and key of the presence it belongs to
/// (its *owner*): a row of the values table then keeps that block and nothing else of the
/// presence, and every copy of it (delta, extract, diff, a received frame) shares the block.
/// The block's text is `<pid length><key length><pid><key><meta>`, each length written in
/// ASCII (six bits a byte, `0x40` set on every byte but the last), so that the whole stays one
/// `str`. A meta without an owner has two empty lengths.
///
/// Built from a [`Json`] object (serialised once) or from text checked to be one
/// ([`Meta::parse`]), so the meta text is always a valid JSON object. Equality is the equality
/// of the JSON values (field order does not count, as for `serde_json::Value`; the owner does
/// not count either): equal texts answer at once, different texts are parsed and compared.
///
/// The block is a `triomphe::Arc`: no weak count, so its header is 8 bytes, not 16.
#[derive(Clone)]
pub struct Meta(triomphe::Arc<str>);

/// Text that is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
    /// A block whose owner lengths do not describe it ([`Meta::from_block`]).
    #[error("owner lengths do not fit the block")]
    BadOwner,
}

/// How many bytes [`put_len`] writes for `n`.
fn len_of_len(mut n: usize) -> usize {
    let mut bytes = 1;
    while n >= 0x40 {
        n >>= 6;
        bytes += 1;
    }
    bytes
}

/// Reads a length written by [`put_len`] at `*at`, moving past it, refusing any other form
/// (a non-ASCII byte, a redundant last byte, more than 36 bits, or the end of `b`): so a block
/// accepted from a peer is exactly the one [`put_len`] would have written.
fn take_len_strict(b: &[u8], at: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..36).step_by(6) {
        let x = *b.get(*at)?;
        *at += 1;
        if x & 0x80 != 0 {
            return None;
        }
        n |= usize::from(x & 0x3f) << shift;
        if x & 0x40 == 0 {
            return (shift == 0 || x != 0).then_some(n);
        }
    }
    None
}

/// Appends `n` in the owner-length form: six bits a byte, low bits first, `0x40` on every byte
/// but the last, so every byte is ASCII.
fn put_len(out: &mut String, mut n: usize) {
    loop {
        let low = (n & 0x3f) as u8;
        n >>= 6;
        if n == 0 {
            out.push(char::from(low));
            return;
        }
        out.push(char::from(low | 0x40));
    }
}

/// [`put_len`] into bytes.
fn put_len_bytes(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x40 {
        out.push((n & 0x3f) as u8 | 0x40);
        n >>= 6;
    }
    out.push(n as u8);
}

/// Reads a length written by [`put_len`] at `*at`, moving past it.
fn take_len(b: &[u8], at: &mut usize) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    while let Some(&x) = b.get(*at) {
        *at += 1;
        n |= usize::from(x & 0x3f) << shift;
        if x & 0x40 == 0 || shift > 60 {
            break;
        }
        shift += 6;
    }
    n
}

impl Meta {
    /// The meta of a JSON value. Anything but an object is kept as given (the tracker does not
    /// judge metas; the wire and the codec refuse non-objects at their edges).
    pub fn new(json: Json) -> Self {
        Self::from_json(&json)
    }

    pub fn from_json(json: &Json) -> Self {
        let mut text = String::with_capacity(64);
        text.push_str("\0\0");
        // Serialising a serde_json value into a String cannot fail.
        text.push_str(&serde_json::to_string(json).unwrap_or_default());
        Meta(triomphe::Arc::from(text))
    }

    /// The block of a meta `text` owned by `pid` and `key` (the text is taken as it is).
    fn owned(pid: &str, key: &str, text: &str) -> Self {
        let mut block = String::with_capacity(4 + pid.len() + key.len() + text.len());
        put_len(&mut block, pid.len());
        put_len(&mut block, key.len());
        block.push_str(pid);
        block.push_str(key);
        block.push_str(text);
        Meta(triomphe::Arc::from(block))
    }

    /// A meta from a whole block text as [`Meta::block_for`] writes it (a node frame carries
    /// presences so), with its pid and key: the owner lengths must describe the block exactly,
    /// and the meta text must be one JSON object. One allocation and one copy of `block`, the
    /// form a row keeps.
    pub fn from_block(block: &str) -> Result<(Self, Name, Name), MetaError> {
        let b = block.as_bytes();
        let mut at = 0;
        let pid_len = take_len_strict(b, &mut at).ok_or(MetaError::BadOwner)?;
        let key_len = take_len_strict(b, &mut at).ok_or(MetaError::BadOwner)?;
        let key_at = at.checked_add(pid_len).ok_or(MetaError::BadOwner)?;
        let meta_at = key_at.checked_add(key_len).ok_or(MetaError::BadOwner)?;
        if meta_at > b.len() || !block.is_char_boundary(key_at) || !block.is_char_boundary(meta_at)
        {
            return Err(MetaError::BadOwner);
        }
        Self::check(&block[meta_at..])?;
        Ok((
            Meta(triomphe::Arc::from(block)),
            Name::cut(b, at, key_at),
            Name::cut(b, key_at, meta_at),
        ))
    }

    /// The block of this meta owned by `pid` and `key`, as [`Meta::from_block`] reads it: the
    /// block itself when it already is theirs (one slice to copy), else its parts.
    pub fn block_for<'a>(&'a self, pid: &'a Name, key: &'a Name) -> Block<'a> {
        let (pid, key) = (pid.as_bytes(), key.as_bytes());
        if self.owner_bytes() == (pid, key) {
            Block::Whole(&self.0)
        } else {
            Block::Parts {
                pid,
                key,
                text: self.as_str(),
            }
        }
    }

    /// Checks that `text` is one JSON object.
    fn check(text: &str) -> Result<(), MetaError> {
        // JSON whitespace is four ASCII bytes: no need for `trim_start`'s Unicode walk (text
        // starting with other whitespace is no JSON, and serde_json says so below)
        let first = text
            .bytes()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if first != Some(b'{') {
            // Still say "not JSON" for text that is not JSON at all.
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| MetaError::NotJson(e.to_string()))?;
            return Err(MetaError::NotObject);
        }
        // The quick check answers for nearly every meta; serde_json judges (and explains) the
        // rest.
        if !crate::json_check::surely_valid(text) {
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| MetaError::NotJson(e.to_string()))?;
        }
        Ok(())
    }

    /// A meta from JSON text, checked to be one object (kept as given, whitespace included).
    pub fn parse(text: &str) -> Result<Self, MetaError> {
        Self::parse_owned("", "", text)
    }

    /// [`Meta::parse`] for the presence of `pid` and `key`, in the block a row keeps (a
    /// decoder of values uses it so that the merge shares what it decoded).
    pub fn parse_owned(pid: &str, key: &str, text: &str) -> Result<Self, MetaError> {
        Self::check(text)?;
        Ok(Self::owned(pid, key, text))
    }

    /// Where the key and the meta text start in the block, and where the pid starts.
    fn bounds(&self) -> (usize, usize, usize) {
        let b = self.0.as_bytes();
        // Nearly always both lengths are under 64: one byte each.
        let (pid_at, pid_len, key_len) = match b {
            [p, k, ..] if p & 0x40 == 0 && k & 0x40 == 0 => (2, usize::from(*p), usize::from(*k)),
            _ => {
                let mut at = 0;
                let pid_len = take_len(b, &mut at);
                let key_len = take_len(b, &mut at);
                (at, pid_len, key_len)
            }
        };
        let key_at = (pid_at + pid_len).min(b.len());
        (pid_at, key_at, (key_at + key_len).min(b.len()))
    }

    /// `(pid, key, meta text)` of the block.
    fn parts(&self) -> (&str, &str, &str) {
        let (pid_at, key_at, meta_at) = self.bounds();
        (
            self.0.get(pid_at..key_at).unwrap_or_default(),
            self.0.get(key_at..meta_at).unwrap_or_default(),
            self.0.get(meta_at..).unwrap_or_default(),
        )
    }

    /// The pid and key as names.
    pub fn owner_names(&self) -> (Name, Name) {
        let (pid_at, key_at, meta_at) = self.bounds();
        let b = self.0.as_bytes();
        (Name::cut(b, pid_at, key_at), Name::cut(b, key_at, meta_at))
    }

    /// Two bytes of the block (to bring it into the cache): its first, and one 40 bytes in,
    /// where a short pid and key end (a block may straddle two cache lines).
    pub(crate) fn first_byte(&self) -> u8 {
        let b = self.0.as_bytes();
        b.first().copied().unwrap_or(0) ^ b.get(40).copied().unwrap_or(0)
    }

    /// The pid's and the key's UTF-8 bytes (what the table's indexes compare).
    pub(crate) fn owner_bytes(&self) -> (&[u8], &[u8]) {
        let (pid_at, key_at, meta_at) = self.bounds();
        let b = self.0.as_bytes();
        (&b[pid_at..key_at], &b[key_at..meta_at])
    }

    /// The pid and key of the presence the block belongs to (empty for a meta without one).
    pub fn owner(&self) -> (&str, &str) {
        let (pid, key, _) = self.parts();
        (pid, key)
    }

    /// The same meta in a block owned by `pid` and `key`: this one when it already is, so
    /// that a presence passed from replica to replica keeps one block.
    pub fn for_owner(&self, pid: &Name, key: &Name) -> Self {
        if self.owner_bytes() == (pid.as_bytes(), key.as_bytes()) {
            self.clone()
        } else {
            Self::owned(pid, key, self.as_str())
        }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.parts().2
    }

    /// The meta as a JSON value (parsed from the text, which is always valid JSON).
    pub fn to_json(&self) -> Json {
        serde_json::from_str(self.as_str()).unwrap_or(Json::Null)
    }

    /// The same as [`Meta::to_json`], by value.
    pub fn into_json(self) -> Json {
        self.to_json()
    }

    /// One field of the object, parsed.
    pub fn get(&self, field: &str) -> Option<Json> {
        match self.to_json() {
            Json::Object(mut m) => m.remove(field),
            _ => None,
        }
    }

    /// Is the meta a JSON object?
    pub fn is_object(&self) -> bool {
        self.as_str().trim_start().starts_with('{')
    }

    /// Is `other` a copy of this very block (a reference-count share, not an equal text)? A
    /// block is immutable, so the same block has the same pid, key and text.
    pub fn same_block(&self, other: &Meta) -> bool {
        triomphe::Arc::ptr_eq(&self.0, &other.0)
    }

    /// The whole block: lengths, pid, key and meta text (what a node frame carries).
    pub(crate) fn block_text(&self) -> &str {
        &self.0
    }

    /// Whether no other `Meta` holds this block.
    pub(crate) fn is_only_copy(&self) -> bool {
        self.0.is_unique()
    }

    /// Heap bytes of the block (for memory accounts).
    pub fn block_len(&self) -> usize {
        self.0.len()
    }
}

/// A meta's block for a given owner, borrowed ([`Meta::block_for`]): written out without
/// building it.
#[derive(Debug, Clone, Copy)]
pub enum Block<'a> {
    /// The meta's own block, already owned by the presence.
    Whole(&'a str),
    /// A block to be written as `<pid length><key length><pid><key><text>` (a pid's and a
    /// key's UTF-8 bytes).
    Parts {
        pid: &'a [u8],
        key: &'a [u8],
        text: &'a str,
    },
}

impl Block<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Block::Whole(b) => b.len(),
            Block::Parts { pid, key, text } => {
                len_of_len(pid.len()) + len_of_len(key.len()) + pid.len() + key.len() + text.len()
            }
        }
    }

    /// Is it empty (never: a block holds at least its two lengths)?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends its bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Block::Whole(b) => out.extend_from_slice(b.as_bytes()),
            Block::Parts { pid, key, text } => {
                put_len_bytes(out, pid.len());
                put_len_bytes(out, key.len());
                out.extend_from_slice(pid);
                out.extend_from_slice(key);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta(triomphe::Arc::from("\0\0{}"))
    }
}

impl From<Json> for Meta {
    fn from(json: Json) -> Self {
        Meta::new(json)
    }
}

impl From<&Json> for Meta {
    fn from(json: &Json) -> Self {
        Meta::from_json(json)
    }
}

impl From<Meta> for Json {
    fn from(m: Meta) -> Self {
        m.into_json()
    }
}

impl PartialEq for Meta {
    fn eq(&self, other: &Self) -> bool {
        if triomphe::Arc::ptr_eq(&self.0, &other.0) {
            return true;
        }
        let (a, b) = (self.as_str(), other.as_str());
        a == b || self.to_json() == other.to_json()
    }
}

impl Eq for Meta {}

impl PartialEq<Json> for Meta {
    fn eq(&self, other: &Json) -> bool {
        self.to_json() == *other
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_json(), f)
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Json::deserialize(d).map(Meta::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_order_and_compare_as_their_text() {
        let mut v: Vec<Name> = ["b", "a", "ab", ""].into_iter().map(Name::from).collect();
        v.sort();
        let s: Vec<&str> = v.iter().map(Name::as_str).collect();
        assert_eq!(s, ["", "a", "ab", "b"]);
        assert_eq!(Name::from("x"), "x");
        assert_eq!(format!("{:?}", Name::from("x")), format!("{:?}", "x"));
        assert_eq!(serde_json::to_string(&Name::from("x")).unwrap(), r#""x""#);
        // inline and shared names compare, order and hash as their text
        let long = "a name longer than twenty-two bytes";
        let mut v: Vec<Name> = [long, "a name", "b", long]
            .into_iter()
            .map(Name::from)
            .collect();
        v.sort();
        let s: Vec<&str> = v.iter().map(Name::as_str).collect();
        assert_eq!(s, ["a name", long, long, "b"]);
        assert_eq!(Name::from(long.to_owned()), long);
        assert_eq!(
            Name::from("x".repeat(22)).as_bytes(),
            "x".repeat(22).as_bytes()
        );
        let mut h = std::collections::BTreeMap::new();
        h.insert(Name::from(long), 1);
        h.insert(Name::from("k"), 2);
        assert_eq!((h.get(long), h.get("k")), (Some(&1), Some(&2)));
    }

    #[test]
    fn metas_are_text_compared_as_json() {
        let m = Meta::from(serde_json::json!({"b": 1, "a": [1.5, "x"]}));
        assert_eq!(m.as_str(), r#"{"b":1,"a":[1.5,"x"]}"#, "field order kept");
        assert_eq!(m.to_json(), serde_json::json!({"b": 1, "a": [1.5, "x"]}));
        assert_eq!(m, Meta::parse(r#"{"a": [1.5, "x"], "b": 1}"#).unwrap());
        assert_ne!(m, Meta::parse(r#"{"a": [1.5, "x"], "b": 2}"#).unwrap());
        assert_eq!(m.get("b"), Some(serde_json::json!(1)));
        assert_eq!(Meta::parse("[1]"), Err(MetaError::NotObject));
        assert!(matches!(Meta::parse("{oops"), Err(MetaError::NotJson(_))));
        assert!(matches!(Meta::parse("oops"), Err(MetaError::NotJson(_))));
        assert_eq!(format!("{m:?}"), format!("{:?}", m.to_json()));
    }

    #[test]
    fn a_block_written_for_an_owner_reads_back_as_the_same_presence() {
        let long = "é".repeat(40);
        for (pid, key) in [("p", "k"), ("", ""), (long.as_str(), "k2")] {
            for meta in [
                Meta::parse(r#"{"phx_ref":"x"}"#).unwrap(),
                Meta::parse_owned(pid, key, r#"{"phx_ref":"x"}"#).unwrap(),
            ] {
                let (pid_name, key_name) = (Name::from(pid), Name::from(key));
                let block = meta.block_for(&pid_name, &key_name);
                let mut out = Vec::new();
                block.write_to(&mut out);
                assert_eq!(out.len(), block.len());
                let (back, p, k) = Meta::from_block(std::str::from_utf8(&out).unwrap()).unwrap();
                assert_eq!(back.owner(), (pid, key));
                assert_eq!((p.as_str(), k.as_str()), (pid, key));
                assert_eq!(back.as_str(), r#"{"phx_ref":"x"}"#);
                assert_eq!(back, meta);
            }
        }
        // an owned block is written whole: the same bytes as the one the row keeps
        let owned = Meta::parse_owned("p", "k", "{}").unwrap();
        let name = |s: &str| Name::from(s);
        assert!(matches!(
            owned.block_for(&name("p"), &name("k")),
            Block::Whole(_)
        ));
        assert!(matches!(
            owned.block_for(&name("p"), &name("x")),
            Block::Parts { .. }
        ));
        for bad in ["\u{5}\u{0}p{}", "A", "@\u{0}\u{0}{}", "\u{1}\u{0}é{}"] {
            assert_eq!(
                Meta::from_block(bad).err(),
                Some(MetaError::BadOwner),
                "{bad:?}"
            );
        }
        assert_eq!(
            Meta::from_block("\u{0}\u{0}[]").err(),
            Some(MetaError::NotObject)
        );
    }
}
