//! Why a run does not depend on what the process ran before it.
//!
//! tokio keeps a runtime's tasks in four lists, picked by the task's id (`id & 3`), and task
//! ids count up process-wide. When a node crashes, turmoil drops the host's runtime, and tokio
//! drops its tasks list by list: the order in which the node's connections close (and so which
//! FIN a peer reads first) follows the ids. A crash scenario run after other runs in one
//! process (`phxsim run` over the catalogue, `phxsim explore` over many seeds) then came out
//! differently from the same seed run alone (`phxsim replay`), which breaks "one seed
//! reproduces a run". Each run therefore starts its tasks at the same place in that cycle.

/// The place in tokio's cycle of four at which every run's first task is spawned. Any fixed
/// place does: runs only have to agree with each other.
const FIRST_ID_MOD_4: u64 = 1;

/// Spawns empty tasks on a throwaway runtime until the next task id is `FIRST_ID_MOD_4`
/// modulo 4. Runs in one process must not overlap (other threads spawning meanwhile would
/// move the count); the command-line tools run one at a time.
pub(crate) fn align() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    for _ in 0..4 {
        let id = rt.spawn(async {}).id();
        // `Id` has no accessor; its `Display` is the number
        match id.to_string().parse::<u64>() {
            Ok(n) if (n + 1) % 4 == FIRST_ID_MOD_4 => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
