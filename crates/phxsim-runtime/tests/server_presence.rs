//! The Presence cases of phoenix's `presence_test.exs` (phoenix-protocol.md §5.9), restated for
//! this server: what `list` and `get_by_key` give, the shape and order of broadcast diffs,
//! leaves on untrack, updates, and how a client's per-key metas grow and shrink. Driven over
//! loopback WebSockets with raw frames and with the Rust client (which keeps presences as
//! phoenix.js does).

mod server_common;

use phxsim_runtime::NodeError;
use phxsim_runtime::client::{Client, ClientConfig, ClientView};
use phxsim_runtime::server::ServerConfig;
use phxsim_shard::PresenceError;
use serde_json::{Map, json};
use server_common::*;
use std::net::SocketAddr;

fn client(addr: SocketAddr, user: &str) -> Client {
    let cfg = ClientConfig::new(format!("ws://{addr}/socket/websocket"), user, "room:lobby");
    Client::start_tcp(cfg, addr)
}

#[tokio::test]
async fn list_is_empty_for_a_new_topic_then_holds_every_joined_key() {
    let (server, addr) = serve(ServerConfig::default()).await;
    assert!(server.node().list("room:lobby").await.unwrap().is_empty());
    let mut a = connect(addr, "vsn=2.0.0&user_id=alice").await;
    a.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        a.next().await;
    }
    a.send(r#"["1","2","room:lobby","list",{}]"#).await;
    let list = a.json().await;
    assert_eq!(list[4]["response"].as_object().unwrap().len(), 1);
    // A numeric-looking user id is still a string key.
    let mut one = connect(addr, "vsn=2.0.0&user_id=1").await;
    one.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    for _ in 0..3 {
        one.next().await;
    }
    a.next().await; // the diff of "1"
    a.send(r#"["1","3","room:lobby","list",{}]"#).await;
    let list = a.json().await;
    let keys: Vec<&String> = list[4]["response"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["1", "alice"]);
    assert_eq!(
        server.node().list("room:lobby").await.unwrap().keys(),
        ["1", "alice"]
    );
}

#[tokio::test]
async fn get_by_key_gives_the_metas_of_a_key_or_nothing() {
    let (server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, "vsn=2.0.0&user_id=alice").await;
    a.send(r#"["1","1","room:lobby","phx_join",{"meta":{"name":"A"}}]"#)
        .await;
    for _ in 0..3 {
        a.next().await;
    }
    let metas = server
        .node()
        .get_by_key("room:lobby", "alice")
        .await
        .unwrap();
    assert_eq!(metas.len(), 1);
    assert_eq!(metas[0]["name"], "A");
    assert!(metas[0]["phx_ref"].is_string());
    assert!(
        server
            .node()
            .get_by_key("room:lobby", "nobody")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_broadcast_diff_writes_joins_before_leaves() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut a = connect(addr, "vsn=2.0.0&user_id=alice").await;
    a.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    let _reply = a.next().await;
    let Got::Text(diff) = a.next().await else {
        panic!("expected the join diff")
    };
    let joins = diff.find("\"joins\"").unwrap();
    let leaves = diff.find("\"leaves\"").unwrap();
    assert!(joins < leaves, "{diff}");
    assert!(diff.starts_with(r#"[null,null,"room:lobby","presence_diff","#));
}

#[tokio::test]
async fn untracking_nothing_succeeds_and_updating_nothing_is_nopresence() {
    let (server, _addr) = serve(ServerConfig::default()).await;
    let node = server.node();
    node.untrack("nobody", "room:lobby", "k").await.unwrap();
    node.untrack_owner("nobody").await.unwrap();
    let err = node
        .update("nobody", "room:lobby", "k", Map::new())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        NodeError::Presence(PresenceError::NoPresence { .. })
    ));
}

#[tokio::test]
async fn an_update_is_one_diff_and_the_list_keeps_only_the_new_meta() {
    let (server, addr) = serve(ServerConfig::default()).await;
    let watcher = client(addr, "w");
    watcher.wait_for(WAIT, ClientView::joined).await.unwrap();
    let mut a = connect(addr, "vsn=2.0.0&user_id=u1").await;
    a.send(r#"["1","1","room:lobby","phx_join",{"meta":{"name":"u1"}}]"#)
        .await;
    for _ in 0..3 {
        a.next().await;
    }
    watcher
        .wait_for(WAIT, |v| v.presences.contains_key("u1"))
        .await
        .unwrap();
    a.send(r#"["1","2","room:lobby","update_meta",{"name":"updated"}]"#)
        .await;
    a.expect(r#"["1","2","room:lobby","phx_reply",{"response":{},"status":"ok"}]"#)
        .await;
    let diff = a.json().await;
    assert_eq!(diff[4]["joins"]["u1"]["metas"][0]["name"], "updated");
    assert_eq!(diff[4]["leaves"]["u1"]["metas"][0]["name"], "u1");
    let v = watcher
        .wait_for(WAIT, |v| {
            v.presences
                .get("u1")
                .is_some_and(|m| m.len() == 1 && m[0]["name"] == "updated")
        })
        .await
        .expect("the watcher holds only the new meta");
    assert!(
        v.presences["u1"][0].get("status").is_none(),
        "update replaces the meta"
    );
    let listed = server.node().list("room:lobby").await.unwrap();
    assert_eq!(listed.metas("u1").len(), 1);
}

#[tokio::test]
async fn metas_of_one_key_grow_in_join_order_and_shrink_until_the_key_and_topic_go() {
    let (server, addr) = serve(ServerConfig::default()).await;
    let watcher = client(addr, "w");
    watcher.wait_for(WAIT, ClientView::joined).await.unwrap();
    let mut tabs = Vec::new();
    for i in 1..=3 {
        let mut t = connect(addr, "vsn=2.0.0&user_id=u1").await;
        t.send(&format!(
            r#"["1","1","room:lobby","phx_join",{{"meta":{{"tab":"u1.{i}"}}}}]"#
        ))
        .await;
        for _ in 0..3 {
            t.next().await;
        }
        tabs.push(t);
    }
    let tabs_of = |v: &ClientView| -> Vec<String> {
        v.presences
            .get("u1")
            .map(|m| {
                m.iter()
                    .map(|x| x["tab"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let v = watcher
        .wait_for(WAIT, |v| tabs_of(v).len() == 3)
        .await
        .expect("three metas for u1");
    assert_eq!(tabs_of(&v), ["u1.1", "u1.2", "u1.3"]);
    // One tab leaves: its meta goes, the others remain.
    tabs[1]
        .send(r#"["1","2","room:lobby","phx_leave",{}]"#)
        .await;
    let v = watcher
        .wait_for(WAIT, |v| tabs_of(v).len() == 2)
        .await
        .expect("a meta leaves");
    assert_eq!(tabs_of(&v), ["u1.1", "u1.3"]);
    // The last metas leave: the key goes.
    drop(tabs);
    let v = watcher
        .wait_for(WAIT, |v| !v.presences.contains_key("u1"))
        .await
        .expect("the key leaves with its last meta");
    assert_eq!(v.presences.keys().collect::<Vec<_>>(), ["w"]);
    // And when the watcher leaves too, the node holds nothing for the topic.
    watcher.leave();
    let node = server.node().clone();
    let emptied = tokio::time::timeout(WAIT, async {
        loop {
            let snap = node.snapshot().await.unwrap();
            if snap.iter().all(|t| t.topic != "room:lobby") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(emptied.is_ok(), "the empty topic is gone from the node");
    assert!(node.list("room:lobby").await.unwrap().is_empty());
}

#[tokio::test]
async fn diffs_reach_every_subscriber_of_the_topic_and_no_other() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let lobby = client(addr, "l");
    let other_cfg = ClientConfig::new(format!("ws://{addr}/socket/websocket"), "o", "room:other");
    let other = Client::start_tcp(other_cfg, addr);
    lobby.wait_for(WAIT, ClientView::joined).await.unwrap();
    other.wait_for(WAIT, ClientView::joined).await.unwrap();
    let mut a = connect(addr, "vsn=2.0.0&user_id=alice").await;
    a.send(r#"["1","1","room:lobby","phx_join",{}]"#).await;
    lobby
        .wait_for(WAIT, |v| v.presences.contains_key("alice"))
        .await
        .unwrap();
    let v = other.view();
    assert_eq!(v.presences.keys().collect::<Vec<_>>(), ["o"]);
    let _ = json!(null);
}
