//! Arbitrary keys, values, log lines and commands through the guest library: a typed error
//! before any backdoor call, or a request the host model parses back byte for byte (see
//! `src/guest_run.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmw_backdoor_fuzz::guest_run::run_request(data);
});
