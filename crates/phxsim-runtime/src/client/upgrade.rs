//! The client's WebSocket upgrade, done here rather than by `tokio_tungstenite::client_async`
//! so that the connection's read buffer starts at the size configured.
//!
//! tungstenite hands the bytes left after the HTTP response to the WebSocket as the start of
//! its read buffer, and that `Vec` is the handshake's 4 KiB read buffer: the WebSocket buffer
//! then never drops below 4 KiB (`bytes` remembers a buffer's first capacity as its floor).
//! A simulated browser, of which a run holds thousands, needs far less. The request bytes, the
//! response parser and the accept key are tungstenite's own; only the reading and the checks
//! of RFC 6455 section 4.1 a client must make are here.

use crate::prefixed::Prefixed;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::uri_mode;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response, generate_request};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The longest upgrade response read before giving up (tungstenite's handshake allows a few
/// KB of headers too).
const MAX_RESPONSE_LEN: usize = 64 * 1024;

/// The smallest read buffer given to the WebSocket: below 1 KiB, `bytes` keeps no floor and
/// every frame would cost two reads and two allocations.
const MIN_READ_BUFFER: usize = 1024;

/// Sends the upgrade `request` on `stream` and checks the server's answer; returns the stream
/// and what was read past the response (the start of the first frames).
pub(super) async fn upgrade<S>(mut stream: S, request: Request) -> Result<(S, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    uri_mode(request.uri()).map_err(describe)?;
    let (bytes, key) = generate_request(request).map_err(describe)?;
    let sent = async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    };
    sent.await.map_err(|e| describe(WsError::Io(e)))?;
    let (response, tail) = read_response(&mut stream).await.map_err(describe)?;
    check(response, &derive_accept_key(key.as_bytes())).map_err(describe)?;
    Ok((stream, tail))
}

/// tungstenite's WebSocket over an upgraded `stream` that was read `tail` past the response;
/// its read buffer has room for `config.read_buffer_size` (at least 1 KiB).
pub(super) async fn tungstenite<S>(
    stream: S,
    tail: Vec<u8>,
    config: WebSocketConfig,
) -> WebSocketStream<Prefixed<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let part = Vec::with_capacity(config.read_buffer_size.max(MIN_READ_BUFFER));
    let stream = Prefixed::new(tail, stream);
    WebSocketStream::from_partially_read(stream, part, Role::Client, Some(config)).await
}

/// The message for a failed upgrade, as the client reports it.
fn describe(e: WsError) -> String {
    match e {
        WsError::Http(resp) => format!("upgrade refused: HTTP {}", resp.status().as_u16()),
        e => format!("upgrade: {e}"),
    }
}

/// Reads until a whole HTTP response head has arrived; returns it and the bytes after it.
async fn read_response<S>(stream: &mut S) -> Result<(Response, Vec<u8>), WsError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(WsError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Handshake not finished",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((len, response)) = Response::try_parse(&buf)? {
            return Ok((response, buf.split_off(len)));
        }
        if buf.len() > MAX_RESPONSE_LEN {
            return Err(WsError::AttackAttempt);
        }
    }
}

/// The checks of RFC 6455 section 4.1 on the server's response, as tungstenite makes them (no
/// subprotocol is ever requested).
fn check(response: Response, accept_key: &str) -> Result<(), WsError> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(WsError::Http(Box::new(response)));
    }
    let headers = response.headers();
    if !header_is(headers, "Upgrade", "websocket") {
        return Err(ProtocolError::MissingUpgradeWebSocketHeader.into());
    }
    if !header_has_token(headers, "Connection", "Upgrade") {
        return Err(ProtocolError::MissingConnectionUpgradeHeader.into());
    }
    if headers.get("Sec-WebSocket-Accept").map(|h| h.as_bytes()) != Some(accept_key.as_bytes()) {
        return Err(ProtocolError::SecWebSocketAcceptKeyMismatch.into());
    }
    if headers.contains_key("Sec-WebSocket-Protocol") {
        return Err(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::ServerSentSubProtocolNoneRequested,
        )
        .into());
    }
    Ok(())
}

/// Whether header `name` is `value`, ignoring ASCII case.
fn header_is(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers
        .get(name)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(value))
}

/// Whether header `name` lists `token` among its comma-separated values, ignoring ASCII case
/// (`Connection: keep-alive, Upgrade` is an upgrade too).
fn header_has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers
        .get(name)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::Message;

    /// An upgrade request as the client makes it (the sample key of RFC 6455).
    pub(in crate::client) fn request() -> Request {
        Request::builder()
            .uri("ws://example/socket/websocket?vsn=2.0.0")
            .header("Host", "example")
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap()
    }

    /// Reads the request head; answers with `answer(accept key)` in one write.
    async fn serve(mut server: DuplexStream, answer: impl FnOnce(String) -> Vec<u8>) {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.starts_with("GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n"),
            "{head}"
        );
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key");
        server
            .write_all(&answer(derive_accept_key(key.as_bytes())))
            .await
            .unwrap();
        // keep the server end open until the client is done
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
    }

    async fn try_upgrade(
        answer: impl FnOnce(String) -> Vec<u8> + Send + 'static,
    ) -> Result<WebSocketStream<Prefixed<DuplexStream>>, String> {
        let (client, server) = tokio::io::duplex(4096);
        tokio::spawn(serve(server, answer));
        let (stream, tail) = upgrade(client, request()).await?;
        Ok(tungstenite(stream, tail, WebSocketConfig::default()).await)
    }

    fn switching(accept: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn a_frame_sent_with_the_response_is_read_first() {
        let mut ws = try_upgrade(|accept| {
            let mut bytes = switching(&accept);
            // an unmasked text frame "hi" right behind the response, in the same write
            bytes.extend_from_slice(&[0x81, 2, b'h', b'i']);
            bytes
        })
        .await
        .expect("upgraded");
        let first = ws.next().await.expect("a message").expect("no error");
        assert_eq!(first, Message::text("hi"));
    }

    /// `Connection` is a list of tokens: servers behind some proxies answer
    /// `keep-alive, Upgrade`, which tungstenite takes too.
    #[tokio::test]
    async fn a_connection_header_listing_upgrade_among_others_is_taken() {
        let upgraded = try_upgrade(|accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: keep-alive, upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes()
        })
        .await;
        assert!(upgraded.is_ok(), "{:?}", upgraded.err());
    }

    #[tokio::test]
    async fn a_refusal_reports_the_status() {
        let err = try_upgrade(|_| b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".to_vec())
            .await
            .expect_err("refused");
        assert_eq!(err, "upgrade refused: HTTP 403");
    }

    #[tokio::test]
    async fn a_wrong_accept_key_fails() {
        let err = try_upgrade(|_| switching("AAAAAAAAAAAAAAAAAAAAAAAAAAA="))
            .await
            .expect_err("refused");
        assert!(
            err.starts_with("upgrade: ") && err.contains("Sec-WebSocket-Accept"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn missing_upgrade_headers_fail() {
        let err = try_upgrade(|accept| {
            format!("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
                .into_bytes()
        })
        .await
        .expect_err("refused");
        assert!(
            err.starts_with("upgrade: ") && err.contains("Upgrade"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_response_cut_short_fails() {
        let (client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = server.read(&mut buf).await;
            let _ = server.write_all(b"HTTP/1.1 101 Switch").await;
        });
        let err = upgrade(client, request()).await.expect_err("failed");
        assert!(err.starts_with("upgrade: "), "{err}");
    }

    #[tokio::test]
    async fn endless_headers_are_refused() {
        let err = try_upgrade(|_| {
            let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
            while bytes.len() <= MAX_RESPONSE_LEN {
                bytes.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
            }
            bytes
        })
        .await
        .expect_err("refused");
        assert!(err.starts_with("upgrade: "), "{err}");
    }
}
