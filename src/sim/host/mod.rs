//! A model of the VMware host side of the backdoor, in pure Rust.
//!
//! [`Host`] answers the three kinds of backdoor call a guest makes — a low-bandwidth call on
//! port 0x5658 ([`Backdoor::lb`]), a high-bandwidth `rep outsb` ([`Backdoor::hb_out`]) or
//! `rep insb` ([`Backdoor::hb_in`]) on port 0x5659, or the same three as `vmcall`/`vmmcall`
//! hypercalls (flags instead of a port in `lo16(EDX)`, served by the runner) — the way a
//! VMware host does (as
//! open-vm-tools' `lib/backdoor/backdoor.c`, `lib/message/message.c` and
//! `lib/include/backdoor_def.h` use it): the detection commands (GETVERSION, GETHWVERSION, GETMHZ,
//! GETBIOSUUID, GETTIME, GETTIMEFULL, GETHZ, GET_VCPU_INFO; GETDEVICELISTELEMENT and
//! TOGGLEDEVICE over [`HostConfig::removable_device`]), the message channel
//! (command 30) with cookies, checkpoints and the high-bandwidth transfers, the RPCI
//! commands (`info-get`, `info-set`, `log`, `tools.set.version`, …) and TCLO host commands.
//!
//! The model makes no system calls (unless [`HostConfig::system_clock`] or
//! [`HostConfig::trace`] is asked for) and
//! never panics, whatever the registers say. It is driven either by the trap-and-emulate
//! runner, which feeds it a real guest process's backdoor instructions, or directly through
//! [`Backdoor`] by in-memory tests:
//!
//! ```
//! use vmw_backdoor::proto::{cmd, Regs, LB_PORT, MAGIC};
//! use vmw_backdoor::Backdoor;
//! use vmw_backdoor::sim::host::{Host, HostConfig};
//!
//! let mut host = Host::new(HostConfig::default());
//! let mut regs = Regs {
//!     ax: MAGIC.into(),
//!     bx: (!MAGIC).into(),
//!     cx: cmd::GETVERSION.into(),
//!     dx: LB_PORT.into(),
//!     ..Regs::default()
//! };
//! host.lb(&mut regs);
//! assert_eq!((regs.ax, regs.bx, regs.cx), (6, MAGIC.into(), 2));
//! ```
//!
//! Registers the model writes get a 32-bit value (upper halves zero, as a 32-bit register
//! write leaves them); registers it does not write keep all 64 bits.
//!
//! # Message channel
//!
//! Every sub-command answers its status in `hi16(ECX)` with `lo16(ECX)` zero; a failure is
//! ECX = 0 with no other register changed. OPEN answers the channel id in `hi16(EDX)`
//! (`lo16` zero) and the cookie halves in ESI (high) and EDI (low); ids start at 0 and the
//! lowest free one is reused. A complete guest message is executed at once and its reply
//! queued. A new SENDSIZE drops a reply the guest never acknowledged (real hosts tolerate
//! guests that skip RECVSTATUS). High-bandwidth transfers are served whenever the host
//! offers them, whether or not the guest looked at the HB status bit.
//!
//! Where the sources are silent, the model chooses:
//!
//! - OPEN of a protocol other than RPCI or TCLO fails.
//! - RECVSIZE with nothing pending answers SUCCESS and EBX = 0 and leaves EDX alone;
//!   RECVSIZE while a send is half done fails (steps out of order).
//! - RECVSIZE announces the pending reply again, from its start, until RECVSTATUS: a guest
//!   may restart a receive at any time.
//! - RECVPAYLOAD with the guest's status bit clear (a guest reporting a failed reception)
//!   answers SUCCESS with EBX = 0 and drops the reply, as RECVSTATUS with EBX = 0 does.
//! - A high-bandwidth transfer needs EBX = 0x00010000 (guest status masked to its success
//!   bit, command 0); a receive needs RCX of at least the reply length and fails otherwise.
//!
//! # TCLO: the VMX's side
//!
//! The host plays a script ([`HostConfig::tclo`], [`HostConfig::tclo_wait`],
//! [`HostConfig::tclo_close`]; `vmw-sim` plays [`DEFAULT_TCLO_SCRIPT`] when given none):
//! on a TCLO channel, a command is delivered on RECVSIZE once the guest has sent a message
//! since the last delivery — the empty send after OPEN, then each reply — so each command
//! goes out when the previous reply came back. Every exchange is kept with the RPCI
//! requests and backdoor calls made meanwhile ([`Host::tclo_exchanges`]); every guest
//! message on a TCLO channel is a poll, and a host that saw one within the heartbeat
//! timeout (20 s) calls the tools running ([`Host::tools_running`]).
//!
//! # RPCI replies
//!
//! | request | reply |
//! |---|---|
//! | `info-get guestinfo.KEY` | `1 VALUE`; `0 No value found` when missing, for a key without the `guestinfo.` prefix, or for no key |
//! | `info-set guestinfo.KEY VALUE` | `1 `; VALUE is everything after the first space after the key and may be empty |
//! | `info-set` without a space after the key, or with an empty key | `0 Two and exactly two arguments expected` |
//! | `info-set` of a key without the `guestinfo.` prefix | `0 Permission denied` |
//! | `info-set` beyond 16 MiB of guest-added data (a memory guard) | `0 Too much guestinfo data` |
//! | a command of [`HostConfig::require_privileged`] (or `info-get` / `info-set` with [`HostConfig::deny_guestinfo`]) over the backdoor or an unprivileged vsock connection | `0 Permission denied` |
//! | `log TEXT` | `1 `; TEXT becomes a VMX log line ([`Host::vmx_log`]) |
//! | `tools.set.version N`, `tools.set.versiontype N T` | `1 `; recorded as sent ([`Host::tools_version`]) |
//! | `vmx.capability.unified_loop NAME`, `tools.capability.NAME [VALUE]`, `tools.os.statechange.status S ID`, `SetGuestInfo  ID VALUE`, `vmbackup.eventSet …` | `1 `; kept ([`Host::tools_capabilities`], [`Host::guest_info_reported`], …); a malformed `SetGuestInfo` gets `0 Unknown command` |
//! | `machine.id.get` | `1 ID` ([`HostConfig::machine_id`]) |
//! | `guestlib.info.get 3` | `1 ` and the Guest API's statistics, as open-vm-tools' `libguestlib` reads them ([`HostConfig::guest_stat`]); another version: `0 3:Unsupported version`; with [`HostConfig::no_guest_api`]: `0 Unknown command` |
//! | anything else | `0 Unknown command` |
//!
//! Requests are read up to their first NUL; guest-to-host messages are capped at 65,536
//! bytes, host-to-guest replies are not capped. Keys are compared byte for byte.
//!
//! # Time
//!
//! GETTIME and GETTIMEFULL report a fixed instant by default ([`HostConfig::time`]) so tests
//! are deterministic; [`HostConfig::system_clock`] switches to the wall clock.

mod channel;
mod config;
mod counters;
mod faults;
mod guestlib;
mod logs;
mod rng;
mod rpci;
mod tclo;
#[cfg(test)]
mod tests;
mod tools;
// Only the x86_64 runner serves vsock; the model is the same everywhere.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod vsock;

use std::collections::BTreeMap;

use crate::Backdoor;

pub use config::{Answer, HostConfig, Hypercall, IoplPolicy, Step};
pub use counters::Counters;
pub use tclo::{TcloExchange, DEFAULT_TCLO_SCRIPT};
pub use vsock::VsockFault;
#[cfg(target_arch = "x86_64")]
pub(crate) use vsock::MAX_REQUEST_BODY;

use crate::proto::{
    cmd, hi16, lo16, lo32, Regs, HB_PORT, LB_PORT, MAGIC, NO_ANSWER, VERSION_MAGIC,
};

/// Bytes of 0xFF a `rep insb` on a port without a device yields at most per call; the
/// rest of the guest's count is left to the runner (no allocation sized by a guest's RCX).
const NO_DEVICE_FILL_LIMIT: u64 = 1 << 20;

/// open-vm-tools' `RD_Info`: a 32-byte name, a `u32` id, a one-byte flag, padded to 40.
const DEVICE_NAME_LEN: usize = 32;
const DEVICE_INFO_LEN: usize = 40;

/// What one kept entry (a VMX log line, a TCLO reply) costs against its memory budget on top
/// of its bytes, so that many tiny or empty entries cannot outgrow the budget.
const ENTRY_OVERHEAD: usize = 32;

/// The machine the guest runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A VMware VM whose backdoor answers from ring 3 (the default everywhere).
    #[default]
    Vmware,
    /// Not VMware (bare metal, KVM without vmport, …): an unprivileged backdoor access
    /// faults; a privileged one finds no device, so `in` reads 0xFFFFFFFF.
    NotVmware,
    /// VMware with ring-3 backdoor access restricted: unprivileged accesses fault;
    /// privileged ones get the normal VMware answers.
    RestrictBackdoor,
}

/// The VMware host model: one VM's backdoor, its channels and its state.
///
/// Build it from a [`HostConfig`], drive it through [`Backdoor`] (`lb`, `hb_out`, `hb_in`),
/// then read what the guest did through the accessors and [`Host::counters`].
pub struct Host {
    config: HostConfig,
    channels: channel::Channels,
    rpci: rpci::Rpci,
    tclo: tclo::Tclo,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    vsock: vsock::Vsock,
    /// Removable devices, by id: name and whether connected.
    removable_devices: Vec<(Vec<u8>, bool)>,
    counters: Counters,
}

impl core::fmt::Debug for Host {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Short on purpose: guestinfo values may be large, cookies must not be printed.
        f.debug_struct("Host")
            .field("mode", &self.config.mode)
            .field("open_channels", &self.open_channels())
            .field("guestinfo_keys", &self.rpci.guestinfo.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

// The aarch64 runner asks only the port questions: the hypercall and CPUID ones are x86's
// (dead code there, checked on x86).
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
impl Host {
    /// A host playing `config`.
    #[must_use]
    pub fn new(mut config: HostConfig) -> Host {
        let guestinfo = std::mem::take(&mut config.guestinfo);
        let machine_id = std::mem::take(&mut config.machine_id);
        let tclo = std::mem::take(&mut config.tclo);
        let faults = std::mem::take(&mut config.faults);
        let vsock = vsock::Vsock::new(
            config.vsock_resets,
            std::mem::take(&mut config.vsock_faults),
        );
        let mut guest_api = config.guest_api.take();
        if let Some(api) = &mut guest_api {
            api.stats.entry(5).or_insert(config.mhz.into());
        }
        let removable_devices = std::mem::take(&mut config.removable_devices);
        let mut rpci = rpci::Rpci::new(
            guestinfo,
            config.privileged_only.clone(),
            config.empty_guestinfo_values,
            machine_id,
            guest_api,
        );
        rpci.trace = config.trace;
        let mut tclo =
            tclo::Tclo::new(tclo, config.heartbeat, tclo::Mono::new(config.manual_clock));
        tclo.trace = config.trace;
        Host {
            channels: channel::Channels::new(&config, faults),
            rpci,
            tclo,
            removable_devices,
            vsock,
            counters: Counters::default(),
            config,
        }
    }

    /// The channel service and, apart, what it hands messages to and counts in.
    fn channels_and_ends(&mut self) -> (&mut channel::Channels, channel::Ends<'_>) {
        (
            &mut self.channels,
            channel::Ends {
                rpci: &mut self.rpci,
                tclo: &mut self.tclo,
                counters: &mut self.counters,
            },
        )
    }

    /// The machine this host plays.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    // ---- The machine's rules, which the runner asks about ----

    /// Whether the machine names itself VMware in CPUID (where the runner can show a
    /// CPUID of its choosing at all): only a VMware machine does.
    pub(crate) fn shows_vmware_cpuid(&self) -> bool {
        self.config.mode != Mode::NotVmware
    }

    /// Whether a ring-3 port access to `port` executes rather than raising #GP. A thread
    /// `privileged` for it (by `iopl`/`ioperm`) may touch any port; without privilege only
    /// the backdoor ports of a VMware host that does not restrict its backdoor answer.
    /// On a TDX machine no port access executes (a #VE the kernel answers with SIGSEGV);
    /// on an SEV-ES one only a privileged access does (the host cannot emulate a #GP).
    pub(crate) fn port_reachable(&self, port: u16, privileged: bool) -> bool {
        let c = &self.config;
        if c.tdx {
            return false;
        }
        privileged || (c.mode == Mode::Vmware && !c.sev_es && (port == LB_PORT || port == HB_PORT))
    }

    /// Whether a 32-bit `out` on port 0x5658 with `eax` is a backdoor call: only a live
    /// backdoor (a VMware host, the magic in EAX) takes one and answers in registers; any
    /// other `out` is a write to an empty port, which changes no register.
    /// Under SEV-ES the kernel forwards only EAX's value: the backdoor sees no call.
    pub(crate) fn takes_out(&self, eax: u32) -> bool {
        self.config.mode != Mode::NotVmware && !self.config.sev_es && eax == MAGIC
    }

    /// Whether hypercall `hc` reaches the backdoor: wherever VMware lets ring 3 use it
    /// (`privileged`: the thread may use port 0x5658 for 32-bit accesses). Not VMware,
    /// there is no hypervisor to call and the instruction faults; on TDX it is a #VE the
    /// kernel answers with SIGSEGV; on SEV-ES (AMD) `vmcall` is #UD.
    pub(crate) fn hypercall_allowed(&self, hc: Hypercall, privileged: bool) -> bool {
        let c = &self.config;
        if c.tdx || (c.sev_es && hc == Hypercall::Vmcall) {
            return false;
        }
        match c.mode {
            Mode::Vmware => true,
            Mode::RestrictBackdoor => privileged,
            Mode::NotVmware => false,
        }
    }

    /// CPUID leaf 0x40000010 ECX: the hypercalls advertised.
    pub(crate) fn advertised_hypercalls(&self) -> u32 {
        self.config.hypercalls
    }

    /// Whether CPUID shows a TDX guest (leaf 0x21).
    pub(crate) fn shows_tdx(&self) -> bool {
        self.config.tdx
    }

    /// Whether a `rep insb` on port 0x5659 that got fewer bytes than RCX asked for goes on:
    /// not VMware, the port is empty and its 0xFF bytes come at most 1 MiB per call, so the
    /// instruction is re-executed for the rest (as an interrupted REP string instruction
    /// is). On a VMware host a short answer ends the instruction.
    pub(crate) fn rep_insb_continues(&self) -> bool {
        self.config.mode == Mode::NotVmware || self.config.sev_es
    }

    /// An `in eax, dx` on port 0x5658: the low-bandwidth call [`Host::lb`], then the upper
    /// half of RAX is cleared, since the instruction writes EAX as a 32-bit register. On
    /// SEV-ES the host sees the `in` with EAX = 0 and no other register (the kernel's #VC
    /// handler forwards only that): EAX reads 0xFFFFFFFF, nothing else changes.
    pub(crate) fn lb_in(&mut self, regs: &mut Regs) {
        if self.config.sev_es {
            self.counters.lb_calls += 1;
            regs.ax = NO_ANSWER.into();
            return;
        }
        self.lb(regs);
        regs.ax &= 0xFFFF_FFFF;
    }

    /// Whether the call is meant for the backdoor: a VMware host, the magic in EAX and
    /// `port` in `lo16(EDX)`.
    fn addressed(&self, regs: &Regs, port: u16) -> bool {
        self.config.mode != Mode::NotVmware && lo32(regs.ax) == MAGIC && lo16(regs.dx) == port
    }

    /// Counts one hypercall of `hc`.
    fn count_hypercall(&mut self, hc: Hypercall) {
        match hc {
            Hypercall::Vmcall => self.counters.vmcall_calls += 1,
            Hypercall::Vmmcall => self.counters.vmmcall_calls += 1,
        }
    }

    /// A low-bandwidth call by hypercall `hc`, presented in the port form (`lo16(EDX)` =
    /// 0x5658; the runner translates the flags): answered as [`Host::lb`] answers it, but
    /// counted as `hc`.
    pub(crate) fn hypercall_lb(&mut self, hc: Hypercall, regs: &mut Regs) {
        self.count_hypercall(hc);
        self.serve_lb(regs);
    }

    /// A high-bandwidth guest-to-host transfer by hypercall `hc`, in the port form: as
    /// [`Host::rep_outsb`] answers it (but nothing on a wrong magic), counted as `hc`. On
    /// SEV-ES the host cannot read the buffer: EBX = 0 (status 0), nothing moves.
    pub(crate) fn hypercall_hb_out(&mut self, hc: Hypercall, regs: &mut Regs, data: &[u8]) {
        self.count_hypercall(hc);
        if self.config.sev_es && self.addressed(regs, HB_PORT) {
            regs.bx = 0;
            return;
        }
        self.serve_hb_out(regs, data);
    }

    /// A high-bandwidth host-to-guest transfer by hypercall `hc`, in the port form: the bytes
    /// to write at RDI (never more than RCX), as [`Host::rep_insb`] serves them, but none on
    /// a wrong magic; counted as `hc`. On SEV-ES: EBX = 0, no bytes.
    pub(crate) fn hypercall_hb_in(&mut self, hc: Hypercall, regs: &mut Regs) -> Vec<u8> {
        self.count_hypercall(hc);
        if self.config.sev_es && self.addressed(regs, HB_PORT) {
            regs.bx = 0;
            return Vec::new();
        }
        self.serve_hb_in(regs).unwrap_or_default()
    }

    /// A hypercall by `hc` whose flags name no call: counted, answered with EAX =
    /// 0xFFFFFFFF and nothing else.
    pub(crate) fn hypercall_unknown(&mut self, hc: Hypercall, regs: &mut Regs) {
        self.count_hypercall(hc);
        regs.ax = NO_ANSWER.into();
    }

    /// A low-bandwidth call on port 0x5658 (`in` or `out`; the runner checked the port).
    ///
    /// Acts only when EAX is the magic and `lo16(EDX)` is 0x5658, and dispatches on
    /// `lo16(ECX)`. Otherwise, for an unknown command, and always in [`Mode::NotVmware`]:
    /// EAX = 0xFFFFFFFF and nothing else changes (no device on the port).
    pub fn lb(&mut self, regs: &mut Regs) {
        self.counters.lb_calls += 1;
        self.serve_lb(regs);
    }

    /// A low-bandwidth call, whatever carried it; not counted here.
    fn serve_lb(&mut self, regs: &mut Regs) {
        if !self.addressed(regs, LB_PORT) {
            regs.ax = NO_ANSWER.into();
            return;
        }
        let command = lo16(regs.cx);
        let sub_command = if command == cmd::MESSAGE {
            hi16(regs.cx)
        } else {
            0
        };
        self.counters.count_lb(command, sub_command);
        let c = &self.config;
        match command {
            cmd::GETVERSION => {
                regs.ax = VERSION_MAGIC.into();
                regs.bx = MAGIC.into();
                regs.cx = c.product.into();
            }
            cmd::GETHWVERSION => {
                regs.ax = c.hw_version.into();
                regs.bx = MAGIC.into();
            }
            cmd::GETMHZ => regs.ax = c.mhz.into(),
            cmd::GETBIOSUUID => {
                let u = c.bios_uuid;
                let dword =
                    |i: usize| u64::from(u32::from_le_bytes([u[i], u[i + 1], u[i + 2], u[i + 3]]));
                regs.ax = dword(0);
                regs.bx = dword(4);
                regs.cx = dword(8);
                regs.dx = dword(12);
            }
            cmd::GETTIME => {
                let (secs, micros) = c.clock.now();
                // Seconds that do not fit 32 bits are the command's error value.
                regs.ax = u32::try_from(secs).unwrap_or(u32::MAX).into();
                regs.bx = micros.into();
                regs.cx = c.max_time_lag.into();
            }
            cmd::GETTIMEFULL => {
                let (secs, micros) = c.clock.now();
                // EAX stays the magic: that is how a guest sees success.
                regs.si = secs >> 32;
                regs.dx = secs & 0xFFFF_FFFF;
                regs.bx = micros.into();
                regs.cx = c.max_time_lag.into();
            }
            cmd::GETHZ => match c.tsc_hz {
                Some(hz) => {
                    regs.ax = hz & 0xFFFF_FFFF;
                    regs.bx = hz >> 32;
                    regs.cx = c.apic_hz.into();
                }
                None => regs.bx = NO_ANSWER.into(), // GETHZ unsupported: EBX all ones
            },
            cmd::GET_VCPU_INFO => regs.ax = c.vcpu_info.into(),
            cmd::GETDEVICELISTELEMENT => {
                let (id, offset) = (hi16(regs.bx), lo16(regs.bx));
                match self.device_piece(id, offset) {
                    Some(piece) => {
                        regs.ax = 1;
                        regs.bx = piece.into();
                    }
                    None => regs.ax = 0,
                }
            }
            cmd::TOGGLEDEVICE => {
                let connect = regs.bx & (1 << 31) != 0;
                let device = self.removable_devices.get_mut(usize::from(lo16(regs.bx)));
                regs.ax = match device {
                    Some((_, connected)) => {
                        *connected = connect;
                        1
                    }
                    None => 0,
                };
            }
            cmd::MESSAGE => {
                let (channels, mut ends) = self.channels_and_ends();
                channels.message(regs, &mut ends);
            }
            _ => regs.ax = NO_ANSWER.into(),
        }
    }

    /// Bytes `offset..offset + 4` of device `id`'s 40-byte description (name in 32 bytes,
    /// NUL-padded; `u32` id; connected byte; padding), as GETDEVICELISTELEMENT hands it
    /// out; `None` past the last device or the description's end.
    fn device_piece(&self, id: u16, offset: u16) -> Option<u32> {
        let (name, connected) = self.removable_devices.get(usize::from(id))?;
        let mut info = [0u8; DEVICE_INFO_LEN];
        info[..name.len()].copy_from_slice(name);
        info[DEVICE_NAME_LEN..DEVICE_NAME_LEN + 4].copy_from_slice(&u32::from(id).to_le_bytes());
        info[DEVICE_NAME_LEN + 4] = u8::from(*connected);
        let at = usize::from(offset);
        let piece = info.get(at..at + 4)?;
        Some(u32::from_le_bytes(piece.try_into().ok()?))
    }

    /// `rep outsb` on port 0x5659 as the runner emulates it: `data` is what guest memory held
    /// at RSI (the runner reads min(RCX, [`crate::proto::MAX_GUEST_MESSAGE`] + 1) bytes, so
    /// anything over the cap is still seen as over), RCX the guest's count.
    ///
    /// A message transfer needs EAX = magic, EBX = 0x00010000, ECX = the length SENDSIZE
    /// announced, `hi16(EDX)` = channel, EDI = cookie low, EBP = cookie high. The answer is in
    /// EBX: 0x00010000 on success, `status << 16` otherwise. Without a backdoor (wrong magic
    /// or port, [`Mode::NotVmware`]) the bytes are discarded and no register changes. The
    /// model does not advance RSI/RCX; that is the runner's part of emulating the string
    /// instruction.
    ///
    /// On SEV-ES the kernel carries out the string instruction as plain I/O through its
    /// GHCB buffer: the backdoor sees no registers, and the bytes go nowhere.
    pub(crate) fn rep_outsb(&mut self, regs: &mut Regs, data: &[u8]) {
        self.counters.hb_out_calls += 1;
        if !self.config.sev_es {
            self.serve_hb_out(regs, data);
        }
    }

    /// A high-bandwidth guest-to-host transfer, whatever carried it; not counted here.
    fn serve_hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        if self.addressed(regs, HB_PORT) {
            let (channels, mut ends) = self.channels_and_ends();
            channels.hb_out(regs, data, &mut ends);
        }
    }

    /// `rep insb` on port 0x5659 as the runner emulates it: returns the bytes to write at
    /// RDI (never more than RCX).
    ///
    /// A message transfer needs EAX = magic, EBX = 0x00010000, RCX ≥ the length RECVSIZE
    /// announced, `hi16(EDX)` = channel, ESI = cookie high, EBP = cookie low. The answer is in
    /// EBX as for [`Host::rep_outsb`]; on failure no bytes are returned. Without a backdoor
    /// (and on SEV-ES, where the backdoor sees no registers) the port reads as 0xFF bytes (at
    /// most 1 MiB per call) and no register changes.
    pub(crate) fn rep_insb(&mut self, regs: &mut Regs) -> Vec<u8> {
        self.counters.hb_in_calls += 1;
        let served = if self.config.sev_es {
            None
        } else {
            self.serve_hb_in(regs)
        };
        served.unwrap_or_else(|| {
            let n = regs.cx.min(NO_DEVICE_FILL_LIMIT) as usize;
            vec![0xFF; n]
        })
    }

    /// A high-bandwidth host-to-guest transfer, whatever carried it; not counted here.
    /// `None` when the call is not the backdoor's.
    fn serve_hb_in(&mut self, regs: &mut Regs) -> Option<Vec<u8>> {
        if !self.addressed(regs, HB_PORT) {
            return None;
        }
        let (channels, mut ends) = self.channels_and_ends();
        Some(channels.hb_in(regs, &mut ends))
    }

    /// What the guest has done so far.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters as one JSON object (the runner's `--stats` file); see
    /// [`Counters::to_json`] for the keys. Three more tell the tools agent's state:
    /// `tools_running` (1 when a TCLO poll came within the heartbeat timeout, 0
    /// otherwise), `tools_polls` (guest messages on TCLO channels) and
    /// `tools_heartbeat_lapses` (gaps between polls longer than the timeout: times a VMX
    /// would have said the tools stopped).
    #[must_use]
    pub fn stats_json(&self) -> String {
        let counters = self.counters.to_json();
        format!(
            "{{\"tools_running\":{},\"tools_polls\":{},\"tools_heartbeat_lapses\":{},{}",
            u8::from(self.tclo.running()),
            self.tclo.polls,
            self.tclo.lapses,
            counters.get(1..).unwrap_or_default()
        )
    }

    /// The guestinfo store: configured entries plus what the guest set, keys with their
    /// `guestinfo.` prefix and in lower case (the host matches them in any case).
    #[must_use]
    pub fn guestinfo(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.rpci.guestinfo
    }

    /// Every `log` line the guest sent, in order (the text after `log `). Past 16 MiB of
    /// text further lines are not kept.
    #[must_use]
    pub fn vmx_log(&self) -> &[Vec<u8>] {
        &self.rpci.vmx_log
    }

    /// Every non-empty message the guest sent on a TCLO channel (its answers to host
    /// commands, e.g. `OK ATR toolbox`), in order.
    #[must_use]
    pub fn tclo_replies(&self) -> &[Vec<u8>] {
        &self.tclo.replies
    }

    /// TCLO script entries not yet played (commands, and [`HostConfig::tclo_close`]s).
    #[must_use]
    pub fn tclo_pending(&self) -> usize {
        self.tclo.queued()
    }

    /// Every TCLO command delivered, in order, with the guest's reply to it (`None` when
    /// none came). Past 16 MiB of commands and replies, later ones are not kept.
    #[must_use]
    pub fn tclo_exchanges(&self) -> &[TcloExchange] {
        &self.tclo.exchanges
    }

    /// Whether a tools agent is running: it polled its TCLO channel within the heartbeat
    /// timeout ([`HostConfig::tools_heartbeat`], 20 s by default), as a VMX judges it.
    #[must_use]
    pub fn tools_running(&self) -> bool {
        self.tclo.running()
    }

    /// Time since the tools agent's last TCLO poll; `None` before the first.
    #[must_use]
    pub fn tools_idle(&self) -> Option<std::time::Duration> {
        self.tclo.since_last_poll()
    }

    /// Moves the heartbeat clock of a [`HostConfig::manual_clock`] host on (a host on real
    /// time ignores it).
    pub fn advance_clock(&mut self, by: std::time::Duration) {
        self.tclo.clock.advance(by);
    }

    /// Every RPCI request the guest sent, in order, as sent (trailing NULs, binary data and
    /// all). Past 16 MiB, later ones are not kept.
    #[must_use]
    pub fn rpci_requests(&self) -> &[Vec<u8>] {
        &self.rpci.requests
    }

    /// The agent's name from `vmx.capability.unified_loop NAME`, if it sent one.
    #[must_use]
    pub fn tools_unified_loop(&self) -> Option<&[u8]> {
        self.rpci.tools.unified_loop.as_deref()
    }

    /// The capabilities announced (`tools.capability.NAME VALUE`), by name; `None` for
    /// the no-value form (`tools.capability.statechange `).
    #[must_use]
    pub fn tools_capabilities(&self) -> &BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        &self.rpci.tools.capabilities
    }

    /// Every `tools.os.statechange.status` argument (`1 2`: success, state id), in order.
    #[must_use]
    pub fn tools_state_changes(&self) -> &[Vec<u8>] {
        &self.rpci.tools.state_changes
    }

    /// The guest information reported (`SetGuestInfo  ID VALUE`), the last value by id:
    /// 1 DNS name, 5 and 6 OS names, 7 uptime, 10 NIC info v3 (XDR, whole).
    #[must_use]
    pub fn guest_info_reported(&self) -> &BTreeMap<u32, Vec<u8>> {
        &self.rpci.tools.guest_info
    }

    /// Every `vmbackup.eventSet` argument (`EVENT CODE TEXT`), in order.
    #[must_use]
    pub fn backup_events(&self) -> &[Vec<u8>] {
        &self.rpci.tools.backup_events
    }

    /// The argument of the last `tools.set.version`, as sent.
    #[must_use]
    pub fn tools_version(&self) -> Option<&[u8]> {
        self.rpci.tools_version.as_deref()
    }

    /// The argument of the last `tools.set.versiontype`, as sent.
    #[must_use]
    pub fn tools_version_type(&self) -> Option<&[u8]> {
        self.rpci.tools_version_type.as_deref()
    }

    /// Channels open now.
    #[must_use]
    pub fn open_channels(&self) -> usize {
        self.counters.channels_open() as usize
    }
}

/// In-memory use: the guest's registers and buffers go straight to the model, no ptrace.
impl Backdoor for Host {
    fn lb(&mut self, regs: &mut Regs) {
        Host::lb(self, regs);
    }

    fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        regs.cx = data.len() as u64;
        regs.si = data.as_ptr() as usize as u64;
        self.rep_outsb(regs, data);
    }

    fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        regs.cx = buf.len() as u64;
        regs.di = buf.as_mut_ptr() as usize as u64;
        let bytes = self.rep_insb(regs);
        for (dst, src) in buf.iter_mut().zip(bytes) {
            *dst = src;
        }
    }

    /// Not on an SEV-ES host ([`HostConfig::sev_es`]), whose guest's memory it cannot read.
    fn high_bandwidth(&self) -> bool {
        !self.config.sev_es
    }
}
