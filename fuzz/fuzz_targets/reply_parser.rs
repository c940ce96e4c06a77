//! Hostile host replies against the guest library's channel and RPCI reply handling: `Ok` or
//! a typed error, bounded work and memory, and the exact value when no fault fired (see
//! `src/guest_run.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmw_backdoor_fuzz::guest_run::run_reply(data);
});
