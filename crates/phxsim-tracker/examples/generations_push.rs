//! What one `Generations::push` costs once the generations are near their limits (Phoenix's
//! default 100, 1 000 and 10 000), as a shard pushes every delta it sends or merges. Each push
//! is one join and, every other push, one leave.
//!
//! `cargo run --release -p phxsim-tracker --example generations_push [PUSHES]`

// A timing example outside the simulator: the wall clock is what it measures.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use phxsim_tracker::{DEFAULT_MAX_DELTA_SIZES, Generations, ReplicaRef, State, ValueKey};
use std::time::Instant; // allow-nondeterminism: a timing example outside the simulator, timing wall-clock on purpose

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pushes: u32 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 40_000,
    };
    let key = |i: u32| ValueKey::new("t", format!("p{i}"), "k");
    let mut state = State::new(ReplicaRef::new("a", 1));
    let mut gens = Generations::new();
    let started = Instant::now();
    for i in 0..pushes {
        state.join(key(i), serde_json::json!({ "i": i }))?;
        if i % 2 == 1 {
            state.leave(&key(i - 1));
        }
        let delta = state.flush().ok_or("a join leaves a delta")?;
        gens.push(&state, &delta, &DEFAULT_MAX_DELTA_SIZES);
    }
    let per_push = started.elapsed() / pushes.max(1);
    let sizes: Vec<usize> = gens.as_slice().iter().map(|d| d.size()).collect();
    println!(
        "{pushes} pushes: {per_push:?} per push (join, leave, flush, push); generation sizes {sizes:?}"
    );
    Ok(())
}
