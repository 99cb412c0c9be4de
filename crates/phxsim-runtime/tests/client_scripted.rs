//! The client against a scripted server over in-memory streams, on tokio's paused clock: exact
//! frames, timeouts of seconds passing in microseconds. Covers what a real server rarely does
//! on cue: diffs before the state, silence on heartbeats, a join that is never answered.

use futures_util::{SinkExt, StreamExt};
use phxsim_runtime::client::{
    ChannelState, Client, ClientConfig, ClientEvent, ClientMutation, ClientView, PresenceOutcome,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Ws;

type Conn = WebSocketStream<DuplexStream>;

/// A client whose every connection attempt hands the server end to the test.
fn start(cfg: ClientConfig) -> (Client, mpsc::UnboundedReceiver<Conn>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Client::start(cfg, move || {
        let tx = tx.clone();
        async move {
            let (client_end, server_end) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(server_end).await {
                    let _ = tx.send(ws);
                }
            });
            Ok(client_end)
        }
    });
    (client, rx)
}

fn cfg() -> ClientConfig {
    ClientConfig::new("ws://server/socket/websocket", "me", "room:t")
}

async fn recv(ws: &mut Conn) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(120), ws.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Conn, text: &str) {
    ws.send(Ws::text(text)).await.unwrap();
}

/// The server's `ok` reply with an empty response to the push `ref_` of join `join_ref`.
async fn reply_ok(ws: &mut Conn, join_ref: &str, ref_: &str) {
    let reply = format!(
        r#"["{join_ref}","{ref_}","room:t","phx_reply",{{"response":{{}},"status":"ok"}}]"#
    );
    send(ws, &reply).await;
}

const STATE_ME: &str = r#"[JR,null,"room:t","presence_state",{"me":{"metas":[{"phx_ref":"r1"}]}}]"#;
const DIFF_X: &str = r#"[null,null,"room:t","presence_diff",{"joins":{"x":{"metas":[{"phx_ref":"rx"}]}},"leaves":{}}]"#;

/// Reply ok to the join, then a diff (x joins), then a state that does not hold x.
async fn diff_before_state(mutation: Option<ClientMutation>) -> (ClientView, Vec<PresenceOutcome>) {
    let (client, mut conns) = start(ClientConfig { mutation, ..cfg() });
    let mut log = client.subscribe();
    let mut ws = conns.recv().await.unwrap();
    let join = recv(&mut ws).await;
    assert_eq!(join, r#"["1","1","room:t","phx_join",{}]"#);
    reply_ok(&mut ws, "1", "1").await;
    send(&mut ws, DIFF_X).await;
    send(&mut ws, &STATE_ME.replace("JR", "\"1\"")).await;
    let view = client
        .wait_for(Duration::from_secs(5), |v| v.presences.contains_key("me"))
        .await
        .expect("the state is applied");
    let mut outcomes = Vec::new();
    while let Ok(e) = log.try_recv() {
        if let ClientEvent::Presence { outcome, .. } = e.event {
            outcomes.push(outcome);
        }
    }
    (view, outcomes)
}

#[tokio::test(start_paused = true)]
async fn diffs_before_the_state_are_buffered_then_applied_on_top_of_it() {
    let (view, outcomes) = diff_before_state(None).await;
    assert_eq!(view.presences.keys().collect::<Vec<_>>(), ["me", "x"]);
    assert_eq!(
        outcomes,
        [PresenceOutcome::Buffered, PresenceOutcome::Applied]
    );
    assert_eq!(view.pending_diffs, 0);
}

#[tokio::test(start_paused = true)]
async fn forget_pending_diffs_loses_the_change_that_overtook_the_state() {
    let (view, outcomes) = diff_before_state(Some(ClientMutation::ForgetPendingDiffs)).await;
    assert_eq!(view.presences.keys().collect::<Vec<_>>(), ["me"]);
    assert_eq!(
        outcomes,
        [PresenceOutcome::Dropped, PresenceOutcome::Applied]
    );
}

#[tokio::test(start_paused = true)]
async fn messages_of_an_earlier_join_are_ignored() {
    let (client, mut conns) = start(cfg());
    let mut ws = conns.recv().await.unwrap();
    recv(&mut ws).await;
    reply_ok(&mut ws, "1", "1").await;
    // A state tagged with another join_ref is not for this channel (phoenix.js isMember).
    send(&mut ws, &STATE_ME.replace("JR", "\"0\"")).await;
    send(
        &mut ws,
        &STATE_ME
            .replace("JR", "\"1\"")
            .replace("\"me\":", "\"you\":"),
    )
    .await;
    let v = client
        .wait_for(Duration::from_secs(5), |v| !v.presences.is_empty())
        .await
        .unwrap();
    assert_eq!(v.presences.keys().collect::<Vec<_>>(), ["you"]);
    // A phx_close of an earlier join does not close the channel either.
    send(&mut ws, r#"["0","0","room:t","phx_close",{}]"#).await;
    send(
        &mut ws,
        r#"[null,"9","phoenix","phx_reply",{"response":{},"status":"ok"}]"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(client.view().joined());
}

#[tokio::test(start_paused = true)]
async fn heartbeats_every_interval_and_a_missing_reply_reconnects_and_rejoins() {
    let (client, mut conns) = start(cfg());
    let started = Instant::now();
    let mut ws = conns.recv().await.unwrap();
    recv(&mut ws).await;
    reply_ok(&mut ws, "1", "1").await;
    let hb = recv(&mut ws).await;
    assert_eq!(hb, r#"[null,"2","phoenix","heartbeat",{}]"#);
    assert_eq!(started.elapsed().as_secs(), 30);
    send(
        &mut ws,
        r#"[null,"2","phoenix","phx_reply",{"response":{},"status":"ok"}]"#,
    )
    .await;
    let hb = recv(&mut ws).await;
    assert_eq!(hb, r#"[null,"3","phoenix","heartbeat",{}]"#);
    assert_eq!(started.elapsed().as_secs(), 60);
    // No reply: at 90 s the client closes with 1000 and reconnects 10 ms later.
    match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
        Ok(Some(Ok(Ws::Close(Some(f))))) => {
            assert_eq!(u16::from(f.code), 1000);
            assert_eq!(f.reason.as_str(), "heartbeat timeout");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let mut ws2 = conns.recv().await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(90_010) && elapsed < Duration::from_millis(90_100),
        "{elapsed:?}"
    );
    // The errored channel rejoins at once on the new connection, with a new join_ref.
    assert_eq!(recv(&mut ws2).await, r#"["4","4","room:t","phx_join",{}]"#);
    reply_ok(&mut ws2, "4", "4").await;
    let v = client
        .wait_for(Duration::from_secs(1), ClientView::joined)
        .await
        .unwrap();
    assert_eq!(v.join_ref.as_deref(), Some("4"));
    assert_eq!((v.connects, v.joins), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_join_is_left_and_retried_with_backoff() {
    let (client, mut conns) = start(cfg());
    let started = Instant::now();
    let mut ws = conns.recv().await.unwrap();
    assert_eq!(recv(&mut ws).await, r#"["1","1","room:t","phx_join",{}]"#);
    // After the 10 s timeout: a leave carrying the timed-out join_ref...
    assert_eq!(recv(&mut ws).await, r#"["1","2","room:t","phx_leave",{}]"#);
    assert_eq!(started.elapsed().as_secs(), 10);
    assert_eq!(client.view().channel, ChannelState::Errored);
    // ...and a new join 1 s later (rejoinAfterMs(1)).
    assert_eq!(recv(&mut ws).await, r#"["3","3","room:t","phx_join",{}]"#);
    assert_eq!(started.elapsed().as_secs(), 11);
    // A refused join is retried after 2 s (rejoinAfterMs(2)).
    send(
        &mut ws,
        r#"["3","3","room:t","phx_reply",{"response":{"reason":"no"},"status":"error"}]"#,
    )
    .await;
    assert_eq!(recv(&mut ws).await, r#"["4","4","room:t","phx_join",{}]"#);
    assert_eq!(started.elapsed().as_secs(), 13);
}

#[tokio::test(start_paused = true)]
async fn pushes_wait_for_the_join_and_the_log_has_every_frame() {
    let (client, mut conns) = start(cfg());
    let mut log = client.subscribe();
    client.update_meta(serde_json::json!({"s": "away"}));
    let mut ws = conns.recv().await.unwrap();
    recv(&mut ws).await;
    reply_ok(&mut ws, "1", "1").await;
    assert_eq!(
        recv(&mut ws).await,
        r#"["1","2","room:t","update_meta",{"s":"away"}]"#
    );
    reply_ok(&mut ws, "1", "2").await;
    client.leave();
    assert_eq!(recv(&mut ws).await, r#"["1","3","room:t","phx_leave",{}]"#);
    reply_ok(&mut ws, "1", "3").await;
    client
        .wait_for(Duration::from_secs(1), |v| {
            v.channel == ChannelState::Closed
        })
        .await
        .unwrap();
    let mut sent = 0;
    let mut received = 0;
    let mut replies = Vec::new();
    while let Ok(e) = log.try_recv() {
        match e.event {
            ClientEvent::Sent(_) => sent += 1,
            ClientEvent::Received(_) => received += 1,
            ClientEvent::Reply { event, status, .. } => replies.push((event, status)),
            _ => {}
        }
    }
    assert_eq!((sent, received), (3, 3));
    assert_eq!(replies, [("update_meta".to_owned(), "ok".to_owned())]);
}

/// The frames of [`shared_frames_give_the_same_lists_as_decoding_each`], after the join reply:
/// a diff before the state, the state, then live diffs (an update, a leave, another topic's,
/// an earlier join's, a malformed one) and the same diff again.
const SCRIPT: [&str; 9] = [
    DIFF_X,
    r#"["1",null,"room:t","presence_state",{"me":{"metas":[{"phx_ref":"r1"}]},"y":{"metas":[{"phx_ref":"ry"}]}}]"#,
    r#"[null,null,"room:t","presence_diff",{"joins":{"y":{"metas":[{"phx_ref":"ry2","phx_ref_prev":"ry"}]}},"leaves":{"y":{"metas":[{"phx_ref":"ry"}]}}}]"#,
    r#"[null,null,"room:t","presence_diff",{"joins":{},"leaves":{"x":{"metas":[{"phx_ref":"rx"}]}}}]"#,
    r#"[null,null,"room:u","presence_diff",{"joins":{"z":{"metas":[{"phx_ref":"rz"}]}},"leaves":{}}]"#,
    r#"["0",null,"room:t","presence_diff",{"joins":{"w":{"metas":[{"phx_ref":"rw"}]}},"leaves":{}}]"#,
    r#"[null,null,"room:t","presence_diff",{"joins":[],"leaves":{}}]"#,
    r#"[null,null,"room:t","presence_diff",{"joins":{"v":{"metas":[{"phx_ref":"rv"}]}},"leaves":{}}]"#,
    r#"[null,null,"room:t","presence_diff",{"joins":{"v":{"metas":[{"phx_ref":"rv"}]}},"leaves":{}}]"#,
];

/// One client through [`SCRIPT`]; returns its view once the last diff is handled, how many
/// holders share its `me` entry (key and presence: lists, and a cache), and the client.
async fn scripted(cfg: ClientConfig, observe: bool) -> (ClientView, usize, Client) {
    let (client, mut conns) = start(cfg);
    let _log = if observe {
        client.subscribe_without_frames()
    } else {
        client.subscribe_lifecycle()
    };
    let mut ws = conns.recv().await.unwrap();
    recv(&mut ws).await;
    reply_ok(&mut ws, "1", "1").await;
    for frame in SCRIPT {
        send(&mut ws, frame).await;
    }
    // the script moves the list 7 times (the other topic's and the earlier join's are dropped)
    let view = client
        .wait_for(Duration::from_secs(5), |v| v.presences.contains_key("v"))
        .await
        .expect("the script runs to its end");
    let copies = client.with_presences(|p| p.state().entry("me").map(Arc::strong_count));
    (view, copies.unwrap_or_default(), client)
}

#[tokio::test(start_paused = true)]
async fn shared_frames_give_the_same_lists_as_decoding_each() {
    for mutation in [None, Some(ClientMutation::ForgetPendingDiffs)] {
        let cache = phxsim_runtime::client::FrameCache::new();
        let shared = || ClientConfig {
            mutation,
            frame_cache: Some(cache.clone()),
            ..cfg()
        };
        // the first fills the cache, the second reads it, the third decodes every frame
        let (first, _, first_client) = scripted(shared(), false).await;
        // the well-formed diffs of room:t that the first client accepted: x, y's update, x's
        // leave, v (twice the same frame)
        assert_eq!(cache.frames(), 4, "{mutation:?}");
        let (second, shared_copies, second_client) = scripted(shared(), false).await;
        let (own, own_copies, _own) = scripted(ClientConfig { mutation, ..cfg() }, true).await;
        // both cached clients hold one list, and it and the cache (the state entry it decoded
        // once, the last state it decoded, and the entry last decoded for the key) hold one
        // `me` entry; the other holds its own
        assert_eq!((shared_copies, own_copies), (4, 1), "{mutation:?}");
        assert!(first_client.same_presences(&second_client));
        assert_eq!(first, own, "{mutation:?}");
        assert_eq!(second, own, "{mutation:?}");
        assert_eq!(own.presences.keys().collect::<Vec<_>>(), ["me", "v", "y"]);
        assert_eq!(own.presences["y"][0]["phx_ref"], "ry2");
    }
}

#[tokio::test(start_paused = true)]
async fn commands_run_in_order_and_the_last_handle_dropped_stops_the_client() {
    let (client, mut conns) = start(cfg());
    let mut ws = conns.recv().await.unwrap();
    assert_eq!(recv(&mut ws).await, r#"["1","1","room:t","phx_join",{}]"#);
    reply_ok(&mut ws, "1", "1").await;
    client
        .wait_for(Duration::from_secs(1), |v| v.joined())
        .await
        .unwrap();
    let other = client.clone();
    client.push("a", serde_json::json!({}));
    other.push("b", serde_json::json!({}));
    client.leave();
    assert_eq!(recv(&mut ws).await, r#"["1","2","room:t","a",{}]"#);
    assert_eq!(recv(&mut ws).await, r#"["1","3","room:t","b",{}]"#);
    assert_eq!(recv(&mut ws).await, r#"["1","4","room:t","phx_leave",{}]"#);
    // a clone still holds the client: it goes on
    drop(client);
    let quiet = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
    assert!(quiet.is_err(), "{quiet:?}");
    drop(other);
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Ws::Close(Some(frame))))) => {
            assert_eq!(u16::from(frame.code), 1000);
            assert_eq!(frame.reason.as_str(), "client stopped");
        }
        other => panic!("expected a clean close, got {other:?}"),
    }
}
