//! VMware host simulator (feature `sim`, Linux x86_64): to be written.
//!
//! `host` is the pure host model (owned by the host-model work); `runner` is the ptrace
//! trap-and-emulate runner and the test API (owned by the runner work).

pub mod host;
pub mod runner;
