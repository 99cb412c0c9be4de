//! The reference `room:*` channel (reference-channel.md) as pure decisions: what a join asks
//! for and what each pushed event does. The socket carries the decisions out against the node.

use phxsim_wire::Payload;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// Topics of the one channel route, `channel "room:*"`.
pub const ROOM_PREFIX: &str = "room:";

/// Whether a topic has a channel route (else: `unmatched topic`).
pub fn routes(topic: &str) -> bool {
    topic.starts_with(ROOM_PREFIX)
}

/// Why a join is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// `{"deny": true}`: `join/3` returns `{:error, %{reason: "unauthorized"}}`.
    Unauthorized,
    /// The channel could not start (phxsim: the node is gone); Phoenix answers a join that
    /// crashes with `join crashed`.
    Crashed,
}

impl JoinRefusal {
    /// The error reply's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            JoinRefusal::Unauthorized => "unauthorized",
            JoinRefusal::Crashed => "join crashed",
        }
    }
}

/// Reads a join's params: the meta to track (`{"status":"online"}` merged with the given
/// `meta`, given fields winning), or a refusal.
///
/// As the reference channel does: params that are not an object (a string, an array, null, a
/// binary payload) or a `meta` that is not an object join with the default meta.
///
/// Fields are sorted by name, nested objects too ([`erlang_order`]), so metas read the same as
/// Phoenix's.
pub fn join_meta(payload: &Payload) -> Result<Map<String, Json>, JoinRefusal> {
    let params = match payload {
        Payload::Json(Json::Object(params)) => Some(params),
        _ => None,
    };
    if params.and_then(|p| p.get("deny")) == Some(&Json::Bool(true)) {
        return Err(JoinRefusal::Unauthorized);
    }
    let given = match params.and_then(|p| p.get("meta")) {
        Some(Json::Object(meta)) => Some(meta),
        _ => None,
    };
    let mut meta: BTreeMap<String, Json> = BTreeMap::new();
    meta.insert("status".into(), Json::String("online".into()));
    for (k, v) in given.into_iter().flatten() {
        meta.insert(k.clone(), erlang_order(v.clone()));
    }
    Ok(meta.into_iter().collect())
}

/// A JSON value with every object's keys in the order Phoenix writes them back: Phoenix decodes
/// client JSON into Erlang maps, and Jason encodes a map of up to 32 keys in term order, which
/// for string keys is byte order (a larger map is hash-ordered; that is not reproduced).
pub fn erlang_order(v: Json) -> Json {
    match v {
        Json::Object(map) => {
            let sorted: BTreeMap<String, Json> =
                map.into_iter().map(|(k, v)| (k, erlang_order(v))).collect();
            Json::Object(sorted.into_iter().collect())
        }
        Json::Array(items) => Json::Array(items.into_iter().map(erlang_order).collect()),
        other => other,
    }
}

/// What a pushed event (`handle_in/3`) does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Reply with this status and response.
    Reply {
        /// `"ok"` or `"error"`.
        status: &'static str,
        /// The response (JSON, or the echoed bytes of a binary ping).
        response: Payload,
    },
    /// `Presence.update` with this meta, then reply ok `{}`.
    UpdateMeta(Map<String, Json>),
    /// Reply ok with the topic's presence list.
    List,
    /// Send nothing back.
    NoReply,
    /// The handler raises: `phx_error`, the channel and its presence go away.
    Crash,
}

/// The reference channel's `handle_in/3`.
///
/// An event it has no clause for raises in Phoenix (FunctionClauseError), so it crashes here
/// too; so does `update_meta` with a payload that is not an object.
pub fn handle_in(event: &str, payload: Payload) -> Action {
    match (event, payload) {
        ("ping", Payload::Json(v)) => Action::Reply {
            status: "ok",
            response: Payload::Json(erlang_order(v)),
        },
        ("ping", response) => Action::Reply {
            status: "ok",
            response,
        },
        ("error_reply", _) => Action::Reply {
            status: "error",
            response: Payload::Json(reason("nope")),
        },
        ("noreply", _) => Action::NoReply,
        ("list", _) => Action::List,
        ("update_meta", Payload::Json(Json::Object(meta))) => {
            match erlang_order(Json::Object(meta)) {
                Json::Object(meta) => Action::UpdateMeta(meta),
                _ => Action::Crash,
            }
        }
        _ => Action::Crash,
    }
}

/// `{"reason": text}`, the shape of every error reply.
pub fn reason(text: &str) -> Json {
    let mut m = Map::new();
    m.insert("reason".into(), Json::String(text.into()));
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Json) -> Payload {
        Payload::Json(v)
    }

    #[test]
    fn join_merges_status_online_with_the_given_meta() {
        let m = join_meta(&p(json!({"meta": {"name": "Alice"}}))).unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"name":"Alice","status":"online"}"#
        );
        let m = join_meta(&p(json!({"meta": {"status": "away"}}))).unwrap();
        assert_eq!(Json::Object(m), json!({"status": "away"}));
        let m = join_meta(&p(json!({}))).unwrap();
        assert_eq!(Json::Object(m), json!({"status": "online"}));
    }

    #[test]
    fn join_refusals() {
        assert_eq!(
            join_meta(&p(json!({"deny": true}))),
            Err(JoinRefusal::Unauthorized)
        );
        // Only `true` denies.
        assert!(join_meta(&p(json!({"deny": "yes"}))).is_ok());
        // Anything else joins with the default meta (recorded from Phoenix 1.7.21).
        let default = json!({"status": "online"});
        for odd in [
            p(json!([1])),
            p(json!({"meta": 3})),
            p(json!("s")),
            p(Json::Null),
        ] {
            assert_eq!(join_meta(&odd).map(Json::Object), Ok(default.clone()));
        }
        assert_eq!(
            join_meta(&Payload::Binary(vec![1])).map(Json::Object),
            Ok(default)
        );
        // Nested keys come back in byte order.
        let m = join_meta(&p(json!({"meta": {"n": {"t": 1, "a": 2}}}))).unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"n":{"a":2,"t":1},"status":"online"}"#
        );
    }

    #[test]
    fn events_of_the_reference_channel() {
        assert_eq!(
            handle_in("ping", p(json!({"x": 1}))),
            Action::Reply {
                status: "ok",
                response: p(json!({"x": 1}))
            }
        );
        assert_eq!(
            handle_in("ping", Payload::Binary(vec![1, 2])),
            Action::Reply {
                status: "ok",
                response: Payload::Binary(vec![1, 2])
            }
        );
        assert_eq!(
            handle_in("error_reply", p(json!({}))),
            Action::Reply {
                status: "error",
                response: p(json!({"reason": "nope"}))
            }
        );
        assert_eq!(handle_in("noreply", p(json!({}))), Action::NoReply);
        assert_eq!(handle_in("list", p(json!({}))), Action::List);
        assert_eq!(
            handle_in("update_meta", p(json!({"s": 1}))),
            Action::UpdateMeta(json!({"s": 1}).as_object().unwrap().clone())
        );
        assert_eq!(handle_in("update_meta", p(json!([]))), Action::Crash);
        assert_eq!(handle_in("crash", p(json!({}))), Action::Crash);
        assert_eq!(handle_in("no_such_event", p(json!({}))), Action::Crash);
        assert!(routes("room:lobby") && routes("room:") && !routes("rooms") && !routes("phoenix"));
    }
}
