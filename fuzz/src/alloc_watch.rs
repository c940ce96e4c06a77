//! A global allocator that records the largest single allocation and the peak of live heap
//! bytes, so targets can assert "memory stays bounded" without a sanitizer (it works with
//! `--sanitizer none` on stable, where libFuzzer's `-malloc_limit_mb` does nothing).
//!
//! Only Rust allocations are seen (libFuzzer's own C++ heap is not), and the fuzz targets
//! are single-threaded, so relaxed atomics are enough.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Forwards to [`System`] and keeps the statistics.
#[derive(Debug)]
pub struct Watch;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn note_alloc(size: usize) {
    LARGEST.fetch_max(size, Relaxed);
    let live = LIVE.fetch_add(size, Relaxed).saturating_add(size);
    PEAK.fetch_max(live, Relaxed);
}

fn note_free(size: usize) {
    LIVE.fetch_sub(size, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the bookkeeping only touches
// atomics and never allocates.
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
    LARGEST.store(0, Relaxed);
}

/// The largest single allocation (or reallocation target) since [`reset_largest`].
pub fn largest() -> usize {
    LARGEST.load(Relaxed)
}

/// Starts a new measurement of peak live bytes, from the live bytes now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.load(Relaxed)
}

/// The most live heap bytes since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Relaxed)
}
