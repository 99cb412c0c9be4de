//! Delta generations (`Phoenix.Tracker.DeltaGeneration`): a few accumulated deltas of growing
//! size, so that a peer that missed some heartbeats can be caught up with a delta instead of
//! the entire state.

use crate::clock::{self, Context};
use crate::delta::Delta;
use crate::state::{Extract, State};
use crate::types::ReplicaRef;

/// Default `max_delta_sizes` of Phoenix.Tracker.
pub const DEFAULT_MAX_DELTA_SIZES: [usize; 3] = [100, 1_000, 10_000];

/// One delta per size limit, smallest first. Empty until the first push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generations {
    gens: Vec<Delta>,
}

/// What a transfer answers with: a stored generation when one fits the requester, else the
/// entire state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Catchup {
    /// The generation at this index, restricted to the requester's replicas.
    Delta(usize, Delta),
    Full(Extract),
}

impl Generations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn as_slice(&self) -> &[Delta] {
        &self.gens
    }

    pub fn from_vec(gens: Vec<Delta>) -> Self {
        Self { gens }
    }

    /// Folds `delta` (our own outgoing delta or one merged from a peer) into every generation.
    /// A generation that would exceed its limit restarts from the merge one level below (or
    /// from `delta` alone at the first level); one that is not contiguous with it is kept.
    pub fn push(&mut self, parent: &State, delta: &Delta, limits: &[usize]) {
        if self.gens.is_empty() {
            self.gens = vec![parent.delta().clone(); limits.len()];
        }
        // What the level below merged, for a level that overflows: stored at `out[i]` when it
        // fit its own limit, owned here when it did not. Copied only when a level overflows.
        enum Below {
            None,
            Stored(usize),
            Owned(Delta),
        }
        let mut below = Below::None;
        let mut out: Vec<Delta> = Vec::with_capacity(self.gens.len());
        for (gen_, &limit) in std::mem::take(&mut self.gens).into_iter().zip(limits) {
            match gen_.merge_owned(delta) {
                Ok(merged) => {
                    if merged.size() <= limit {
                        out.push(merged);
                        below = Below::Stored(out.len() - 1);
                    } else {
                        let restart = match &below {
                            Below::None => delta.clone(),
                            Below::Stored(i) => out[*i].clone(),
                            Below::Owned(d) => d.clone(),
                        };
                        out.push(restart);
                        below = Below::Owned(merged);
                    }
                }
                Err(unchanged) => {
                    out.push(unchanged);
                    below = Below::None;
                }
            }
        }
        self.gens = out;
    }

    /// The smallest generation that a remote at `remote_context` can apply without a gap and
    /// that tells it something, restricted to the replicas it knows; else the entire state.
    pub fn extract(&self, state: &State, remote: &ReplicaRef, remote_context: &Context) -> Catchup {
        for (i, g) in self.gens.iter().enumerate() {
            let start = clock::filter_replicas(&g.range.0, remote_context.keys());
            let end = clock::filter_replicas(&g.range.1, remote_context.keys());
            if !clock::dominates_or_equal(&start, &end)
                && clock::dominates_or_equal(remote_context, &start)
                && !clock::dominates(remote_context, &end)
            {
                return Catchup::Delta(i, g.extract(remote, remote_context));
            }
        }
        Catchup::Full(state.extract(remote, remote_context))
    }

    /// Prunes a permdowned replica from every generation (phoenix_pubsub #55: zombies).
    pub fn remove_replica(&mut self, replica: &ReplicaRef) {
        for g in &mut self.gens {
            g.remove_replica(replica);
        }
    }

    /// A full-state transfer makes the stored generations meaningless.
    pub fn clear(&mut self) {
        self.gens.clear();
    }
}
