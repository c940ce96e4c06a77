//! The platform layer: the one place that chooses platform code.
//!
//! Every platform module (`os` below) provides the same items, and the rest of the crate
//! knows no other:
//!
//! | item | what it does |
//! |---|---|
//! | `supported()` | `Ok` where this build can reach a backdoor at all, else the `Unsupported` error |
//! | `knock(regs, kind)` | one GETVERSION call by a transport, run where a fault cannot kill the caller: [`Knock`] |
//! | `raise_io_privilege()`, `release_io_privilege(p)` | I/O privilege for the calling thread |
//! | `is_vmware_cpu()` | the CPUID hint (on arm64 the firmware's: SMBIOS) |
//! | `protection()`, `detect_transport()` | what the machine says about confidential computing (TDX, SEV), and the transport it calls for |
//! | `RawCalls`, `instructions(transport)` | the three backdoor calls as instructions of one transport, handed out only after a knock by it was answered |
//! | `lb_by(kind, regs)` | the low-bandwidth call by a transport, as the contained knock makes it |
//! | `vsock::attempt(port, timeout)`, `vsock::VsockStream` | one vsock connection to the hypervisor's RPCI port from a source port, and the stream it gives (`erpc/vsock.rs` walks the ports and runs the exchange) |
//!
//! | target | `os` | knock | I/O privilege | protection |
//! |---|---|---|---|---|
//! | Linux x86_64, i686 | `linux.rs` | `clone(CLONE_VM \| CLONE_VFORK)` child (`clone_knock.rs`, `contained.rs`) | `ioperm`, else `iopl(3)` | TDX by CPUID; SEV by sysfs |
//! | other Unix on x86 | `unix.rs` | forked child (`contained.rs`) | none: `Unsupported` | TDX by CPUID |
//! | other x86 OSes | `cpuid_only.rs` | only where CPUID names VMware (and advertises the hypercall) | none: `Unsupported` | TDX by CPUID |
//! | Linux aarch64 | `linux_aarch64.rs` | `clone(CLONE_VM \| CLONE_VFORK)` child (`clone_knock.rs`, `contained.rs`) | none: `Unsupported` | none |
//! | anything else | `unsupported.rs` | none: `Unsupported` | none: `Unsupported` | none |
//!
//! vsock does not depend on the instruction set: `vsock_linux.rs` (`AF_VSOCK`) on every
//! Linux target, `vsock_unsupported.rs` (`Unsupported`) elsewhere.
//!
//! The transports of x86 are the ports (`asm_*.rs`) and the hypercalls (`hypercall.rs`, on
//! the `vmcall`/`vmmcall` of `asm_*.rs`); `x86.rs` dispatches between them. arm64 has one
//! transport, the port instructions described in X7 and trapped with `mrs xzr, mdccsr_el0`
//! (`asm_aarch64.rs`, `arm64.rs`). Adding an instruction set or a transport is adding a file
//! here and a line below.

use crate::proto::Regs;
use crate::{ErrorKind, VmwError};

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
mod arm64;
#[cfg(target_arch = "x86_64")]
#[path = "asm_x86_64.rs"]
mod asm;
#[cfg(target_arch = "x86")]
#[path = "asm_i686.rs"]
mod asm;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
#[path = "asm_aarch64.rs"]
mod asm;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod hypercall;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86;

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")
))]
mod clone_knock;
#[cfg(any(
    all(unix, any(target_arch = "x86", target_arch = "x86_64")),
    all(target_os = "linux", target_arch = "aarch64")
))]
mod contained;
/// The knock's call, for `contained.rs`.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
use arm64::lb_by;
#[cfg(all(unix, any(target_arch = "x86", target_arch = "x86_64")))]
use x86::lb_by;

#[cfg(all(target_os = "linux", any(target_arch = "x86", target_arch = "x86_64")))]
#[path = "linux.rs"]
mod os;
#[cfg(all(
    unix,
    not(target_os = "linux"),
    any(target_arch = "x86", target_arch = "x86_64")
))]
#[path = "unix.rs"]
mod os;
#[cfg(all(not(unix), any(target_arch = "x86", target_arch = "x86_64")))]
#[path = "cpuid_only.rs"]
mod os;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
#[path = "linux_aarch64.rs"]
mod os;
#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    all(target_os = "linux", target_arch = "aarch64")
)))]
#[path = "unsupported.rs"]
mod os;

#[cfg(target_os = "linux")]
#[path = "vsock_linux.rs"]
pub(crate) mod vsock;
#[cfg(not(target_os = "linux"))]
#[path = "vsock_unsupported.rs"]
pub(crate) mod vsock;

pub(crate) use os::{
    detect_transport, instructions, is_vmware_cpu, knock, protection, raise_io_privilege,
    release_io_privilege, supported, RawCalls,
};

/// How a knock ended.
#[derive(Debug)]
#[allow(dead_code)] // each platform's knock ends in only some of these ways
pub(crate) enum Knock {
    /// The call completed; the registers are what came back (an answer, or all ones).
    Completed(Regs),
    /// The call faulted; the signal that ended the child, when known.
    Faulted(Option<i32>),
    /// Not attempted: the fault could not be contained on this OS and CPUID does not say
    /// VMware.
    Skipped,
}

/// Which I/O privilege a guard took, so that exactly that one is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // only Linux grants any
pub(crate) enum Privilege {
    /// No change: the unprivileged access.
    None,
    /// `ioperm` on the backdoor ports.
    Ioperm,
    /// `iopl(3)`: every port (the fallback when `ioperm` is refused).
    Iopl,
}

/// The error for a platform that grants no I/O privilege to user space.
#[cfg_attr(
    all(target_os = "linux", any(target_arch = "x86", target_arch = "x86_64")),
    allow(dead_code)
)]
fn no_io_privilege() -> VmwError {
    VmwError::new(
        ErrorKind::Unsupported,
        "privileged backdoor access (ioperm/iopl) exists only on Linux x86; use the \
         unprivileged access (probe_backdoor), which works on VMware",
    )
}
