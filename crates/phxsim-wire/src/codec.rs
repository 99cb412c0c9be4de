//! Choosing a serializer and a side, and the size limit: the entry point of the codec.

use crate::binary;
use crate::error::{DecodeError, EncodeError};
use crate::message::{Frame, Message, Payload};
use crate::{v1, v2};

/// Default largest frame a decoder accepts: 8 MiB.
///
/// Phoenix sets no limit of its own (Cowboy's and Bandit's defaults are unlimited), but a
/// simulator that decodes whatever a fuzzer sends must bound its memory. A `presence_state` of
/// 10 000 presences with ~100-byte metas is about 1 MiB, so 8 MiB leaves room for fat metas
/// while refusing a runaway frame before parsing it.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// The two socket protocol versions, negotiated by the `vsn` query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Serializer {
    /// `vsn=1.0.0` (and a missing vsn): JSON objects, no join_ref from the server, no binary.
    V1,
    /// `vsn=2.0.0` (what phoenix.js sends): JSON arrays plus binary frames.
    V2,
}

impl Serializer {
    /// The serializer Phoenix picks for a `vsn` query value, or `None` when it would refuse the
    /// upgrade with 403.
    ///
    /// Phoenix parses `vsn` as a semantic version (a missing one counts as `"1.0.0"`) and takes
    /// the first of `~> 1.0.0` (V1) and `~> 2.0.0` (V2) it matches; pre-releases match as in
    /// Elixir's `Version.match?/2` (allowed, but `2.0.0-rc` sorts below `2.0.0`).
    pub fn from_vsn(vsn: Option<&str>) -> Option<Serializer> {
        let version = Version::parse(vsn.unwrap_or("1.0.0"))?;
        let in_series = |major: u64| {
            version.major == major
                && version.minor == 0
                && !(version.patch == 0 && version.pre_release)
        };
        if in_series(1) {
            Some(Serializer::V1)
        } else if in_series(2) {
            Some(Serializer::V2)
        } else {
            None
        }
    }

    /// Encodes a server → client message, as Phoenix does. Shorthand for [`Codec::server`].
    pub fn encode(self, msg: &Message) -> Result<Frame, EncodeError> {
        Codec::server(self).encode(msg)
    }

    /// Decodes a client → server frame, as Phoenix does, with [`DEFAULT_MAX_FRAME_LEN`].
    pub fn decode(self, frame: &Frame) -> Result<Message, DecodeError> {
        Codec::server(self).decode(frame)
    }
}

/// Which end of the socket the codec sits on. The text formats are symmetric, but binary
/// pushes are not (only the client's carries a ref), replies and broadcasts only flow from the
/// server, and V1 servers never write `join_ref`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Phoenix's side: decodes what clients send, encodes what servers send.
    Server,
    /// phoenix.js's side: decodes what servers send, encodes what clients send.
    Client,
}

/// A serializer bound to one side of the socket and a frame size limit.
///
/// Pure: frames in, messages out, nothing else. The runtime keeps one per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    serializer: Serializer,
    role: Role,
    max_frame_len: usize,
    numeric_refs: bool,
}

impl Codec {
    /// The server side of `serializer`, with the default size limit.
    pub fn server(serializer: Serializer) -> Codec {
        Codec::new(serializer, Role::Server)
    }

    /// The client side of `serializer`, with the default size limit.
    pub fn client(serializer: Serializer) -> Codec {
        Codec::new(serializer, Role::Client)
    }

    /// A codec for `serializer` on `role`'s side, with the default size limit.
    pub fn new(serializer: Serializer, role: Role) -> Codec {
        Codec {
            serializer,
            role,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            numeric_refs: false,
        }
    }

    /// The same codec accepting JSON numbers as `ref` and `join_ref` and writing them back as
    /// numbers, as Phoenix 1.7.21 does (kept in the message with
    /// [`NUMERIC_REF_MARK`](crate::NUMERIC_REF_MARK)).
    pub fn with_numeric_refs(self, numeric: bool) -> Codec {
        Codec {
            numeric_refs: numeric,
            ..self
        }
    }

    /// The same codec refusing frames longer than `max` bytes.
    pub fn with_max_frame_len(self, max: usize) -> Codec {
        Codec {
            max_frame_len: max,
            ..self
        }
    }

    /// The protocol version.
    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    /// The side this codec is on.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The decoder's size limit in bytes.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Encodes a message as this side would send it: a text frame for a JSON payload, a V2
    /// binary frame for a binary one. Encoding does not apply the size limit: a peer decides
    /// what it accepts.
    pub fn encode(&self, msg: &Message) -> Result<Frame, EncodeError> {
        match (self.serializer, self.role) {
            (Serializer::V1, Role::Server) => {
                v1::encode_server_refs(msg, self.numeric_refs).map(Frame::Text)
            }
            (Serializer::V1, Role::Client) => v1::encode_client(msg).map(Frame::Text),
            (Serializer::V2, role) => match &msg.payload {
                Payload::Json(payload) => {
                    v2::encode_text_refs(msg, payload, self.numeric_refs).map(Frame::Text)
                }
                Payload::Binary(_) | Payload::BinaryReply { .. } => match role {
                    Role::Server => binary::encode_server(msg).map(Frame::Binary),
                    Role::Client => binary::encode_client(msg).map(Frame::Binary),
                },
            },
        }
    }

    /// A V2 text frame's head decoded as [`Codec::decode`] decodes it, and its payload's text
    /// **unchecked** ([`v2::split_text`]): the frame is one [`Codec::decode`] accepts exactly
    /// when the payload is one JSON value. `None` for a frame it does not cover (V1, binary,
    /// over the size limit, or not split), which [`Codec::decode`] then handles.
    pub fn split<'a>(&self, frame: &'a Frame) -> Option<v2::RawFrame<'a>> {
        match (self.serializer, frame) {
            (Serializer::V2, Frame::Text(text)) if text.len() <= self.max_frame_len => {
                v2::split_text(text, self.numeric_refs)
            }
            _ => None,
        }
    }

    /// Decodes a frame the other side sent. Any input gives a message or a typed error.
    pub fn decode(&self, frame: &Frame) -> Result<Message, DecodeError> {
        // The limit comes first so an enormous frame is refused without being parsed.
        if frame.len() > self.max_frame_len {
            return Err(DecodeError::Oversized {
                len: frame.len(),
                max: self.max_frame_len,
            });
        }
        match (self.serializer, frame) {
            (_, Frame::Text(text)) => self.decode_text(text),
            (Serializer::V1, Frame::Binary(_)) => Err(DecodeError::BinaryOnV1),
            (Serializer::V2, Frame::Binary(bytes)) => match self.role {
                Role::Server => binary::decode_from_client(bytes),
                Role::Client => binary::decode_from_server(bytes),
            },
        }
    }

    /// Decodes a text frame the other side sent, borrowed ([`Codec::decode`] of a
    /// [`Frame::Text`]).
    pub fn decode_text(&self, text: &str) -> Result<Message, DecodeError> {
        if text.len() > self.max_frame_len {
            return Err(DecodeError::Oversized {
                len: text.len(),
                max: self.max_frame_len,
            });
        }
        match self.serializer {
            Serializer::V1 => v1::decode_refs(text, self.numeric_refs),
            Serializer::V2 => v2::decode_text_refs(text, self.numeric_refs),
        }
    }
}

/// The parts of a semantic version that serializer negotiation looks at.
struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre_release: bool,
}

impl Version {
    /// `MAJOR.MINOR.PATCH[-PRE][+BUILD]`, numbers without leading zeros, as Elixir's parser wants.
    fn parse(text: &str) -> Option<Version> {
        let without_build = match text.split_once('+') {
            Some((version, build)) if valid_identifiers(build) => version,
            Some(_) => return None,
            None => text,
        };
        let (core, pre_release) = match without_build.split_once('-') {
            Some((core, pre)) if valid_identifiers(pre) => (core, true),
            Some(_) => return None,
            None => (without_build, false),
        };
        let mut parts = core.split('.');
        let major = number(parts.next()?)?;
        let minor = number(parts.next()?)?;
        let patch = number(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(Version {
            major,
            minor,
            patch,
            pre_release,
        })
    }
}

fn number(part: &str) -> Option<u64> {
    let digits_only = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = part.len() > 1 && part.starts_with('0');
    if !digits_only || leading_zero {
        return None;
    }
    part.parse().ok()
}

fn valid_identifiers(text: &str) -> bool {
    text.split('.')
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsn_negotiation_follows_phoenix_requirements() {
        assert_eq!(Serializer::from_vsn(None), Some(Serializer::V1));
        assert_eq!(Serializer::from_vsn(Some("1.0.0")), Some(Serializer::V1));
        assert_eq!(Serializer::from_vsn(Some("1.0.7")), Some(Serializer::V1));
        assert_eq!(Serializer::from_vsn(Some("2.0.0")), Some(Serializer::V2));
        assert_eq!(
            Serializer::from_vsn(Some("2.0.1-dev")),
            Some(Serializer::V2)
        );
        assert_eq!(
            Serializer::from_vsn(Some("2.0.0+build.1")),
            Some(Serializer::V2)
        );
        // ~> 2.0.0 means >= 2.0.0 and < 2.1.0: the pre-release of 2.0.0 sorts below it.
        assert_eq!(Serializer::from_vsn(Some("2.0.0-rc.1")), None);
        assert_eq!(Serializer::from_vsn(Some("2.1.0")), None);
        assert_eq!(Serializer::from_vsn(Some("3.0.0")), None);
        assert_eq!(Serializer::from_vsn(Some("123.1.1")), None);
        assert_eq!(Serializer::from_vsn(Some("2.0")), None);
        assert_eq!(Serializer::from_vsn(Some("02.0.0")), None);
        assert_eq!(Serializer::from_vsn(Some("")), None);
        assert_eq!(Serializer::from_vsn(Some("2.0.0-")), None);
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let codec = Codec::server(Serializer::V2).with_max_frame_len(10);
        let err = codec.decode(&Frame::Text("not json and long".to_owned()));
        assert_eq!(err, Err(DecodeError::Oversized { len: 17, max: 10 }));
        let ok = codec.decode(&Frame::Text("[1]".to_owned()));
        assert_eq!(ok, Err(DecodeError::WrongArity { found: 1 }));
    }
}

#[cfg(test)]
mod numeric_ref_tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn numeric_refs_are_echoed_as_numbers_only_when_enabled() {
        for (vsn, frame) in [
            (Serializer::V2, r#"[1,2,"room:x","ping",{}]"#),
            (
                Serializer::V1,
                r#"{"topic":"room:x","event":"ping","payload":{},"ref":2,"join_ref":1}"#,
            ),
        ] {
            let plain = Codec::server(vsn);
            assert!(plain.decode(&Frame::Text(frame.into())).is_err(), "{vsn:?}");
            let codec = plain.with_numeric_refs(true);
            let msg = codec.decode(&Frame::Text(frame.into())).unwrap();
            let reply = Message::reply(
                msg.join_ref.clone(),
                msg.ref_.clone(),
                "room:x",
                "ok",
                Value::Null,
            );
            let Frame::Text(out) = codec.encode(&reply).unwrap() else {
                panic!("text");
            };
            match vsn {
                Serializer::V2 => assert!(out.starts_with(r#"[1,2,"room:x""#), "{out}"),
                Serializer::V1 => assert!(out.contains(r#""ref":2,"#), "{out}"),
            }
        }
        // Strings stay strings, even one that starts with the mark; 1 and "1" differ.
        let codec = Codec::server(Serializer::V2).with_numeric_refs(true);
        let tricky = format!(r#"["1","{}x","room:x","ping",{{}}]"#, "\\u0001");
        let msg = codec.decode(&Frame::Text(tricky)).unwrap();
        let n = codec
            .decode(&Frame::Text(r#"[1,1,"room:x","ping",{}]"#.into()))
            .unwrap();
        assert_ne!(msg.join_ref, n.join_ref);
        let reply = Message::reply(msg.join_ref, msg.ref_, "room:x", "ok", Value::Null);
        let Frame::Text(out) = codec.encode(&reply).unwrap() else {
            panic!("text");
        };
        assert!(out.starts_with(r#"["1","\u0001x","room:x""#), "{out}");
    }
}
