//! Backdoor access: I/O privilege, the detection knock, and the low-bandwidth commands.
//!
//! Everything starts with a [`BackdoorGuard`], obtained from one of four functions:
//!
//! | function | I/O privilege | knocks now |
//! |---|---|---|
//! | [`probe_backdoor`] | none (ring 3, which VMware allows by default) | yes |
//! | [`probe_backdoor_privileged`] | `ioperm` on 0x5658..=0x565B, else `iopl(3)` | yes |
//! | [`access_backdoor`] | none | on first use |
//! | [`access_backdoor_privileged`] | `ioperm`, else `iopl(3)` | on first use |
//!
//! The knock (GETVERSION) runs in a short-lived child process, so a machine that is not
//! VMware, or a VMware host that restricts ring-3 access, gives an
//! [`ErrorKind::NotVmware`] error instead of killing the caller
//! with SIGSEGV (SIGILL on arm64). Once the backdoor has answered, calls go straight to the
//! hypervisor.
//!
//! The calls travel by a [`Transport`]: the I/O ports, or the `vmcall`/`vmmcall` hypercalls
//! a VMware host advertises in CPUID, chosen at a guard's first knock
//! ([`Transport::detect`]) unless [`BackdoorGuard::set_transport`] chose one.
//!
//! On arm64 Linux the port calls are x86 I/O instructions described in X7 and trapped with
//! `mrs xzr, mdccsr_el0` ([`crate::proto::arm64`]), the only transport there; there is no
//! I/O privilege either, so the two privileged functions return [`ErrorKind::Unsupported`]
//! and `probe_backdoor_privileged().or_else(|_| probe_backdoor())` probes once, unprivileged.

mod access;
mod cmd;
mod platform;
pub(crate) mod transport;

pub(crate) use platform::vsock;

use core::marker::PhantomData;

use access::Access;
pub use cmd::{BiosUuid, Frequencies, HostTime, Product, VcpuInfo, Version};
use platform::{Knock, RawCalls};
pub use transport::{Transport, TransportKind};

use crate::proto::{Regs, HB_PORT, LB_PORT, MAGIC};
use crate::{ErrorKind, VmwError};

/// Something that answers the three backdoor calls: the seam between the protocol and the
/// machine.
///
/// The channel code ([`RpciChannel`](crate::RpciChannel)) and the typed commands are
/// written against this trait. Two things implement it: [`Instructions`], the real `in` /
/// `rep outsb` / `rep insb` that a [`BackdoorGuard`] lends once the backdoor answered, and,
/// with the `sim` feature, the simulator's in-memory VMware host (`sim::Host`), so guest code
/// can be tested in microseconds without a VM, a fork or `ptrace`.
///
/// The register contract is [`crate::proto`]'s, in the port form (`lo16(EDX)` the port)
/// whatever the transport: an implementation reads the registers the guest loaded from
/// `regs` and leaves in it what the guest reads back.
pub trait Backdoor {
    /// One low-bandwidth call: `in eax, dx` on port `lo16(EDX)` (0x5658), six registers in
    /// and out.
    fn lb(&mut self, regs: &mut Regs);
    /// One high-bandwidth guest-to-host transfer: `rep outsb` of `data` on port
    /// `lo16(EDX)` (0x5659). The caller fills EAX, EBX, EDX, EDI and EBP; the implementation
    /// sets ESI and ECX from `data`. The status comes back in `hi16(EBX)`.
    fn hb_out(&mut self, regs: &mut Regs, data: &[u8]);
    /// One high-bandwidth host-to-guest transfer: `rep insb` into `buf` on port
    /// `lo16(EDX)` (0x5659). The caller fills EAX, EBX, EDX, ESI and EBP; the implementation
    /// sets EDI and ECX from `buf`. The status comes back in `hi16(EBX)`.
    fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]);
    /// Whether high-bandwidth transfers may be made through this backdoor where the host
    /// offers them (the default: yes). When not, a channel moves every message by
    /// low-bandwidth calls, four bytes each, whatever the host's status bits say: the case of
    /// a guest whose memory the host cannot read (AMD SEV, SEV-ES, SEV-SNP;
    /// [`Transport::low_bandwidth_only`]).
    fn high_bandwidth(&self) -> bool {
        true
    }
}

impl<B: Backdoor + ?Sized> Backdoor for &mut B {
    fn lb(&mut self, regs: &mut Regs) {
        (**self).lb(regs);
    }
    fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        (**self).hb_out(regs, data);
    }
    fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        (**self).hb_in(regs, buf);
    }
    fn high_bandwidth(&self) -> bool {
        (**self).high_bandwidth()
    }
}

/// Where a channel gets its [`Backdoor`] for each operation.
///
/// A [`BackdoorGuard`] lends its [`Instructions`] only once the backdoor answered its access
/// (knocking first, contained, when it has not), so this can fail; anything that is a
/// [`Backdoor`] itself, such as the simulator's in-memory host, lends itself.
pub trait BackdoorAccess {
    /// The backdoor lent for one operation.
    type Backdoor<'a>: Backdoor
    where
        Self: 'a;

    /// The backdoor, ready for calls.
    ///
    /// # Errors
    ///
    /// As [`BackdoorGuard::instructions`] for a guard; never for a plain [`Backdoor`].
    fn backdoor(&mut self) -> Result<Self::Backdoor<'_>, VmwError>;
}

impl<B: Backdoor> BackdoorAccess for B {
    type Backdoor<'a>
        = &'a mut B
    where
        B: 'a;

    fn backdoor(&mut self) -> Result<&mut B, VmwError> {
        Ok(self)
    }
}

impl BackdoorAccess for BackdoorGuard {
    type Backdoor<'a> = Instructions<'a>;

    fn backdoor(&mut self) -> Result<Instructions<'_>, VmwError> {
        self.instructions()
    }
}

impl BackdoorAccess for &mut BackdoorGuard {
    type Backdoor<'a>
        = Instructions<'a>
    where
        Self: 'a;

    fn backdoor(&mut self) -> Result<Instructions<'_>, VmwError> {
        self.instructions()
    }
}

/// Several users of one backdoor in a single thread (several channels on one in-memory
/// host, say): each call borrows the cell for its duration.
///
/// # Panics
///
/// As [`RefCell::borrow_mut`](core::cell::RefCell::borrow_mut), if the cell is borrowed
/// elsewhere during a call.
impl<B: Backdoor + ?Sized> Backdoor for &core::cell::RefCell<B> {
    fn lb(&mut self, regs: &mut Regs) {
        self.borrow_mut().lb(regs);
    }
    fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        self.borrow_mut().hb_out(regs, data);
    }
    fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        self.borrow_mut().hb_in(regs, buf);
    }
    fn high_bandwidth(&self) -> bool {
        self.borrow().high_bandwidth()
    }
}

/// The real backdoor instructions, lent by a [`BackdoorGuard`] whose access the backdoor
/// answered: the only way this crate runs them outside the contained knock.
///
/// Borrows the guard, so the I/O access the answer was given to outlives every call, and is
/// neither `Send` nor `Sync`: that access belongs to the guard's thread. The calls travel by
/// the guard's [`Transport`]. Every call goes to the backdoor: EAX is set to the magic and
/// `lo16(EDX)` to the backdoor port, whatever the caller put there, so no call can reach
/// another port (or fault on one); a hypercall transport then puts its flags there instead
/// (and a register the hypervisor left as sent reads as sent in the port form).
#[derive(Debug)]
pub struct Instructions<'g> {
    raw: RawCalls,
    _guard: PhantomData<&'g mut BackdoorGuard>,
}

/// Makes a call the backdoor's whatever `regs` held: the magic in EAX and the backdoor port
/// in `lo16(EDX)`. Another port, or the backdoor port without the magic, is an ordinary port
/// access, which faults in ring 3 (and reaches real hardware with `iopl`); the answer the
/// guard was given holds only for the backdoor.
fn aim(regs: &mut Regs, port: u16) {
    regs.ax = MAGIC.into();
    regs.dx = (regs.dx & !0xFFFF) | u64::from(port);
}

impl Backdoor for Instructions<'_> {
    fn lb(&mut self, regs: &mut Regs) {
        aim(regs, LB_PORT);
        self.raw.lb(regs);
    }
    fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        aim(regs, HB_PORT);
        self.raw.hb_out(regs, data);
    }
    fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        aim(regs, HB_PORT);
        self.raw.hb_in(regs, buf);
    }
    fn high_bandwidth(&self) -> bool {
        self.raw.high_bandwidth()
    }
}

/// Takes I/O privilege for the calling thread, without knocking.
///
/// Tries `ioperm(0x5658, 4, 1)` (a 32-bit `in` on 0x5658 touches four ports; the range also
/// covers the high-bandwidth port 0x5659), then `iopl(3)`. The backdoor is knocked on, in a
/// contained child process, the first time the guard is used. Linux x86 only; needs
/// `CAP_SYS_RAWIO` and a kernel with `CONFIG_X86_IOPL_IOPERM` and without lockdown. (arm64
/// has no I/O privilege, and VMware answers its user space as it is: there this returns
/// [`ErrorKind::Unsupported`].)
///
/// I/O privilege matters to the port transport only: a hypercall (`vmcall`/`vmmcall`) needs
/// none. The privilege is taken whatever transport the guard ends up using (the choice is
/// made at its first knock), so where the transport is a hypercall this only adds the
/// capability requirement; the unprivileged [`access_backdoor`] is all that needs.
///
/// # Errors
///
/// [`ErrorKind::Privilege`] when the kernel refuses both calls (the errno is the source:
/// `EPERM` for missing capability or lockdown, `ENOSYS` for a kernel without the feature);
/// [`ErrorKind::Unsupported`] on other platforms. The unprivileged [`access_backdoor`] works
/// on VMware in either case.
pub fn access_backdoor_privileged() -> Result<BackdoorGuard, VmwError> {
    platform::supported()?;
    Ok(BackdoorGuard::new(Access::privileged()?))
}

/// Gets a guard for unprivileged (ring-3) backdoor access, without knocking.
///
/// VMware answers ring-3 backdoor calls unless the VM is configured to restrict them. The
/// first use of the guard knocks, contained, so no call on it can die of a signal.
///
/// # Errors
///
/// [`ErrorKind::Unsupported`] on targets without a backdoor (neither x86 nor Linux arm64).
pub fn access_backdoor() -> Result<BackdoorGuard, VmwError> {
    platform::supported()?;
    Ok(BackdoorGuard::new(Access::unprivileged()))
}

/// Takes I/O privilege (as [`access_backdoor_privileged`], which a hypercall transport does
/// not need) and checks that the VMware backdoor answers.
///
/// # Errors
///
/// Those of [`access_backdoor_privileged`], and [`ErrorKind::NotVmware`] when nothing
/// answers on the port. The privilege is given back before returning an error.
pub fn probe_backdoor_privileged() -> Result<BackdoorGuard, VmwError> {
    let mut guard = access_backdoor_privileged()?;
    guard.probe_vmware_backdoor()?;
    Ok(guard)
}

/// Checks, without privilege, that the VMware backdoor answers, and returns a guard for it.
///
/// # Errors
///
/// [`ErrorKind::NotVmware`] when this is not a VMware guest, or ring-3 backdoor access is
/// restricted (then try [`probe_backdoor_privileged`]); [`ErrorKind::Unsupported`] on targets
/// without a backdoor (neither x86 nor Linux arm64), and in an Intel TDX guest, where user
/// space cannot reach the backdoor ([`Transport::detect`]).
pub fn probe_backdoor() -> Result<BackdoorGuard, VmwError> {
    let mut guard = access_backdoor()?;
    guard.probe_vmware_backdoor()?;
    Ok(guard)
}

/// Whether the CPU says it runs under VMware: CPUID.1:ECX bit 31 (hypervisor present) and the
/// vendor signature `"VMwareVMware"` at leaf 0x40000000.
///
/// arm64 has no CPUID; on Linux arm64 this is whether the firmware's SMBIOS strings name
/// VMware: the product name, system, board or BIOS vendor in `/sys/class/dmi/id/` (readable
/// by every user) starting with `VMware` or `VMW`, the rule systemd's `detect_vm_dmi()`
/// applies. (open-vm-tools reads the ACPI FADT hypervisor vendor instead, which Linux shows
/// to root only.) Always `false` on other targets.
///
/// This is a hint, not proof in either direction: a hypervisor may hide or change its
/// signature while the backdoor still answers. [`probe_backdoor`] asks the backdoor itself,
/// safely.
#[must_use]
pub fn is_vmware_cpu() -> bool {
    platform::is_vmware_cpu()
}

/// Access to the VMware backdoor from the current thread.
///
/// Every backdoor operation goes through a guard: the low-bandwidth commands are methods
/// here, and an [`EnhancedChan`](crate::EnhancedChan) borrows the guard mutably for its
/// lifetime. A privileged guard
/// gives its I/O privilege back when dropped (or by [`release_access`](Self::release_access)).
///
/// # Threads
///
/// A guard is neither `Send` nor `Sync`. Linux grants I/O privilege (`ioperm`, `iopl`) to
/// one thread (and to threads and processes it creates while holding it), so a privileged
/// guard moved to another thread would issue port I/O the new thread may not do, and would
/// give back privilege on a thread that never had it. Create one guard per thread that needs
/// the backdoor; guards of one thread share its privilege, and the last one dropped gives it
/// back. An unprivileged guard first answered while the thread held privilege knocks again
/// once that privilege is given back, so where ring 3 is restricted it then reports
/// [`ErrorKind::NotVmware`] instead of faulting:
///
/// ```compile_fail
/// let guard = vmw_backdoor::access_backdoor().unwrap();
/// std::thread::spawn(move || drop(guard)); // error: `*mut ()` cannot be sent between threads
/// ```
#[derive(Debug)]
pub struct BackdoorGuard {
    /// The privilege held and whether the backdoor answered it; gives the privilege back
    /// when the guard drops.
    access: Access,
    /// The transport, once chosen (by [`Self::set_transport`], or at the first knock).
    transport: Option<Transport>,
    /// I/O privilege belongs to the thread that took it: neither `Send` nor `Sync`.
    _this_thread_only: PhantomData<*mut ()>,
}

impl BackdoorGuard {
    fn new(access: Access) -> BackdoorGuard {
        BackdoorGuard {
            access,
            transport: None,
            _this_thread_only: PhantomData,
        }
    }

    /// Makes this guard's calls travel by `transport` instead of the one
    /// [`Transport::detect`] would choose: for machines whose CPUID is masked or does not
    /// say what the host takes (an emulated or nested guest, say), or to force the ports as
    /// open-vm-tools' `Backdoor_ForceLegacy` does.
    ///
    /// The guard knocks again, contained, by the new transport before its next call, so a
    /// transport the machine does not take ends in [`ErrorKind::NotVmware`], not in a signal.
    /// Where the kernel reports that the host cannot read the guest's memory (AMD SEV,
    /// SEV-ES, SEV-SNP) high-bandwidth transfers stay off whatever `transport` says. In an
    /// Intel TDX guest the knock is tried as asked (for kernels that forward user-space
    /// hypercalls; mainline Linux ends it in SIGSEGV, contained, and logs an "Unexpected
    /// #VE").
    ///
    /// ```no_run
    /// # fn main() -> Result<(), vmw_backdoor::VmwError> {
    /// use vmw_backdoor::Transport;
    ///
    /// // An SEV-ES guest whose kernel does not say so: VMMCALL, low bandwidth only.
    /// let mut guard = vmw_backdoor::access_backdoor()?;
    /// guard.set_transport(Transport::VMMCALL.low_bandwidth_only());
    /// let mut chan = guard.open_enhanced_chan()?;
    /// let config = chan.get_guestinfo(b"ignition.config.data")?;
    /// # Ok(()) }
    /// ```
    pub fn set_transport(&mut self, transport: Transport) {
        let transport = transport::adjust(transport, platform::protection());
        if self.transport != Some(transport) {
            self.access.forget_answer();
        }
        self.transport = Some(transport);
    }

    /// The transport this guard's calls travel by: the one set with
    /// [`set_transport`](Self::set_transport), else the one [`Transport::detect`] chooses
    /// (the choice is made once, here or at the first knock, and kept).
    ///
    /// # Errors
    ///
    /// As [`Transport::detect`], when no transport was set: [`ErrorKind::Unsupported`] in an
    /// Intel TDX guest and on targets that are not x86.
    pub fn transport(&mut self) -> Result<Transport, VmwError> {
        match self.transport {
            Some(t) => Ok(t),
            None => {
                let t = Transport::detect()?;
                self.transport = Some(t);
                Ok(t)
            }
        }
    }

    /// Checks that the VMware backdoor answers (the GETVERSION knock, run in a contained
    /// child process).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when nothing answered or the access faulted.
    pub fn probe_vmware_backdoor(&mut self) -> Result<(), VmwError> {
        self.knock().map(drop)
    }

    /// Whether this guard holds I/O privilege (`ioperm` or `iopl`).
    #[must_use]
    pub fn is_privileged(&self) -> bool {
        self.access.is_privileged()
    }

    /// Gives back the I/O privilege this guard took, if any, and consumes it.
    ///
    /// On failure the guard comes back unchanged, still privileged; dropping it tries once
    /// more.
    pub fn release_access(mut self) -> Result<(), Self> {
        match self.access.release() {
            Ok(()) => Ok(()),
            Err(e) => {
                log::warn!("{e}");
                Err(self)
            }
        }
    }

    /// The backdoor version and the host's product family (GETVERSION).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer.
    pub fn get_version(&mut self) -> Result<Version, VmwError> {
        if !self.access.is_answered() {
            return self.knock();
        }
        cmd::get_version(&mut self.instructions()?)
    }

    /// The virtual hardware version of the VM (GETHWVERSION), or `None` if the host does
    /// not report it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer.
    pub fn hardware_version(&mut self) -> Result<Option<u32>, VmwError> {
        Ok(cmd::hardware_version(&mut self.instructions()?))
    }

    /// The processor speed in MHz (GETMHZ), or `None` if the host does not report it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer.
    pub fn cpu_mhz(&mut self) -> Result<Option<u32>, VmwError> {
        Ok(cmd::cpu_mhz(&mut self.instructions()?))
    }

    /// The VM's BIOS UUID (GETBIOSUUID), or `None` if the host does not implement it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer.
    pub fn bios_uuid(&mut self) -> Result<Option<BiosUuid>, VmwError> {
        Ok(cmd::bios_uuid(&mut self.instructions()?))
    }

    /// The host's clock: GETTIMEFULL, else the older GETTIME (as open-vm-tools reads it);
    /// `None` if the host implements neither or answers 0 seconds.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer;
    /// [`ErrorKind::Protocol`] when the answer is malformed.
    pub fn host_time(&mut self) -> Result<Option<HostTime>, VmwError> {
        cmd::host_time(&mut self.instructions()?)
    }

    /// The TSC and APIC bus frequencies (GETHZ), or `None` if the host does not report them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer.
    pub fn frequencies(&mut self) -> Result<Option<Frequencies>, VmwError> {
        Ok(cmd::frequencies(&mut self.instructions()?))
    }

    /// vCPU feature bits (GET_VCPU_INFO), or `None` if the host does not implement it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer.
    pub fn vcpu_info(&mut self) -> Result<Option<VcpuInfo>, VmwError> {
        Ok(cmd::vcpu_info(&mut self.instructions()?))
    }

    /// The real backdoor instructions, once the backdoor answered this guard's access
    /// (knocking first, contained, if it has not yet).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotVmware`] when the backdoor does not answer;
    /// [`ErrorKind::Unsupported`] on targets without a backdoor (neither x86 nor Linux arm64).
    pub fn instructions(&mut self) -> Result<Instructions<'_>, VmwError> {
        if !self.access.is_answered() {
            self.knock()?;
        }
        let transport = self.transport()?;
        // SAFETY: `is_answered` holds only after a knock by this guard's transport (which
        // changes only with a new knock: `set_transport`) with this guard's access was
        // answered, and only while the thread still holds that access. The `Instructions`
        // borrow the guard, which keeps the access until it drops, and are not `Send`.
        let raw = unsafe { platform::instructions(transport) }?;
        Ok(Instructions {
            raw,
            _guard: PhantomData,
        })
    }

    /// The GETVERSION knock by the guard's transport, contained; records the answer.
    fn knock(&mut self) -> Result<Version, VmwError> {
        let transport = self.transport()?;
        let version = match platform::knock(cmd::knock_regs(), transport.kind())? {
            Knock::Completed(r) => cmd::knock_answer(&r).ok_or_else(|| {
                VmwError::new(
                    ErrorKind::NotVmware,
                    format_args!(
                        "no VMware backdoor answered {}: not a VMware guest{}",
                        knock_by(transport),
                        if transport.is_hypercall() {
                            " (or one that does not take this hypercall)"
                        } else {
                            ""
                        }
                    ),
                )
            })?,
            Knock::Faulted(signal) => return Err(self.faulted(transport, signal)),
            Knock::Skipped => {
                return Err(VmwError::new(
                    ErrorKind::NotVmware,
                    format_args!(
                        "CPUID does not name VMware{}, and on this OS a faulting backdoor \
                         knock cannot be contained, so none was tried: not a VMware guest",
                        if transport.is_hypercall() {
                            " with this hypercall"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        };
        self.access.record_answer();
        Ok(version)
    }

    fn faulted(&self, transport: Transport, signal: Option<i32>) -> VmwError {
        let signal = signal.map_or(String::new(), |s| format!(" (signal {s})"));
        let what = knock_by(transport);
        let message = if transport.is_hypercall() {
            format!(
                "{what} faulted{signal}: not VMware, or a VMware host that \
                 does not take this hypercall from ring 3 (Transport::detect chooses what CPUID \
                 advertises)"
            )
        } else if self.is_privileged() {
            format!("backdoor access faulted{signal} despite I/O privilege: not a VMware guest")
        } else if cfg!(target_arch = "aarch64") {
            // No I/O privilege exists there to try (the privileged access is Unsupported).
            format!("backdoor trap faulted{signal}: not a VMware guest")
        } else {
            format!(
                "backdoor access faulted{signal}: not a VMware guest, or the VM restricts \
                 ring-3 backdoor access (monitor_control.restrict_backdoor), which then needs \
                 I/O privilege"
            )
        };
        VmwError::new(ErrorKind::NotVmware, message)
    }
}

/// How a message names the way a knock went.
fn knock_by(transport: Transport) -> &'static str {
    match transport.kind() {
        TransportKind::Port => "on port 0x5658",
        TransportKind::Vmcall => "the knock by VMCALL",
        TransportKind::Vmmcall => "the knock by VMMCALL",
    }
}
