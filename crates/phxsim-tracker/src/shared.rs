//! Shared immutable values: the strings (topics, pids, keys, replica names) and metas that a
//! presence carries. One presence is held by its row, several indexes, the pending delta, the
//! delta generations, extracts and the joins/leaves of every merge; these types make each of
//! those copies a reference-count bump instead of a deep copy of a string or a JSON tree.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as Json;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A shared string, ordered and compared as its text (so it sorts exactly as `String`).
#[derive(Clone)]
pub struct Name(Arc<str>);

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Name {
    fn default() -> Self {
        Name::from("")
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
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
        if Arc::ptr_eq(&self.0, &other.0) {
            Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(Arc::from(s))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Name(Arc::from(s.as_str()))
    }
}

impl From<&Name> for Name {
    fn from(s: &Name) -> Self {
        s.clone()
    }
}

impl From<Name> for String {
    fn from(s: Name) -> Self {
        s.0.to_string()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

/// A presence's meta: a JSON object shared by every copy of the presence. Compared by value.
#[derive(Clone, PartialEq, Eq)]
pub struct Meta(Arc<Json>);

impl Meta {
    pub fn new(json: Json) -> Self {
        Meta(Arc::new(json))
    }

    pub fn as_json(&self) -> &Json {
        &self.0
    }

    /// The JSON itself (a copy only if the meta is shared).
    pub fn into_json(self) -> Json {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta::new(Json::Object(serde_json::Map::new()))
    }
}

impl Deref for Meta {
    type Target = Json;
    fn deref(&self) -> &Json {
        &self.0
    }
}

impl From<Json> for Meta {
    fn from(json: Json) -> Self {
        Meta::new(json)
    }
}

impl From<Meta> for Json {
    fn from(m: Meta) -> Self {
        m.into_json()
    }
}

impl PartialEq<Json> for Meta {
    fn eq(&self, other: &Json) -> bool {
        *self.0 == *other
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
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
    }
}
