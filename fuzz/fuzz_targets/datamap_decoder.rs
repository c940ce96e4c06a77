//! Arbitrary bytes as a host's vsock reply against the DataMap decoder: refused headers
//! allocate nothing, bodies never panic nor allocate by a claimed length, and what decodes
//! encodes back byte for byte (see `src/datamap_run.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmw_backdoor_fuzz::datamap_run::run(data);
});
