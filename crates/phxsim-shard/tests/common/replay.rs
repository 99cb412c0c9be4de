//! The reference cluster run (`tests/data/tracker-cluster-run2`, copied from the recorded run, broadcast_period 100,
//! permdown 5 000) as a script on the scripted network: same boot times, same first heartbeats,
//! every controller action at the millisecond it happened.
//!
//! The controller waited on the nodes one after the other (a, then b, then c), so a node's time
//! is measured from the phase start to when its condition held *and* the previous wait had
//! returned, as in the reference.
//!
//! Two facts of the BEAM are modelled: ticks are handled 1 ms after they are due (the reference's
//! idle heartbeats come every 1 111 ms = 11 × 101), and links deliver within the millisecond.
//! The first ticks are placed where the reference's first observed heartbeats put them (a at
//! 66 ms, b at 98, c at 112; boot at 47, 77, 109).

use super::*;
use phxsim_shard::{Profile, SimNet, TrackerConfig};
use serde_json::json;

/// Phase start times of the reference run (ms after its start).
pub const P7_PARTITION_A_C: u64 = 27_971;
pub const P7_HEAL: u64 = 30_108;

pub struct Replay {
    pub net: SimNet,
    pub rows: Vec<(String, String, u64, u64)>,
}

impl Replay {
    fn at(&mut self, t: u64) {
        assert!(
            self.net.now() <= t,
            "script fell behind: {} > {t}",
            self.net.now()
        );
        self.net.run_until(t);
    }

    /// Waits on `node` like the controller, records `(row, node, got, want)`.
    fn wait(
        &mut self,
        row: &str,
        phase_start: u64,
        node: &str,
        want: u64,
        cond: impl FnMut(&SimNet) -> bool,
    ) {
        let got = self
            .net
            .run_until_cond(phase_start + 10_000, cond)
            .unwrap_or_else(|| panic!("{row}: condition on {node} never held"));
        self.rows
            .push((row.to_owned(), node.to_owned(), got - phase_start, want));
    }
}

/// Runs the whole reference script; `rows` holds `(row, node, phxsim ms, reference ms)`.
pub fn replay_run2(profile: Profile) -> Replay {
    let cfg = TrackerConfig {
        profile,
        ..reference_config()
    };
    let mut r = Replay {
        net: SimNet::new(0, 1),
        rows: Vec::new(),
    };
    r.at(47);
    r.net.add(tracker(&cfg, "a", 1, 47, 18));
    r.at(77);
    r.net.add(tracker(&cfg, "b", 1, 77, 20));
    r.at(109);
    r.net.add(tracker(&cfg, "c", 1, 109, 2));

    // P0: mesh.
    let p = 411;
    r.at(418);
    r.net.connect("a", "b");
    r.at(421);
    r.net.connect("a", "c");
    r.at(434);
    r.net.connect("b", "c");
    let row = "start: every node sees the other two up";
    r.wait(row, p, "a", 814, |n| sees_up(n, "a", &["b", "c"]));
    r.wait(row, p, "b", 815, |n| sees_up(n, "b", &["a", "c"]));
    r.wait(row, p, "c", 816, |n| sees_up(n, "c", &["a", "b"]));

    // P1: three concurrent tracks.
    let p = 2_727;
    r.at(2_732);
    r.net
        .with("a", |t| {
            t.track(
                "alice-1",
                "lobby",
                "alice",
                &meta(json!({"status": "online"})),
            )
        })
        .unwrap();
    r.at(2_747);
    r.net
        .with("b", |t| {
            t.track("bob-1", "lobby", "bob", &meta(json!({"status": "online"})))
        })
        .unwrap();
    r.at(2_763);
    r.net
        .with("c", |t| {
            t.track(
                "carol-1",
                "lobby",
                "carol",
                &meta(json!({"status": "online"})),
            )
        })
        .unwrap();
    let row = "three concurrent tracks visible everywhere";
    let all3 = ["alice", "bob", "carol"];
    r.wait(row, p, "a", 117, |n| lists_all(n, "a", "lobby", &all3));
    r.wait(row, p, "b", 118, |n| lists_all(n, "b", "lobby", &all3));
    r.wait(row, p, "c", 119, |n| lists_all(n, "c", "lobby", &all3));
    r.at(2_847);
    let dup = r.net.with("a", |t| {
        t.track("alice-1", "lobby", "alice", &meta(json!({})))
    });
    assert!(
        dup.unwrap_err().to_string().starts_with("already tracked"),
        "a duplicate track is refused as in Phoenix"
    );

    // P2: update on a.
    let p = 4_352;
    r.at(4_353);
    r.net
        .with("a", |t| {
            t.update(
                "alice-1",
                "lobby",
                "alice",
                &meta(json!({"status": "away"})),
            )
        })
        .unwrap();
    let row = "update on a, new meta visible";
    let away = |node: &'static str| {
        move |n: &SimNet| field(n, node, "lobby", "alice", "status") == Some(json!("away"))
    };
    r.wait(row, p, "a", 0, away("a"));
    r.wait(row, p, "b", 61, away("b"));
    r.wait(row, p, "c", 62, away("c"));

    // P3: untrack on b.
    let p = 5_916;
    r.at(5_917);
    r.net
        .with("b", |t| t.untrack("bob-1", "lobby", "bob"))
        .unwrap();
    let row = "untrack on b, gone";
    r.wait(row, p, "a", 43, |n| lists_none(n, "a", "lobby", &["bob"]));
    r.wait(row, p, "b", 44, |n| lists_none(n, "b", "lobby", &["bob"]));
    r.wait(row, p, "c", 45, |n| lists_none(n, "c", "lobby", &["bob"]));

    // P4: carol's owner dies on c; bob and carol come back.
    let p = 7_461;
    r.at(7_462);
    r.net.with("c", |t| t.untrack_owner("carol-1")).unwrap();
    let row = "owning process of a presence on c killed, gone";
    r.wait(row, p, "a", 24, |n| lists_none(n, "a", "lobby", &["carol"]));
    r.wait(row, p, "b", 25, |n| lists_none(n, "b", "lobby", &["carol"]));
    r.wait(row, p, "c", 25, |n| lists_none(n, "c", "lobby", &["carol"]));
    r.at(7_488);
    r.net
        .with("b", |t| {
            t.track("bob-2", "lobby", "bob", &meta(json!({"status": "back"})))
        })
        .unwrap();
    r.net
        .with("c", |t| {
            t.track(
                "carol-2",
                "lobby",
                "carol",
                &meta(json!({"status": "back"})),
            )
        })
        .unwrap();

    // P5: c cut off from a and b; one track on each side.
    let p = 10_092;
    r.at(10_093);
    r.net.disconnect("c", "a");
    r.at(10_094);
    r.net.disconnect("c", "b");
    r.at(10_295);
    r.net
        .with("c", |t| {
            t.track("dave-1", "lobby", "dave", &meta(json!({"during": "split"})))
        })
        .unwrap();
    r.at(10_296);
    r.net
        .with("a", |t| {
            t.track("erin-1", "lobby", "erin", &meta(json!({"during": "split"})))
        })
        .unwrap();
    let row = "c cut off: a, b hide c's presences; c hides theirs";
    r.wait(row, p, "a", 1_799, |n| {
        lists_none(n, "a", "lobby", &["carol"])
    });
    r.wait(row, p, "b", 1_800, |n| {
        lists_none(n, "b", "lobby", &["carol"])
    });
    r.wait(row, p, "c", 1_801, |n| {
        lists_none(n, "c", "lobby", &["alice", "bob"])
    });

    // P5 heal.
    let p = 13_593;
    r.at(13_607);
    r.net.connect("c", "a");
    r.at(13_610);
    r.net.connect("c", "b");
    let row = "heal after the short split, all presences visible";
    let all5 = ["alice", "bob", "carol", "dave", "erin"];
    r.wait(row, p, "a", 118, |n| lists_all(n, "a", "lobby", &all5));
    r.wait(row, p, "b", 148, |n| lists_all(n, "b", "lobby", &all5));
    r.wait(row, p, "c", 653, |n| lists_all(n, "c", "lobby", &all5));

    // P6: long split of c, until a and b permdown it.
    let p = 16_748;
    r.at(16_749);
    r.net.disconnect("c", "a");
    r.at(16_750);
    r.net.disconnect("c", "b");
    let row = "long split: a, b hide c's presences";
    r.wait(row, p, "a", 1_203, |n| {
        lists_none(n, "a", "lobby", &["carol", "dave"])
    });
    r.wait(row, p, "b", 1_204, |n| {
        lists_none(n, "b", "lobby", &["carol", "dave"])
    });
    let row = "long split: then permdown c";
    r.wait(row, p, "a", 4_134, |n| peer_status(n, "a", "c").is_none());
    r.wait(row, p, "b", 4_171, |n| peer_status(n, "b", "c").is_none());

    // P6 heal.
    let p = 24_249;
    r.at(24_253);
    r.net.connect("c", "a");
    r.at(24_256);
    r.net.connect("c", "b");
    let row = "heal after permdown, all visible";
    r.wait(row, p, "a", 572, |n| lists_all(n, "a", "lobby", &all5));
    r.wait(row, p, "b", 609, |n| lists_all(n, "b", "lobby", &all5));
    r.wait(row, p, "c", 1_220, |n| lists_all(n, "c", "lobby", &all5));

    // P7: only a–c cut; b sees both.
    let p = 27_971;
    r.at(27_972);
    r.net.disconnect("a", "c");
    let row = "only a-c cut: a hides c's presences";
    r.wait(row, p, "a", 1_094, |n| {
        lists_none(n, "a", "lobby", &["carol", "dave"])
    });
    r.at(29_105);
    r.net
        .with("c", |t| {
            t.update("dave-1", "lobby", "dave", &meta(json!({"during": "asym"})))
        })
        .unwrap();

    // P7 heal.
    let p = 30_108;
    r.at(30_111);
    r.net.connect("a", "c");
    let row = "heal the asymmetric split, all visible";
    let asym = |node: &'static str| {
        move |n: &SimNet| {
            lists_all(n, node, "lobby", &all5)
                && field(n, node, "lobby", "dave", "during") == Some(json!("asym"))
        }
    };
    r.wait(row, p, "a", 370, asym("a"));
    r.wait(row, p, "b", 371, asym("b"));
    r.wait(row, p, "c", 372, asym("c"));

    // P8: graceful permdown of b.
    let p = 32_981;
    r.at(32_982);
    r.net.with("b", |t| t.graceful_permdown());
    let row = "graceful_permdown of b: b's presences gone";
    r.wait(row, p, "a", 4, |n| lists_none(n, "a", "lobby", &["bob"]));
    r.wait(row, p, "c", 5, |n| lists_none(n, "c", "lobby", &["bob"]));

    // P9: node c halted.
    let p = 34_488;
    r.at(34_489);
    r.net.crash("c");
    let row = "node c halted: a hides c's presences";
    r.wait(row, p, "a", 1_240, |n| {
        lists_none(n, "a", "lobby", &["carol", "dave"])
    });
    let row = "node c halted: permdown";
    r.wait(row, p, "a", 4_168, |n| peer_status(n, "a", "c").is_none());

    r
}
