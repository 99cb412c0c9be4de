//! Server-side `presence_diff` building: what Phoenix.Presence does with a tracker's
//! `handle_diff` lists (phoenix-protocol.md §2.4).
//!
//! The tracker reports one topic's changes as two flat lists of `{key, meta}`; Presence groups
//! each list by key into `%{key => %{metas: [...]}}`, keeping the metas of one key in list
//! order, and broadcasts `%{joins: ..., leaves: ...}`. An update is a join of the new meta and a
//! leave of the old one, so the same key may sit in both maps. This module takes plain
//! `(key, meta JSON)` pairs so the runtime can feed it any tracker's output.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{PayloadError, json_kind};
use crate::presence::{Meta, Presence, PresenceDiff, Presences};

/// Accumulates joins and leaves for one topic, then yields one `presence_diff` payload.
///
/// Keys come out in byte order: Phoenix's JSON encoder writes a map of up to 32 string keys in
/// Erlang term order, which for binaries is byte order (beyond 32 keys it is a hash order that no
/// client can rely on). Metas of one key stay in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct DiffBuilder {
    joins: BTreeMap<String, Vec<Meta>>,
    leaves: BTreeMap<String, Vec<Meta>>,
}

impl DiffBuilder {
    /// An empty builder.
    pub fn new() -> DiffBuilder {
        DiffBuilder::default()
    }

    /// A meta that joined under `key` (a `track`, or the new half of an `update`).
    pub fn join(&mut self, key: impl Into<String>, meta: Meta) -> &mut Self {
        self.joins.entry(key.into()).or_default().push(meta);
        self
    }

    /// A meta that left `key` (an `untrack`, a process exit, a replica going down, or the old
    /// half of an `update`).
    pub fn leave(&mut self, key: impl Into<String>, meta: Meta) -> &mut Self {
        self.leaves.entry(key.into()).or_default().push(meta);
        self
    }

    /// A `Presence.update`: the new meta joins and the old one leaves, in one diff.
    pub fn update(&mut self, key: impl Into<String>, old: Meta, new: Meta) -> &mut Self {
        let key = key.into();
        self.join(key.clone(), new);
        self.leave(key, old)
    }

    /// Whether nothing was added (Phoenix broadcasts no empty diff).
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    /// The grouped payload.
    pub fn build(self) -> PresenceDiff {
        PresenceDiff {
            joins: group(self.joins),
            leaves: group(self.leaves),
        }
    }
}

fn group(by_key: BTreeMap<String, Vec<Meta>>) -> Presences {
    by_key
        .into_iter()
        .map(|(key, metas)| (key, Presence::new(metas)))
        .collect()
}

/// Groups a tracker's flat join and leave lists into one `presence_diff` payload.
///
/// Each meta must be a JSON object (Phoenix metas are maps); anything else is reported with its
/// key and its position in the list it came from.
pub fn build_diff<K: Into<String>>(
    joins: impl IntoIterator<Item = (K, Value)>,
    leaves: impl IntoIterator<Item = (K, Value)>,
) -> Result<PresenceDiff, PayloadError> {
    let mut builder = DiffBuilder::new();
    for (index, (key, meta)) in joins.into_iter().enumerate() {
        let key = key.into();
        let meta = to_meta(&key, index, meta)?;
        builder.join(key, meta);
    }
    for (index, (key, meta)) in leaves.into_iter().enumerate() {
        let key = key.into();
        let meta = to_meta(&key, index, meta)?;
        builder.leave(key, meta);
    }
    Ok(builder.build())
}

fn to_meta(key: &str, index: usize, meta: Value) -> Result<Meta, PayloadError> {
    match meta {
        Value::Object(map) => Ok(Meta::from_map(map)),
        other => Err(PayloadError::MetaNotObject {
            key: key.to_owned(),
            index,
            found: json_kind(&other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_text(diff: &PresenceDiff) -> String {
        serde_json::to_string(diff).unwrap_or_default()
    }

    #[test]
    fn groups_by_key_in_byte_order_and_keeps_meta_order() {
        let diff = build_diff(
            vec![
                ("bob", json!({"phx_ref": "b1"})),
                ("alice", json!({"phx_ref": "a1"})),
                ("bob", json!({"phx_ref": "b2"})),
                ("Zed", json!({"phx_ref": "z1"})),
            ],
            vec![("carol", json!({"phx_ref": "c0"}))],
        );
        let Ok(diff) = diff else { panic!("{diff:?}") };
        assert_eq!(
            to_text(&diff),
            concat!(
                r#"{"joins":{"Zed":{"metas":[{"phx_ref":"z1"}]},"alice":{"metas":[{"phx_ref":"a1"}]},"#,
                r#""bob":{"metas":[{"phx_ref":"b1"},{"phx_ref":"b2"}]}},"#,
                r#""leaves":{"carol":{"metas":[{"phx_ref":"c0"}]}}}"#
            )
        );
    }

    #[test]
    fn an_update_is_the_new_meta_in_joins_and_the_old_in_leaves() {
        // The exact diff the reference Phoenix 1.7.21 server sent for update_meta.
        let old = Meta::from_map(
            json!({"phx_ref": "GOwkfCN5JWDGVQVB", "name": "Alice", "status": "online"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let fields = json!({"name": "Alice", "status": "away"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let new = Meta::updated("GOwkfHdLz4LGVQVx", "GOwkfCN5JWDGVQVB", fields);
        let mut builder = DiffBuilder::new();
        builder.update("alice", old, new);
        assert_eq!(
            to_text(&builder.build()),
            concat!(
                r#"{"joins":{"alice":{"metas":[{"phx_ref":"GOwkfHdLz4LGVQVx","phx_ref_prev":"GOwkfCN5JWDGVQVB","name":"Alice","status":"away"}]}},"#,
                r#""leaves":{"alice":{"metas":[{"phx_ref":"GOwkfCN5JWDGVQVB","name":"Alice","status":"online"}]}}}"#
            )
        );
    }

    #[test]
    fn non_object_metas_are_refused_with_their_position() {
        let err = build_diff(
            vec![("a", json!({})), ("b", json!("x"))],
            Vec::<(&str, Value)>::new(),
        );
        assert_eq!(
            err,
            Err(PayloadError::MetaNotObject {
                key: "b".to_owned(),
                index: 1,
                found: "a string"
            })
        );
        let empty = build_diff(Vec::<(String, Value)>::new(), Vec::<(String, Value)>::new());
        assert!(empty.is_ok_and(|d| d.is_empty() && to_text(&d) == r#"{"joins":{},"leaves":{}}"#));
    }
}
