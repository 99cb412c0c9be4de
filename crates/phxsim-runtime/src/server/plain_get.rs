//! Phoenix 1.7.21 (under Bandit 1.5) answers a plain HTTP GET on the socket path, one that asks
//! for no WebSocket upgrade, with `400` and a text body naming the missing header; tungstenite
//! would just drop such a connection. So with the 1.7.21 rules the server reads the request head
//! itself first, answers what is not an upgrade, and hands everything it read to tungstenite
//! otherwise ([`crate::prefixed::Prefixed`]).
//!
//! The decision ([`plain_get_answer`]) is pure and tested without a socket.

use super::handshake;
use crate::prefixed::Prefixed;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest request head read before giving the bytes to tungstenite as they are.
const MAX_HEAD: usize = 16 * 1024;

/// What a request head asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum HeadDecision {
    /// A WebSocket upgrade (or something tungstenite should judge): go on.
    Upgrade,
    /// Answer with this status and body, then close.
    Answer {
        /// HTTP status.
        status: u16,
        /// Body text.
        body: String,
    },
}

/// The values of every header `name` in `head`, comma-separated lists split, as Bandit lists
/// them in its message (`["keep-alive"]`).
fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|x| x.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// Elixir's `inspect` of a list of strings.
fn inspect_list(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| serde_json::Value::String(v.clone()).to_string())
        .collect();
    format!("[{}]", items.join(", "))
}

/// Decides a request head the 1.7.21 way: a refused connect (bad path, vsn or user_id) is
/// answered as the upgrade would be; a plain GET that Phoenix accepts gets 400 with Bandit's
/// text.
pub(super) fn plain_get_answer(head: &str) -> HeadDecision {
    let Some(target) = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
    else {
        return HeadDecision::Upgrade;
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let connection = header_values(head, "connection");
    let is_upgrade = connection.iter().any(|v| v.eq_ignore_ascii_case("upgrade"));
    if is_upgrade {
        return HeadDecision::Upgrade;
    }
    match handshake::decide(path, query) {
        // tungstenite answers refusals of real upgrades; a plain GET gets the same status.
        Err(refusal) => HeadDecision::Answer {
            status: refusal.status(),
            body: String::new(),
        },
        Ok(_) => HeadDecision::Answer {
            status: 400,
            body: format!(
                "'connection' header must contain 'upgrade', got {}",
                inspect_list(&connection)
            ),
        },
    }
}

/// Reads the request head and either answers it (`Err` with the status and body sent) or
/// returns the stream with the bytes read put back.
pub(super) async fn screen<S>(mut stream: S) -> io::Result<Result<Prefixed<S>, (u16, String)>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let decision = match std::str::from_utf8(&head) {
        Ok(text) if text.contains("\r\n\r\n") => plain_get_answer(text),
        _ => HeadDecision::Upgrade,
    };
    match decision {
        HeadDecision::Upgrade => Ok(Ok(Prefixed::new(head, stream))),
        HeadDecision::Answer { status, body } => {
            let reason = match status {
                400 => "Bad Request",
                403 => "Forbidden",
                404 => "Not Found",
                _ => "Error",
            };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\n\
                 cache-control: max-age=0, private, must-revalidate\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await?;
            stream.flush().await?;
            let _ = stream.shutdown().await;
            Ok(Err((status, body)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str, extra: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nhost: x\r\n{extra}\r\n")
    }

    #[test]
    fn a_plain_get_gets_bandits_400() {
        let d = plain_get_answer(&get("/socket/websocket?vsn=2.0.0&user_id=x", ""));
        assert_eq!(
            d,
            HeadDecision::Answer {
                status: 400,
                body: "'connection' header must contain 'upgrade', got []".into()
            }
        );
        let d = plain_get_answer(&get(
            "/socket/websocket?user_id=x",
            "Connection: keep-alive\r\n",
        ));
        let HeadDecision::Answer { body, .. } = d else {
            panic!("answered");
        };
        assert!(body.ends_with(r#"got ["keep-alive"]"#), "{body}");
    }

    #[test]
    fn refused_connects_keep_their_status_and_upgrades_go_on() {
        let d = plain_get_answer(&get("/socket/websocket?vsn=2.0.0", ""));
        assert_eq!(
            d,
            HeadDecision::Answer {
                status: 403,
                body: String::new()
            }
        );
        let up = get(
            "/socket/websocket?vsn=2.0.0&user_id=x",
            "Connection: Upgrade\r\nUpgrade: websocket\r\n",
        );
        assert_eq!(plain_get_answer(&up), HeadDecision::Upgrade);
        assert_eq!(plain_get_answer("garbage"), HeadDecision::Upgrade);
    }

    #[tokio::test]
    async fn the_bytes_read_are_given_back() {
        let (mut client, server) = tokio::io::duplex(4096);
        let req = get(
            "/socket/websocket?user_id=x",
            "Connection: upgrade\r\nUpgrade: websocket\r\n",
        );
        client.write_all(req.as_bytes()).await.unwrap();
        let Ok(Ok(mut prefixed)) = screen(server).await else {
            panic!("an upgrade goes on");
        };
        let mut back = vec![0u8; req.len()];
        prefixed.read_exact(&mut back).await.unwrap();
        assert_eq!(back, req.as_bytes());
    }
}
