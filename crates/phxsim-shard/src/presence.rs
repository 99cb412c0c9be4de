//! Phoenix.Presence's data on a node: `phx_ref`s, metas, and what the tracker reports, a
//! topic's list ([`TrackerList`]) and its changes ([`TrackerDiff`]), grouped by key (§2.2,
//! §2.3).
//!
//! These are the tracker's side only. The `presence_state` and `presence_diff` payloads, as
//! servers send them and clients read them, have one model, `phxsim_wire::{PresenceState,
//! PresenceDiff}`; [`TrackerDiff::to_json`] and [`TrackerList::to_json`] give the exact
//! Phoenix shapes of those payloads, which is the contract between the two crates (the shard
//! stays independent of the wire crate, and keeps metas as the tracker stores them).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// Where `phx_ref`s come from. Injected, so that a simulation run is reproducible from its seed
/// and production can draw from entropy.
pub trait RefSource: Send {
    fn next_ref(&mut self) -> String;
}

/// `phx_ref`s in Phoenix's 2.x shape (16 URL-safe base64 characters encoding 12 bytes), drawn
/// from a ChaCha8 stream. Phoenix builds its 12 bytes from the wall clock, a node hash and a
/// counter; clients must treat the ref as opaque, so only the shape and uniqueness matter, and
/// random bytes from a seeded stream give both without reading a clock.
pub struct SeededRefs {
    rng: ChaCha8Rng,
}

impl SeededRefs {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl RefSource for SeededRefs {
    fn next_ref(&mut self) -> String {
        let mut bytes = [0u8; 12];
        self.rng.fill_bytes(&mut bytes);
        base64_url(&bytes)
    }
}

/// URL-safe base64 without padding (12 bytes → 16 characters, as in Phoenix).
fn base64_url(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

/// A meta as Phoenix stores it: `phx_ref` first, then `phx_ref_prev` after an update, then the
/// caller's fields (any `phx_ref`/`phx_ref_prev` of theirs is overwritten, as `Map.put` does).
pub fn meta_with_refs(phx_ref: &str, prev: Option<&str>, user: &Map<String, Json>) -> Json {
    let mut m = Map::with_capacity(user.len() + 2);
    m.insert("phx_ref".into(), Json::String(phx_ref.to_owned()));
    if let Some(prev) = prev {
        m.insert("phx_ref_prev".into(), Json::String(prev.to_owned()));
    }
    for (k, v) in user {
        if k != "phx_ref" && k != "phx_ref_prev" {
            m.insert(k.clone(), v.clone());
        }
    }
    Json::Object(m)
}

/// The `phx_ref` of a stored meta.
pub fn phx_ref_of(meta: &Json) -> Option<&str> {
    meta.get("phx_ref").and_then(Json::as_str)
}

/// `{key => [meta, ...]}`, rendered as Phoenix's `{key: {"metas": [...]}}`.
fn grouped_json(g: &BTreeMap<String, Vec<Json>>) -> Json {
    Json::Object(
        g.iter()
            .map(|(k, metas)| {
                let mut entry = Map::new();
                entry.insert("metas".into(), Json::Array(metas.clone()));
                (k.clone(), Json::Object(entry))
            })
            .collect(),
    )
}

/// What the tracker reports changed on one topic, the content of one `presence_diff`: only
/// the metas that joined and left, grouped by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerDiff {
    pub joins: BTreeMap<String, Vec<Json>>,
    pub leaves: BTreeMap<String, Vec<Json>>,
}

impl TrackerDiff {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    /// `{"joins": {key: {"metas": [...]}}, "leaves": {...}}`; both maps always present.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("joins".into(), grouped_json(&self.joins));
        m.insert("leaves".into(), grouped_json(&self.leaves));
        Json::Object(m)
    }

    /// `phx_ref`s that joined, in key order.
    pub fn join_refs(&self) -> Vec<&str> {
        self.joins
            .values()
            .flatten()
            .filter_map(phx_ref_of)
            .collect()
    }

    /// `phx_ref`s that left, in key order.
    pub fn leave_refs(&self) -> Vec<&str> {
        self.leaves
            .values()
            .flatten()
            .filter_map(phx_ref_of)
            .collect()
    }
}

impl From<&TrackerDiff> for Json {
    fn from(d: &TrackerDiff) -> Json {
        d.to_json()
    }
}

/// A topic's presences as the tracker's `list` returns them, grouped by key (the content of a
/// `presence_state`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerList(pub BTreeMap<String, Vec<Json>>);

impl TrackerList {
    /// `{key: {"metas": [...]}}`.
    pub fn to_json(&self) -> Json {
        grouped_json(&self.0)
    }

    pub fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    pub fn metas(&self, key: &str) -> &[Json] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every `phx_ref`, in key order.
    pub fn refs(&self) -> Vec<&str> {
        self.0.values().flatten().filter_map(phx_ref_of).collect()
    }
}

impl From<&TrackerList> for Json {
    fn from(s: &TrackerList) -> Json {
        s.to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_have_phoenix_2_shape_and_replay_from_the_seed() {
        let mut a = SeededRefs::new(7);
        let mut b = SeededRefs::new(7);
        let mut c = SeededRefs::new(8);
        let ra: Vec<String> = (0..100).map(|_| a.next_ref()).collect();
        let rb: Vec<String> = (0..100).map(|_| b.next_ref()).collect();
        assert_eq!(ra, rb);
        assert_ne!(ra[0], c.next_ref());
        for r in &ra {
            assert_eq!(r.len(), 16);
            assert!(
                r.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            );
        }
        let mut sorted = ra.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
    }

    #[test]
    fn base64_url_matches_rfc4648() {
        assert_eq!(base64_url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn meta_puts_refs_first_and_overrides_user_refs() {
        let user = json!({"status": "away", "phx_ref": "forged"});
        let m = meta_with_refs("new", Some("old"), user.as_object().unwrap());
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"phx_ref":"new","phx_ref_prev":"old","status":"away"}"#
        );
    }

    #[test]
    fn payloads_have_the_phoenix_shape() {
        let mut d = TrackerDiff::default();
        assert_eq!(d.to_json(), json!({"joins": {}, "leaves": {}}));
        d.joins
            .insert("alice".into(), vec![json!({"phx_ref": "2", "s": "away"})]);
        d.leaves
            .insert("alice".into(), vec![json!({"phx_ref": "1"})]);
        assert_eq!(
            d.to_json(),
            json!({"joins": {"alice": {"metas": [{"phx_ref": "2", "s": "away"}]}},
                   "leaves": {"alice": {"metas": [{"phx_ref": "1"}]}}})
        );
        assert_eq!(d.join_refs(), vec!["2"]);
        assert_eq!(d.leave_refs(), vec!["1"]);
        let s = TrackerList(BTreeMap::from([(
            "bob".to_string(),
            vec![json!({"phx_ref": "3"})],
        )]));
        assert_eq!(s.to_json(), json!({"bob": {"metas": [{"phx_ref": "3"}]}}));
    }
}
