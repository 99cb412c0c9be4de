//! `presence_state` frames from one encoding of the topic's list, shared by every socket that
//! joins while the list is unchanged.
//!
//! Why: in a join storm on one topic, each join used to list the topic, render it as JSON and
//! encode it, O(N) per join and O(N²) in all (10 000 joins to one topic: 5·10⁷ presences
//! rendered). The node now hands every subscriber of one list version the same
//! [`TopicState`](crate::node::TopicState): its payload, written once from the metas' JSON texts
//! with where each key starts, and every joiner writes that text with its own presence spliced
//! in at the place Phoenix's encoder would put it, as slices of the one shared buffer. The bytes
//! are those of the full encoding (tested below against the codec), so clients cannot tell.

use bytes::Bytes;
use phxsim_shard::TrackerList;
use phxsim_tracker::Name;
use phxsim_wire::{Codec, Frame, Message, Serializer};
use serde_json::{Map, Value as Json};

/// `{"key":{"metas":[...]},...}` exactly as `TrackerList::to_json` encodes, and where each
/// key's entry starts and its metas end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StatePayload {
    text: Bytes,
    /// Per key, in order: the key, the offset of its entry (the opening quote), and the offset
    /// of the `]` that closes its metas. Names, not strings: a list patched between joins
    /// (`node::topic_list`) copies every unchanged key, and a short name copies without an
    /// allocation.
    keys: Vec<(Name, usize, usize)>,
}

impl StatePayload {
    /// The payload of a list given as `(key, meta's JSON text)` pairs, sorted by key (a key's
    /// metas in list order): the metas are copied as they are, never parsed. The tracker keeps
    /// each meta as its compact JSON text (`Meta`), the very bytes the encoder writes.
    pub(crate) fn from_texts<'a>(values: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut text = String::new();
        let mut keys: Vec<(Name, usize, usize)> = Vec::new();
        text.push('{');
        for (key, meta) in values {
            match keys.last_mut() {
                Some((last, _, close)) if last.as_str() == key => {
                    text.insert(*close, ',');
                    text.insert_str(*close + 1, meta);
                    *close += 1 + meta.len();
                }
                _ => {
                    if !keys.is_empty() {
                        text.push(',');
                    }
                    let start = text.len();
                    push_json(&mut text, &Json::String(key.to_owned()));
                    text.push_str(":{\"metas\":[");
                    text.push_str(meta);
                    keys.push((Name::from(key), start, text.len()));
                    text.push_str("]}");
                }
            }
        }
        text.push('}');
        StatePayload {
            text: Bytes::from(text),
            keys,
        }
    }

    /// The list back as JSON values, for callers that want the presences themselves.
    pub(crate) fn to_list(&self) -> TrackerList {
        let mut list = TrackerList::default();
        let Ok(Json::Object(map)) = serde_json::from_slice::<Json>(&self.text) else {
            return list;
        };
        for (key, entry) in map {
            if let Json::Object(mut entry) = entry
                && let Some(Json::Array(metas)) = entry.remove("metas")
            {
                list.0.insert(key, metas);
            }
        }
        list
    }

    /// The payload of a list of JSON values (what [`StatePayload::from_texts`] must equal).
    #[cfg(test)]
    pub(crate) fn encode(list: &TrackerList) -> StatePayload {
        let mut text = String::with_capacity(list.0.len() * 80 + 2);
        let mut keys = Vec::with_capacity(list.0.len());
        text.push('{');
        for (i, (key, metas)) in list.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let start = text.len();
            push_json(&mut text, &Json::String(key.clone()));
            text.push_str(":{\"metas\":[");
            for (j, meta) in metas.iter().enumerate() {
                if j > 0 {
                    text.push(',');
                }
                push_json(&mut text, meta);
            }
            keys.push((Name::from(key), start, text.len()));
            text.push_str("]}");
        }
        text.push('}');
        StatePayload {
            text: Bytes::from(text),
            keys,
        }
    }

    /// The payload with `own` added as the joining socket's presence: last among the metas of
    /// its key, or as a new key in key order (the same as inserting it into the list first).
    /// In parts: slices of the shared text around the socket's own few bytes.
    pub(crate) fn with_own(&self, key: &str, own: &Json) -> Vec<Bytes> {
        let mut own_text = String::new();
        push_json(&mut own_text, own);
        let text = &self.text;
        match self.keys.binary_search_by(|(k, _, _)| k.as_str().cmp(key)) {
            Ok(i) => {
                let close = self.keys[i].2;
                own_text.insert(0, ',');
                vec![
                    text.slice(..close),
                    Bytes::from(own_text),
                    text.slice(close..),
                ]
            }
            Err(i) => {
                let mut entry = String::with_capacity(own_text.len() + key.len() + 16);
                push_json(&mut entry, &Json::String(key.to_owned()));
                entry.push_str(":{\"metas\":[");
                entry.push_str(&own_text);
                entry.push_str("]}");
                if let Some((_, start, _)) = self.keys.get(i) {
                    entry.push(',');
                    vec![
                        text.slice(..*start),
                        Bytes::from(entry),
                        text.slice(*start..),
                    ]
                } else {
                    // after the last key: before the closing brace
                    if !self.keys.is_empty() {
                        entry.insert(0, ',');
                    }
                    let end = text.len() - 1;
                    vec![text.slice(..end), Bytes::from(entry), text.slice(end..)]
                }
            }
        }
    }

    /// The payload as it is.
    pub(crate) fn bytes(&self) -> Bytes {
        self.text.clone()
    }

    /// A payload written elsewhere (`node::topic_list`), with where each key starts and its
    /// metas end, as [`StatePayload::from_texts`] records them.
    pub(crate) fn from_parts(text: Bytes, keys: Vec<(Name, usize, usize)>) -> Self {
        StatePayload { text, keys }
    }

    /// The text.
    pub(crate) fn text(&self) -> &[u8] {
        &self.text
    }

    /// Per key, in order: the key, where its entry starts, and where its metas end.
    pub(crate) fn keys(&self) -> &[(Name, usize, usize)] {
        &self.keys
    }
}

/// Parts joined into one text (for observers and tests).
pub(crate) fn joined(parts: &[Bytes]) -> String {
    let mut out = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    // The parts are cut at ASCII characters of one UTF-8 text.
    String::from_utf8_lossy(&out).into_owned()
}

fn push_json(out: &mut String, v: &Json) {
    // Serialising a serde_json value into a String cannot fail.
    out.push_str(&serde_json::to_string(v).unwrap_or_default());
}

/// The text of the whole `presence_state` message for `payload` (the JSON text of the payload,
/// in parts), in parts, or `None` when the codec's frame for this message does not have the
/// expected shape (then the caller encodes the message itself).
///
/// The codec encodes the message with an empty payload, and `payload` takes the place of the
/// `{}`: last in a V2 array, second in a V1 server object (`event` comes first and is always
/// `presence_state`), so no client-chosen text (topic, refs) can move it.
pub(crate) fn frame(
    codec: Codec,
    join_ref: Option<String>,
    topic: &str,
    event: &str,
    payload: Vec<Bytes>,
) -> Option<Vec<Bytes>> {
    let empty = Json::Object(Map::new());
    let Ok(Frame::Text(shell)) = codec.encode(&Message::push(join_ref, topic, event, empty)) else {
        return None;
    };
    let at = match codec.serializer() {
        Serializer::V2 => shell.strip_suffix("{}]").map(str::len)?,
        Serializer::V1 => {
            let head = format!(
                "{{\"event\":{},\"payload\":",
                serde_json::to_string(event).ok()?
            );
            shell
                .strip_prefix(head.as_str())?
                .starts_with("{}")
                .then_some(head.len())?
        }
    };
    let shell = Bytes::from(shell);
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.push(shell.slice(..at));
    out.extend(payload);
    out.push(shell.slice(at + 2..));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn meta(r: &str) -> Json {
        json!({"phx_ref": r, "status": "online", "n": {"b": 1, "a": [1, "é\"\\"]}})
    }

    fn state(keys: &[(&str, &[&str])]) -> TrackerList {
        let mut m = BTreeMap::new();
        for (k, refs) in keys {
            m.insert((*k).to_owned(), refs.iter().map(|r| meta(r)).collect());
        }
        TrackerList(m)
    }

    /// What the socket did before: the own meta pushed into the list, then encoded whole.
    fn full(list: &TrackerList, own: Option<(&str, &Json)>) -> String {
        let mut list = list.clone();
        if let Some((k, m)) = own {
            list.0.entry(k.to_owned()).or_default().push(m.clone());
        }
        serde_json::to_string(&list.to_json()).unwrap()
    }

    #[test]
    fn the_payload_is_the_full_encoding() {
        for list in [
            state(&[]),
            state(&[("a", &["1"])]),
            state(&[("a", &["1", "2"]), ("b\"q", &["3"]), ("zz", &["4"])]),
        ] {
            let p = StatePayload::encode(&list);
            assert_eq!(joined(&[p.bytes()]), full(&list, None));
        }
    }

    #[test]
    fn the_own_presence_goes_where_the_encoder_puts_it() {
        let own = json!({"phx_ref": "own", "status": "online"});
        let lists = [
            state(&[]),
            state(&[("m", &["1"])]),
            state(&[("b", &["1", "2"]), ("d", &["3"]), ("f", &["4"])]),
        ];
        for list in &lists {
            let p = StatePayload::encode(list);
            // before the first, between, on an existing key, after the last
            for key in ["a", "b", "c", "d", "e", "f", "g", "m", "é"] {
                assert_eq!(
                    joined(&p.with_own(key, &own)),
                    full(list, Some((key, &own))),
                    "key {key} into {list:?}"
                );
            }
        }
    }

    #[test]
    fn spliced_frames_equal_the_codec_s() {
        let list = state(&[("a", &["1"]), ("c", &["2", "3"])]);
        let own = json!({"phx_ref": "own", "status": "online"});
        let payload = StatePayload::encode(&list).with_own("b", &own);
        let mut with_own = list.clone();
        with_own.0.insert("b".into(), vec![own.clone()]);
        for serializer in [Serializer::V1, Serializer::V2] {
            for numeric in [false, true] {
                let codec = Codec::server(serializer).with_numeric_refs(numeric);
                for (join_ref, topic) in [
                    (Some("7".to_owned()), "room:x"),
                    (None, "room:{}]"),
                    (Some("a\"b".to_owned()), "room:\"payload\":{}"),
                ] {
                    let expected = codec
                        .encode(&Message::push(
                            join_ref.clone(),
                            topic,
                            "presence_state",
                            with_own.to_json(),
                        ))
                        .unwrap();
                    let got = frame(codec, join_ref, topic, "presence_state", payload.clone())
                        .map(|parts| Frame::Text(joined(&parts)));
                    assert_eq!(got, Some(expected), "{serializer:?} {topic}");
                }
            }
        }
    }

    #[test]
    fn payloads_from_meta_texts_equal_the_encoded_list() {
        let list = state(&[("a", &["1", "2"]), ("b\"q", &["3"]), ("zz", &["4"])]);
        let texts: Vec<(String, String)> = list
            .0
            .iter()
            .flat_map(|(k, metas)| {
                metas
                    .iter()
                    .map(|m| (k.clone(), serde_json::to_string(m).unwrap()))
            })
            .collect();
        let p = StatePayload::from_texts(texts.iter().map(|(k, m)| (k.as_str(), m.as_str())));
        assert_eq!(p, StatePayload::encode(&list));
        assert_eq!(p.to_list(), list);
        let empty = StatePayload::from_texts([]);
        assert_eq!(empty, StatePayload::encode(&TrackerList::default()));
        assert_eq!(empty.to_list(), TrackerList::default());
    }
}
