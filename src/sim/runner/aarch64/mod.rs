//! The runner's aarch64 instruction set: the backdoor is an x86 I/O instruction described in
//! X7 and trapped with `mrs xzr, mdccsr_el0` ([`crate::proto::arm64`]). The guest's kernel
//! takes that trap (Linux sets `MDSCR_EL1.TDCC`) and raises SIGILL; the runner catches it,
//! checks the instruction word and X7's magic, decodes X7 ([`decode`]), lets the host model
//! answer ([`emulate`]) and steps PC past the 4-byte instruction. Any other SIGILL is
//! delivered unchanged.
//!
//! arm64 has neither CPUID nor `iopl`/`ioperm`: [`cpuid`] and [`seccomp`] are the x86
//! modules' items with nothing to do, so the tracer and `launch` read the same on both.

#![forbid(unsafe_code)]

pub(crate) mod decode;
pub(crate) mod emulate;

/// No CPUID on arm64: nothing to fault, show or re-arm.
pub(crate) mod cpuid {
    use std::ops::Range;

    use libc::pid_t;

    /// CPUID faulting does not exist here.
    pub(crate) fn supported() -> bool {
        false
    }

    /// Never called (`supported` is false); there is nothing to arm.
    pub(crate) fn arm_self() -> bool {
        false
    }

    /// Nothing to re-arm after `execve`.
    pub(crate) fn rearm(_: pid_t, _: impl FnMut(pid_t, Range<u64>) -> bool) -> Result<(), String> {
        Ok(())
    }
}

/// No `iopl`/`ioperm` system calls exist on arm64, so the guest needs no filter.
pub(crate) mod seccomp {
    /// An empty program.
    pub(crate) fn program() -> &'static [libc::sock_filter] {
        &[]
    }

    /// Nothing to install.
    pub(crate) fn install(_: &'static [libc::sock_filter]) -> Result<(), i32> {
        Ok(())
    }
}
