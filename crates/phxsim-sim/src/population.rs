//! Populations: thousands of browsers from one `[[population]]` block instead of one
//! `[[clients]]` block each.
//!
//! ```toml
//! [[population]]
//! nodes = ["a", "b", "c"]   # clients spread round-robin over these nodes
//! count = 3000              # how many clients
//! topics = 1                # client i joins room:pop-(i mod topics)
//! join_ms = [1000, 3000]    # each client joins at a time drawn from the run's seed
//! leave_ms = [8000, 9000]   # optional: each leaves at a time drawn from the seed
//! meta = { device = "web" } # optional, as for [[clients]]
//! vsn = "2.0.0"             # optional
//! user = "guest-"           # optional user prefix: users guest-0, guest-1, ...
//! ```
//!
//! A population becomes ordinary clients named `pop<P>-<i>` (P the population's index in the
//! file) and ordinary `join`/`leave` steps when a run starts ([`expand`]), so every part of
//! the simulator treats them as named clients. The times are drawn from a stream of the run's
//! seed derived by the population's label, so one seed gives the same times in any process.
//!
//! What a run keeps per client is bounded: the checkers replay the message stream of every
//! named client but only of a seeded sample of each population ([`REPLAYED_PER_POPULATION`]);
//! every population client's end state is still compared with its node's list, one client at
//! a time.

pub use crate::scenario::population::{
    PopulationSpec, Transport, client_name, population_of, topic,
};
use crate::scenario::{Action, ClientSpec, Scenario, Step};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Clients of one population whose every presence message the diff-stream checker replays.
pub const REPLAYED_PER_POPULATION: usize = 16;

/// The seeded stream of population `p`'s times.
fn rng(seed: u64, p: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(crate::world::derive_seed(seed, &format!("population/{p}")))
}

/// `s` with every population turned into clients and steps, for the run with `seed`. The
/// population's steps come after the file's at equal times.
pub fn expand(s: &Scenario, seed: u64) -> Scenario {
    let mut out = s.clone();
    // the exact room: a run keeps these for its whole length, and growing by doubling would
    // leave up to half of each list unused (16 000 browsers: about 1 MiB)
    let browsers: usize = s.populations.iter().map(|p| p.count).sum();
    let leaves: usize = (s.populations.iter())
        .filter(|p| p.leave_ms.is_some())
        .map(|p| p.count)
        .sum();
    out.clients.reserve_exact(browsers);
    out.timeline.reserve_exact(browsers + leaves);
    for (p, pop) in s.populations.iter().enumerate() {
        let mut rng = rng(seed, p);
        // one meta for the population's clients
        let meta = Arc::new(pop.meta.clone());
        for i in 0..pop.count {
            let name = client_name(p, i);
            out.clients.push(ClientSpec {
                name: name.clone(),
                node: pop.nodes[i % pop.nodes.len()].clone(),
                user: pop.user.as_ref().map(|u| format!("{u}{i}")),
                topic: topic(i, pop.topics),
                meta: Arc::clone(&meta),
                vsn: pop.vsn.clone(),
            });
            let join = rng.gen_range(pop.join_ms[0]..=pop.join_ms[1]);
            out.timeline.push(Step {
                at_ms: join,
                action: Action::Join(name.clone()),
            });
            if let Some([l0, l1]) = pop.leave_ms {
                out.timeline.push(Step {
                    at_ms: rng.gen_range(l0.max(join)..=l1.max(join)),
                    action: Action::Leave(name),
                });
            }
        }
    }
    // stable: the file's steps first at equal times, then each population's in client order
    out.timeline.sort_by_key(|st| st.at_ms);
    out.populations.clear();
    out
}

/// The clients whose message streams are replayed in full: every named client and a seeded
/// sample of [`REPLAYED_PER_POPULATION`] of each population. `None`: every client (no
/// populations).
pub fn replayed(s: &Scenario, seed: u64) -> Option<BTreeSet<String>> {
    if s.populations.is_empty() {
        return None;
    }
    let mut out: BTreeSet<String> = s.clients.iter().map(|c| c.name.clone()).collect();
    for (p, pop) in s.populations.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(crate::world::derive_seed(
            seed,
            &format!("population/{p}/replayed"),
        ));
        let n = REPLAYED_PER_POPULATION.min(pop.count);
        let mut picked: Vec<usize> = sample(&mut rng, pop.count, n).into_vec();
        picked.sort_unstable();
        out.extend(picked.into_iter().map(|i| client_name(p, i)));
    }
    Some(out)
}

/// One transcript line per population: its shape and which of its clients are replayed.
pub fn summaries(s: &Scenario, replayed: Option<&BTreeSet<String>>) -> Vec<crate::event::Event> {
    s.populations
        .iter()
        .enumerate()
        .map(|(p, pop)| crate::event::Event::Population {
            population: p,
            count: pop.count,
            nodes: pop.nodes.clone(),
            topics: pop.topics,
            join_ms: pop.join_ms,
            leave_ms: pop.leave_ms,
            replayed: replayed
                .into_iter()
                .flatten()
                .filter(|n| population_of(n, &s.populations) == Some(p))
                .cloned()
                .collect(),
            transport: pop.transport,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            "title = \"p\"\nnodes = [\"a\", \"b\", \"c\"]\nduration_ms = 10000\n\
             [[population]]\nnodes = [\"a\", \"b\", \"c\"]\ncount = 3000\ntopics = 1\n\
             join_ms = [1000, 3000]\n{extra}"
        );
        Scenario::parse("p.toml", &text).unwrap()
    }

    #[test]
    fn the_issue_form_expands_round_robin_with_seeded_join_times() {
        let s = scenario("");
        let e = expand(&s, 7);
        assert_eq!(e.clients.len(), 3000);
        assert_eq!(e.clients[4].node, "b");
        assert_eq!(e.clients[4].name, "pop0-4");
        assert_eq!(e.clients[4].topic, "room:pop-0");
        assert_eq!(e.clients[4].user(), "pop0-4");
        assert_eq!(e.timeline.len(), 3000);
        assert!(e.timeline.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(
            e.timeline
                .iter()
                .all(|st| (1000..=3000).contains(&st.at_ms))
        );
        assert_eq!(expand(&s, 7), e, "one seed, one expansion");
        assert_ne!(
            expand(&s, 8).timeline,
            e.timeline,
            "another seed, other times"
        );
    }

    #[test]
    fn leaves_topics_users_and_meta() {
        let s = scenario(
            "leave_ms = [5000, 6000]\nmeta = { device = \"web\" }\nuser = \"guest-\"\nvsn = \"1.0.0\"\n",
        );
        let mut s2 = s.clone();
        s2.populations[0].topics = 7;
        let e = expand(&s2, 1);
        assert_eq!(e.clients[9].topic, "room:pop-2");
        assert_eq!(e.clients[9].user(), "guest-9");
        assert_eq!(e.clients[9].vsn, "1.0.0");
        assert_eq!(e.clients[9].meta["device"], "web");
        assert!(
            Arc::ptr_eq(&e.clients[0].meta, &e.clients[2999].meta),
            "a population's clients hold one meta"
        );
        let leaves = e
            .timeline
            .iter()
            .filter(|st| matches!(st.action, Action::Leave(_)))
            .count();
        assert_eq!(leaves, 3000);
        assert!(e.timeline.iter().all(|st| match st.action {
            Action::Leave(_) => (5000..=6000).contains(&st.at_ms),
            _ => (1000..=3000).contains(&st.at_ms),
        }));
    }

    #[test]
    fn a_sample_of_each_population_is_replayed() {
        let s = scenario("");
        let r = replayed(&s, 3).unwrap();
        assert_eq!(r.len(), REPLAYED_PER_POPULATION);
        assert!(
            r.iter()
                .all(|n| population_of(n, &s.populations) == Some(0))
        );
        assert_eq!(replayed(&s, 3), Some(r));
        assert_eq!(population_of("pop0-2999", &s.populations), Some(0));
        assert_eq!(population_of("pop0-3000", &s.populations), None);
        assert_eq!(population_of("pop00-1", &s.populations), None);
        assert_eq!(population_of("alice", &s.populations), None);
    }

    #[test]
    fn a_population_survives_the_file_writer() {
        let s = scenario("leave_ms = [5000, 6000]\nmeta = { device = \"web\" }\nuser = \"g-\"\n");
        let text = s.to_toml().unwrap();
        assert!(text.contains("[[population]]"), "{text}");
        assert_eq!(Scenario::parse("again.toml", &text).unwrap(), s);
    }

    #[test]
    fn bad_blocks_name_their_line_and_field() {
        let bad = |block: &str| {
            let text = format!(
                "title = \"p\"\nnodes = [\"a\"]\nduration_ms = 10000\n[[population]]\n{block}"
            );
            Scenario::parse("p.toml", &text).unwrap_err().to_string()
        };
        let e = bad("nodes = [\"x\"]\ncount = 3\njoin_ms = [0, 1]\n");
        assert!(
            e.starts_with("p.toml:4: population.nodes: unknown node \"x\""),
            "{e}"
        );
        let e = bad("nodes = [\"a\"]\ncount = 0\njoin_ms = [0, 1]\n");
        assert!(e.contains("population.count: between 1 and"), "{e}");
        let e = bad("nodes = [\"a\"]\ncount = 3\ntopics = 4\njoin_ms = [0, 1]\n");
        assert!(e.contains("population.topics"), "{e}");
        let e = bad("nodes = [\"a\"]\ncount = 3\njoin_ms = [5, 1]\n");
        assert!(e.contains("population.join_ms"), "{e}");
        let e = bad("nodes = [\"a\"]\ncount = 3\njoin_ms = [0, 100]\nleave_ms = [50, 200]\n");
        assert!(e.contains("population.leave_ms"), "{e}");
        let e = bad("nodes = [\"a\"]\ncount = 3\njoin_ms = [0, 1]\nvsn = \"3\"\n");
        assert!(e.contains("population.vsn"), "{e}");
        let e = bad("nodes = [\"a\"]\ncount = 3\njoin_ms = [0, 1]\nsize = 3\n");
        assert!(e.contains("unknown field `size`"), "{e}");
        // a named client may not take a population client's name
        let text = "title = \"p\"\nnodes = [\"a\"]\nduration_ms = 10000\n\
                    [[clients]]\nname = \"pop0-1\"\nnode = \"a\"\n\
                    [[population]]\nnodes = [\"a\"]\ncount = 3\njoin_ms = [0, 1]\n";
        let e = Scenario::parse("p.toml", text).unwrap_err().to_string();
        assert!(e.starts_with("p.toml:4: clients.name:"), "{e}");
    }
}
