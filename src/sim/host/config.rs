//! [`HostConfig`]: what kind of VMware host the model plays, and which faults it injects.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::Mode;
use crate::proto::{product, GUESTINFO_PREFIX, MAX_CHANNELS};
use crate::Product;

/// Seed of the cookie generator when [`HostConfig::seed`] is not called: runs are
/// reproducible by default.
const DEFAULT_SEED: u64 = 0x5EED_0F0F_564D_5868;

/// The cookie seed, kept out of `Debug` output: like the generator's state, it predicts
/// every cookie.
#[derive(Clone, Copy)]
pub(super) struct Seed(pub(super) u64);

impl core::fmt::Debug for Seed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Seed(..)")
    }
}

/// Fixed host time when neither [`HostConfig::time`] nor [`HostConfig::system_clock`] is
/// called: 2023-11-14 22:13:20 UTC.
const DEFAULT_TIME_SECS: u64 = 1_700_000_000;

/// A step of the message-channel protocol, for aiming a one-shot fault with
/// [`HostConfig::fault`].
///
/// Occurrences are counted per step over the whole host (all channels), from 1, and every
/// call of that step counts, whether or not it would have succeeded (on a host without
/// high-bandwidth transfers, calls on the high-bandwidth port are not steps and do not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// MESSAGE sub-command 0: opening a channel.
    Open,
    /// MESSAGE sub-command 1: announcing a guest-to-host message length.
    SendSize,
    /// MESSAGE sub-command 2: four bytes of a guest-to-host message.
    SendPayload,
    /// `rep outsb` on the high-bandwidth port: a whole guest-to-host message.
    HbOut,
    /// MESSAGE sub-command 3: asking for a pending host-to-guest message.
    RecvSize,
    /// MESSAGE sub-command 4: four bytes of a host-to-guest message.
    RecvPayload,
    /// `rep insb` on the high-bandwidth port: a whole host-to-guest message.
    HbIn,
    /// MESSAGE sub-command 5: acknowledging a received message.
    RecvStatus,
    /// MESSAGE sub-command 6: closing a channel.
    Close,
}

impl Step {
    /// Every step, in protocol order.
    pub const ALL: [Step; 9] = [
        Step::Open,
        Step::SendSize,
        Step::SendPayload,
        Step::HbOut,
        Step::RecvSize,
        Step::RecvPayload,
        Step::HbIn,
        Step::RecvStatus,
        Step::Close,
    ];

    /// Position in [`Step::ALL`], used to index per-step counters.
    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// Whether the step carries message bytes (or acknowledges them): the steps a
    /// periodic checkpoint ([`HostConfig::cpt_every`]) can land on.
    pub(super) fn is_payload(self) -> bool {
        matches!(
            self,
            Step::SendPayload | Step::HbOut | Step::RecvPayload | Step::HbIn | Step::RecvStatus
        )
    }

    /// Whether the step belongs to the guest-to-host half of an exchange.
    pub(super) fn is_send(self) -> bool {
        matches!(self, Step::SendSize | Step::SendPayload | Step::HbOut)
    }
}

/// How the host answers a step hit by a one-shot fault ([`HostConfig::fault`]).
///
/// [`Answer::Cpt`] and [`Answer::Fail`] model a well-behaved host having a bad moment; the
/// others model a hostile or broken host, for testing that a guest stays safe.
/// Status values below are the `hi16` of ECX (low-bandwidth) or EBX (high-bandwidth).
/// A hostile answer aimed at a step it does not apply to leaves that step's answer normal;
/// at OPEN, every answer other than [`Answer::Cpt`] and [`Answer::Raw`] is a plain failure.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A checkpoint cut the exchange: status CPT without SUCCESS. The in-flight operation is
    /// cancelled: a partial send is discarded (the guest restarts at SENDSIZE, the request is
    /// not executed), a receive rewinds (the reply is still pending from RECVSIZE), an OPEN
    /// opens nothing, a CLOSE leaves the channel open.
    Cpt,
    /// A plain failure: status 0, with the same cancellation as [`Answer::Cpt`].
    Fail,
    /// Garbage: the status register (all 32 bits of ECX for a low-bandwidth step, of EBX for a
    /// high-bandwidth one) is set to this value and nothing else happens (no bytes move,
    /// the operation is cancelled as for [`Answer::Cpt`]).
    Raw(u32),
    /// RECVSIZE or RECVPAYLOAD answers normally but reports this message type in `hi16(EDX)`
    /// instead of 1 (after RECVSIZE) or 2 (after RECVPAYLOAD).
    WrongMessageType(u16),
    /// RECVSIZE announces this length instead of the pending reply's. The reply is then served
    /// as its real bytes followed by zeros up to the claimed length (RECVPAYLOAD); a
    /// high-bandwidth receive of a claimed length beyond the real bytes fails. Without a
    /// pending reply this behaves like [`Answer::Phantom`].
    ClaimLength(u32),
    /// RECVSIZE serves the pending reply without its two-byte `1 ` / `0 ` status prefix.
    NoPrefix,
    /// RECVSIZE answers SUCCESS|DORECV with this length although nothing is pending; the
    /// payload steps that follow fail.
    Phantom(u32),
    /// The host closes the channel under the guest at this step: the id is freed and the
    /// step answers status CLOSED (without SUCCESS).
    CloseChannel,
}

/// Where GETTIME and GETTIMEFULL take the host time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Clock {
    /// A fixed instant: seconds since the Unix epoch and microseconds.
    Fixed { secs: u64, micros: u32 },
    /// The machine's wall clock (the only place the model reads the OS).
    System,
}

impl Clock {
    /// The host time now, as (seconds since the epoch, microseconds).
    pub(super) fn now(self) -> (u64, u32) {
        match self {
            Clock::Fixed { secs, micros } => (secs, micros),
            Clock::System => {
                let since = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                (since.as_secs(), since.subsec_micros())
            }
        }
    }
}

/// One armed one-shot fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    pub(super) step: Step,
    pub(super) nth: u64,
    pub(super) answer: Answer,
}

/// A hypercall instruction of the backdoor, for [`HostConfig::hypercall`].
///
/// The model serves both, with the flags open-vm-tools' `backdoor_def.h` defines in
/// `lo16(EDX)`: 0 (or 2) a low-bandwidth call, 3 a high-bandwidth guest-to-host transfer
/// (ESI, ECX), 1 host-to-guest (EDI, ECX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hypercall {
    /// `vmcall` (Intel VT-x): CPUID leaf 0x40000010 ECX bit 1.
    Vmcall,
    /// `vmmcall` (AMD-V): CPUID leaf 0x40000010 ECX bit 0.
    Vmmcall,
}

impl Hypercall {
    /// Its bit in CPUID leaf 0x40000010 ECX.
    pub(crate) fn cpuid_bit(self) -> u32 {
        match self {
            Hypercall::Vmmcall => 1 << 0,
            Hypercall::Vmcall => 1 << 1,
        }
    }
}

/// How the virtual `iopl`/`ioperm` answer a guest.
///
/// Either way the guest's real I/O privilege never changes; only the runner's record of it,
/// which decides what its port accesses do (see [`Mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoplPolicy {
    /// As the kernel would answer the calling thread's real credentials: raising privilege
    /// needs `CAP_SYS_RAWIO` in its effective set (root has it), else EPERM. So a suite run
    /// as a normal user meets the EPERM it would meet in production. The default.
    #[default]
    Credentials,
    /// They succeed, with the kernel's argument checks (EINVAL for `iopl(4)` or a range past
    /// port 65535): a root process on a kernel with `CONFIG_X86_IOPL_IOPERM`, whatever the
    /// guest's credentials.
    Allow,
    /// Raising privilege fails with EPERM (no CAP_SYS_RAWIO, or kernel lockdown);
    /// lowering it still works.
    Eperm,
    /// Both fail with ENOSYS: a kernel built without `CONFIG_X86_IOPL_IOPERM`.
    Enosys,
}

/// The machine the model plays: the VMware host (product, features, guestinfo store, host
/// commands, faults) and the guest's kernel and CPU as the runner presents them
/// ([`iopl`](Self::iopl), [`vmware_cpuid`](Self::vmware_cpuid)).
///
/// Build it with the chained methods, then run a guest on it ([`HostConfig::run`],
/// [`HostConfig::run_command`]) or hand it to [`super::Host::new`] to drive the model in
/// memory. `HostConfig::default()` is a current ESXi host: GETVERSION reports product ESX,
/// high-bandwidth transfers and channel cookies are offered, 128 channels, no faults, an
/// empty guestinfo store, a fixed clock and a fixed cookie seed (so runs are reproducible).
///
/// ```
/// use vmw_backdoor::sim::host::{Answer, HostConfig, Step};
///
/// let config = HostConfig::default()
///     .guestinfo("ignition.config.data", "e30K")
///     .no_hb()
///     .channels(8)
///     .fault(Step::RecvStatus, 1, Answer::Cpt);
/// # let _ = config;
/// ```
#[derive(Clone)]
#[must_use = "a HostConfig does nothing until a guest runs on it"]
pub struct HostConfig {
    pub(super) mode: Mode,
    pub(super) product: u32,
    pub(super) hw_version: u32,
    pub(super) mhz: u32,
    pub(super) bios_uuid: [u8; 16],
    pub(super) clock: Clock,
    pub(super) max_time_lag: u32,
    pub(super) tsc_hz: Option<u64>,
    pub(super) apic_hz: u32,
    pub(super) vcpu_info: u32,
    pub(super) hb: bool,
    pub(super) cookies: bool,
    pub(super) channels: usize,
    pub(super) cpt_every: u64,
    pub(super) privileged_only: BTreeSet<Vec<u8>>,
    /// `None`: offered exactly when a command requires the privileged channel.
    pub(super) vsock: Option<bool>,
    pub(super) vsock_resets: u64,
    pub(super) vsock_faults: Vec<(u64, super::vsock::VsockFault)>,
    pub(super) empty_guestinfo_values: bool,
    pub(super) endless_dorecv: bool,
    pub(super) seed: Seed,
    pub(super) machine_id: Vec<u8>,
    pub(super) guest_api: Option<super::guestlib::GuestApi>,
    pub(super) removable_devices: Vec<(Vec<u8>, bool)>,
    pub(super) trace: bool,
    pub(super) guestinfo: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(super) tclo: VecDeque<super::tclo::Entry>,
    pub(super) heartbeat: std::time::Duration,
    pub(super) manual_clock: bool,
    pub(super) faults: Vec<Fault>,
    pub(crate) iopl: IoplPolicy,
    pub(crate) vmware_cpuid: bool,
    pub(crate) forward_signals: bool,
    allow_power_ops: bool,
    /// CPUID leaf 0x40000010 ECX: the hypercalls advertised ([`Hypercall::cpuid_bit`]).
    pub(super) hypercalls: u32,
    pub(super) sev_es: bool,
    pub(super) tdx: bool,
}

impl core::fmt::Debug for HostConfig {
    /// The settings, with the guestinfo store and the TCLO queue summarized (values may be
    /// megabytes) and the cookie seed hidden.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let values: usize = self.guestinfo.values().map(Vec::len).sum();
        f.debug_struct("HostConfig")
            .field("mode", &self.mode)
            .field("product", &self.product)
            .field("hb", &self.hb)
            .field("cookies", &self.cookies)
            .field("channels", &self.channels)
            .field("cpt_every", &self.cpt_every)
            .field("privileged_only", &self.privileged_only)
            .field("vsock", &self.vsock_offered())
            .field("vsock_resets", &self.vsock_resets)
            .field("vsock_faults", &self.vsock_faults)
            .field("empty_guestinfo_values", &self.empty_guestinfo_values)
            .field("endless_dorecv", &self.endless_dorecv)
            .field("seed", &self.seed)
            .field(
                "guestinfo",
                &format_args!("{} keys, {values} value bytes", self.guestinfo.len()),
            )
            .field("tclo", &format_args!("{} commands", self.tclo.len()))
            .field("faults", &self.faults)
            .field("iopl", &self.iopl)
            .field("vmware_cpuid", &self.vmware_cpuid)
            .field("forward_signals", &self.forward_signals)
            .field("allow_power_ops", &self.allow_power_ops)
            .field("hypercalls", &format_args!("{:#x}", self.hypercalls))
            .field("sev_es", &self.sev_es)
            .field("tdx", &self.tdx)
            .finish_non_exhaustive()
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            mode: Mode::Vmware,
            product: product::ESX,
            hw_version: 21,
            mhz: 2_400,
            bios_uuid: [
                0x56, 0x4d, 0x5a, 0x1e, 0x6b, 0x2c, 0x4f, 0x0d, 0x9a, 0x43, 0x7e, 0x11, 0x20, 0x3c,
                0x58, 0x65,
            ],
            clock: Clock::Fixed {
                secs: DEFAULT_TIME_SECS,
                micros: 0,
            },
            max_time_lag: 0,
            tsc_hz: Some(2_400_000_000),
            apic_hz: 66_000_000,
            vcpu_info: (1 << 1) | (1 << 3),
            hb: true,
            cookies: true,
            channels: MAX_CHANNELS,
            cpt_every: 0,
            privileged_only: BTreeSet::new(),
            vsock: None,
            vsock_resets: 0,
            vsock_faults: Vec::new(),
            empty_guestinfo_values: false,
            endless_dorecv: false,
            seed: Seed(DEFAULT_SEED),
            machine_id: Vec::new(),
            guest_api: Some(super::guestlib::GuestApi::new()),
            removable_devices: Vec::new(),
            trace: false,
            guestinfo: BTreeMap::new(),
            tclo: VecDeque::new(),
            heartbeat: super::tclo::DEFAULT_HEARTBEAT,
            manual_clock: false,
            faults: Vec::new(),
            iopl: IoplPolicy::Credentials,
            vmware_cpuid: false,
            forward_signals: false,
            allow_power_ops: false,
            hypercalls: 0,
            sev_es: false,
            tdx: false,
        }
    }
}

impl HostConfig {
    /// Sets a guestinfo entry, as `govc vm.change -e guestinfo.KEY=VALUE` does on a real VM.
    ///
    /// `key` may be given with or without the `guestinfo.` prefix; it is stored with it, in
    /// lower case: like VMware's configuration keys, guestinfo keys match in any case.
    /// The value is arbitrary bytes of any size: host-to-guest replies have no size cap.
    pub fn guestinfo(mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let key = key.as_ref();
        let key = key.to_ascii_lowercase();
        let full = if key.starts_with(GUESTINFO_PREFIX) {
            key
        } else {
            [GUESTINFO_PREFIX, &key].concat()
        };
        self.guestinfo.insert(full, value.as_ref().to_vec());
        self
    }

    /// Whether the host offers high-bandwidth transfers (default: yes). Without them
    /// SENDSIZE and RECVSIZE never report the HB status bit, and calls on the high-bandwidth
    /// port answer status 0.
    pub fn hb(mut self, on: bool) -> Self {
        self.hb = on;
        self
    }

    /// A host without high-bandwidth transfers: `hb(false)`.
    pub fn no_hb(self) -> Self {
        self.hb(false)
    }

    /// Whether the host offers channel cookies (default: yes). An old host without them
    /// fails an OPEN with the cookie flag (status 0) and opens one without it with zero
    /// cookies.
    pub fn cookies(mut self, on: bool) -> Self {
        self.cookies = on;
        self
    }

    /// An old host without channel cookies: `cookies(false)`.
    pub fn no_cookies(self) -> Self {
        self.cookies(false)
    }

    /// How many channels may be open at once (default 128, hosts before 2022 had 8).
    /// OPEN fails when all are taken. Values above 65,536 (ids are 16-bit) are clamped.
    pub fn channels(mut self, n: usize) -> Self {
        self.channels = n.min(1 << 16);
        self
    }

    /// The product GETVERSION reports in ECX (default [`Product::EsxServer`]).
    pub fn product(mut self, p: Product) -> Self {
        self.product = p.raw();
        self
    }

    /// How the guest's kernel answers `iopl`/`ioperm` (default [`IoplPolicy::Credentials`]:
    /// what the guest thread's real credentials would get). The runner answers them
    /// virtually; the guest's real I/O privilege never changes.
    pub fn iopl(mut self, policy: IoplPolicy) -> Self {
        self.iopl = policy;
        self
    }

    /// Whether the guest's CPUID shows a VMware VM (default: no). Needs a CPU with CPUID
    /// faulting; never applies in [`Mode::NotVmware`].
    ///
    /// With it, leaf 1 has the hypervisor bit, leaf 0x40000000 names `VMwareVMware` and leaf
    /// 0x40000010 offers the hypercalls [`HostConfig::hypercall`] asked for (none by
    /// default, so guests use the I/O ports), so CPUID-based checks (`is_vmware_cpu()`,
    /// `vmware-checkvm`, `vmware-rpctool`) pass; every other leaf is the real CPU's (but
    /// [`HostConfig::tdx`]'s). Without CPUID faulting (older CPUs, some hypervisors) CPUID
    /// stays the real one whatever this says.
    ///
    /// The cost is not the CPUID traps but the context switches: the kernel rewrites a
    /// model-specific register whenever it switches to or from a task with CPUID faulting,
    /// and inside a virtual machine each such write exits to the hypervisor. Measured inside
    /// a KVM guest, every backdoor call became about 4x slower; hence off by default.
    pub fn vmware_cpuid(mut self, on: bool) -> Self {
        self.vmware_cpuid = on;
        self
    }

    /// Whether SIGINT, SIGTERM, SIGHUP and SIGQUIT stop ending this process while a guest
    /// runs (default: no): one sent to it by another process (`kill`, a supervisor) is passed
    /// on to the guest, one the kernel sent to the whole process group (a terminal's Ctrl-C)
    /// reached the guest already. Either way the run goes on until the guest exits, so its
    /// own clean-up runs and the caller still gets the host's records. For tools that run one
    /// guest at a time (`vmw-sim` turns it on); only one run at a time can do this.
    pub fn forward_signals(mut self, on: bool) -> Self {
        self.forward_signals = on;
        self
    }

    /// Whether power operations may be queued as TCLO commands (default: no). `OS_Halt`,
    /// `OS_Reboot`, `OS_PowerOn`, `OS_Resume` and `OS_Suspend` make a real tools daemon
    /// (vmtoolsd) run its power scripts or shut down — and under the simulator that is the
    /// machine running it. Without this, [`HostConfig::run`] and
    /// [`HostConfig::run_command`] refuse a configuration that queues one.
    pub fn allow_power_ops(mut self, allow: bool) -> Self {
        self.allow_power_ops = allow;
        self
    }

    /// Whether a TCLO command is a power operation ([`allow_power_ops`](Self::allow_power_ops)).
    #[must_use]
    pub fn is_power_op(command: &[u8]) -> bool {
        const POWER_OPS: [&[u8]; 5] = [
            b"OS_Halt",
            b"OS_Reboot",
            b"OS_PowerOn",
            b"OS_Resume",
            b"OS_Suspend",
        ];
        let word = command.split(|&b| b == b' ').next().unwrap_or_default();
        POWER_OPS.contains(&word)
    }

    /// The refusal [`allow_power_ops`](Self::allow_power_ops) describes.
    pub(crate) fn check_power_ops(&self) -> std::io::Result<()> {
        let queued = self.tclo.iter().find_map(|e| match e {
            super::tclo::Entry::Command(c) if Self::is_power_op(c) => Some(c),
            _ => None,
        });
        match queued {
            Some(c) if !self.allow_power_ops => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the TCLO command {} is a power operation, refused unless allowed \
                     (HostConfig::allow_power_ops): a real tools daemon would act on it, on this \
                     machine",
                    String::from_utf8_lossy(c)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// What machine the guest runs on ([`Mode`]; default VMware).
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }

    /// Advertises hypercall `h` in CPUID leaf 0x40000010 ECX, as a VMware host that takes it
    /// does; call it twice to advertise both. Seen by the guest only with
    /// [`HostConfig::vmware_cpuid`] on a CPU with CPUID faulting: without it, a guest must be
    /// told the transport (`BackdoorGuard::set_transport`).
    ///
    /// The model answers both instructions whatever is advertised (on [`Mode::Vmware`], and
    /// with I/O privilege on [`Mode::RestrictBackdoor`]), and counts them apart from the port
    /// calls ([`Counters::vmcall_calls`](super::Counters::vmcall_calls),
    /// [`vmmcall_calls`](super::Counters::vmmcall_calls)). Only where the CPU hands the
    /// instruction to the process as a fault can the runner serve it: inside a KVM guest on
    /// Intel, KVM answers a ring-3 `vmcall` itself (RAX = -1), on AMD a ring-3 `vmmcall`.
    pub fn hypercall(mut self, h: Hypercall) -> Self {
        self.hypercalls |= h.cpuid_bit();
        self
    }

    /// Models an AMD SEV-ES (or SEV-SNP) guest of a VMware host (default: no): memory and
    /// register state are encrypted, so the host sees only what the guest's kernel forwards.
    ///
    /// - The ports lose every register but EAX: an unprivileged `in` faults (#GP, SIGSEGV: the
    ///   host cannot emulate it), a privileged one reaches the host through the kernel's
    ///   #VC handler with EAX = 0 and nothing else, so it reads 0xFFFFFFFF and changes no
    ///   other register; `out` and `rep outsb`/`rep insb` are plain I/O the backdoor never
    ///   sees (an empty port). A guest that uses the ports fails as on such a VM.
    /// - `vmmcall` carries all registers (Linux copies them through the GHCB for VMware):
    ///   low-bandwidth calls work; high-bandwidth ones answer status 0 (failure) in EBX and
    ///   move nothing, since the host cannot read or write the guest's memory. The HB status
    ///   bit still follows [`HostConfig::hb`], so a guest that trusts it fails.
    /// - `vmcall` raises #UD on AMD: it faults.
    ///
    /// In memory ([`super::Host`] as a `Backdoor`) calls arrive as `vmmcall` delivers them,
    /// and `high_bandwidth()` is false. Never applies in [`Mode::NotVmware`]. The guest
    /// library learns of SEV-ES only from the kernel (sysfs), which the runner does not fake:
    /// tell it with `Transport::VMMCALL.low_bandwidth_only()`.
    pub fn sev_es(mut self, on: bool) -> Self {
        self.sev_es = on;
        self
    }

    /// Models an Intel TDX guest of a VMware host (default: no): no backdoor access from
    /// ring 3 reaches the host (a port access or hypercall is a #VE the guest's kernel
    /// answers with SIGSEGV), and, with [`HostConfig::vmware_cpuid`], CPUID leaf 0x21 spells
    /// `IntelTDX    ` (the maximum basic leaf raised to 0x21 if lower), as the TDX module
    /// shows it.
    pub fn tdx(mut self, on: bool) -> Self {
        self.tdx = on;
        self
    }

    /// Injects a checkpoint at every `n`-th payload step (SENDPAYLOAD, high-bandwidth out,
    /// RECVPAYLOAD, high-bandwidth in, RECVSTATUS) counted over the whole host; 0 turns it off.
    ///
    /// The step answers status CPT and cancels the operation as [`Answer::Cpt`] describes.
    /// Each operation is cut at most once, so a guest that retries always gets through, even
    /// when a message needs more than `n` steps (a real checkpoint is rare, not periodic).
    pub fn cpt_every(mut self, n: u64) -> Self {
        self.cpt_every = n;
        self
    }

    /// Models a VMX with `guest_rpc.rpci.auth.cmd.info-get/info-set = "TRUE"`: both commands
    /// answer `0 Permission denied` over the backdoor (and over an unprivileged vsock
    /// connection): `require_privileged("info-get").require_privileged("info-set")`.
    pub fn deny_guestinfo(self) -> Self {
        self.require_privileged("info-get")
            .require_privileged("info-set")
    }

    /// Models a VMX with `guest_rpc.rpci.auth.cmd.COMMAND = "TRUE"` (repeatable): the RPCI
    /// command `command` (the request's first word, compared byte for byte) is served only
    /// on the privileged channel, a vsock connection from a source port below 1024. The
    /// backdoor and an unprivileged vsock connection answer it `0 Permission denied`, even
    /// for root, as VMware hosts do; the request is still counted and logged.
    ///
    /// Unless [`HostConfig::vsock`] says otherwise, a host with such a command offers the
    /// vsock channel: a VMX that requires it has it.
    pub fn require_privileged(mut self, command: impl AsRef<[u8]>) -> Self {
        self.privileged_only.insert(command.as_ref().to_vec());
        self
    }

    /// Whether the host offers RPCI over vsock (default: only when a command
    /// [requires the privileged channel](Self::require_privileged)). The runner then serves a
    /// guest's `AF_VSOCK` sockets: `socket`, `bind`, `connect`, `getsockname`,
    /// `getpeername`, the `AF_VSOCK`-level socket options and `/dev/vsock`'s local-CID
    /// `ioctl` are answered as a Linux guest of a VMware host with `vmw_vsock_vmci_transport`
    /// sees them, and a connection to CID 0 or 2, port 976, reaches the host's end, which
    /// speaks DataMap (`{TYPE: 1, PAYLOAD: command[, FAST_CLOSE: 1]}`, replied
    /// `{TYPE: 1, PAYLOAD: "1 …"|"0 …"}`) to the same host model as the backdoor. A source
    /// port below 1024 (binding one needs `CAP_NET_BIND_SERVICE` in the guest thread's
    /// effective set, else EACCES) makes the connection privileged.
    ///
    /// Without it, `socket(AF_VSOCK, …)` fails with `EAFNOSUPPORT`, as on a kernel without
    /// vsock support, and nothing else changes: the guest never reaches this machine's own
    /// vsock. x86_64 only: on aarch64 vsock calls are not intercepted at all.
    pub fn vsock(mut self, on: bool) -> Self {
        self.vsock = Some(on);
        self
    }

    /// Whether the vsock channel is offered ([`HostConfig::vsock`]).
    pub(crate) fn vsock_offered(&self) -> bool {
        self.vsock.unwrap_or(!self.privileged_only.is_empty())
    }

    /// Resets the next `n` vsock connections to the host (counted from the first): each
    /// `connect` fails with `ECONNRESET`, as a VMX slow to release a port pair answers, and
    /// open-vm-tools moves on to the next source port (at most 8 times). Each is counted in
    /// [`Counters::faults_injected`](super::Counters::faults_injected).
    pub fn vsock_reset_connects(mut self, n: u64) -> Self {
        self.vsock_resets = n;
        self
    }

    /// Arms a one-shot fault on the host's vsock end: the `nth` RPC over vsock (counted from
    /// 1 over the whole host) is answered as `fault` describes instead of normally (the
    /// request is still executed). A fault aimed at an RPC that never comes, or `nth` = 0,
    /// never fires.
    pub fn vsock_fault(mut self, nth: u64, fault: super::vsock::VsockFault) -> Self {
        self.vsock_faults.push((nth, fault));
        self
    }

    /// Whether `info-set` stores an empty value (default: no, it answers `0 Two and exactly
    /// two arguments expected`). cloud-init and Ignition write a blank or a placeholder
    /// because VMware hosts do not store an empty value; turn this on to model a host that
    /// does.
    pub fn empty_guestinfo_values(mut self, accept: bool) -> Self {
        self.empty_guestinfo_values = accept;
        self
    }

    /// Queues a host-to-guest TCLO command (e.g. `reset`, `ping`, `OS_Halt`). Commands are
    /// delivered in order, one per RECVSIZE on a TCLO channel, each after the guest has sent
    /// its previous (possibly empty) message.
    pub fn tclo(mut self, command: impl AsRef<[u8]>) -> Self {
        self.tclo
            .push_back(super::tclo::Entry::Command(command.as_ref().to_vec()));
        self
    }

    /// Queues, in the TCLO script, a close of the guest's TCLO channel: where a command
    /// would be delivered next, the host drops the channel instead (RECVSIZE answers
    /// status CLOSED), as a VMX may across a checkpoint. The guest must reopen it; the
    /// script goes on on the new channel.
    pub fn tclo_close(mut self) -> Self {
        self.tclo.push_back(super::tclo::Entry::Close);
        self
    }

    /// Queues, in the TCLO script, a pause: after the previous reply the host delivers
    /// nothing for `duration` (host time: real, or [`HostConfig::manual_clock`]'s), so the
    /// guest polls an idle host, then the script goes on.
    pub fn tclo_wait(mut self, duration: std::time::Duration) -> Self {
        self.tclo.push_back(super::tclo::Entry::Wait(duration));
        self
    }

    /// How long the host waits for a TCLO poll before it calls the tools not running
    /// (default 20 s, as a VMX does); see [`super::Host::tools_running`].
    pub fn tools_heartbeat(mut self, timeout: std::time::Duration) -> Self {
        self.heartbeat = timeout;
        self
    }

    /// Runs the host's heartbeat clock by hand ([`super::Host::advance_clock`]) instead of
    /// real time, for deterministic in-memory tests.
    pub fn manual_clock(mut self) -> Self {
        self.manual_clock = true;
        self
    }

    /// Seeds the generator of channel cookies (default: a fixed seed, so runs repeat).
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = Seed(s);
        self
    }

    /// The virtual hardware version GETHWVERSION reports (default 21, ESXi 8.0 U2).
    pub fn hw_version(mut self, v: u32) -> Self {
        self.hw_version = v;
        self
    }

    /// The processor speed GETMHZ reports (default 2400).
    pub fn mhz(mut self, mhz: u32) -> Self {
        self.mhz = mhz;
        self
    }

    /// The BIOS UUID GETBIOSUUID reports, as 16 bytes in memory order (served as four
    /// little-endian dwords in EAX, EBX, ECX, EDX).
    pub fn bios_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.bios_uuid = uuid;
        self
    }

    /// Fixes the host time GETTIME and GETTIMEFULL report: seconds since the Unix epoch and
    /// microseconds (clamped to 999,999). The default is a fixed instant,
    /// 1,700,000,000 s, so tests are deterministic.
    pub fn time(mut self, secs: u64, micros: u32) -> Self {
        self.clock = Clock::Fixed {
            secs,
            micros: micros.min(999_999),
        };
        self
    }

    /// Makes GETTIME and GETTIMEFULL report the machine's wall clock instead of a fixed time.
    /// This is the only way the model ever consults the operating system.
    pub fn system_clock(mut self) -> Self {
        self.clock = Clock::System;
        self
    }

    /// The "maximum allowed time lag" GETTIME and GETTIMEFULL report in ECX (default 0).
    pub fn max_time_lag(mut self, lag: u32) -> Self {
        self.max_time_lag = lag;
        self
    }

    /// The TSC and APIC bus frequencies GETHZ reports, in Hz (defaults 2.4 GHz and 66 MHz).
    pub fn hz(mut self, tsc_hz: u64, apic_hz: u32) -> Self {
        self.tsc_hz = Some(tsc_hz);
        self.apic_hz = apic_hz;
        self
    }

    /// Models a host that cannot report frequencies: GETHZ sets EBX = 0xFFFFFFFF, the value
    /// guests read as "unsupported", and changes nothing else.
    pub fn no_gethz(mut self) -> Self {
        self.tsc_hz = None;
        self
    }

    /// The bits GET_VCPU_INFO reports in EAX (default bits 1 SYNC_VTSCS and 3
    /// LEGACY_X2APIC_OK). Bit 31 means "not implemented"; see [`HostConfig::no_vcpu_info`].
    pub fn vcpu_info(mut self, bits: u32) -> Self {
        self.vcpu_info = bits;
        self
    }

    /// Models a host without GET_VCPU_INFO: EAX = bit 31 ("not implemented").
    pub fn no_vcpu_info(mut self) -> Self {
        self.vcpu_info = 1 << 31;
        self
    }

    /// The VM's `machine.id` config value, served by the RPCI `machine.id.get` as
    /// `1 <id>` (default empty: `1 `).
    pub fn machine_id(mut self, id: impl AsRef<[u8]>) -> Self {
        self.machine_id = id.as_ref().to_vec();
        self
    }

    /// Sets a Guest API statistic (`guestlib.info.get`, what `vmware-toolbox-cmd stat`
    /// reads): `id` as open-vm-tools' `guestlibV3.x` numbers them (1..=38: 7 is the memory
    /// limit in MB, 12 the ballooned memory, 13 the swapped memory, …), reported valid with
    /// `value` (32-bit statistics take its low 32 bits). Ids outside 1..=38 and the two
    /// resource-pool strings (18, 37) are ignored. By default statistics 1, 2, 3, 5, 6, 7, 8,
    /// 12 and 13 are valid: no reservations, no limits (all ones), shares 1,000 and 10,240,
    /// the GETMHZ value, nothing ballooned or swapped.
    pub fn guest_stat(mut self, id: u32, value: u64) -> Self {
        if let Some(api) = &mut self.guest_api {
            if (1..=super::guestlib::STAT_COUNT).contains(&id) && id != 18 && id != 37 {
                api.stats.insert(id, value);
            }
        }
        self
    }

    /// The Guest API's session id (`vmware-toolbox-cmd stat sessionid`; changes on a real
    /// host when the VM migrates).
    pub fn guest_session_id(mut self, id: u64) -> Self {
        if let Some(api) = &mut self.guest_api {
            api.session_id = id;
        }
        self
    }

    /// Models a host without the Guest API: `guestlib.info.get` answers
    /// `0 Unknown command`, which `libguestlib` reports as "not enabled on the host".
    pub fn no_guest_api(mut self) -> Self {
        self.guest_api = None;
        self
    }

    /// Adds a removable device to the list backdoor command 11 (GETDEVICELISTELEMENT)
    /// walks, as `vmware-toolbox-cmd device list` shows it: its name (up to 31 bytes are
    /// kept) and whether it is connected. Ids count from 0 in the order added; command 12
    /// (TOGGLEDEVICE) connects or disconnects one. None by default.
    pub fn removable_device(mut self, name: impl AsRef<[u8]>, connected: bool) -> Self {
        let mut name = name.as_ref().to_vec();
        name.truncate(super::DEVICE_NAME_LEN - 1);
        self.removable_devices.push((name, connected));
        self
    }

    /// Writes each RPCI request with the host's reply, and each TCLO command with the
    /// guest's reply, to stderr as it happens, one line each (`vmw-sim: rpci: REQUEST ->
    /// REPLY`, escaped as [`super::Host::tclo_log`] is): what a refused command was refused
    /// with, while the guest runs. The only output the model writes itself.
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Arms a one-shot fault: the `nth` occurrence (counted from 1 over the whole host) of
    /// `step` gets `answer` instead of the normal one. Several faults may be armed; a fault
    /// aimed at an occurrence that already passed, or `nth` = 0, never fires.
    pub fn fault(mut self, step: Step, nth: u64, answer: Answer) -> Self {
        self.faults.push(Fault { step, nth, answer });
        self
    }

    /// Models a hostile host whose replies never go away: RECVSTATUS answers SUCCESS but the
    /// reply stays pending, so every RECVSIZE reports DORECV again. A guest must bound any
    /// "drain while DORECV" loop.
    pub fn endless_dorecv(mut self) -> Self {
        self.endless_dorecv = true;
        self
    }
}
