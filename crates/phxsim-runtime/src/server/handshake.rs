//! The HTTP side of a WebSocket connect (phoenix-protocol.md §1.1): which requests get a socket.
//!
//! Pure: the decision is a function of the request target, so it is tested without a socket and
//! the transport only turns a [`Refusal`] into an HTTP response.

use phxsim_wire::Serializer;
use std::collections::BTreeMap;

/// The only path the reference endpoint serves: `socket "/socket"` plus the websocket transport.
pub const SOCKET_PATH: &str = "/socket/websocket";

/// What an accepted connect request carries into the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The serializer negotiated from `vsn`.
    pub serializer: Serializer,
    /// The `user_id` connect param: the presence key of every join on this socket.
    pub user_id: String,
    /// Every query parameter, decoded (the socket's connect params).
    pub params: BTreeMap<String, String>,
}

/// Why an upgrade is refused, and with which HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No socket is mounted at this path.
    #[error("no socket at path {0:?}")]
    NotFound(String),
    /// The query string cannot be decoded (bad percent escape, or not UTF-8); Plug refuses it.
    #[error("malformed query string: {0}")]
    BadQuery(String),
    /// `vsn` names no serializer: Phoenix answers 403 with an empty body.
    #[error("unsupported vsn {0:?}")]
    UnsupportedVsn(String),
    /// `connect/3` returned `:error`: the reference socket requires a non-empty `user_id`.
    #[error("missing or empty user_id")]
    NoUserId,
}

impl Refusal {
    /// The HTTP status Phoenix answers with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotFound(_) => 404,
            Refusal::BadQuery(_) => 400,
            Refusal::UnsupportedVsn(_) | Refusal::NoUserId => 403,
        }
    }
}

/// Decides a connect request from its path and raw query string (without the `?`).
pub fn decide(path: &str, query: Option<&str>) -> Result<ConnectInfo, Refusal> {
    if path != SOCKET_PATH {
        return Err(Refusal::NotFound(path.to_owned()));
    }
    let params = parse_query(query.unwrap_or("")).map_err(Refusal::BadQuery)?;
    // A missing vsn means 1.0.0 (V1), as in Phoenix.
    let vsn = params.get("vsn").map(String::as_str);
    let serializer = Serializer::from_vsn(vsn)
        .ok_or_else(|| Refusal::UnsupportedVsn(vsn.unwrap_or_default().to_owned()))?;
    let user_id = match params.get("user_id") {
        Some(id) if !id.is_empty() => id.clone(),
        _ => return Err(Refusal::NoUserId),
    };
    Ok(ConnectInfo {
        serializer,
        user_id,
        params,
    })
}

/// `application/x-www-form-urlencoded` decoding as Plug does it: `+` is a space, `%XX` a byte,
/// and a repeated key keeps its last value.
pub fn parse_query(query: &str) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(percent_decode(key)?, percent_decode(value)?);
    }
    Ok(params)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |at: usize| bytes.get(at).and_then(|c| char::from(*c).to_digit(16));
                match (hex(i + 1), hex(i + 2)) {
                    (Some(hi), Some(lo)) => {
                        // Two hex digits are at most 0xff: the cast cannot truncate.
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => return Err(format!("invalid percent escape in {text:?}")),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

/// Percent-encodes a query component (everything but RFC 3986 unreserved characters), for
/// clients building connect URLs.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_vsn_is_v1_and_phoenix_js_gets_v2() {
        let v1 = decide(SOCKET_PATH, Some("user_id=alice")).unwrap();
        assert_eq!(v1.serializer, Serializer::V1);
        assert_eq!(v1.user_id, "alice");
        let v2 = decide(SOCKET_PATH, Some("vsn=2.0.0&user_id=bob")).unwrap();
        assert_eq!(v2.serializer, Serializer::V2);
    }

    #[test]
    fn refusals_have_phoenix_statuses() {
        let no_user = decide(SOCKET_PATH, Some("vsn=2.0.0")).unwrap_err();
        assert_eq!((no_user.status(), no_user), (403, Refusal::NoUserId));
        let empty_user = decide(SOCKET_PATH, Some("vsn=2.0.0&user_id=")).unwrap_err();
        assert_eq!(empty_user, Refusal::NoUserId);
        let vsn = decide(SOCKET_PATH, Some("vsn=3.0.0&user_id=dave")).unwrap_err();
        assert_eq!(
            (vsn.status(), vsn),
            (403, Refusal::UnsupportedVsn("3.0.0".into()))
        );
        let path = decide("/socket/longpoll", Some("user_id=x")).unwrap_err();
        assert_eq!(path.status(), 404);
        let bad = decide(SOCKET_PATH, Some("user_id=%zz")).unwrap_err();
        assert_eq!(bad.status(), 400);
        let not_utf8 = decide(SOCKET_PATH, Some("user_id=%ff")).unwrap_err();
        assert_eq!(not_utf8.status(), 400);
    }

    #[test]
    fn query_decoding_follows_form_encoding() {
        let p = parse_query("user_id=a+b%20c&x&user_id=last&&k%3D=v%26").unwrap();
        assert_eq!(p["user_id"], "last");
        assert_eq!(p["x"], "");
        assert_eq!(p["k="], "v&");
        let p = parse_query("user_id=a+b%20c").unwrap();
        assert_eq!(p["user_id"], "a b c");
        // A truncated escape at the very end is refused, not read past the end.
        assert!(parse_query("a=%4").is_err());
        assert!(parse_query("a=%").is_err());
    }

    #[test]
    fn encoding_round_trips_through_decoding() {
        for s in ["alice", "a b&c=d", "café", "100%", "~-._"] {
            let q = format!("k={}", percent_encode(s));
            assert_eq!(parse_query(&q).unwrap()["k"], s);
        }
        assert_eq!(percent_encode("a b"), "a%20b");
    }
}
