//! The CLI's global allocator: mimalloc with a live-bytes counter for `bench-tracker`'s memory
//! figures (perf-workload.md asks for a counting allocator, not RSS). The only unsafe code of
//! the workspace: a `GlobalAlloc` cannot be written without it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// The CLI's global allocator: mimalloc, plus a count of live requested bytes that is kept only
/// while [`Counting`] is switched on (by the memory pass of this bench). Switched off, the only
/// extra work per allocation is one relaxed load of a flag that never changes, so the other
/// subcommands pay nothing measurable.
pub struct CountingAlloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h numbers it 15 in both its v2 and v3 lines);
/// libmimalloc-sys exports the option functions but no constant for this option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep the memory it frees instead of handing it back to the kernel (purge
/// delay -1; its default purges 10 ms after a free, 100 ms for arenas). A command that builds
/// and drops large vectors again and again (a 100 000-presence transfer makes several 12.8 MB
/// ones per run) otherwise meets freshly mapped pages each time, and the kernel clearing them
/// was 14 % of a `bench-tracker` profile. Measured (BENCHMARKS.md, issue 15 x15m): the batch
/// commands get faster and their peak memory does not move (`replay pop_3000_one_topic` 1.85
/// GB max RSS either way), because what a batch command frees it allocates again. `serve` is
/// left on mimalloc's default: a server should give back what a load spike took.
/// `MIMALLOC_PURGE_DELAY` in the environment, when set, still wins.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: a plain option store, made by `main` before any other thread exists (mimalloc's
    // option setters are not thread safe); the option is a valid one for the bundled mimalloc.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Turns transparent huge pages off for this process. mimalloc asks for them on its segments,
/// and each first touch of one zeroes 2 MiB at once; on this project's 2-core VM a huge-page
/// fault also costs far more than 512 small ones, and the cost varies from hour to hour with
/// the host. Measured (`perf`: `clear_page_erms` under `do_huge_pmd_anonymous_page`):
/// - `serve` at 10 000 sockets on one topic: 6 % of its CPU, and 20 % of `bench-load`'s, as
///   mimalloc gave freed pages back and refaulted them; off, about 8 % less CPU on each side.
/// - the simulator (`replay pop_3000_one_topic`): 44 % of the run; off, 47.3 s became 23.6 s
///   with the same transcript and less memory (1.70 GB max RSS instead of 1.86 GB).
///
/// `bench-tracker` keeps them: its few large vectors are faster with them (about 5 %).
/// Best effort: a kernel without the flag just keeps its default.
pub fn no_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

fn size_of_layout(l: Layout) -> isize {
    isize::try_from(l.size()).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to mimalloc; only a counter is touched besides.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            count(size_of_layout(layout));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            count(size_of_layout(layout));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's pointer and layout, from an earlier alloc of this allocator.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        count(-size_of_layout(layout));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's pointer, layout and size, forwarded.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(isize::try_from(new_size).unwrap_or(isize::MAX) - size_of_layout(layout));
        }
        p
    }
}

/// Counts live heap bytes while it exists (one at a time; this bench is single-threaded).
pub struct Counting;

impl Counting {
    pub fn start() -> Self {
        LIVE.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        Counting
    }

    /// Bytes allocated and not freed since `start`.
    pub fn live(&self) -> isize {
        LIVE.load(Ordering::Relaxed)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        COUNTING.store(false, Ordering::Relaxed);
    }
}
