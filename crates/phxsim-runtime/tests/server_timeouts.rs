//! The idle timeout, and writes to a stream that stays full, on tokio's paused clock over
//! in-memory streams: a minute passes in microseconds and nothing depends on real I/O timing.

mod server_common;

use phxsim_runtime::server::{ConnectionEnd, Server, ServerConfig, close_code};
use server_common::*;
use std::time::Duration;
use tokio::time::Instant;

fn server(idle: Duration) -> Server {
    Server::new(
        node("n1", 1, 100),
        ServerConfig {
            idle_timeout: idle,
            ..ServerConfig::default()
        },
    )
}

/// A V2 socket of `user` on a duplex stream with `room` bytes of buffer, joined to
/// `room:lobby` (its reply and the first state and diff read).
async fn joined(server: &Server, user: &str, room: usize) -> Raw<tokio::io::DuplexStream> {
    let (end, server_end) = tokio::io::duplex(room);
    server.serve_connection(server_end);
    let mut socket = connect_stream(end, &format!("vsn=2.0.0&user_id={user}")).await;
    socket.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        socket.next().await;
    }
    socket
}

#[tokio::test(start_paused = true)]
async fn a_silent_socket_is_closed_after_the_idle_timeout_and_its_presence_leaves() {
    let server = server(Duration::from_secs(60));
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let conn = server.serve_connection(server_end);
    let mut a = connect_stream(client_end, "vsn=2.0.0&user_id=ivy").await;
    a.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        a.next().await;
    }
    let mut sub = server.node().subscribe("room:lobby").await.unwrap();
    assert_eq!(sub.state.keys(), vec!["ivy"]);
    let started = Instant::now();
    // A heartbeat at 50 s is traffic: the timeout restarts from there.
    tokio::time::sleep(Duration::from_secs(50)).await;
    a.send(r#"[null,"2","phoenix","heartbeat",{}]"#).await;
    a.expect(r#"[null,"2","phoenix","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
    let got = a.next_within(Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let Some(Got::Close(Some((code, reason)))) = got else {
        panic!("expected a close frame, got {got:?}");
    };
    assert_eq!(code, close_code::IDLE);
    assert!(reason.contains("idle timeout"), "{reason}");
    assert!(
        elapsed >= Duration::from_secs(110) && elapsed < Duration::from_secs(111),
        "closed after {elapsed:?}, want 50 s + 60 s"
    );
    let left = sub.diffs.recv().await.expect("the leave diff");
    assert_eq!(left.diff.leaves.keys().collect::<Vec<_>>(), vec!["ivy"]);
    let end = conn.await.unwrap();
    assert!(matches!(
        end,
        ConnectionEnd::ServerClosed {
            code: close_code::IDLE,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_is_configurable() {
    let server = server(Duration::from_millis(1500));
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    server.serve_connection(server_end);
    let mut a = connect_stream(client_end, "vsn=2.0.0&user_id=ivy").await;
    let started = Instant::now();
    let (code, _) = a.closed().await;
    assert_eq!(code, close_code::IDLE);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_millis(1600),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_upgrades_is_dropped_after_the_handshake_timeout() {
    let server = server(Duration::from_secs(60));
    let (_client_end, server_end) = tokio::io::duplex(1024);
    let started = Instant::now();
    let end = server.serve_connection(server_end).await.unwrap();
    assert!(matches!(end, ConnectionEnd::HandshakeFailed(ref why) if why.contains("timed out")));
    assert_eq!(started.elapsed(), server.config().handshake_timeout);
}

/// A socket woken by a diff every second is still closed when its client has sent nothing for
/// the idle timeout: the diffs do not restart the timer, and skipping the timer's poll on a
/// wake-up for a diff (it cannot have fired before its deadline) never loses its firing.
#[tokio::test(start_paused = true)]
async fn a_socket_woken_by_diffs_all_along_still_closes_on_its_idle_timeout() {
    let server = server(Duration::from_secs(60));
    let (ivy_end, ivy_server) = tokio::io::duplex(64 * 1024);
    server.serve_connection(ivy_server);
    let mut ivy = connect_stream(ivy_end, "vsn=2.0.0&user_id=ivy").await;
    ivy.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    let started = Instant::now();
    for _ in 0..3 {
        ivy.next().await;
    }
    let mut bob = joined(&server, "bob", 64 * 1024).await;
    // bob changes his meta every second (his pushes keep his own socket alive) for 90 s.
    let busy = tokio::spawn(async move {
        for n in 0..90 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            bob.send(&format!(
                r#"["1","u{n}","room:lobby","update_meta",{{"n":{n}}}]"#
            ))
            .await;
            // the reply and the diff, in either order
            bob.next().await;
            bob.next().await;
        }
    });
    let mut diffs = 0;
    let (code, reason) = loop {
        match ivy.next_within(Duration::from_secs(120)).await {
            Some(Got::Text(t)) if t.contains("presence_diff") => diffs += 1,
            Some(Got::Text(_)) => {}
            Some(Got::Close(Some(close))) => break close,
            other => panic!("expected diffs, then a close frame; got {other:?}"),
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(code, close_code::IDLE, "{reason}");
    assert!(
        elapsed >= Duration::from_secs(60) && elapsed < Duration::from_secs(61),
        "closed after {elapsed:?}, want 60 s after the join"
    );
    assert!(
        diffs >= 55,
        "the socket was woken by diffs all along ({diffs})"
    );
    busy.abort();
}

/// WebSocket pings from a client on a stream that takes 64 bytes at a time, while diffs keep
/// coming: tungstenite answers each ping with a pong (longer than the stream's room, so always
/// cut short), and a pong cut short by the full stream
/// is finished before any diff goes out (a socket woken for a diff skips tungstenite's flush
/// only when it has nothing of its own left to write), so every frame arrives whole.
#[tokio::test(start_paused = true)]
async fn pongs_cut_by_a_full_stream_never_interleave_with_diffs() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    let server = server(Duration::from_secs(600));
    let ivy = joined(&server, "ivy", 64).await;
    let mut bob = joined(&server, "bob", 64 * 1024).await;
    const ROUNDS: usize = 60;
    let busy = tokio::spawn(async move {
        for n in 0..ROUNDS {
            let pad = "x".repeat(40 + n % 7);
            bob.send(&format!(
                r#"["1","u{n}","room:lobby","update_meta",{{"n":{n},"pad":"{pad}"}}]"#
            ))
            .await;
            bob.next().await;
            bob.next().await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    let (mut tx, mut rx) = ivy.ws.split();
    let pinging = async move {
        for n in 0..ROUNDS {
            let payload = format!("ping {n:03} {}", "p".repeat(90 + n % 25));
            tx.send(Ws::Ping(payload.into_bytes().into()))
                .await
                .expect("ping sent");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tx
    };
    let reading = async move {
        let (mut pongs, mut diffs) = (Vec::new(), 0);
        while pongs.len() < ROUNDS || diffs < ROUNDS {
            let got = tokio::time::timeout(Duration::from_secs(10), rx.next())
                .await
                .expect("a frame in time")
                .expect("the stream goes on")
                .expect("every frame arrives whole");
            match got {
                Ws::Pong(p) => pongs.push(String::from_utf8(p.to_vec()).expect("utf-8")),
                Ws::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(&t).expect("whole JSON");
                    if v[3] == "presence_diff" {
                        diffs += 1;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
            // a slow reader: the server's writes wait for room again and again
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        pongs
    };
    let (_tx, pongs) = tokio::join!(pinging, reading);
    let want: Vec<String> = (0..ROUNDS)
        .map(|n| format!("ping {n:03} {}", "p".repeat(90 + n % 25)))
        .collect();
    assert_eq!(pongs, want, "one pong per ping, in order");
    busy.await.unwrap();
}
