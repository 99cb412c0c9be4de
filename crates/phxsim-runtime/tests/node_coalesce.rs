//! A node's per-topic diff coalescing (`NodeConfig::coalesce`) on tokio's paused clock: within
//! a topic's window changes are merged into one diff, and every subscriber, whenever it
//! subscribed, ends on the node's own list; without coalescing every change is a diff.

use phxsim_runtime::{Coalesce, Node, NodeConfig, Subscription};
use phxsim_shard::{TrackerConfig, TrackerList};
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn node(coalesce: Option<Coalesce>) -> Node {
    Node::start(NodeConfig {
        tracker: TrackerConfig::with_broadcast_period(100),
        seed: Some(1),
        coalesce,
        ..NodeConfig::new("n1", 1)
    })
    .expect("valid config")
}

fn meta(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap_or_default()
}

/// key -> phx_refs, as phoenix.js `syncState`/`syncDiff` keep them.
type View = BTreeMap<String, Vec<String>>;

fn refs(metas: &[Json]) -> Vec<String> {
    metas
        .iter()
        .filter_map(|m| m.get("phx_ref").and_then(Json::as_str).map(str::to_owned))
        .collect()
}

fn view_of(state: &TrackerList) -> View {
    state.0.iter().map(|(k, m)| (k.clone(), refs(m))).collect()
}

/// Applies every diff received so far, as phoenix.js does; returns how many there were.
fn drain(sub: &mut Subscription, view: &mut View) -> usize {
    let mut n = 0;
    while let Ok(u) = sub.diffs.try_recv() {
        n += 1;
        for (k, metas) in &u.diff.joins {
            let have = view.entry(k.clone()).or_default();
            for r in refs(metas) {
                have.retain(|x| *x != r);
                have.push(r);
            }
        }
        for (k, metas) in &u.diff.leaves {
            if let Some(have) = view.get_mut(k) {
                let gone = refs(metas);
                have.retain(|x| !gone.contains(x));
                if have.is_empty() {
                    view.remove(k);
                }
            }
        }
    }
    n
}

/// Subscribers, then changes: one at once, four within the window, a subscriber joining in
/// the middle of them. Returns the diffs the first subscribers got and whether every view
/// ends on the node's list.
async fn run(coalesce: Option<Coalesce>) -> (usize, bool) {
    let node = node(coalesce);
    let mut subs = Vec::new();
    for _ in 0..10 {
        subs.push(node.subscribe("room:a").await.unwrap());
    }
    let mut views: Vec<View> = subs.iter().map(|s| view_of(&s.state)).collect();
    node.track("o1", "room:a", "alice", meta(json!({"s": 1})))
        .await
        .unwrap();
    node.track("o2", "room:a", "bob", meta(json!({})))
        .await
        .unwrap();
    let mut late = node.subscribe("room:a").await.unwrap();
    let mut late_view = view_of(&late.state);
    node.track("o3", "room:a", "carol", meta(json!({})))
        .await
        .unwrap();
    node.untrack_owner("o2").await.unwrap();
    node.update("o1", "room:a", "alice", meta(json!({"s": 2})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut first = 0;
    for (s, v) in subs.iter_mut().zip(views.iter_mut()) {
        first = drain(s, v);
    }
    drain(&mut late, &mut late_view);
    let truth = view_of(&node.list("room:a").await.unwrap());
    let all_right = views.iter().all(|v| *v == truth) && late_view == truth;
    (first, all_right)
}

#[tokio::test(start_paused = true)]
async fn changes_within_a_window_go_out_as_one_diff_and_every_view_ends_right() {
    let coalesce = Coalesce {
        per_subscriber: Duration::from_millis(1),
        max_window: Duration::from_millis(50),
    };
    let (diffs, right) = run(Some(coalesce)).await;
    assert!(right, "a subscriber's view differs from the node's list");
    // alice at once (the topic was quiet), then bob, carol, bob's leave and alice's update
    // merged after the window
    assert_eq!(diffs, 2);
}

#[tokio::test(start_paused = true)]
async fn without_coalescing_every_change_is_a_diff() {
    let (diffs, right) = run(None).await;
    assert!(right);
    assert_eq!(diffs, 5);
}
