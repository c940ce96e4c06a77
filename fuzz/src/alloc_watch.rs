//! A global allocator that records the largest single allocation and the peak of live heap
//! bytes, so targets can assert "memory stays bounded" without a sanitizer (it works with
//! `--sanitizer none` on stable, where libFuzzer's `-malloc_limit_mb` does nothing).
//!
//! Only Rust allocations are seen (libFuzzer's own C++ heap is not). The statistics are per
//! thread, so `cargo test` can replay inputs on parallel test threads without one test
//! seeing another's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to [`System`] and keeps the statistics.
#[derive(Debug)]
pub struct Watch;

thread_local! {
    // `const` initialisers without destructors: reading them never allocates, so the
    // allocator may use them.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
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
unsafe impl GlobalAlloc for Watch {
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

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        // SAFETY: `ptr`/`layout` come from this allocator (so from `System`) and the caller
        // upholds `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
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
    PEAK.with(|p| p.set(LIVE.with(Cell::get)));
}

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.with(Cell::get)
}

/// The most live heap bytes since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.with(Cell::get)
}
