//! Shared code of the `vmw_backdoor` fuzz targets: the input format, the harnesses and an
//! allocation watch. The harnesses live here (not in `fuzz_targets/`) so that `cargo test`
//! in this crate replays the seed corpus and the saved regressions on the stable toolchain,
//! without libFuzzer.

// The counting allocator the main crate's tests and benches use too.
#[path = "../../tests/support/alloc.rs"]
pub mod alloc_watch;
pub mod bytes;
pub mod datamap_run;
pub mod guest_run;
pub mod host_run;
// The host-model tests' reference client: protocol constants and register builders.
#[path = "../../tests/support/reference.rs"]
pub mod reference;
pub mod scenario;
pub mod seeds;

use vmw_backdoor::{proto::Regs, Backdoor};

#[global_allocator]
static ALLOC: alloc_watch::CountingAlloc = alloc_watch::CountingAlloc;
