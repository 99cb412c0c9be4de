//! `phxsim serve --frames FILE`: every frame the cluster exchanges with its clients, as JSON
//! lines in the shape of the recorded Phoenix 1.7.21 sessions (`crates/phxsim-conform/data/`), so a
//! client's traffic can be read, and compared, the way the reference is.
//!
//! From the client's side, as in the reference: `send` is a frame the client sent, `recv` one
//! it received, `event` a connection that opened or ended. Each line also names the node.

use phxsim_runtime::server::{ConnectionEnd, ServerEvent};
use phxsim_wire::{Frame, Serializer};
use serde_json::{Value as Json, json};
use std::io::Write;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One observed event of one node's server.
pub struct Observed {
    pub node: String,
    pub event: ServerEvent,
}

/// The JSON line of one event, `t_ms` after the cluster started.
pub fn line(seq: u64, t_ms: f64, node: &str, event: &ServerEvent) -> Json {
    let t_ms = (t_ms * 10.0).round() / 10.0;
    let head = |conn: u64, dir: &str| json!({"seq": seq, "t_ms": t_ms, "node": node, "conn": conn, "dir": dir});
    let with = |mut v: Json, extra: Json| {
        if let (Some(o), Json::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    let frame = |f: &Frame| match f {
        Frame::Text(text) => json!({"opcode": "text", "data": text}),
        Frame::Binary(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            json!({"opcode": "binary", "data_hex": hex})
        }
    };
    match event {
        ServerEvent::Connected {
            conn,
            user_id,
            serializer,
        } => with(
            head(*conn, "event"),
            json!({"event": "connected", "user_id": user_id, "vsn": match serializer {
                Serializer::V1 => "1.0.0",
                Serializer::V2 => "2.0.0",
            }}),
        ),
        ServerEvent::Received { conn, frame: f } => with(head(*conn, "send"), frame(f)),
        ServerEvent::Sent { conn, frame: f } => with(head(*conn, "recv"), frame(f)),
        ServerEvent::Ended { conn, end } => with(head(*conn, "event"), ended(end)),
    }
}

fn ended(end: &ConnectionEnd) -> Json {
    match end {
        ConnectionEnd::Refused { status, reason } => {
            json!({"event": "connect_rejected", "status": status, "reason": reason})
        }
        ConnectionEnd::HandshakeFailed(why) => {
            json!({"event": "connect_rejected", "reason": why})
        }
        ConnectionEnd::ClientClosed { code } => {
            json!({"event": "closed", "by": "client", "close_rcvd_code": code})
        }
        ConnectionEnd::Dropped(why) => json!({"event": "closed", "by": "network", "reason": why}),
        ConnectionEnd::ServerClosed { code, reason } => {
            json!({"event": "closed", "by": "server", "close_sent_code": code, "reason": reason})
        }
    }
}

/// Writes every observed event as a line until every sender is gone, then flushes. Lines are
/// flushed whenever the queue runs dry, so the file is current while the cluster runs.
pub async fn write_all<W: Write>(
    mut out: W,
    mut events: mpsc::UnboundedReceiver<Observed>,
) -> std::io::Result<()> {
    let started = Instant::now();
    let mut seq = 0u64;
    while let Some(first) = events.recv().await {
        let mut next = Some(first);
        while let Some(o) = next {
            seq += 1;
            let t = started.elapsed().as_secs_f64() * 1000.0;
            writeln!(out, "{}", line(seq, t, &o.node, &o.event))?;
            next = events.try_recv().ok();
        }
        out.flush()?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_take_the_reference_shape_from_the_clients_side() {
        let sent = ServerEvent::Received {
            conn: 3,
            frame: Frame::Text(r#"["1","1","room:a","phx_join",{}]"#.into()),
        };
        let l = line(7, 12.345, "n1", &sent);
        assert_eq!(
            l,
            json!({"seq": 7, "t_ms": 12.3, "node": "n1", "conn": 3, "dir": "send",
                   "opcode": "text", "data": r#"["1","1","room:a","phx_join",{}]"#})
        );
        let pushed = ServerEvent::Sent {
            conn: 3,
            frame: Frame::Binary(vec![0, 2, 0xff]),
        };
        let l = line(8, 13.0, "n1", &pushed);
        assert_eq!(
            (l["dir"].as_str(), l["data_hex"].as_str()),
            (Some("recv"), Some("0002ff"))
        );
        let closed = ServerEvent::Ended {
            conn: 3,
            end: ConnectionEnd::ServerClosed {
                code: 1007,
                reason: "malformed frame".into(),
            },
        };
        let l = line(9, 14.0, "n2", &closed);
        assert_eq!(
            (
                l["event"].as_str(),
                l["close_sent_code"].as_u64(),
                l["node"].as_str()
            ),
            (Some("closed"), Some(1007), Some("n2"))
        );
    }

    #[tokio::test]
    async fn the_writer_numbers_every_line_and_ends_when_the_senders_do() {
        let (tx, rx) = mpsc::unbounded_channel();
        for conn in 1..=3 {
            tx.send(Observed {
                node: "n1".into(),
                event: ServerEvent::Connected {
                    conn,
                    user_id: format!("u{conn}"),
                    serializer: Serializer::V2,
                },
            })
            .unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        write_all(&mut out, rx).await.unwrap();
        let lines: Vec<Json> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(
            lines
                .iter()
                .all(|l| l["event"] == "connected" && l["vsn"] == "2.0.0")
        );
    }
}
