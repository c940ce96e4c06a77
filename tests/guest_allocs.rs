//! Heap allocations per RPC on an open channel, counted in the guest process: at most two
//! (the request and the reply, filled in place), one for a raw `rpc`.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use vmw_backdoor::sim::HostConfig;

/// The system allocator, counting allocations and reallocations.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes (the guest process is single-threaded, so all are its own).
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn an_rpc_allocates_its_request_and_its_reply_only() {
    for config in [HostConfig::default(), HostConfig::default().no_hb()] {
        let config = config.guestinfo("k", vec![b'v'; 100_000]).machine_id("id");
        let run = config.run(|| {
            let mut g = vmw_backdoor::probe_backdoor().unwrap();
            let mut c = g.open_enhanced_chan().unwrap();
            let n =
                allocations(|| assert_eq!(c.get_guestinfo(b"k").unwrap().unwrap().len(), 100_000));
            assert!(n <= 2, "get_guestinfo: {n} allocations");
            let n = allocations(|| c.set_guestinfo(b"k", b"w").unwrap());
            assert!(n <= 2, "set_guestinfo: {n} allocations");
            let n = allocations(|| assert_eq!(c.rpc(b"machine.id.get").unwrap(), b"id"));
            assert!(n <= 1, "rpc: {n} allocations");
            let n = allocations(|| c.log("line").unwrap());
            assert!(n <= 2, "log: {n} allocations");
        });
        run.expect("start the guest").expect_success();
    }
}
