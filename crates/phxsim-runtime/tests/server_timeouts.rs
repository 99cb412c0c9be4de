//! The idle timeout on tokio's paused clock, over in-memory streams: a minute passes in
//! microseconds and nothing depends on real I/O timing.

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
