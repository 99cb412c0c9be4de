//! Shared by the server tests: a node + server on loopback TCP (or an in-memory duplex for
//! paused-clock tests), and a raw WebSocket client that sends exact text frames and reads
//! exact frames back. Every wait has a timeout, so a test stops on its own.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use phxsim_runtime::server::{Server, ServerConfig};
use phxsim_runtime::{Node, NodeConfig};
use phxsim_shard::TrackerConfig;
use serde_json::Value as Json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Generous for loopback, and still bounded.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn node(name: &str, seed: u64, broadcast_period: u64) -> Node {
    Node::start(NodeConfig {
        tracker: TrackerConfig::with_broadcast_period(broadcast_period),
        seed: Some(seed),
        ..NodeConfig::new(name, 1)
    })
    .expect("valid node config")
}

/// A node and its server on an ephemeral 127.0.0.1 port.
pub async fn serve(cfg: ServerConfig) -> (Server, SocketAddr) {
    let server = Server::new(node("n1", 1, 100), cfg);
    let addr = listen(&server).await;
    (server, addr)
}

pub async fn listen(server: &Server) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    server.listen(listener);
    addr
}

/// A raw client: text frames in and out, exactly.
pub struct Raw<S> {
    pub ws: WebSocketStream<S>,
}

pub async fn connect(addr: SocketAddr, query: &str) -> Raw<TcpStream> {
    try_connect(addr, query).await.expect("upgrade accepted")
}

pub async fn try_connect(
    addr: SocketAddr,
    query: &str,
) -> Result<Raw<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let stream = TcpStream::connect(addr).await.expect("tcp connect");
    let url = format!("ws://{addr}/socket/websocket?{query}");
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("handshake in time")?;
    Ok(Raw { ws })
}

/// Over any stream (an in-memory duplex for paused-clock tests).
pub async fn connect_stream<S>(stream: S, query: &str) -> Raw<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let url = format!("ws://localhost/socket/websocket?{query}");
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade accepted");
    Raw { ws }
}

/// What the next frame was.
#[derive(Debug, PartialEq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<(u16, String)>),
    /// The stream ended without a close frame.
    End,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub async fn send(&mut self, text: &str) {
        self.ws.send(Ws::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Ws::binary(bytes)).await.expect("send");
    }

    /// The next data or close frame, skipping pings and pongs.
    pub async fn next(&mut self) -> Got {
        self.next_within(WAIT).await.expect("a frame in time")
    }

    pub async fn next_within(&mut self, limit: Duration) -> Option<Got> {
        tokio::time::timeout(limit, async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) => return Got::End,
                    Some(Ok(Ws::Text(t))) => return Got::Text(t.as_str().to_owned()),
                    Some(Ok(Ws::Binary(b))) => return Got::Binary(b.to_vec()),
                    Some(Ok(Ws::Close(f))) => {
                        return Got::Close(f.map(|CloseFrame { code, reason }| {
                            (u16::from(code), reason.as_str().to_owned())
                        }));
                    }
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .ok()
    }

    /// The next text frame, which must be exactly `expected`.
    pub async fn expect(&mut self, expected: &str) {
        assert_eq!(self.next().await, Got::Text(expected.to_owned()));
    }

    /// The next text frame as JSON.
    pub async fn json(&mut self) -> Json {
        match self.next().await {
            Got::Text(t) => serde_json::from_str(&t).expect("server sent JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Nothing arrives for `ms` milliseconds.
    pub async fn silent(&mut self, ms: u64) {
        if let Some(got) = self.next_within(Duration::from_millis(ms)).await {
            panic!("expected silence, got {got:?}");
        }
    }

    /// The server closes: returns the close code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        match self.next().await {
            Got::Close(Some(cr)) => cr,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Replaces every `phx_ref` / `phx_ref_prev` value in a frame by a placeholder, so frames with
/// random refs compare exactly: `"phx_ref":"<ref>"`.
pub fn unref(frame: &str) -> String {
    let mut v: Json = serde_json::from_str(frame).expect("JSON frame");
    fn walk(v: &mut Json) {
        match v {
            Json::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if (k == "phx_ref" || k == "phx_ref_prev") && x.is_string() {
                        *x = Json::String("<ref>".into());
                    } else {
                        walk(x);
                    }
                }
            }
            Json::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    serde_json::to_string(&v).expect("re-encode")
}

/// The `phx_ref`s of a presence_diff frame's joins and leaves (V2 array frame).
pub fn diff_refs(frame: &Json) -> (Vec<String>, Vec<String>) {
    let refs = |part: &str| -> Vec<String> {
        frame[4][part]
            .as_object()
            .map(|m| {
                m.values()
                    .flat_map(|p| p["metas"].as_array().cloned().unwrap_or_default())
                    .filter_map(|meta| meta["phx_ref"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    (refs("joins"), refs("leaves"))
}
