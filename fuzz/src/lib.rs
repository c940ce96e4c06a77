//! Shared code of the `vmw_backdoor` fuzz targets: the input format, the harnesses and an
//! allocation watch. The harnesses live here (not in `fuzz_targets/`) so that `cargo test`
//! in this crate replays the seed corpus and the saved regressions on the stable toolchain,
//! without libFuzzer.

// The counting allocator the main crate's tests and benches use too.
#[path = "../../tests/support/alloc.rs"]
pub mod alloc_watch;
pub mod bytes;
pub mod guest_run;
pub mod host_run;
pub mod scenario;
pub mod seeds;

#[global_allocator]
static ALLOC: alloc_watch::CountingAlloc = alloc_watch::CountingAlloc;
