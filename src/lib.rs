//! Talk to the VMware hypervisor from inside a guest: detect VMware, read and write
//! guestinfo, log to the VM's log, send any RPCI command.
//!
//! Boot agents read their configuration from guestinfo this way (afterburn-, Bottlerocket-
//! and Ignition-style tools); guest agents log and report themselves this way; and anything
//! that shells out to `vmware-rpctool` can call [`EnhancedChan::rpc`] instead. No build script
//! and no C: the few instructions involved are inline assembly.
//!
//! # The protocol in brief
//!
//! ## The backdoor: two I/O ports
//!
//! A VMware guest reaches the hypervisor through I/O ports that no real device uses. An
//! access to them traps into the hypervisor, which reads the general-purpose registers as
//! arguments and writes its answer back into them before the guest resumes:
//!
//! - **Low bandwidth (LB)**: one 32-bit `in eax, dx` on port **0x5658**, with the magic
//!   **0x564D5868** (`"VMXh"`) in EAX and a *command* number in the low half of ECX. A handful
//!   of registers travel each way. Command 10, GETVERSION, is the detection knock: VMware
//!   answers version 6 in EAX and echoes the magic into EBX.
//! - **High bandwidth (HB)**: `rep outsb` / `rep insb` on port **0x5659** moves a whole
//!   buffer (ESI or EDI points at it, ECX counts it) in one trap. The host must be able to
//!   read the guest's memory, which rules it out in encrypted guests (AMD SEV).
//!
//! On arm64 (VMware Fusion on Apple silicon, ESXi-Arm) there are no I/O ports: the guest
//! describes the same x86 instruction in X7 (`0x86` in the upper half), puts in X0..X6 what
//! EAX..EBP would hold, and executes `mrs xzr, mdccsr_el0`, which VMware traps from user
//! space ([`proto::arm64`]). Everything above the three calls is the same.
//!
//! The numbers and the register layout are in [`proto`]; the typed LB commands (version,
//! hardware version, MHz, BIOS UUID, host time, frequencies, vCPU info) are methods of
//! [`BackdoorGuard`].
//!
//! ## Or by hypercall
//!
//! Modern hosts take the same calls by `vmcall` (Intel) or `vmmcall` (AMD) and advertise it
//! in CPUID leaf 0x40000010 (ECX bit 1, bit 0): the same registers, with flags in place of
//! the port in `lo16(EDX)` (0 for LB, 3 for HB out, 1 for HB in), no `rep`. A guard chooses
//! its [`Transport`] at its first knock in open-vm-tools' order (VMCALL, VMMCALL, else the
//! ports) unless told one ([`BackdoorGuard::set_transport`]); an AMD SEV-ES/SNP guest, which
//! the port cannot serve, uses VMMCALL without high-bandwidth transfers, and an Intel TDX
//! guest, whose user space cannot reach the backdoor at all, gets an
//! [`ErrorKind::Unsupported`] error ([`Transport`] has the table and the sources).
//!
//! ## The message channel
//!
//! Command 30 (MESSAGE) multiplexes *channels* over the LB port; its sub-command sits in the
//! high half of ECX and the channel id in the high half of EDX. A guest OPENs a channel for a
//! protocol, then for each message: SENDSIZE announces the length, the bytes follow — by one
//! HB `rep outsb` if the host set the HB bit in its SENDSIZE answer, otherwise four at a time
//! with SENDPAYLOAD — then RECVSIZE asks for the reply's length (DORECV set means there is
//! one), the reply arrives by `rep insb` or RECVPAYLOAD, and RECVSTATUS acknowledges it. Every
//! step answers a status word (SUCCESS, DORECV, CPT, HB, ...). CLOSE releases the channel; a
//! host serves 128 at a time (8 before 2022), for all processes of the VM together.
//!
//! **Cookies.** An OPEN with flag 0x80000000 gets two random 32-bit cookies back, which every
//! later call on the channel must present, so another process cannot inject into or read
//! from it ("enhanced RPC"). Hosts from before cookies refuse the flag; this crate then opens
//! without. Cookies are never printed by any `Debug` implementation here.
//!
//! **Checkpoints.** A snapshot, suspend or migration in the middle of a message cancels it:
//! the step answers CPT, and the guest must restart the send from SENDSIZE or the receive from
//! RECVSIZE. This crate does so, a bounded number of times, then reports
//! [`ErrorKind::Checkpoint`].
//!
//! ## RPCI: guest-to-host commands
//!
//! On a channel with protocol RPCI (`0x49435052`) each message is a text command and each
//! reply starts with `1 ` (success, then the payload) or `0 ` (failure, then the host's
//! reason). The commands this crate wraps:
//!
//! | command | method |
//! |---|---|
//! | `info-get guestinfo.KEY` | [`EnhancedChan::get_guestinfo`] (`0 No value found` is `Ok(None)`; `0 Permission denied` is [`ErrorKind::PermissionDenied`]) |
//! | `info-set guestinfo.KEY VALUE` | [`EnhancedChan::set_guestinfo`] |
//! | `log TEXT` | [`EnhancedChan::log`] |
//! | `tools.set.version 2147483647` | [`EnhancedChan::report_agent`] ("unmanaged tools") |
//! | anything else | [`EnhancedChan::rpc`] |
//!
//! A request may be at most 65,536 bytes (the host's limit); replies are capped at
//! [`DEFAULT_MAX_REPLY_LEN`] (4 MiB) unless you set another cap.
//!
//! ## Or over vsock
//!
//! RPCI also travels over a vsock stream connection to the hypervisor: context id **0**
//! (`VMCI_HYPERVISOR_CONTEXT_ID`), port **976** (975 is TCLO's), through the guest kernel's
//! VMware transport (`vmw_vsock_vmci_transport`). vmtoolsd tries it first and uses the
//! backdoor where it fails. A connection from a source port below 1024, which only root (or
//! a process with `CAP_NET_BIND_SERVICE`) may bind, is the *privileged* channel: a VM can
//! reserve a command for it (`guest_rpc.rpci.auth.cmd.info-get = "TRUE"` in its
//! configuration), and then the backdoor and unprivileged vsock get `0 Permission denied`
//! ([`ErrorKind::PermissionDenied`]), even for root. A guest binds the ports from 1023 down
//! (the next one when a port is in use, or when the host resets the connect, 8 times at
//! most); a bind refused with EACCES means no privilege, and any port does.
//!
//! A request is one packet and so is its reply, with no polling: a DataMap, which is a `u32`
//! big-endian body length, then entries of a `u32` type, a `u32` field id and a value (INT64
//! as its low then its high 32 bits; STRING as a `u32` length and the bytes, never empty).
//! The request is `{TYPE: 1 (data), PAYLOAD: the command}`, plus `FAST_CLOSE: 1` when the
//! host should close after replying; the reply's PAYLOAD is `1 …` or `0 …` as over the
//! backdoor. The numbers are in [`proto::vsock`].
//!
//! [`Session::connect`] takes the best [`Route`] there is; [`RpciChannel::open_vsock`] and
//! [`RpciChannel::open_privileged_vsock`] take vsock only. The socket calls are Linux's;
//! elsewhere vsock is [`ErrorKind::Unsupported`].
//!
//! ## TCLO: host-to-guest commands
//!
//! The other direction runs on a channel with protocol TCLO (`0x4F4C4354`), which the
//! guest's tools agent polls: each turn it sends the reply to the previous command (an
//! empty message when there is none: the first one after OPEN tells the host an agent
//! exists), then asks for the next; no DORECV means none. Commands are text (`reset`,
//! `ping`, `Capabilities_Register`, `Set_Option NAME VALUE`, `OS_Halt`, …) and replies
//! `OK …` or `ERROR …`; what the agent has to say meanwhile (capabilities, the state-change
//! status of a power operation, the guest's name and addresses) goes over an RPCI channel
//! of its own. A host that sees no poll for a while calls the tools not running (the
//! simulator waits 20 s; the VMX's own timeout is not published).
//! [`tools::ToolsService`] is that agent's loop, as open-vm-tools' vmtoolsd runs it, for an
//! application to embed; [`tools`] has the details.
//!
//! ## Privilege, and what happens outside VMware
//!
//! VMware lets ring-3 code use the backdoor ports although the I/O permission bitmap denies
//! them, so no privilege is needed: [`probe_backdoor`]. A VM may restrict that; then (and on
//! machines that are not VMware) the ring-3 `in` raises a general-protection fault, which
//! Linux delivers as SIGSEGV. [`probe_backdoor_privileged`] first takes I/O permission for the
//! thread — `ioperm` on ports 0x5658..=0x565B, else `iopl(3)`, both needing `CAP_SYS_RAWIO`
//! and a kernel with `CONFIG_X86_IOPL_IOPERM` and without lockdown — and gives it back when
//! the guard drops. I/O permission belongs to a thread, so guards are not `Send`.
//!
//! Either way the detection knock runs in a short-lived child process: when it faults, the
//! child's own signal handler ends the child instead of your program, and you get
//! [`ErrorKind::NotVmware`]. The child must not die *of* the signal: on Linux before 5.16 a
//! task sharing your memory that dies of a core-dumping signal takes your whole process with
//! it, and on any kernel it would write a core file of your address space.
//!
//! A hypercall needs no I/O privilege; the privileged functions still take it (the
//! transport is only chosen at the first knock), which there only adds the capability
//! requirement.
//!
//! | platform | unprivileged access | privileged access | transports | outside VMware |
//! |---|---|---|---|---|
//! | Linux x86_64, i686 | yes | `ioperm`, else `iopl(3)` | ports, `vmcall`, `vmmcall`; TDX and SEV recognised | `NotVmware` error, knock contained in a `clone` child that catches its own fault |
//! | other Unix on x86 | yes | `Unsupported` error | ports, `vmcall`, `vmmcall`; TDX recognised | `NotVmware` error, knock contained in a `fork` child |
//! | other x86 OSes | yes, if CPUID names VMware | `Unsupported` error | ports; a hypercall where CPUID advertises it | `NotVmware` error, no knock |
//! | Linux aarch64 | yes (EL0) | `Unsupported` error: no I/O privilege exists | the port calls, trapped with `mrs xzr, mdccsr_el0` | `NotVmware` error, knock contained in a `clone` child that catches its own SIGILL |
//! | anything else | `Unsupported` error | `Unsupported` error | none | `Unsupported` error |
//!
//! On arm64 the usual `probe_backdoor_privileged().or_else(|_| probe_backdoor())` therefore
//! probes once, unprivileged, and [`is_vmware_cpu`] (no CPUID there) reads the firmware's
//! SMBIOS strings in `/sys/class/dmi/id/`.
//!
//! # Usage
//!
//! A boot agent's reads are one [`Session`]: privileged vsock where the process may, else
//! vsock, else the backdoor.
//!
//! ```no_run
//! # fn main() -> Result<(), vmw_backdoor::VmwError> {
//! let mut session = vmw_backdoor::Session::connect()?;
//! let config = session.get_guestinfo(b"ignition.config.data")?;
//! println!("config by {}: {} bytes", session.route(), config.map_or(0, |c| c.len()));
//! # Ok(()) }
//! ```
//!
//! The backdoor's own commands, and RPCI over its message channel, need a guard:
//!
//! ```no_run
//! # fn main() -> Result<(), vmw_backdoor::VmwError> {
//! // Privileged access where the kernel allows it, else ring 3 (which VMware allows).
//! let mut guard = vmw_backdoor::probe_backdoor_privileged()
//!     .or_else(|_| vmw_backdoor::probe_backdoor())?;
//! println!("host: {}", guard.get_version()?.product);
//!
//! let mut chan = vmw_backdoor::EnhancedChan::open(&mut guard)?;
//! match chan.get_guestinfo(b"guestinfo.metadata")? {
//!     Some(value) => println!("{} bytes of metadata", value.len()),
//!     None => println!("no metadata"),
//! }
//! chan.set_guestinfo(b"agent.state", b"configured")?;
//! chan.log("agent: configuration applied")?;
//! # Ok(()) }
//! ```
//!
//! Errors carry a kind to branch on; outside VMware, for instance:
//!
//! ```
//! use vmw_backdoor::ErrorKind;
//!
//! match vmw_backdoor::probe_backdoor() {
//!     Ok(mut guard) => println!("VMware {:?}", guard.get_version()),
//!     Err(e) if e.kind() == ErrorKind::NotVmware => println!("not VMware: {e}"),
//!     Err(e) if e.kind() == ErrorKind::Unsupported => println!("no backdoor here: {e}"),
//!     Err(e) => println!("backdoor error: {e}"),
//! }
//! // Still running: the probe never kills its caller.
//! ```
//!
//! # Migrating from 0.2
//!
//! Every public name of 0.2.4 keeps its signature, so existing code compiles unchanged unless
//! it moves a guard or channel to another thread. What
//! changes: probing outside VMware returns an error instead of killing the process;
//! [`BackdoorGuard`] and [`EnhancedChan`] are no longer `Send`/`Sync` (they never could be used
//! safely from another thread); [`VmwError`] has a [`kind`](VmwError::kind) and keeps the
//! host's text; and the functions exist on every target, returning
//! [`ErrorKind::Unsupported`] where there is no backdoor.
//!
//! # Testing without VMware
//!
//! With the `sim` feature (Linux x86_64 and aarch64), `vmw_backdoor::sim` provides a model of the VMware
//! host and a runner that executes a guest program under `ptrace`, answering its backdoor
//! instructions from the model, so all of the above runs on any Linux machine.
//!
//! The protocol code is written once, against [`Backdoor`]: the three calls, which the real
//! [`Instructions`] (lent by a guard) and the simulator's host model both answer. So code
//! written against [`RpciChannel<A>`](RpciChannel) for any [`BackdoorAccess`] runs over the
//! real backdoor in production and over the host model in memory in unit tests (see
//! [`RpciChannel`] for an example).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
// A value that is the point of a call is marked so (`config.no_hb();` alone is a mistake).
#![warn(clippy::must_use_candidate, clippy::return_self_not_must_use)]
#![deny(missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

// `#[non_exhaustive]` policy: on what the host or the protocol can extend (ErrorKind,
// Product) and on the simulator's records and hostile answers (Counters, TrapStats, Answer);
// not on fixed register layouts (Regs, Version, HostTime, Frequencies, BiosUuid) nor on the
// simulator's knobs a test matches on (Mode, IoplPolicy, Step) or GuestExit.
mod backdoor;
mod erpc;
mod error;
pub mod proto;
#[cfg(all(
    feature = "sim",
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(
        feature = "sim",
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))
)]
pub mod sim;
pub mod tools;

pub use backdoor::{
    access_backdoor, access_backdoor_privileged, is_vmware_cpu, probe_backdoor,
    probe_backdoor_privileged, Backdoor, BackdoorAccess, BackdoorGuard, BiosUuid, Frequencies,
    HostTime, Instructions, Product, Transport, TransportKind, VcpuInfo, Version,
};
pub use erpc::{guestinfo, EnhancedChan, Route, RpciChannel, Session, DEFAULT_MAX_REPLY_LEN};
pub use error::{ErrorKind, VmwError};

// The README's examples are compiled (and the runnable ones run) as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
