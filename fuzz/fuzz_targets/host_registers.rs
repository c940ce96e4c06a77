//! Arbitrary guest register sequences against the host model: it must never panic, never
//! allocate by a guest's say-so, and keep its invariants (see `src/host_run.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmw_backdoor_fuzz::host_run::run(data);
});
