//! Linux on x86: the knock in a `clone(CLONE_VM | CLONE_VFORK)` child, I/O privilege with
//! `ioperm` on the backdoor ports, else `iopl(3)`, and what the kernel says about memory
//! encryption (AMD SEV, SEV-ES, SEV-SNP).

use super::Privilege;
use crate::backdoor::transport::Protection;
use crate::proto::LB_PORT;
use crate::{ErrorKind, Transport, VmwError};

pub(crate) use super::clone_knock::knock;
pub(crate) use super::x86::{instructions, is_vmware_cpu, RawCalls};

/// The guest's protection: TDX from CPUID, else AMD's memory encryption as the kernel
/// reports it ([`sev`]).
pub(crate) fn protection() -> Protection {
    super::x86::protection(sev)
}

/// The transport this machine calls for.
pub(crate) fn detect_transport() -> Result<Transport, VmwError> {
    super::x86::detect(protection())
}

/// Where Linux tells user space that it runs as an AMD SEV guest, strongest first.
///
/// The authority is the SEV_STATUS MSR (0xC0010131: bit 0 SEV, bit 1 SEV-ES, bit 2 SEV-SNP),
/// which ring 3 cannot read; CPUID leaf 0x8000001F only says what the processor (or the
/// hypervisor's model of it) could do, and AMD and EDK2 tell guests not to read their own
/// state from it (EDK2's "Removing SEV-ES CPUID bit check", 2022; open-vm-tools'
/// `x86cpuid.h` marks the SEV and SEV-ES bits as shown to guests from hardware version 17
/// on). So only the kernel's word counts:
///
/// - `sev_status` (added in 2025: the MSR's value in hex, with or without `0x`), in the
///   SEV-SNP guest's sysfs directory, or in `/sys/hypervisor/sev` where a later revision of
///   the patch put it;
/// - that directory itself (added in 2024, `vmpl`), which exists only in an SEV-SNP guest;
/// - `/dev/sev-guest`, the SEV-SNP guest driver's device.
///
/// An SEV or SEV-ES guest without SNP, on any kernel, and an SNP guest on an older kernel
/// without the driver, are not recognised here; there the transport comes from CPUID
/// (a VMware host advertises VMMCALL, since the port cannot work), and
/// [`Transport::low_bandwidth_only`] is for the caller to choose.
const SEV_STATUS_FILES: [&str; 2] = [
    "/sys/devices/system/cpu/sev/sev_status",
    "/sys/hypervisor/sev/sev_status",
];
const SNP_ONLY_PATHS: [&str; 3] = [
    "/sys/devices/system/cpu/sev",
    "/sys/hypervisor/sev",
    "/dev/sev-guest",
];

/// AMD memory encryption, as the Linux kernel reports it to user space.
fn sev() -> Protection {
    for file in SEV_STATUS_FILES {
        if let Some(p) = std::fs::read(file).ok().and_then(|b| from_sev_status(&b)) {
            return p;
        }
    }
    if SNP_ONLY_PATHS
        .iter()
        .any(|p| std::path::Path::new(p).exists())
    {
        return Protection::EncryptedState;
    }
    Protection::None
}

/// Reads a `sev_status` file: the SEV_STATUS MSR in hex. `None` if it does not parse.
fn from_sev_status(text: &[u8]) -> Option<Protection> {
    let text = core::str::from_utf8(text).ok()?.trim();
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let msr = u64::from_str_radix(hex, 16).ok()?;
    /// SEV_STATUS bits: SEV (memory), SEV-ES (register state), SEV-SNP.
    const SEV: u64 = 1 << 0;
    const SEV_ES: u64 = 1 << 1;
    const SEV_SNP: u64 = 1 << 2;
    Some(if msr & (SEV_ES | SEV_SNP) != 0 {
        Protection::EncryptedState
    } else if msr & SEV != 0 {
        Protection::EncryptedMemory
    } else {
        Protection::None
    })
}

/// Every Linux x86 build can reach a backdoor.
pub(crate) fn supported() -> Result<(), VmwError> {
    Ok(())
}

/// A 32-bit `in` on 0x5658 touches ports 0x5658..=0x565B; that range covers 0x5659 too.
const PORTS: libc::c_ulong = 4;

fn ioperm(on: bool) -> Result<(), i32> {
    // SAFETY: ioperm only changes this thread's I/O permission bitmap; it takes plain
    // integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioperm,
            libc::c_ulong::from(LB_PORT),
            PORTS,
            libc::c_int::from(on),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno::errno().0)
    }
}

fn iopl(level: libc::c_int) -> Result<(), i32> {
    // SAFETY: iopl only changes this thread's I/O privilege level; plain integer argument.
    let rc = unsafe { libc::syscall(libc::SYS_iopl, level) };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno::errno().0)
    }
}

pub(crate) fn raise_io_privilege() -> Result<Privilege, VmwError> {
    match ioperm(true) {
        Ok(()) => return Ok(Privilege::Ioperm),
        Err(e) => {
            log::debug!("ioperm({LB_PORT:#x}, {PORTS}, 1) failed (errno {e}); trying iopl(3)")
        }
    }
    match iopl(3) {
        Ok(()) => Ok(Privilege::Iopl),
        Err(errno) => Err(refused(errno)),
    }
}

/// The error for a kernel that refused both `ioperm` and `iopl`.
fn refused(errno: i32) -> VmwError {
    const FALLBACK: &str = "use the unprivileged access (probe_backdoor), which works on VMware";
    let message = match errno {
        libc::ENOSYS => {
            format!("ioperm/iopl: ENOSYS — kernel built without CONFIG_X86_IOPL_IOPERM; {FALLBACK}")
        }
        libc::EPERM => format!(
            "ioperm/iopl: EPERM — raising I/O privilege needs CAP_SYS_RAWIO and a kernel \
             without lockdown; run as root without lockdown, or {FALLBACK}"
        ),
        _ => format!("ioperm/iopl failed; {FALLBACK}"),
    };
    VmwError::os(ErrorKind::Privilege, message, errno)
}

pub(crate) fn release_io_privilege(p: Privilege) -> Result<(), VmwError> {
    let (what, result) = match p {
        Privilege::None => return Ok(()),
        Privilege::Ioperm => ("ioperm(0x5658, 4, 0)", ioperm(false)),
        Privilege::Iopl => ("iopl(0)", iopl(0)),
    };
    result.map_err(|errno| {
        VmwError::os(
            ErrorKind::Privilege,
            format_args!("{what} failed: the thread keeps its I/O privilege"),
            errno,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sev_status_as_the_kernel_prints_it() {
        assert_eq!(from_sev_status(b"7\n"), Some(Protection::EncryptedState));
        assert_eq!(from_sev_status(b"0x3\n"), Some(Protection::EncryptedState));
        assert_eq!(from_sev_status(b"0x1"), Some(Protection::EncryptedMemory));
        assert_eq!(from_sev_status(b"0"), Some(Protection::None));
        assert_eq!(
            from_sev_status(b"0x10007"),
            Some(Protection::EncryptedState)
        );
        assert_eq!(from_sev_status(b"garbage"), None);
        assert_eq!(from_sev_status(b""), None);
        assert_eq!(from_sev_status(b"\xff"), None);
    }

    #[test]
    fn this_machine_is_no_sev_guest() {
        // The CI machines are not encrypted guests; a kernel that said otherwise would be
        // worth a look.
        if SNP_ONLY_PATHS
            .iter()
            .all(|p| !std::path::Path::new(p).exists())
        {
            assert_eq!(sev(), Protection::None);
        }
    }
}
