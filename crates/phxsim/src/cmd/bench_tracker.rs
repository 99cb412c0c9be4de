//! `phxsim bench-tracker`: the tracker workload of `crates/phxsim/docs/perf-workload.md`, the same
//! one the Elixir bench (`benches/elixir/tracker_bench.exs`) runs on `Phoenix.Tracker.State`,
//! so that the two can be run back to back and compared as ratios.
//!
//! Output is a contract: one `RUST <op> <n> <median> min=<min> max=<max>` line per op and n
//! (microseconds or bytes, three decimals), everything else starts with `#`.

// A benchmark measures wall-clock time on purpose; nothing here runs inside the simulator.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use super::{bad_input, outln};
use crate::alloc_counter::Counting;
use anyhow::{Context as _, bail, ensure};
use phxsim_shard::codec::{DEFAULT_MAX_FRAME_LEN, decode_frame, encode_frame};
use phxsim_shard::{Frame, NodeMessage, ShardMessage, TransferPayload};
use phxsim_tracker::{Meta, ReplicaRef, State, ValueKey};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Presence counts, comma-separated.
    #[arg(long, default_value = "1000,10000,100000")]
    pub n: String,
    /// Measured runs per n (after one warm-up run whose results are dropped).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

// ---- workload ---------------------------------------------------------------------------------

/// The ops in the order of the spec's table, and whether the figure is a time.
const OPS: &[&str] = &[
    "join_burst_per_op",
    "join_flush1000_per_op",
    "flush_after_burst",
    "transfer_extract",
    "transfer_merge",
    "transfer_frame_encode",
    "transfer_frame_decode",
    "transfer_frame_bytes",
    "k1000_local_changes",
    "hb_k1000_frame_encode",
    "hb_k1000_frame_decode",
    "hb_k1000_frame_bytes",
    "hb_k1000_merge",
    "sender_flush_after_k",
    "hb_1update_merge",
    "get_by_topic",
    "online_list",
    "mem_state_bytes",
    "mem_pending_delta_bytes",
];

const TOPICS: usize = 100;
const CHANGES: usize = 1_000;

fn replica(name: &str) -> ReplicaRef {
    ReplicaRef::new(name, 1)
}

/// The inputs of presences, generated on the fly (inside the timed loops, as the spec says).
struct Gen {
    rng: ChaCha8Rng,
}

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Gen {
    fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A 16-character url-safe base64 ref (96 random bits), like Phoenix's `phx_ref`.
    fn phx_ref(&mut self) -> String {
        let bits: u128 = self.rng.r#gen();
        (0..16)
            .map(|i| char::from(URL_SAFE[((bits >> (6 * i)) & 63) as usize]))
            .collect()
    }

    fn key(i: usize) -> ValueKey {
        ValueKey::new(
            format!("room:{}", i % TOPICS),
            format!("pid:{i}"),
            format!("user:{i}"),
        )
    }

    fn meta(&mut self, i: usize) -> Json {
        json!({"online_at": 1_750_000_000 + i as u64, "phx_ref": self.phx_ref()})
    }

    fn updated_meta(&mut self, i: usize, prev: &Meta) -> Json {
        json!({
            "online_at": 1_750_000_000 + i as u64,
            "phx_ref": self.phx_ref(),
            "phx_ref_prev": prev.get("phx_ref").unwrap_or(Json::Null),
        })
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The time of the generation loop alone for `count` presences starting at `first`: the
/// faster of two passes, so that a cold first pass does not inflate what is subtracted less
/// than it inflates the timed loop.
fn generation_time(count: usize, first: usize) -> Duration {
    let mut g = Gen::new(7);
    let mut pass = || {
        let t = Instant::now();
        for i in first..first + count {
            black_box((Gen::key(i), g.meta(i)));
        }
        t.elapsed()
    };
    pass().min(pass())
}

/// `n` joins on `s`, with a flush after every `flush_every` joins if set.
fn joins(s: &mut State, n: usize, flush_every: Option<usize>, g: &mut Gen) -> anyhow::Result<()> {
    for i in 0..n {
        s.join(Gen::key(i), g.meta(i))?;
        if flush_every.is_some_and(|k| (i + 1) % k == 0) {
            s.flush();
        }
    }
    Ok(())
}

type Figures = BTreeMap<&'static str, f64>;

/// One measured run of every timed op, in a fresh state.
fn timed_run(n: usize, seed: u64) -> anyhow::Result<Figures> {
    let mut f = Figures::new();
    let gen_n = generation_time(n, 0);
    let mut g = Gen::new(seed);

    // joins
    let mut a = State::new(replica("a"));
    let t = Instant::now();
    joins(&mut a, n, None, &mut g)?;
    let burst = t.elapsed().saturating_sub(gen_n);
    f.insert("join_burst_per_op", us(burst) / n as f64);

    let mut a2 = State::new(replica("a"));
    let t = Instant::now();
    joins(&mut a2, n, Some(1_000), &mut g)?;
    let flushed = t.elapsed().saturating_sub(gen_n);
    f.insert("join_flush1000_per_op", us(flushed) / n as f64);
    drop(a2);

    let t = Instant::now();
    let pending = a.flush();
    f.insert("flush_after_burst", us(t.elapsed()));
    drop(pending);

    // full transfer a → b
    let mut b = State::new(replica("b"));
    b.replica_up(a.replica())?;
    let b_clocks = b.clocks();
    let t = Instant::now();
    let extract = a.extract(b.replica(), &b_clocks);
    f.insert("transfer_extract", us(t.elapsed()));
    let t = Instant::now();
    let diff = b.merge_extract(&extract);
    f.insert("transfer_merge", us(t.elapsed()));
    ensure!(
        diff.joins.len() == n && diff.leaves.is_empty(),
        "transfer merge reported {} joins and {} leaves, expected {n} and 0",
        diff.joins.len(),
        diff.leaves.len()
    );
    drop(diff);

    let frame = Frame::Shard(NodeMessage {
        shard: 0,
        body: ShardMessage::TransferAck {
            id: 1,
            from: a.replica().clone(),
            payload: TransferPayload::Full(extract),
        },
    });
    let (encode, decode, bytes) = frame_round(&frame)?;
    f.insert("transfer_frame_encode", encode);
    f.insert("transfer_frame_decode", decode);
    f.insert("transfer_frame_bytes", bytes as f64 / n as f64);
    drop(frame);

    // 1 000 local changes on a, carried by one heartbeat
    b.flush();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed));
    let gen_k = generation_time(CHANGES, n);
    let mut picks = order.into_iter();
    let t = Instant::now();
    for j in 0..CHANGES {
        match j % 4 {
            0 | 1 => {
                let i = picks.next().context("too few presences to update")?;
                let key = Gen::key(i);
                let prev = a.get(&key).context("picked presence is tracked")?.meta;
                a.update(&key, g.updated_meta(i, &prev))?;
            }
            2 => {
                let i = picks.next().context("too few presences to leave")?;
                a.leave(&Gen::key(i))
                    .context("picked presence is tracked")?;
            }
            _ => {
                let i = n + j / 4;
                a.join(Gen::key(i), g.meta(i))?;
            }
        }
    }
    f.insert("k1000_local_changes", us(t.elapsed().saturating_sub(gen_k)));

    let frame = Frame::Shard(NodeMessage {
        shard: 0,
        body: ShardMessage::Heartbeat {
            from: a.replica().clone(),
            delta: Some(a.delta().clone()),
            clocks: a.clocks(),
        },
    });
    let (encode, decode, bytes) = frame_round(&frame)?;
    f.insert("hb_k1000_frame_encode", encode);
    f.insert("hb_k1000_frame_decode", decode);
    f.insert("hb_k1000_frame_bytes", bytes as f64);
    drop(frame);

    let t = Instant::now();
    let diff = b.merge_delta(a.delta());
    f.insert("hb_k1000_merge", us(t.elapsed()));
    let want = CHANGES / 4 * 3;
    ensure!(
        diff.joins.len() == want && diff.leaves.len() == want,
        "heartbeat merge reported {} joins and {} leaves, expected {want} and {want}",
        diff.joins.len(),
        diff.leaves.len()
    );
    drop(diff);

    let t = Instant::now();
    let pending = a.flush();
    f.insert("sender_flush_after_k", us(t.elapsed()));
    drop(pending);

    // one more update
    b.flush();
    let i = picks
        .next()
        .context("too few presences for the last update")?;
    let key = Gen::key(i);
    let prev = match a.get(&key) {
        Some(v) => v.meta,
        None => bail!("presence {i} was not tracked"),
    };
    a.update(&key, g.updated_meta(i, &prev))?;
    let t = Instant::now();
    let diff = b.merge_delta(a.delta());
    f.insert("hb_1update_merge", us(t.elapsed()));
    ensure!(
        diff.joins.len() == 1 && diff.leaves.len() == 1,
        "one-update merge reported {} joins and {} leaves",
        diff.joins.len(),
        diff.leaves.len()
    );
    ensure!(
        a.online() == b.online(),
        "a and b differ after the heartbeats"
    );

    // reads on a
    let calls = if n <= 1_000 {
        2_000
    } else if n <= 10_000 {
        200
    } else {
        100
    };
    let topics: Vec<String> = (0..TOPICS).map(|t| format!("room:{t}")).collect();
    let t = Instant::now();
    for c in 0..calls {
        black_box(a.get_by_topic(&topics[c % TOPICS]));
    }
    f.insert("get_by_topic", us(t.elapsed()) / calls as f64);
    let calls = if n <= 1_000 {
        200
    } else if n <= 10_000 {
        20
    } else {
        3
    };
    let t = Instant::now();
    for _ in 0..calls {
        let list = black_box(a.online());
        ensure!(list.len() == n, "online list has {} entries", list.len());
    }
    f.insert("online_list", us(t.elapsed()) / calls as f64);
    Ok(f)
}

/// Encodes and decodes `frame`; checks the round trip. Returns (encode µs, decode µs, bytes).
fn frame_round(frame: &Frame) -> anyhow::Result<(f64, f64, usize)> {
    let t = Instant::now();
    let bytes = encode_frame(frame);
    let encode = us(t.elapsed());
    let t = Instant::now();
    let decoded = decode_frame(&bytes, DEFAULT_MAX_FRAME_LEN)?;
    let decode = us(t.elapsed());
    match decoded {
        Some((back, used)) if used == bytes.len() => {
            ensure!(&back == frame, "the frame does not round-trip");
        }
        _ => bail!("the frame does not decode whole"),
    }
    Ok((encode, decode, bytes.len()))
}

/// The memory figures of one run: a fresh burst counted by the allocator (untimed, so the
/// counter costs the timed ops nothing).
fn memory_run(n: usize, seed: u64, f: &mut Figures) -> anyhow::Result<()> {
    let mut g = Gen::new(seed);
    let counting = Counting::start();
    let mut a = State::new(replica("a"));
    joins(&mut a, n, None, &mut g)?;
    let before_flush = counting.live();
    let pending = a.flush();
    let with_pending = counting.live();
    drop(pending);
    let after = counting.live();
    f.insert("mem_state_bytes", after as f64 / n as f64);
    f.insert(
        "mem_pending_delta_bytes",
        (with_pending - after) as f64 / n as f64,
    );
    black_box(before_flush);
    drop(a);
    drop(counting);
    Ok(())
}

fn parse_ns(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|p| match p.trim().parse::<usize>() {
            Ok(n) if n >= CHANGES => Ok(n),
            Ok(n) => bad_input(format!("--n: must be at least {CHANGES} (got {n})")),
            Err(_) => bad_input(format!("--n: bad value {p:?}")),
        })
        .collect()
}

fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let median = if xs.len() % 2 == 1 {
        xs[xs.len() / 2]
    } else {
        (xs[xs.len() / 2 - 1] + xs[xs.len() / 2]) / 2.0
    };
    (median, xs[0], xs[xs.len() - 1])
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ns = parse_ns(&args.n)?;
    if args.runs == 0 {
        return bad_input("--runs: must be at least 1");
    }
    outln!(
        "# phxsim bench-tracker: {} measured runs after one warm-up, times in µs, sizes in bytes",
        args.runs
    )?;
    for n in ns {
        let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for run in 0..=args.runs {
            let seed = run as u64 + 1;
            let mut f = timed_run(n, seed)?;
            memory_run(n, seed, &mut f)?;
            if run == 0 {
                continue;
            }
            for (op, x) in f {
                samples.entry(op).or_default().push(x);
            }
        }
        for op in OPS {
            if let Some(xs) = samples.remove(op) {
                let (median, min, max) = stats(xs);
                outln!("RUST {op} {n} {median:.3} min={min:.3} max={max:.3}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
