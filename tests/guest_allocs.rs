//! Heap allocations per RPC on an open channel, counted in the guest process: at most two
//! (the request and the reply, filled in place), one for a raw `rpc`.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

#[path = "support/alloc.rs"]
mod alloc;

use vmw_backdoor::sim::HostConfig;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

/// Allocations `f` makes (the guest process is single-threaded, so all are its own).
fn allocations(f: impl FnOnce()) -> u64 {
    alloc::measure(f).1.count
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
