//! The counting allocator of the tests, the benches and the fuzz crate: the system
//! allocator, plus per-thread statistics of the Rust heap.
//!
//! Included with `#[path]` (a binary makes [`CountingAlloc`] its `#[global_allocator]`) by
//! `tests/guest_allocs.rs`, `tests/reliability_hostile.rs`, `benches/support/mod.rs` (so
//! also `tests/perf_counts.rs` and the benches) and `fuzz/src/lib.rs`.
//!
//! What is kept, for the calling thread: allocations made (an `alloc`, `alloc_zeroed` or
//! `realloc` each; a reallocation may move and copy the block), the largest single request (a reallocation's new size), live bytes and their peak.
//! [`measure`] gives them for one closure; `largest`/`peak` with their resets serve callers
//! that measure across more than one call: the fuzz targets assert with them that memory
//! stays bounded without a sanitizer (so with `--sanitizer none` on stable, where
//! libFuzzer's `-malloc_limit_mb` does nothing).
//!
//! Per thread, so parallel test threads do not see each other's allocations; in a
//! simulated run's guest, a single-threaded fork, the thread is the whole process.
//!
//! Only Rust allocations are seen (not those of C code such as libFuzzer's).

#![allow(dead_code)] // each binary takes what it needs

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to [`System`] and keeps the statistics.
#[derive(Debug)]
pub struct CountingAlloc;

thread_local! {
    // `const` initialisers without destructors: reading them never allocates and never
    // fails, so the allocator may use them.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get().wrapping_add(1)));
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(size);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn note_free(size: usize) {
    // Memory freed on another thread than it was allocated on can push one thread's count
    // below zero: saturate rather than wrap.
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the bookkeeping only touches
// const-initialised thread-local cells and never allocates or unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract (non-zero size), passed through as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: `ptr` was allocated by this allocator (so by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    /// Counts as an allocation of `new_size` bytes (it may move and copy the block), after
    /// freeing the old one.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        // SAFETY: `ptr`/`layout` come from this allocator (so from `System`) and the caller
        // upholds `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What one closure allocated on its thread ([`measure`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocs {
    /// Allocations and reallocations.
    pub count: u64,
    /// The largest single request (0 if none).
    pub largest: usize,
}

/// Runs `f` and returns its result with what it allocated on this thread. Needs
/// [`CountingAlloc`] as the global allocator; measurements may nest.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Allocs) {
    let count = ALLOCATIONS.with(Cell::get);
    let outer_largest = largest();
    reset_largest();
    let out = f();
    let allocs = Allocs {
        count: ALLOCATIONS.with(Cell::get).wrapping_sub(count),
        largest: largest(),
    };
    // An enclosing measurement still sees what happened in here.
    LARGEST.with(|l| l.set(l.get().max(outer_largest)));
    (out, allocs)
}

/// Starts a new measurement of the largest single allocation.
pub fn reset_largest() {
    LARGEST.with(|l| l.set(0));
}

/// The largest single allocation (or reallocation target) since [`reset_largest`].
pub fn largest() -> usize {
    LARGEST.with(Cell::get)
}

/// Starts a new measurement of peak live bytes, from the live bytes now.
pub fn reset_peak() {
    PEAK.with(|p| p.set(live()));
}

/// Live heap bytes now (allocated on this thread and not freed).
pub fn live() -> usize {
    LIVE.with(Cell::get)
}

/// The most live heap bytes since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.with(Cell::get)
}
