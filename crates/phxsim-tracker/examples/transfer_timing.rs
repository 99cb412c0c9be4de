//! Times a full transfer (extract, then merge into a fresh replica), the `transfer_extract`
//! and `transfer_merge` ops of `phxsim bench-tracker`, in the same order of steps (a second
//! replica is filled and dropped before, so the allocator holds the same free memory), without
//! building the whole CLI:
//! `cargo run --release -p phxsim-tracker --example transfer_timing [n] [runs]`.
//! It runs on the system allocator, not the CLI's mimalloc, so its absolute times differ from
//! the bench's (fresh pages are faulted in at other moments): compare builds with it, and take
//! figures from `phxsim bench-tracker`.

// A timing tool measures wall-clock time on purpose.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use phxsim_tracker::{Meta, ReplicaRef, State, ValueKey};
use std::time::Instant; // allow-nondeterminism: a profiling example outside the simulator, timing wall-clock on purpose

fn fill(s: &mut State, n: usize, flush_every: usize) {
    for i in 0..n {
        let meta = format!(
            r#"{{"online_at":{},"phx_ref":"{:016x}"}}"#,
            1_750_000_000 + i,
            (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8
        );
        s.join(
            ValueKey::new(
                format!("room:{}", i % 100),
                format!("pid:{i}"),
                format!("user:{i}"),
            ),
            Meta::parse(&meta).expect("a JSON object"),
        )
        .expect("a new presence");
        if (i + 1) % flush_every == 0 {
            s.flush();
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut times = Vec::new();
    for _ in 0..=runs {
        let mut a = State::new(ReplicaRef::new("a", 1));
        fill(&mut a, n, usize::MAX);
        let mut a2 = State::new(ReplicaRef::new("a", 1));
        fill(&mut a2, n, 1_000);
        drop(a2);
        a.flush();
        // PROFILE_REPEAT=k repeats the transfer k times, for a profile that is mostly transfer.
        let repeat: usize = std::env::var("PROFILE_REPEAT")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        for _ in 0..repeat {
            let mut b = State::new(ReplicaRef::new("b", 1));
            b.replica_up(a.replica()).expect("another replica");
            let clocks = b.clocks();
            let t = Instant::now();
            let extract = a.extract(b.replica(), &clocks);
            let extract_us = t.elapsed().as_secs_f64() * 1e6;
            let t = Instant::now();
            let diff = b.merge_extract(&extract);
            let merge_us = t.elapsed().as_secs_f64() * 1e6;
            assert_eq!((diff.joins.len(), diff.leaves.len()), (n, 0));
            times.push((extract_us, merge_us));
        }
    }
    times.remove(0);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let e = median(times.iter().map(|t| t.0).collect());
    let m = median(times.iter().map(|t| t.1).collect());
    let min = |v: Vec<f64>| v.into_iter().fold(f64::INFINITY, f64::min);
    let (e_min, m_min) = (
        min(times.iter().map(|t| t.0).collect()),
        min(times.iter().map(|t| t.1).collect()),
    );
    println!(
        "n={n} median: extract {e:.0} us, merge {m:.0} us, sum {:.0} us; fastest: extract \
         {e_min:.0} us, merge {m_min:.0} us",
        e + m
    );
}
