//! Typed `presence_state` and `presence_diff` payloads (phoenix-protocol.md §2.3).
//!
//! Field order is kept exactly as received or built, so a payload decoded from a recorded frame
//! re-encodes byte for byte, and metas built here put `phx_ref` (and `phx_ref_prev`) first, as
//! the reference server does. Fields this crate does not know (a `fetch/2` adding `"user"` next
//! to `"metas"`, application meta fields) are carried along untouched.

use indexmap::IndexMap;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::error::{PayloadError, json_kind};

/// One tracked process's metadata: a JSON object whose `phx_ref` is its identity.
///
/// `phx_ref` is whatever JSON the server put there: phoenix.js compares it with `===`, so a
/// client must keep a numeric or missing ref as it is rather than coerce it to a string.
///
/// The fields are shared (`Arc`) and never changed in place: cloning a meta, as every copy of
/// a list or diff does (one per client of a simulated topic), copies a pointer.
#[derive(Clone, Debug, Default)]
pub struct Meta(Arc<Map<String, Value>>);

impl PartialEq for Meta {
    /// Equal as JSON objects (field order does not matter). Shared fields compare by pointer,
    /// and fields in the same order pairwise, before the order-free comparison (which looks
    /// every field up by name).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.len() == other.0.len() && self.0.iter().eq(other.0.iter()))
            || self.0 == other.0
    }
}

impl Meta {
    /// A fresh meta as `Presence.track` makes it: `phx_ref` first, then the application's fields
    /// in their order (a `phx_ref`/`phx_ref_prev` among them is dropped: the tracker owns those).
    pub fn new(phx_ref: impl Into<String>, fields: Map<String, Value>) -> Meta {
        Meta::build(phx_ref.into(), None, fields)
    }

    /// The meta of a `Presence.update`: a new `phx_ref`, then `phx_ref_prev` naming the meta it
    /// replaces, then the fields.
    pub fn updated(
        phx_ref: impl Into<String>,
        phx_ref_prev: impl Into<String>,
        fields: Map<String, Value>,
    ) -> Meta {
        Meta::build(phx_ref.into(), Some(phx_ref_prev.into()), fields)
    }

    fn build(phx_ref: String, phx_ref_prev: Option<String>, fields: Map<String, Value>) -> Meta {
        let mut map = Map::with_capacity(fields.len() + 2);
        map.insert("phx_ref".to_owned(), Value::String(phx_ref));
        if let Some(prev) = phx_ref_prev {
            map.insert("phx_ref_prev".to_owned(), Value::String(prev));
        }
        for (key, value) in fields {
            if key != "phx_ref" && key != "phx_ref_prev" {
                map.insert(key, value);
            }
        }
        Meta(Arc::new(map))
    }

    /// A meta exactly as received, field order kept.
    pub fn from_map(map: Map<String, Value>) -> Meta {
        Meta(Arc::new(map))
    }

    /// The `phx_ref` value, if present (any JSON kind).
    pub fn phx_ref(&self) -> Option<&Value> {
        // Phoenix writes `phx_ref` first: the first field (fields keep their order) answers
        // without hashing the name; keys are unique, so this is what `get` would return
        match self.0.iter().next() {
            Some((key, value)) if key == "phx_ref" => Some(value),
            _ => self.0.get("phx_ref"),
        }
    }

    /// The `phx_ref` when it is a string, which is what every Phoenix server sends.
    pub fn phx_ref_str(&self) -> Option<&str> {
        self.phx_ref().and_then(Value::as_str)
    }

    /// The `phx_ref_prev` value, present after a `Presence.update`.
    pub fn phx_ref_prev(&self) -> Option<&Value> {
        self.0.get("phx_ref_prev")
    }

    /// All fields, `phx_ref` included, in order.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The fields, consuming the meta.
    pub fn into_map(self) -> Map<String, Value> {
        Arc::unwrap_or_clone(self.0)
    }

    /// How many metas share these fields (this one included): clones share them.
    pub fn copies(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A presence's top-level fields besides `"metas"`: boxed, because almost every presence has
/// none and a client of a large topic holds one presence per key (a `Map` inline is 72 bytes,
/// the box 8).
#[derive(Clone, Debug, Default, PartialEq)]
struct Extra(Option<Box<Map<String, Value>>>);

static NO_EXTRA: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl From<Map<String, Value>> for Extra {
    fn from(map: Map<String, Value>) -> Extra {
        Extra((!map.is_empty()).then(|| Box::new(map)))
    }
}

impl std::ops::Deref for Extra {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Map<String, Value> {
        self.0.as_deref().unwrap_or(&NO_EXTRA)
    }
}

impl Extra {
    fn into_map(self) -> Map<String, Value> {
        self.0.map(|b| *b).unwrap_or_default()
    }
}

/// All metas of one key, plus any top-level fields a server-side `fetch/2` added.
#[derive(Clone, Debug, Default)]
pub struct Presence {
    /// The metas, one per tracked process.
    pub metas: Vec<Meta>,
    extra: Extra,
    /// How many `extra` fields came before `"metas"`, so re-encoding keeps the received order.
    metas_at: usize,
}

impl PartialEq for Presence {
    /// Equal as JSON: the position of `"metas"` among the fields does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.metas == other.metas && self.extra == other.extra
    }
}

impl Presence {
    /// A presence of just these metas.
    pub fn new(metas: Vec<Meta>) -> Presence {
        Presence {
            metas,
            extra: Extra::default(),
            metas_at: 0,
        }
    }

    /// A presence with extra top-level fields after `"metas"` (what `fetch/2` adds).
    pub fn with_extra(metas: Vec<Meta>, extra: Map<String, Value>) -> Presence {
        let extra: Map<String, Value> = extra
            .into_iter()
            .filter(|(key, _)| key != "metas")
            .collect();
        Presence {
            metas,
            extra: extra.into(),
            metas_at: 0,
        }
    }

    /// The top-level fields other than `"metas"`.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// The same top-level fields with other metas (phoenix.js builds join/leave entries this way).
    pub(crate) fn with_metas(&self, metas: Vec<Meta>) -> Presence {
        Presence {
            metas,
            extra: self.extra.clone(),
            metas_at: self.metas_at,
        }
    }

    /// Reads one presence; `key` only names it in errors.
    pub fn from_value(key: &str, value: Value) -> Result<Presence, PayloadError> {
        let Value::Object(map) = value else {
            return Err(PayloadError::NotAnObject {
                what: format!("presence {key:?}"),
                found: json_kind(&value),
            });
        };
        let mut metas = None;
        let mut extra = Map::new();
        let mut metas_at = 0;
        for (field, value) in map {
            if field == "metas" {
                metas_at = extra.len();
                metas = Some(value);
            } else {
                extra.insert(field, value);
            }
        }
        let metas = match metas {
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(PayloadError::MetasNotArray {
                    key: key.to_owned(),
                    found: json_kind(&other),
                });
            }
            None => {
                return Err(PayloadError::MissingMetas {
                    key: key.to_owned(),
                });
            }
        };
        let metas = metas
            .into_iter()
            .enumerate()
            .map(|(index, meta)| match meta {
                Value::Object(map) => Ok(Meta::from_map(map)),
                other => Err(PayloadError::MetaNotObject {
                    key: key.to_owned(),
                    index,
                    found: json_kind(&other),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Presence {
            metas,
            extra: extra.into(),
            metas_at,
        })
    }

    /// The presence as a JSON object, fields in their original order.
    pub fn to_value(&self) -> Value {
        let mut map = Map::with_capacity(self.extra.len() + 1);
        let mut metas = Some(Value::Array(
            self.metas
                .iter()
                .map(|m| Value::Object((*m.0).clone()))
                .collect(),
        ));
        for (index, (field, value)) in self.extra.iter().enumerate() {
            if index == self.metas_at
                && let Some(metas) = metas.take()
            {
                map.insert("metas".to_owned(), metas);
            }
            map.insert(field.clone(), value.clone());
        }
        if let Some(metas) = metas {
            map.insert("metas".to_owned(), metas);
        }
        Value::Object(map)
    }
}

impl Presence {
    /// The presence as a JSON object, consuming it (no copies: what a server does per push).
    pub fn into_value(self) -> Value {
        let Presence {
            metas,
            extra,
            metas_at,
        } = self;
        let mut map = Map::with_capacity(extra.len() + 1);
        let mut metas = Some(Value::Array(
            metas
                .into_iter()
                .map(|m| Value::Object(m.into_map()))
                .collect(),
        ));
        for (index, (field, value)) in extra.into_map().into_iter().enumerate() {
            if index == metas_at
                && let Some(metas) = metas.take()
            {
                map.insert("metas".to_owned(), metas);
            }
            map.insert(field, value);
        }
        if let Some(metas) = metas {
            map.insert("metas".to_owned(), metas);
        }
        Value::Object(map)
    }
}

impl Serialize for Presence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.extra.len() + 1))?;
        let metas_at = self.metas_at.min(self.extra.len());
        for (field, value) in self.extra.iter().take(metas_at) {
            map.serialize_entry(field, value)?;
        }
        map.serialize_entry("metas", &self.metas)?;
        for (field, value) in self.extra.iter().skip(metas_at) {
            map.serialize_entry(field, value)?;
        }
        map.end()
    }
}

/// Presences by key, in wire order.
///
/// Wire order is what a server chose (Phoenix: sorted for up to 32 keys, hash order beyond);
/// a JavaScript client reorders keys on parse, which [`crate::sync::JsMap`] reproduces.
pub type Presences = IndexMap<String, Presence>;

fn read_presences(what: &str, value: Value) -> Result<Presences, PayloadError> {
    let Value::Object(map) = value else {
        return Err(PayloadError::NotAnObject {
            what: what.to_owned(),
            found: json_kind(&value),
        });
    };
    let mut presences = IndexMap::with_capacity(map.len());
    for (key, value) in map {
        let presence = Presence::from_value(&key, value)?;
        presences.insert(key, presence);
    }
    Ok(presences)
}

fn into_presences_value(presences: Presences) -> Value {
    Value::Object(
        presences
            .into_iter()
            .map(|(key, p)| (key, p.into_value()))
            .collect(),
    )
}

fn presences_value(presences: &Presences) -> Value {
    Value::Object(
        presences
            .iter()
            .map(|(key, p)| (key.clone(), p.to_value()))
            .collect(),
    )
}

/// The payload of `presence_state`: every presence of a topic, `{key: {"metas": [...]}}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceState {
    /// Presences by key, in wire order.
    pub presences: Presences,
}

impl PresenceState {
    /// Reads a `presence_state` payload.
    pub fn from_payload(value: Value) -> Result<PresenceState, PayloadError> {
        Ok(PresenceState {
            presences: read_presences("presence_state payload", value)?,
        })
    }

    /// The payload as JSON, ready for [`crate::Message::push`].
    pub fn to_payload(&self) -> Value {
        presences_value(&self.presences)
    }

    /// The payload as JSON, consuming the state (moves every string instead of copying it).
    pub fn into_payload(self) -> Value {
        into_presences_value(self.presences)
    }
}

impl Serialize for PresenceState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.presences.serialize(serializer)
    }
}

/// The payload of `presence_diff`: `{"joins": {...}, "leaves": {...}}`, each key holding only the
/// metas that joined or left.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceDiff {
    /// Metas that joined, by key.
    pub joins: Presences,
    /// Metas that left, by key.
    pub leaves: Presences,
}

impl PresenceDiff {
    /// Reads a `presence_diff` payload; both `joins` and `leaves` must be present (Phoenix always
    /// sends both, and phoenix.js fails on a missing one). Other fields are ignored.
    pub fn from_payload(value: Value) -> Result<PresenceDiff, PayloadError> {
        let Value::Object(mut map) = value else {
            return Err(PayloadError::NotAnObject {
                what: "presence_diff payload".to_owned(),
                found: json_kind(&value),
            });
        };
        let joins = map
            .remove("joins")
            .ok_or(PayloadError::MissingDiffField("joins"))?;
        let leaves = map
            .remove("leaves")
            .ok_or(PayloadError::MissingDiffField("leaves"))?;
        Ok(PresenceDiff {
            joins: read_presences("presence_diff joins", joins)?,
            leaves: read_presences("presence_diff leaves", leaves)?,
        })
    }

    /// The payload as JSON (`joins` before `leaves`, as Phoenix writes it).
    pub fn to_payload(&self) -> Value {
        let mut map = Map::with_capacity(2);
        map.insert("joins".to_owned(), presences_value(&self.joins));
        map.insert("leaves".to_owned(), presences_value(&self.leaves));
        Value::Object(map)
    }

    /// The payload as JSON, consuming the diff.
    pub fn into_payload(self) -> Value {
        let mut map = Map::with_capacity(2);
        map.insert("joins".to_owned(), into_presences_value(self.joins));
        map.insert("leaves".to_owned(), into_presences_value(self.leaves));
        Value::Object(map)
    }

    /// Whether nothing joined or left (Phoenix does not broadcast such a diff).
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

impl Serialize for PresenceDiff {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("joins", &self.joins)?;
        map.serialize_entry("leaves", &self.leaves)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metas_put_refs_first_then_fields_in_order() {
        let fields = json!({"name": "Alice", "phx_ref": "spoof", "status": "away"});
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let meta = Meta::updated("new", "old", fields);
        let text = serde_json::to_string(&meta).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"phx_ref":"new","phx_ref_prev":"old","name":"Alice","status":"away"}"#
        );
    }

    #[test]
    fn presence_keeps_unknown_fields_and_their_position() {
        let raw = r#"{"user":{"name":"x"},"metas":[{"phx_ref":"1"}],"z":1}"#;
        let value: Value = serde_json::from_str(raw).unwrap_or_default();
        let presence = Presence::from_value("k", value);
        let Ok(presence) = presence else {
            panic!("{presence:?}")
        };
        assert_eq!(serde_json::to_string(&presence).unwrap_or_default(), raw);
        assert_eq!(
            serde_json::to_string(&presence.to_value()).unwrap_or_default(),
            raw
        );
        assert_eq!(presence.extra().len(), 2);
    }

    #[test]
    fn owned_and_borrowed_payloads_are_the_same_json_text() {
        let raw = r#"{"b":{"x":1,"metas":[{"phx_ref":"1","a":[1]}],"y":2},"a":{"metas":[]}}"#;
        let value: Value = serde_json::from_str(raw).unwrap_or_default();
        let state = PresenceState::from_payload(value);
        let Ok(state) = state else {
            panic!("{state:?}")
        };
        let text = |v: &Value| serde_json::to_string(v).unwrap_or_default();
        assert_eq!(text(&state.to_payload()), raw);
        assert_eq!(text(&state.into_payload()), raw);
        let diff = PresenceDiff::from_payload(
            serde_json::json!({"joins": {"k": {"metas": []}}, "leaves": {}}),
        );
        let Ok(diff) = diff else { panic!("{diff:?}") };
        assert_eq!(text(&diff.to_payload()), text(&diff.clone().into_payload()));
    }

    #[test]
    fn malformed_presences_say_what_is_wrong() {
        let read = |v: Value| PresenceState::from_payload(v).err().map(|e| e.to_string());
        assert_eq!(
            read(json!([])),
            Some("presence_state payload must be a JSON object, found an array".to_owned())
        );
        assert_eq!(
            read(json!({"u1": {}})),
            Some("presence \"u1\" has no \"metas\"".to_owned())
        );
        assert_eq!(
            read(json!({"u1": {"metas": {}}})),
            Some("presence \"u1\": \"metas\" must be an array, found an object".to_owned())
        );
        assert_eq!(
            read(json!({"u1": {"metas": [{}, null]}})),
            Some("presence \"u1\": meta #1 must be an object, found null".to_owned())
        );
        assert_eq!(
            PresenceDiff::from_payload(json!({"joins": {}})),
            Err(PayloadError::MissingDiffField("leaves"))
        );
    }
}
