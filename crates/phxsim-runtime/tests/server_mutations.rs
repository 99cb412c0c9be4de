//! Every planted server bug shows on the wire (or in presences) as the deviation it names, so
//! a conformance check built on these observations can be proven to catch it.

mod server_common;

use phxsim_runtime::server::{ServerConfig, ServerMutation};
use server_common::*;

fn mutated(m: ServerMutation) -> ServerConfig {
    ServerConfig {
        mutation: Some(m),
        ..ServerConfig::default()
    }
}

async fn joined(addr: std::net::SocketAddr, user: &str) -> Raw<tokio::net::TcpStream> {
    let mut c = connect(addr, &format!("vsn=2.0.0&user_id={user}")).await;
    c.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        c.next().await;
    }
    c
}

#[tokio::test]
async fn drop_phx_ref_prev_strips_it_from_update_diffs() {
    for (m, has_prev) in [(None, true), (Some(ServerMutation::DropPhxRefPrev), false)] {
        let cfg = ServerConfig {
            mutation: m,
            ..ServerConfig::default()
        };
        let (_s, addr) = serve(cfg).await;
        let mut a = joined(addr, "alice").await;
        a.send(r#"["1","2","room:lobby","update_meta",{"s":1}]"#)
            .await;
        a.next().await;
        let diff = a.json().await;
        let meta = &diff[4]["joins"]["alice"]["metas"][0];
        assert_eq!(
            meta.get("phx_ref_prev").is_some(),
            has_prev,
            "{m:?}: {diff}"
        );
    }
}

#[tokio::test]
async fn heartbeat_reply_wrong_topic() {
    let (_s, addr) = serve(mutated(ServerMutation::HeartbeatReplyWrongTopic)).await;
    let mut a = connect(addr, "vsn=2.0.0&user_id=a").await;
    a.send(r#"[null,"3","phoenix","heartbeat",{}]"#).await;
    a.expect(r#"[null,"3","heartbeat","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
}

#[tokio::test]
async fn no_presence_state_after_a_join() {
    let (_s, addr) = serve(mutated(ServerMutation::NoPresenceState)).await;
    let mut a = connect(addr, "vsn=2.0.0&user_id=a").await;
    a.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    a.next().await; // reply
    let diff = a.json().await;
    assert_eq!(diff[3], "presence_diff");
    a.silent(200).await;
}

#[tokio::test]
async fn state_with_wrong_join_ref() {
    let (_s, addr) = serve(mutated(ServerMutation::StateWithWrongJoinRef)).await;
    let mut a = connect(addr, "vsn=2.0.0&user_id=a").await;
    a.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    a.next().await;
    a.next().await;
    let state = a.json().await;
    assert_eq!(
        (state[0].as_str(), state[3].as_str()),
        (Some("stale"), Some("presence_state"))
    );
}

#[tokio::test]
async fn keep_presences_on_disconnect_leaves_ghosts() {
    let (server, addr) = serve(mutated(ServerMutation::KeepPresencesOnDisconnect)).await;
    let mut w = joined(addr, "w").await;
    let b = joined(addr, "bob").await;
    w.next().await; // bob's join
    drop(b);
    w.silent(300).await;
    assert_eq!(
        server.node().list("room:lobby").await.unwrap().keys(),
        ["bob", "w"]
    );
}

/// Bob joins, then leaves, then carol joins: `w` sees bob's join, his leave (unless the
/// planted bug hides it) and carol's join. Carol's join proves that diffs still flow, so a
/// server that sends nothing at all does not pass for one that drops leaves.
async fn diffs_seen_by_a_watcher(m: Option<ServerMutation>) -> Vec<(Vec<String>, Vec<String>)> {
    let (_s, addr) = serve(ServerConfig {
        mutation: m,
        ..ServerConfig::default()
    })
    .await;
    let mut w = joined(addr, "w").await;
    let mut b = joined(addr, "bob").await;
    let mut seen = vec![diff_refs(&w.json().await)];
    b.send(r#"["1","2","room:lobby","phx_leave",{}]"#).await;
    b.next().await; // the leave's reply
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _c = joined(addr, "carol").await;
    loop {
        let diff = w.json().await;
        assert_eq!(diff[3], "presence_diff", "{diff}");
        let refs = diff_refs(&diff);
        let joined_carol = diff[4]["joins"].get("carol").is_some();
        seen.push(refs);
        if joined_carol {
            return seen;
        }
    }
}

#[tokio::test]
async fn drop_leaves_hides_leave_diffs() {
    let clean = diffs_seen_by_a_watcher(None).await;
    assert_eq!(
        clean.len(),
        3,
        "bob joins, bob leaves, carol joins: {clean:?}"
    );
    assert_eq!(clean[1].1, clean[0].0, "bob's leave names his join's ref");
    let mutated = diffs_seen_by_a_watcher(Some(ServerMutation::DropLeaves)).await;
    assert_eq!(
        mutated.len(),
        2,
        "bob's leave is gone, carol's join comes: {mutated:?}"
    );
    assert!(mutated.iter().all(|(_, leaves)| leaves.is_empty()));
}

#[tokio::test]
async fn leave_wrong_ref_names_a_ref_never_joined() {
    let mutated = diffs_seen_by_a_watcher(Some(ServerMutation::LeaveWrongRef)).await;
    assert_eq!(mutated.len(), 3, "{mutated:?}");
    let (joins, leaves) = (&mutated[0].0, &mutated[1].1);
    assert_eq!(leaves.len(), 1, "{mutated:?}");
    assert!(!joins.contains(&leaves[0]), "{mutated:?}");
}

/// After a `phx_leave`, the frames up to a heartbeat's reply: the heartbeat proves the socket
/// still answers, so a server that sends nothing at all does not pass for one without
/// `phx_close`.
async fn frames_after_leave(m: Option<ServerMutation>) -> Vec<String> {
    let (_s, addr) = serve(ServerConfig {
        mutation: m,
        ..ServerConfig::default()
    })
    .await;
    let mut a = joined(addr, "a").await;
    a.send(r#"["1","2","room:lobby","phx_leave",{}]"#).await;
    a.expect(r#"["1","2","room:lobby","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    a.send(r#"[null,"3","phoenix","heartbeat",{}]"#).await;
    let mut frames = Vec::new();
    loop {
        let Got::Text(t) = a.next().await else {
            panic!("a text frame");
        };
        let done = t.contains("\"phoenix\",\"phx_reply\"");
        frames.push(t);
        if done {
            return frames;
        }
    }
}

#[tokio::test]
async fn no_phx_close_on_leave() {
    let clean = frames_after_leave(None).await;
    assert_eq!(
        clean,
        [
            r#"["1","1","room:lobby","phx_close",{}]"#,
            r#"[null,"3","phoenix","phx_reply",{"response":{},"status":"ok"}]"#
        ]
    );
    let mutated = frames_after_leave(Some(ServerMutation::NoPhxCloseOnLeave)).await;
    assert_eq!(
        mutated,
        [r#"[null,"3","phoenix","phx_reply",{"response":{},"status":"ok"}]"#]
    );
}
