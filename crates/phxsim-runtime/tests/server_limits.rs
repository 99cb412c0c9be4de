//! Bad or slow clients cost only their own socket (issue 17): a text frame that is not UTF-8
//! closes with 1007 and a reason, and a client that stops reading is closed with 1013 once its
//! outbound buffer passes the limit; either way its presences leave and every other socket
//! keeps its service. Both ends are reported as [`ServerEvent::Ended`], which `phxsim serve`
//! logs.

mod server_common;

use phxsim_runtime::server::{ConnectionEnd, ServerConfig, ServerEvent, close_code};
use serde_json::Value as Json;
use server_common::{Got, Raw, connect, connect_stream, serve};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

async fn join<S>(c: &mut Raw<S>, topic: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    c.send(&format!(r#"["1","1","{topic}","phx_join",{{}}]"#))
        .await;
    // reply, then the state and the own diff in either order
    let mut seen = 0;
    while seen < 3 {
        match c.next().await {
            Got::Text(_) => seen += 1,
            other => panic!("joining: {other:?}"),
        }
    }
}

/// Waits for the diff in which `user` leaves.
async fn sees_leave<S>(c: &mut Raw<S>, user: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let frame = c.json().await;
        if frame[3] == "presence_diff" && frame[4]["leaves"].get(user).is_some() {
            return;
        }
    }
}

async fn ended(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<ServerEvent>,
    user: &str,
) -> ConnectionEnd {
    let mut conn_of_user = None;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await.expect("server runs") {
                ServerEvent::Connected { conn, user_id, .. } if user_id == user => {
                    conn_of_user = Some(conn);
                }
                ServerEvent::Ended { conn, end } if Some(conn) == conn_of_user => return end,
                _ => {}
            }
        }
    })
    .await
    .expect("the connection ends")
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007_and_a_reason() {
    let (server, addr) = serve(ServerConfig::default()).await;
    let mut events = server.observe();
    let mut bystander = connect(addr, "vsn=2.0.0&user_id=b").await;
    join(&mut bystander, "room:u").await;
    let mut bad = connect(addr, "vsn=2.0.0&user_id=bad").await;
    join(&mut bad, "room:u").await;
    let _ = bystander.next().await; // bad's join diff
    // A masked client text frame (mask key 0) whose payload is not UTF-8.
    let payload = b"[\"1\",\"2\",\"room:u\",\"ping\",\"\xff\xfe\"]";
    let mut raw = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    raw.extend_from_slice(payload);
    bad.ws.get_mut().write_all(&raw).await.expect("write");
    let (code, reason) = bad.closed().await;
    assert_eq!(code, close_code::MALFORMED);
    assert!(reason.contains("not valid UTF-8"), "{reason}");
    match ended(&mut events, "bad").await {
        ConnectionEnd::ServerClosed { code, reason } => {
            assert_eq!(code, close_code::MALFORMED);
            assert!(reason.contains("UTF-8"), "{reason}");
        }
        other => panic!("ended as {other:?}"),
    }
    sees_leave(&mut bystander, "bad").await;
    bystander
        .send(r#"[null,"7","phoenix","heartbeat",{}]"#)
        .await;
    bystander
        .expect(r#"[null,"7","phoenix","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_its_buffer_limit_and_leaves() {
    const LIMIT: usize = 64 * 1024;
    let (server, addr) = serve(ServerConfig {
        max_outbound_bytes: LIMIT,
        ..ServerConfig::default()
    })
    .await;
    let mut events = server.observe();
    let mut actor = connect(addr, "vsn=2.0.0&user_id=actor").await;
    join(&mut actor, "room:s").await;
    let mut reader = connect(addr, "vsn=2.0.0&user_id=reader").await;
    join(&mut reader, "room:s").await;
    let _ = actor.next().await; // reader's join diff
    // The slow client sits on an in-memory stream with a 4 KiB pipe, and stops reading once
    // it has joined: nothing it is sent leaves the server's buffer any more.
    let (ours, theirs) = tokio::io::duplex(4096);
    server.serve_connection(ours);
    let mut slow = connect_stream(theirs, "vsn=2.0.0&user_id=slow").await;
    join(&mut slow, "room:s").await;
    let _ = actor.next().await;
    let _ = reader.next().await;
    // Updates of ~10 KB each: about seven fill the slow socket's buffer.
    let big = "x".repeat(10_000);
    let mut saw_slow_leave = false;
    for round in 0..20 {
        actor
            .send(&format!(
                r#"["1","u{round}","room:s","update_meta",{{"blob":"{big}","round":{round}}}]"#
            ))
            .await;
        // The actor gets its reply and its diff, the reader its diff, whatever the slow does.
        let mut got_reply = false;
        let mut got_diff = false;
        while !(got_reply && got_diff) {
            let f: Json = actor.json().await;
            match f[3].as_str() {
                Some("phx_reply") => got_reply = true,
                Some("presence_diff") if f[4]["joins"]["actor"].is_object() => got_diff = true,
                Some("presence_diff") => {
                    saw_slow_leave |= f[4]["leaves"].get("slow").is_some();
                }
                _ => {}
            }
        }
        loop {
            let f: Json = reader.json().await;
            if f[4]["leaves"].get("slow").is_some() {
                saw_slow_leave = true;
            }
            if f[4]["joins"]["actor"]["metas"][0]["round"] == round {
                break;
            }
        }
    }
    match ended(&mut events, "slow").await {
        ConnectionEnd::ServerClosed { code, reason } => {
            assert_eq!(code, close_code::OUTBOX_FULL);
            assert!(reason.contains("outbound buffer full"), "{reason}");
            assert!(reason.contains(&LIMIT.to_string()), "{reason}");
        }
        other => panic!("the slow client ended as {other:?}"),
    }
    if !saw_slow_leave {
        sees_leave(&mut reader, "slow").await;
    }
    let list = server.node().list("room:s").await.expect("node runs");
    let keys: Vec<&String> = list.0.keys().collect();
    assert_eq!(keys, ["actor", "reader"]);
    drop(slow);
}
