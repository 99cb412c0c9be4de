//! Shared by the integration tests: an in-process phxsim server on an ephemeral loopback port,
//! and insta settings that put snapshots in the repository's top-level `snapshots/conform/`.

#![allow(dead_code)]

use phxsim_conform::RunConfig;
use phxsim_runtime::server::{PhoenixRules, Server, ServerConfig, ServerMutation};
use phxsim_runtime::{Node, NodeConfig};
use phxsim_shard::TrackerConfig;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

/// The idle timeout of test servers: short, so the idle case takes seconds, and still far
/// above how long any other case keeps a socket quiet.
pub const IDLE: Duration = Duration::from_millis(1500);

/// `snapshots/conform/<sub>` at the top of the repository, where `cargo insta review` finds
/// the files.
pub fn snapshot_dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../snapshots/conform")
        .join(sub)
}

/// insta settings for one snapshot folder: plain names, no module prefix.
pub fn insta_settings(sub: &str) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(snapshot_dir(sub));
    s.set_prepend_module_to_snapshot(false);
    s
}

/// A one-node phxsim server (the reference channel) on 127.0.0.1, returning its URL. The
/// listener task ends with the test's runtime.
pub async fn serve(mutation: Option<ServerMutation>, seed: u64) -> String {
    serve_as(PhoenixRules::V1_7_21, mutation, seed).await
}

/// [`serve`] following the given Phoenix version's rules.
pub async fn serve_as(
    phoenix: PhoenixRules,
    mutation: Option<ServerMutation>,
    seed: u64,
) -> String {
    serve_with(phoenix, mutation, seed, IDLE).await
}

/// [`serve_as`] with another idle timeout.
pub async fn serve_with(
    phoenix: PhoenixRules,
    mutation: Option<ServerMutation>,
    seed: u64,
    idle: Duration,
) -> String {
    let node = Node::start(NodeConfig {
        tracker: TrackerConfig::with_broadcast_period(100),
        seed: Some(seed),
        ..NodeConfig::new("n1", 1)
    })
    .expect("valid node config");
    let server = Server::new(
        node,
        ServerConfig {
            idle_timeout: idle,
            phoenix,
            mutation,
            ..ServerConfig::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    server.listen(listener);
    format!("ws://{addr}/socket/websocket")
}

/// Runner settings for a test server.
pub fn run_config(url: String) -> RunConfig {
    RunConfig {
        idle_timeout: IDLE,
        settle: Duration::from_millis(100),
        ..RunConfig::new(url)
    }
}
