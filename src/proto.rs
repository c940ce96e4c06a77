//! The protocol's numbers and register layout, shared by the guest library and the simulator.
//!
//! Everything here is a fact about the VMware backdoor, not a choice of this crate. The guest
//! side ([`BackdoorGuard`](crate::BackdoorGuard), [`RpciChannel`](crate::RpciChannel)) and
//! the host model (`crate::sim`, feature `sim`) both speak in these terms, so the two cannot
//! drift apart.
//!
//! # Register contract
//!
//! A backdoor call passes its arguments in the general-purpose registers, which [`Regs`]
//! mirrors. Only the low 32 bits of each register carry meaning, except the buffer pointers
//! and the byte count of a high-bandwidth transfer, which are full width.
//!
//! | register | low-bandwidth call (`in eax, dx` on [`LB_PORT`]) | high-bandwidth call (`rep outsb`/`rep insb` on [`HB_PORT`]) |
//! |---|---|---|
//! | EAX | in: [`MAGIC`]; out: result | in: [`MAGIC`] |
//! | EBX | argument; result | in: `status << 16` (command 0); out: `status << 16` |
//! | ECX | `lo16` command, `hi16` sub-command; result (message status in `hi16`) | byte count |
//! | EDX | `lo16` port, `hi16` channel id; result | `lo16` port, `hi16` channel id |
//! | ESI, EDI | arguments (cookie halves); results | `rep outsb`: ESI buffer, EDI cookie low; `rep insb`: ESI cookie high, EDI buffer |
//! | EBP | unused | `rep outsb`: cookie high; `rep insb`: cookie low |
//!
//! The hypercall forms (`vmcall`/`vmmcall`, [`crate::Transport`]) carry the same registers,
//! but `lo16(EDX)` holds flags (open-vm-tools' `BDOOR_FLAGS_*`: 0 for a low-bandwidth call,
//! 3 for a high-bandwidth guest-to-host transfer, 1 for host-to-guest) and, after a
//! high-bandwidth one, only EBX's status is defined. [`crate::Backdoor`] speaks the port form
//! for every transport.

/// The backdoor magic, `"VMXh"` as a little-endian u32: EAX on every call, EBX after GETVERSION.
pub const MAGIC: u32 = 0x564D_5868;
/// What EAX reads when nothing answers a low-bandwidth call: no device on the port (bare
/// metal), or a host that does not know the command (QEMU's convention, VMware's for most).
pub const NO_ANSWER: u32 = 0xFFFF_FFFF;
/// Low-bandwidth port: one 32-bit `in` (or `out`) moves a handful of registers.
pub const LB_PORT: u16 = 0x5658;
/// High-bandwidth port: `rep insb` / `rep outsb` moves a whole buffer in one call.
pub const HB_PORT: u16 = 0x5659;
/// The version GETVERSION reports on every VMware host so far.
pub const VERSION_MAGIC: u32 = 6;

/// Low-bandwidth commands (`lo16(ECX)`), as numbered in open-vm-tools' `backdoor_def.h`.
pub mod cmd {
    /// Processor speed in MHz (EAX).
    pub const GETMHZ: u16 = 1;
    /// Detection knock: EAX = version (6), EBX = magic, ECX = product type.
    pub const GETVERSION: u16 = 10;
    /// One 4-byte piece of a removable device's description: EBX = device id << 16 | byte
    /// offset; EAX = 1 and the piece in EBX, or EAX = 0 past the last device. The
    /// description is 40 bytes: a NUL-terminated name in 32, a `u32` id, a connected byte.
    pub const GETDEVICELISTELEMENT: u16 = 11;
    /// Connects (EBX bit 31 set) or disconnects removable device `lo16(EBX)`; EAX = 1 if done.
    pub const TOGGLEDEVICE: u16 = 12;
    /// Virtual hardware version (EAX); EBX = magic.
    pub const GETHWVERSION: u16 = 17;
    /// BIOS UUID as four little-endian dwords in EAX, EBX, ECX, EDX.
    pub const GETBIOSUUID: u16 = 19;
    /// Host time, 32-bit seconds (deprecated; EAX = 0xFFFFFFFF on error).
    pub const GETTIME: u16 = 23;
    /// The message channel; the sub-command is `hi16(ECX)` ([`super::msg`]).
    pub const MESSAGE: u16 = 30;
    /// TSC frequency in Hz (EBX:EAX) and APIC bus frequency in Hz (ECX).
    pub const GETHZ: u16 = 45;
    /// Host time, 64-bit seconds in ESI:EDX, microseconds in EBX, max lag in ECX.
    pub const GETTIMEFULL: u16 = 46;
    /// vCPU feature bits in EAX; bit 31 set means "not implemented".
    pub const GET_VCPU_INFO: u16 = 68;
}

/// Message-channel sub-commands (`hi16(ECX)` of [`cmd::MESSAGE`]).
pub mod msg {
    /// Open a channel: EBX = protocol | [`super::FLAG_COOKIE`].
    pub const OPEN: u16 = 0;
    /// Announce the length of a guest-to-host message (EBX).
    pub const SENDSIZE: u16 = 1;
    /// Send the next four message bytes (EBX, little-endian).
    pub const SENDPAYLOAD: u16 = 2;
    /// Ask for the length of a pending host-to-guest message.
    pub const RECVSIZE: u16 = 3;
    /// Fetch the next four message bytes (EBX, little-endian).
    pub const RECVPAYLOAD: u16 = 4;
    /// Acknowledge (EBX = 1) or reject (EBX = 0) the message just received.
    pub const RECVSTATUS: u16 = 5;
    /// Close the channel.
    pub const CLOSE: u16 = 6;
}

/// Message status bits, in `hi16(ECX)` after a low-bandwidth sub-command and in `hi16(EBX)`
/// after a high-bandwidth transfer.
pub mod status {
    /// The request succeeded.
    pub const SUCCESS: u16 = 0x0001;
    /// The host has a message for the guest (after RECVSIZE).
    pub const DORECV: u16 = 0x0002;
    /// The channel has been closed.
    pub const CLOSED: u16 = 0x0004;
    /// The host dropped the message before it was fetched.
    pub const UNSENT: u16 = 0x0008;
    /// A checkpoint (snapshot, suspend, migration) cut the exchange: restart it.
    pub const CPT: u16 = 0x0010;
    /// An underlying device is powering off.
    pub const POWEROFF: u16 = 0x0020;
    /// The host saw a timeout on the channel.
    pub const TIMEOUT: u16 = 0x0040;
    /// The host offers high-bandwidth transfers (after SENDSIZE and RECVSIZE).
    pub const HB: u16 = 0x0080;
}

/// Channel protocol of guest-to-host commands (RPCI), `"RPCI"` in memory order.
pub const PROTO_RPCI: u32 = 0x4943_5052;
/// Channel protocol of host-to-guest commands (TCLO), `"TCLO"` in memory order.
pub const PROTO_TCLO: u32 = 0x4F4C_4354;
/// OPEN flag asking for a cookie-protected channel ("enhanced RPC").
pub const FLAG_COOKIE: u32 = 0x8000_0000;

/// `hi16(EDX)` after RECVSIZE with a pending message.
pub const MESSAGE_TYPE_SENDSIZE: u16 = 1;
/// `hi16(EDX)` after RECVPAYLOAD.
pub const MESSAGE_TYPE_SENDPAYLOAD: u16 = 2;

/// The prefix of every key a guest may read and write with `info-get`/`info-set`.
pub const GUESTINFO_PREFIX: &[u8] = b"guestinfo.";

/// The largest message a host accepts from the guest (`GUESTMSG_MAX_IN_SIZE`).
pub const MAX_GUEST_MESSAGE: usize = 65_536;
/// Channels a current host serves at once; hosts before 2022 served 8.
pub const MAX_CHANNELS: usize = 128;

/// High-bandwidth command in `lo16(EBX)`: a message payload.
pub const HB_CMD_MESSAGE: u16 = 0;

/// RPCI and TCLO over vsock (open-vm-tools `tclodefs.h`, `simpleSocket.h`, `vmci_defs.h`):
/// a stream connection to the hypervisor instead of the message channel.
pub mod vsock {
    /// The hypervisor's context id (`VMCI_HYPERVISOR_CONTEXT_ID`), the address a guest
    /// connects to.
    pub const HYPERVISOR_CID: u32 = 0;
    /// The host's port for guest-to-host commands (`GUESTRPC_RPCI_VSOCK_LISTEN_PORT`).
    pub const RPCI_PORT: u32 = 976;
    /// The host's port for host-to-guest commands (`GUESTRPC_TCLO_VSOCK_LISTEN_PORT`).
    pub const TCLO_PORT: u32 = 975;
    /// The highest privileged source port (`PRIVILEGED_PORT_MAX`): a connection from this
    /// port or below comes from a process allowed to bind it (root, `CAP_NET_BIND_SERVICE`),
    /// and is the channel a VM can require for a command. Guests try it first and walk down.
    pub const PRIVILEGED_PORT_MAX: u32 = 1023;
    /// The lowest privileged source port (`PRIVILEGED_PORT_MIN`).
    pub const PRIVILEGED_PORT_MIN: u32 = 1;
}

/// Product type reported in ECX by GETVERSION (`vm_vmx_type.h`).
pub mod product {
    /// An old host that does not report its type (`hi16(ECX)` still 0xFFFF).
    pub const UNSET: u32 = 0;
    /// VMware Express (deprecated).
    pub const EXPRESS: u32 = 1;
    /// ESX / ESXi ("ESX Server").
    pub const ESX: u32 = 2;
    /// VMware Server (deprecated).
    pub const SERVER: u32 = 3;
    /// VMware Workstation (and Fusion, Player).
    pub const WORKSTATION: u32 = 4;
    /// ACE 1.x (deprecated).
    pub const WORKSTATION_ENTERPRISE: u32 = 5;
}

/// The same calls on arm64: "VMware x86 I/O space virtualization on arm" (open-vm-tools'
/// `lib/include/backdoor_def.h`, used by its `lib/backdoor/backdoorGcc64_arm64.c` and by
/// Linux's `drivers/gpu/drm/vmwgfx/vmwgfx_msg_arm64.h`).
///
/// X0..X6 carry what EAX, EBX, ECX, EDX, ESI, EDI, EBP carry on x86 (so [`Regs`] maps
/// field for field: `ax` is X0, ..., `bp` is X6); W7 describes the x86 I/O instruction and
/// X7<63:32> holds [`X86_IO_MAGIC`](arm64::X86_IO_MAGIC); then `mrs xzr, mdccsr_el0`
/// ([`MRS_XZR_MDCCSR_EL0`](arm64::MRS_XZR_MDCCSR_EL0)) traps to the hypervisor, from EL0
/// as from EL1. Outside VMware the kernel gets the trap (Linux sets `MDSCR_EL1.TDCC`) and
/// the process gets SIGILL.
pub mod arm64 {
    /// X7<63:32> of a backdoor call: "this is an x86 I/O instruction".
    pub const X86_IO_MAGIC: u32 = 0x86;
    /// W7<1:0>: transfer size, 0 = 1 byte, 1 = 2 bytes, 2 = 4 bytes (3 is invalid).
    pub const W7_SIZE_MASK: u32 = 0x3;
    /// W7<2>: direction, set for a read (IN, INS), clear for a write (OUT, OUTS).
    pub const W7_DIR: u32 = 1 << 2;
    /// W7<3>: the port is in DX (`lo16(W3)`); with [`W7_STR`] clear and this clear, the
    /// port is the immediate in W7<12:5>.
    pub const W7_WITH: u32 = 1 << 3;
    /// W7<4>: a string instruction; with [`W7_WITH`] also set, REP INS / REP OUTS.
    pub const W7_STR: u32 = 1 << 4;
    /// W7<5>: EFLAGS.DF of a string instruction (walks downwards when set).
    pub const W7_DF: u32 = 1 << 5;
    /// W7<12:5>: the immediate port of a non-string IN/OUT without DX.
    pub const W7_IMM_SHIFT: u32 = 5;

    /// X7 for the low-bandwidth call, `in eax, dx`: 4 bytes, read, port in DX.
    pub const X7_LB: u64 = x7(W7_WITH | W7_DIR | 2);
    /// X7 for the high-bandwidth guest-to-host call, `rep outsb` (DF clear).
    pub const X7_HB_OUT: u64 = x7(W7_STR | W7_WITH);
    /// X7 for the high-bandwidth host-to-guest call, `rep insb` (DF clear).
    pub const X7_HB_IN: u64 = x7(W7_STR | W7_WITH | W7_DIR);

    /// X7 for the x86 instruction that W7 value `w7` describes.
    const fn x7(w7: u32) -> u64 {
        ((X86_IO_MAGIC as u64) << 32) | w7 as u64
    }

    /// The instruction word of `mrs xzr, mdccsr_el0`: MRS (0xd5300000) with op0 = 2
    /// (o0 = 0), op1 = 3, CRn = 0, CRm = 1, op2 = 0 and Rt = 31 (XZR).
    pub const MRS_XZR_MDCCSR_EL0: u32 = 0xd530_0000 | (3 << 16) | (1 << 8) | 31;
}

/// The registers of one backdoor call, before or after it.
///
/// Fields are full width; the protocol reads the low 32 bits of all of them except the
/// high-bandwidth buffer pointer and count.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    /// RAX.
    pub ax: u64,
    /// RBX.
    pub bx: u64,
    /// RCX.
    pub cx: u64,
    /// RDX.
    pub dx: u64,
    /// RSI.
    pub si: u64,
    /// RDI.
    pub di: u64,
    /// RBP (high-bandwidth calls only).
    pub bp: u64,
}

impl Regs {
    /// Whether a low-bandwidth call left every register it carries (EAX..EDI, low halves) as
    /// it was sent: how some backdoors (QEMU's `vmport`, configured so) pass over a command
    /// they do not implement.
    pub(crate) fn lb_unchanged_from(&self, sent: &Regs) -> bool {
        let low = |r: &Regs| [r.ax, r.bx, r.cx, r.dx, r.si, r.di].map(lo32);
        low(self) == low(sent)
    }
}

impl core::fmt::Debug for Regs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // ESI/EDI/EBP may hold channel cookies: print only that they are set.
        f.debug_struct("Regs")
            .field("ax", &format_args!("{:#x}", self.ax))
            .field("bx", &format_args!("{:#x}", self.bx))
            .field("cx", &format_args!("{:#x}", self.cx))
            .field("dx", &format_args!("{:#x}", self.dx))
            .finish_non_exhaustive()
    }
}

/// The low 16 bits of a register.
#[cfg(any(test, feature = "sim"))] // the host model reads ports and commands with it
pub(crate) const fn lo16(r: u64) -> u16 {
    r as u16
}

/// Bits 31..16 of a register.
pub(crate) const fn hi16(r: u64) -> u16 {
    (r >> 16) as u16
}

/// The low 32 bits of a register.
pub(crate) const fn lo32(r: u64) -> u32 {
    r as u32
}

/// `hi << 16 | lo`, the way commands, ports and statuses share a register.
pub(crate) const fn pack(hi: u16, lo: u16) -> u64 {
    ((hi as u64) << 16) | lo as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_spell_their_ascii() {
        assert_eq!(&MAGIC.to_le_bytes(), b"hXMV");
        assert_eq!(&PROTO_RPCI.to_le_bytes(), b"RPCI");
        assert_eq!(&PROTO_TCLO.to_le_bytes(), b"TCLO");
    }

    #[test]
    fn arm64_descriptors_spell_the_x86_instructions() {
        // The values open-vm-tools' backdoorGcc64_arm64.c and Linux's vmwgfx_msg_arm64.h build.
        assert_eq!(arm64::X7_LB, 0x0000_0086_0000_000e, "in eax, dx");
        assert_eq!(arm64::X7_HB_OUT, 0x0000_0086_0000_0018, "rep outsb");
        assert_eq!(arm64::X7_HB_IN, 0x0000_0086_0000_001c, "rep insb");
        // What `aarch64-linux-gnu-as` assembles `mrs xzr, mdccsr_el0` to.
        assert_eq!(arm64::MRS_XZR_MDCCSR_EL0, 0xd533_011f);
    }

    #[test]
    fn halves_split_and_pack() {
        let r = pack(0x1234, 0x5678) | 0xffff_ffff_0000_0000;
        assert_eq!((hi16(r), lo16(r), lo32(r)), (0x1234, 0x5678, 0x1234_5678));
    }

    #[test]
    fn regs_debug_hides_cookie_registers() {
        let r = Regs {
            si: 0xdead_beef,
            di: 0xcafe_f00d,
            bp: 0x1357_9bdf,
            ..Regs::default()
        };
        let s = format!("{r:?}");
        assert!(
            !s.contains("deadbeef") && !s.contains("cafef00d") && !s.contains("13579bdf"),
            "{s}"
        );
    }
}

/// Backdoors that implement nothing, for unit tests of how the library reads them.
#[cfg(test)]
pub(crate) mod partial_hosts {
    use super::{Regs, NO_ANSWER};
    use crate::Backdoor;

    /// No device on the port: EAX reads all ones, nothing else changes.
    #[derive(Debug)]
    pub(crate) struct Nothing;
    impl Backdoor for Nothing {
        fn lb(&mut self, regs: &mut Regs) {
            regs.ax = NO_ANSWER.into();
        }
        fn hb_out(&mut self, _: &mut Regs, _: &[u8]) {}
        fn hb_in(&mut self, _: &mut Regs, _: &mut [u8]) {}
    }

    /// A backdoor that passes over every command, leaving all registers as they were sent
    /// (QEMU's `vmport` with `x-signal-unsupported-cmd=off`).
    #[derive(Debug)]
    pub(crate) struct Silent;
    impl Backdoor for Silent {
        fn lb(&mut self, _: &mut Regs) {}
        fn hb_out(&mut self, _: &mut Regs, _: &[u8]) {}
        fn hb_in(&mut self, _: &mut Regs, _: &mut [u8]) {}
    }
}
