#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#[global_allocator] static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use phxsim_tracker::{ReplicaRef, State, ValueKey};
use std::time::Instant;

fn key(i: usize) -> ValueKey {
    ValueKey::new(format!("room:{}", i % 100), format!("pid:{i}"), format!("user:{i}"))
}
fn meta(i: usize) -> serde_json::Value {
    serde_json::json!({"online_at": 1_750_000_000 + i as u64, "phx_ref": format!("{:016x}", i * 2654435761)})
}

fn main() {
    let n = 100_000;
    let what = std::env::args().nth(1).unwrap_or_default();
    let mut best = [f64::MAX; 6];
    if what == "gbt" {
        let mut a = State::new(ReplicaRef::new("a", 1));
        for i in 0..n {
            a.join(key(i), meta(i)).unwrap();
        }
        a.flush();
        let t = Instant::now();
        for c in 0..20_000 {
            std::hint::black_box(a.get_by_topic(&format!("room:{}", c % 100)));
        }
        println!("gbt {:.1}", t.elapsed().as_secs_f64() * 1e6 / 20_000.0);
        return;
    }
    for _ in 0..7 {
        let mut a = State::new(ReplicaRef::new("a", 1));
        for i in 0..n {
            a.join(key(i), meta(i)).unwrap();
        }
        a.flush();
        let mut b = State::new(ReplicaRef::new("b", 1));
        b.replica_up(a.replica()).unwrap();
        let t = Instant::now();
        let ex = a.extract(b.replica(), &b.clocks());
        best[0] = best[0].min(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let d = b.merge_extract(&ex);
        best[1] = best[1].min(t.elapsed().as_secs_f64() * 1e6);
        drop(d);
        drop(ex);
        b.flush();
        for j in 0..1000usize {
            let i = (j * 7919) % n;
            match j % 4 {
                0 | 1 => {
                    if a.get(&key(i)).is_some() {
                        a.update(&key(i), meta(i + 1)).unwrap();
                    }
                }
                2 => {
                    a.leave(&key(i));
                }
                _ => {
                    a.join(key(n + j), meta(j)).unwrap();
                }
            }
        }
        let t = Instant::now();
        let d = b.merge_delta(a.delta());
        best[2] = best[2].min(t.elapsed().as_secs_f64() * 1e6);
        drop(d);
        let t = Instant::now();
        for c in 0..100 {
            std::hint::black_box(a.get_by_topic(&format!("room:{}", c % 100)));
        }
        best[3] = best[3].min(t.elapsed().as_secs_f64() * 1e6 / 100.0);
        let t = Instant::now();
        std::hint::black_box(a.online());
        best[4] = best[4].min(t.elapsed().as_secs_f64() * 1e6);
        if what == "hb" {
            for _ in 0..20 {
                let mut c = b.clone();
                let t = Instant::now();
                std::hint::black_box(c.merge_delta(a.delta()));
                best[5] = best[5].min(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    println!("extract {:.0} merge {:.0} hb {:.0} gbt {:.1} online {:.0} hb_rep {:.0}", best[0], best[1], best[2], best[3], best[4], best[5]);
}
