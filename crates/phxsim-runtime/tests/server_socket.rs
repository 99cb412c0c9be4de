//! Socket-level behaviour of the Channels server, driven by exact raw frames over loopback TCP
//! (phoenix-protocol.md §1.6–1.9, reference-channel.md). Expected frames are those of the
//! recorded Phoenix 1.7.21 server, with `phx_ref`s masked.

mod server_common;

use phxsim_runtime::server::{ConnectionEnd, ServerConfig, ServerEvent, close_code};
use server_common::*;
use tokio_tungstenite::tungstenite::Error as WsError;

const ALICE: &str = "vsn=2.0.0&user_id=alice";
const BOB: &str = "vsn=2.0.0&user_id=bob";
const JOIN_ALICE: &str = r#"["1","1","room:lobby","phx_join",{"meta":{"name":"Alice"}}]"#;

/// Joins alice to room:lobby and reads the reply, her own diff and the state.
async fn join_alice<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(a: &mut Raw<S>) {
    a.send(JOIN_ALICE).await;
    a.expect(
        r#"["1","1","room:lobby","phx_reply",{"response":{"joined_as":"alice"},"status":"ok"}]"#,
    )
    .await;
    let diff = a.next().await;
    let state = a.next().await;
    let (Got::Text(diff), Got::Text(state)) = (diff, state) else {
        panic!("expected the join diff and the state");
    };
    assert_eq!(
        unref(&diff),
        r#"[null,null,"room:lobby","presence_diff",{"joins":{"alice":{"metas":[{"phx_ref":"<ref>","name":"Alice","status":"online"}]}},"leaves":{}}]"#
    );
    assert_eq!(
        unref(&state),
        r#"["1",null,"room:lobby","presence_state",{"alice":{"metas":[{"phx_ref":"<ref>","name":"Alice","status":"online"}]}}]"#
    );
}

#[tokio::test]
async fn connect_params_decide_the_upgrade() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    for (query, status) in [
        ("vsn=2.0.0", 403),
        ("vsn=2.0.0&user_id=", 403),
        ("vsn=3.0.0&user_id=dave", 403),
        ("vsn=banana&user_id=dave", 403),
    ] {
        match try_connect(addr, query).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{query}");
                assert!(
                    resp.body().as_ref().is_none_or(|b| b.is_empty()),
                    "{query}: empty body"
                );
            }
            Err(other) => panic!("{query}: expected an HTTP refusal, got {other}"),
            Ok(_) => panic!("{query}: expected an HTTP refusal, got a socket"),
        }
    }
    // No vsn at all is V1: the heartbeat reply is a V1 object.
    let mut a = connect(addr, "user_id=alice").await;
    a.send(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"3"}"#)
        .await;
    a.expect(r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"3","topic":"phoenix"}"#)
        .await;
}

#[tokio::test]
async fn a_wrong_path_is_not_found() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}/socket/longpoll?user_id=a");
    match tokio_tungstenite::client_async(url, stream).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn heartbeat_needs_no_join_and_replies_with_a_null_join_ref() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    a.send(r#"[null,"3","phoenix","heartbeat",{}]"#).await;
    a.expect(r#"[null,"3","phoenix","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
    // Whatever join_ref it carries.
    a.send(r#"["9","4","phoenix","heartbeat",{}]"#).await;
    a.expect(r#"[null,"4","phoenix","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
    // Another event on topic phoenix is routed like any topic: no channel there.
    a.send(r#"[null,"5","phoenix","ping",{}]"#).await;
    a.expect(r#"[null,"5","phoenix","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#)
        .await;
}

#[tokio::test]
async fn the_reference_channel_events_reply_as_recorded() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    a.send(r#"["1","4","room:lobby","ping",{"x":1}]"#).await;
    a.expect(r#"["1","4","room:lobby","phx_reply",{"response":{"x":1},"status":"ok"}]"#)
        .await;
    a.send(r#"["1","5","room:lobby","error_reply",{}]"#).await;
    a.expect(
        r#"["1","5","room:lobby","phx_reply",{"response":{"reason":"nope"},"status":"error"}]"#,
    )
    .await;
    a.send(r#"["1","6","room:lobby","noreply",{}]"#).await;
    a.send(r#"["1","7","room:lobby","list",{}]"#).await;
    let list = a.next().await;
    let Got::Text(list) = list else {
        panic!("{list:?}")
    };
    assert_eq!(
        unref(&list),
        r#"["1","7","room:lobby","phx_reply",{"response":{"alice":{"metas":[{"phx_ref":"<ref>","name":"Alice","status":"online"}]}},"status":"ok"}]"#
    );
    // A push with a null join_ref is accepted, and answered by the channel with its own
    // join_ref (as the real Phoenix 1.7.21 does).
    a.send(r#"[null,"8","room:lobby","ping",{}]"#).await;
    a.expect(r#"["1","8","room:lobby","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
}

#[tokio::test]
async fn update_meta_replies_then_one_diff_replaces_the_meta() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    a.send(r#"["1","2","room:lobby","update_meta",{"name":"Alice","status":"away"}]"#)
        .await;
    a.expect(r#"["1","2","room:lobby","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
    let diff = a.json().await;
    let (joins, leaves) = diff_refs(&diff);
    assert_eq!((joins.len(), leaves.len()), (1, 1));
    let new = &diff[4]["joins"]["alice"]["metas"][0];
    assert_eq!(new["phx_ref_prev"].as_str(), Some(leaves[0].as_str()));
    assert_eq!(new["status"], "away");
    assert_eq!(diff[4]["leaves"]["alice"]["metas"][0]["status"], "online");
}

#[tokio::test]
async fn unmatched_topics_get_an_error_with_a_null_join_ref() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    a.send(r#"["8","8","nonexistent:topic","phx_join",{}]"#)
        .await;
    a.expect(r#"[null,"8","nonexistent:topic","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#)
        .await;
    a.send(r#"[null,"9","room:other","ping",{"x":2}]"#).await;
    a.expect(r#"[null,"9","room:other","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#)
        .await;
    // A leave of a topic never joined is answered ok anyway.
    a.send(r#"["7","10","room:other","phx_leave",{}]"#).await;
    a.expect(r#"["7","10","room:other","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
}

#[tokio::test]
async fn a_denied_join_is_unauthorized_and_registers_nothing() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    a.send(r#"["10","10","room:denied","phx_join",{"deny":true}]"#)
        .await;
    a.expect(r#"["10","10","room:denied","phx_reply",{"response":{"reason":"unauthorized"},"status":"error"}]"#)
        .await;
    a.send(r#"["10","11","room:denied","ping",{}]"#).await;
    a.expect(r#"[null,"11","room:denied","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#)
        .await;
    // A meta that is not an object joins with the default meta (the real Phoenix app's
    // join/3 falls back to %{}).
    a.send(r#"["12","12","room:x","phx_join",{"meta":7}]"#)
        .await;
    a.expect(
        r#"["12","12","room:x","phx_reply",{"response":{"joined_as":"alice"},"status":"ok"}]"#,
    )
    .await;
}

#[tokio::test]
async fn a_duplicate_join_closes_the_old_channel_then_joins() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    let mut b = connect(addr, BOB).await;
    b.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        b.next().await; // reply, own diff, state
    }
    a.next().await; // bob's join diff
    a.send(r#"["11","11","room:lobby","phx_join",{"meta":{"name":"Alice-again"}}]"#)
        .await;
    a.expect(
        r#"["11","11","room:lobby","phx_reply",{"response":{"joined_as":"alice"},"status":"ok"}]"#,
    )
    .await;
    a.expect(r#"["1","1","room:lobby","phx_close",{}]"#).await;
    let own = a.json().await;
    assert_eq!(own[4]["joins"]["alice"]["metas"][0]["name"], "Alice-again");
    let state = a.json().await;
    assert_eq!(state[0], "11");
    assert_eq!(state[3], "presence_state");
    assert_eq!(state[4]["alice"]["metas"].as_array().unwrap().len(), 1);
    // Bob sees the old meta leave, then the new one join: two diffs, different refs.
    let leave = b.json().await;
    let join = b.json().await;
    assert_eq!(leave[4]["leaves"]["alice"]["metas"][0]["name"], "Alice");
    assert_eq!(join[4]["joins"]["alice"]["metas"][0]["name"], "Alice-again");
    assert_ne!(diff_refs(&leave).1, diff_refs(&join).0);
    // Pushes for the old incarnation are dropped silently; the new one answers.
    a.send(r#"["1","12","room:lobby","ping",{}]"#).await;
    a.send(r#"["11","13","room:lobby","ping",{}]"#).await;
    a.expect(r#"["11","13","room:lobby","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
}

#[tokio::test]
async fn phx_leave_replies_then_closes_and_others_see_the_leave() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    let mut b = connect(addr, BOB).await;
    b.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        b.next().await;
    }
    let bob_join = a.json().await;
    // A leave with a stale join_ref is ignored.
    b.send(r#"["0","2","room:lobby","phx_leave",{}]"#).await;
    b.send(r#"["1","3","room:lobby","phx_leave",{}]"#).await;
    b.expect(r#"["1","3","room:lobby","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
    b.expect(r#"["1","1","room:lobby","phx_close",{}]"#).await;
    let left = a.json().await;
    assert_eq!(diff_refs(&left).1, diff_refs(&bob_join).0);
    b.send(r#"["1","4","room:lobby","ping",{}]"#).await;
    b.expect(r#"[null,"4","room:lobby","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#)
        .await;
}

#[tokio::test]
async fn a_channel_crash_errors_the_channel_and_keeps_the_socket() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    let mut h = connect(addr, "vsn=2.0.0&user_id=hank").await;
    h.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        h.next().await;
    }
    let hank_join = a.json().await;
    h.send(r#"["1","2","room:lobby","crash",{}]"#).await;
    h.expect(r#"["1","1","room:lobby","phx_error",{}]"#).await;
    let left = a.json().await;
    assert_eq!(diff_refs(&left).1, diff_refs(&hank_join).0);
    h.send(r#"["1","3","room:lobby","ping",{"after":"crash"}]"#)
        .await;
    h.expect(r#"[null,"3","room:lobby","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#)
        .await;
    h.send(r#"["4","4","room:lobby","phx_join",{}]"#).await;
    h.expect(
        r#"["4","4","room:lobby","phx_reply",{"response":{"joined_as":"hank"},"status":"ok"}]"#,
    )
    .await;
}

#[tokio::test]
async fn binary_push_gets_a_binary_reply_with_the_same_bytes() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    a.send(r#"["11","11","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        a.next().await;
    }
    // The recorded exchange: push 00 02 02 0a 04 "11" "12" "room:lobby" "ping" <bytes>.
    let push = hex("0002020a0431313132726f6f6d3a6c6f62627970696e6701020362696e617279");
    a.send_binary(push).await;
    assert_eq!(
        a.next().await,
        Got::Binary(hex(
            "0102020a0231313132726f6f6d3a6c6f6262796f6b01020362696e617279"
        ))
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Joins `user` to room:lobby and returns the phx_ref of its join as `watcher` sees it.
async fn joined_ref<S, T>(user: &mut Raw<S>, watcher: &mut Raw<T>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    user.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        user.next().await;
    }
    let diff = watcher.json().await;
    diff_refs(&diff).0.remove(0)
}

#[tokio::test]
async fn malformed_frames_close_the_connection_and_its_presences_leave() {
    let (server, addr) = serve(ServerConfig::default()).await;
    let mut events = server.observe();
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    for (user, bad, why) in [
        ("erin", r#"["1","9","room:lobby"]"#, "5 elements"),
        ("frank", "this is not json", "not JSON"),
        ("gus", r#"{"topic":"room:lobby"}"#, "must be a JSON array"),
        (
            "hal",
            r#"[1,"2","room:lobby","ping",{}]"#,
            "join_ref must be",
        ),
    ] {
        let mut e = connect(addr, &format!("vsn=2.0.0&user_id={user}")).await;
        let phx_ref = joined_ref(&mut e, &mut a).await;
        e.send(bad).await;
        let (code, reason) = e.closed().await;
        assert_eq!(code, close_code::MALFORMED, "{user}");
        assert!(reason.contains(why), "{user}: {reason}");
        let left = a.json().await;
        assert_eq!(
            diff_refs(&left).1,
            vec![phx_ref],
            "{user}'s presence leaves"
        );
    }
    // The cause is reported to observers too.
    let mut ends = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(WAIT, events.recv()).await {
        if let ServerEvent::Ended { end, .. } = ev {
            ends.push(end);
            if ends.len() == 4 {
                break;
            }
        }
    }
    assert!(
        matches!(&ends[1], ConnectionEnd::ServerClosed { code, reason }
        if *code == close_code::MALFORMED && reason.contains("not JSON"))
    );
}

#[tokio::test]
async fn a_binary_frame_on_v1_closes_the_connection() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, "vsn=1.0.0&user_id=a").await;
    a.send_binary(vec![0, 0, 0, 0, 0]).await;
    let (code, reason) = a.closed().await;
    assert_eq!(code, close_code::MALFORMED);
    assert!(reason.contains("V2"), "{reason}");
}

#[tokio::test]
async fn a_dropped_tcp_connection_makes_its_presences_leave() {
    let (server, addr) = serve(ServerConfig::default()).await;
    let mut events = server.observe();
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    let mut b = connect(addr, BOB).await;
    let phx_ref = joined_ref(&mut b, &mut a).await;
    // Drop the TCP stream under the WebSocket: no close frame.
    drop(b);
    let left = a.json().await;
    assert_eq!(diff_refs(&left).1, vec![phx_ref]);
    // The client went away; the server closed nothing (tungstenite calls this a protocol
    // error, and it was once logged as a 1007 close).
    let end = loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(ServerEvent::Ended { end, .. })) => break end,
            Ok(Some(_)) => {}
            other => panic!("no end reported: {other:?}"),
        }
    };
    assert!(matches!(end, ConnectionEnd::Dropped(_)), "{end:?}");
}

#[tokio::test]
async fn a_client_close_frame_makes_its_presences_leave() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    let mut b = connect(addr, BOB).await;
    let phx_ref = joined_ref(&mut b, &mut a).await;
    b.ws.close(None).await.unwrap();
    // The server's answer completes the close handshake (tungstenite then ends the stream).
    assert!(matches!(b.next().await, Got::Close(None)));
    let left = a.json().await;
    assert_eq!(diff_refs(&left).1, vec![phx_ref]);
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let cfg = ServerConfig {
        max_frame_len: 1024,
        ..ServerConfig::default()
    };
    let (_server, addr) = serve(cfg).await;
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    let mut b = connect(addr, BOB).await;
    let phx_ref = joined_ref(&mut b, &mut a).await;
    let big = format!(
        r#"["1","2","room:lobby","ping",{{"x":"{}"}}]"#,
        "y".repeat(2000)
    );
    b.send(&big).await;
    let (code, reason) = b.closed().await;
    assert_eq!(code, close_code::TOO_BIG);
    assert!(reason.contains("1024"), "{reason}");
    let left = a.json().await;
    assert_eq!(diff_refs(&left).1, vec![phx_ref]);
    // Just under the limit is fine.
    let ok = format!(
        r#"["1","3","room:lobby","ping",{{"x":"{}"}}]"#,
        "y".repeat(900)
    );
    a.send(&ok).await;
    assert!(matches!(a.next().await, Got::Text(t) if t.contains("\"status\":\"ok\"")));
}

#[tokio::test]
async fn joining_more_channels_than_the_limit_is_refused() {
    let cfg = ServerConfig {
        max_channels: 2,
        ..ServerConfig::default()
    };
    let (_server, addr) = serve(cfg).await;
    let mut a = connect(addr, ALICE).await;
    for (i, room) in ["room:a", "room:b"].iter().enumerate() {
        let r = i + 1;
        a.send(&format!(r#"["{r}","{r}","{room}","phx_join",{{}}]"#))
            .await;
        for _ in 0..3 {
            a.next().await;
        }
    }
    a.send(r#"["3","3","room:c","phx_join",{}]"#).await;
    a.expect(r#"["3","3","room:c","phx_reply",{"response":{"reason":"too many channels joined"},"status":"error"}]"#)
        .await;
    // A duplicate join of a joined topic is not one more channel.
    a.send(r#"["4","4","room:b","phx_join",{}]"#).await;
    a.expect(r#"["4","4","room:b","phx_reply",{"response":{"joined_as":"alice"},"status":"ok"}]"#)
        .await;
    a.expect(r#"["2","2","room:b","phx_close",{}]"#).await;
    for _ in 0..2 {
        a.next().await; // diff, state
    }
    // Leaving one makes room.
    a.send(r#"["1","5","room:a","phx_leave",{}]"#).await;
    a.expect(r#"["1","5","room:a","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
}

#[tokio::test]
async fn v1_frames_carry_no_join_ref_and_close_with_a_null_ref() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, "vsn=1.0.0&user_id=alice").await;
    a.send(r#"{"topic":"room:lobby","event":"phx_join","payload":{"meta":{"name":"Alice"}},"ref":"1"}"#)
        .await;
    a.expect(r#"{"event":"phx_reply","payload":{"response":{"joined_as":"alice"},"status":"ok"},"ref":"1","topic":"room:lobby"}"#)
        .await;
    let Got::Text(diff) = a.next().await else {
        panic!()
    };
    assert_eq!(
        unref(&diff),
        r#"{"event":"presence_diff","payload":{"joins":{"alice":{"metas":[{"phx_ref":"<ref>","name":"Alice","status":"online"}]}},"leaves":{}},"ref":null,"topic":"room:lobby"}"#
    );
    let Got::Text(state) = a.next().await else {
        panic!()
    };
    assert_eq!(
        unref(&state),
        r#"{"event":"presence_state","payload":{"alice":{"metas":[{"phx_ref":"<ref>","name":"Alice","status":"online"}]}},"ref":null,"topic":"room:lobby"}"#
    );
    a.send(r#"{"topic":"room:lobby","event":"crash","payload":{},"ref":"2"}"#)
        .await;
    a.expect(r#"{"event":"phx_error","payload":{},"ref":null,"topic":"room:lobby"}"#)
        .await;
    a.send(r#"{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"3"}"#)
        .await;
    for _ in 0..3 {
        a.next().await;
    }
    a.send(r#"{"topic":"room:lobby","event":"phx_leave","payload":{},"ref":"4"}"#)
        .await;
    a.expect(r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"4","topic":"room:lobby"}"#)
        .await;
    a.expect(r#"{"event":"phx_close","payload":{},"ref":null,"topic":"room:lobby"}"#)
        .await;
    // A V1 object missing a key kills the connection.
    a.send(r#"{"topic":"room:lobby","event":"ping"}"#).await;
    assert_eq!(a.closed().await.0, close_code::MALFORMED);
}

/// A plain HTTP GET (no upgrade) with the raw bytes a browser's address bar would send.
async fn plain_get(addr: std::net::SocketAddr, query: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /socket/websocket?{query} HTTP/1.1\r\nhost: x\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(3), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn phoenix_1_7_21_rules_answer_a_plain_get_and_echo_numeric_refs() {
    use phxsim_runtime::server::PhoenixRules;
    let rules = |phoenix| ServerConfig {
        phoenix,
        ..ServerConfig::default()
    };
    let (_old, addr) = serve(rules(PhoenixRules::V1_7_21)).await;
    let resp = plain_get(addr, "vsn=2.0.0&user_id=x").await;
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(
        resp.ends_with("\r\n\r\n'connection' header must contain 'upgrade', got []"),
        "{resp}"
    );
    // A refused connect keeps its status, and real upgrades still work.
    let resp = plain_get(addr, "vsn=2.0.0").await;
    assert!(resp.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{resp}");
    let mut a = connect(addr, ALICE).await;
    a.send(r#"[1,1,"room:lobby","phx_join",{}]"#).await;
    a.expect(r#"[1,1,"room:lobby","phx_reply",{"response":{"joined_as":"alice"},"status":"ok"}]"#)
        .await;
    // 1.8 rules: no answer to a plain GET, and a numeric ref is a malformed frame.
    let (_new, addr) = serve(rules(PhoenixRules::V1_8)).await;
    assert_eq!(plain_get(addr, "vsn=2.0.0&user_id=x").await, "");
    let mut a = connect(addr, ALICE).await;
    a.send(r#"[1,1,"room:lobby","phx_join",{}]"#).await;
    match a.next().await {
        Got::Close(Some((code, _))) => assert_eq!(code, close_code::MALFORMED),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn metas_of_one_key_are_listed_in_join_order_past_nine_connections() {
    // Connections 1-8 only connect; alice's first socket is connection 9, her second 10.
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect(addr, BOB).await);
    }
    let mut a = connect(addr, ALICE).await;
    join_alice(&mut a).await;
    let mut a2 = connect(addr, ALICE).await;
    a2.send(r#"["1","1","room:lobby","phx_join",{"meta":{"name":"Second"}}]"#)
        .await;
    for _ in 0..3 {
        a2.next().await; // reply, own diff, state
    }
    a.next().await; // the second join's diff
    a.send(r#"["1","2","room:lobby","list",{}]"#).await;
    let Got::Text(list) = a.next().await else {
        panic!("a list reply");
    };
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = v[4]["response"]["alice"]["metas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Alice", "Second"], "{list}");
}
