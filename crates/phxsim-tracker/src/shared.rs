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

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Shared(s) => s,
            // Built from a `&str` cut at its own length, so always UTF-8.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
        }
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
/// Built from a [`Json`] object (serialised once) or from text checked to be one
/// ([`Meta::parse`]), so the text is always a valid JSON object. Equality is the equality of
/// the JSON values (field order does not count, as for `serde_json::Value`): equal texts
/// answer at once, different texts are parsed and compared.
#[derive(Clone)]
pub struct Meta(Arc<str>);

/// Text that is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
}

impl Meta {
    /// The meta of a JSON value. Anything but an object is kept as given (the tracker does not
    /// judge metas; the wire and the codec refuse non-objects at their edges).
    pub fn new(json: Json) -> Self {
        Self::from_json(&json)
    }

    pub fn from_json(json: &Json) -> Self {
        // Serialising a serde_json value into a String cannot fail.
        Meta(Arc::from(serde_json::to_string(json).unwrap_or_default()))
    }

    /// A meta from JSON text, checked to be one object (kept as given, whitespace included).
    pub fn parse(text: &str) -> Result<Self, MetaError> {
        if !text.trim_start().starts_with('{') {
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
        Ok(Meta(Arc::from(text)))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The meta as a JSON value (parsed from the text, which is always valid JSON).
    pub fn to_json(&self) -> Json {
        serde_json::from_str(&self.0).unwrap_or(Json::Null)
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
        self.0.trim_start().starts_with('{')
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta(Arc::from("{}"))
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
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0 || self.to_json() == other.to_json()
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
}
