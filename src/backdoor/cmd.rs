//! Low-bandwidth backdoor commands with typed results, written against [`Backdoor`](crate::Backdoor).
//!
//! Each command is one LB call. Hosts differ in what they implement, and an unimplemented
//! command answers in a command-specific way (EAX = 0xFFFFFFFF, an input register left
//! untouched, a flag bit); each function below turns that into `None`.

use core::fmt;
use std::time::Duration;

use crate::proto::{cmd, hi16, lo32, pack, product, Regs, LB_PORT, MAGIC, NO_ANSWER};
use crate::{Backdoor, ErrorKind, VmwError};

/// The product family reported by the GETVERSION knock.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Product {
    /// An old host that does not report its product type.
    Unset,
    /// VMware Express (deprecated).
    Express,
    /// VMware ESX / ESXi; `vmware-checkvm -p` prints "ESX Server".
    EsxServer,
    /// VMware Server (deprecated).
    Server,
    /// VMware Workstation, Fusion or Player; `vmware-checkvm -p` prints "Workstation".
    Workstation,
    /// VMware ACE 1.x (deprecated).
    WorkstationEnterprise,
    /// A product number this crate does not know.
    Other(u32),
}

impl Product {
    /// The product for the number GETVERSION reported in ECX ([`Product::Other`] for a number
    /// this crate does not know).
    #[must_use]
    pub fn from_raw(raw: u32) -> Product {
        match raw {
            product::UNSET => Product::Unset,
            product::EXPRESS => Product::Express,
            product::ESX => Product::EsxServer,
            product::SERVER => Product::Server,
            product::WORKSTATION => Product::Workstation,
            product::WORKSTATION_ENTERPRISE => Product::WorkstationEnterprise,
            other => Product::Other(other),
        }
    }

    /// The number GETVERSION reports in ECX for this product.
    #[must_use]
    pub fn raw(self) -> u32 {
        match self {
            Product::Unset => product::UNSET,
            Product::Express => product::EXPRESS,
            Product::EsxServer => product::ESX,
            Product::Server => product::SERVER,
            Product::Workstation => product::WORKSTATION,
            Product::WorkstationEnterprise => product::WORKSTATION_ENTERPRISE,
            Product::Other(other) => other,
        }
    }

    /// A readable name for this product. `vmware-checkvm -p` prints the same for ESX Server
    /// and Workstation, and "Unknown" for every other product (these other names are the
    /// product types of open-vm-tools' `vm_vmx_type.h`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Product::Unset => "Unknown",
            Product::Express => "Express",
            Product::EsxServer => "ESX Server",
            Product::Server => "GSX Server",
            Product::Workstation => "Workstation",
            Product::WorkstationEnterprise => "Workstation Enterprise",
            Product::Other(_) => "Unknown",
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The answer to the GETVERSION knock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// The backdoor version; every VMware host so far reports
    /// [`VERSION_MAGIC`](crate::proto::VERSION_MAGIC) (6).
    pub version: u32,
    /// The product family of the host.
    pub product: Product,
}

impl Version {
    /// Whether the version is the one open-vm-tools accepts (6).
    #[must_use]
    pub fn is_compatible(&self) -> bool {
        self.version == crate::proto::VERSION_MAGIC
    }
}

/// The host's clock, from GETTIMEFULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostTime {
    /// Seconds since the Unix epoch.
    pub secs: u64,
    /// Microseconds within the second (below 1,000,000).
    pub micros: u32,
    /// The largest lag the host allows the guest clock plus the host's interrupt lag, in
    /// microseconds (ECX; open-vm-tools' time sync takes it as the error bound).
    pub max_lag_micros: u32,
}

impl HostTime {
    /// The host time as a duration since the Unix epoch.
    #[must_use]
    pub fn since_unix_epoch(&self) -> Duration {
        Duration::from_secs(self.secs).saturating_add(Duration::from_micros(self.micros.into()))
    }
}

/// Clock frequencies, from GETHZ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frequencies {
    /// Time-stamp counter frequency in Hz.
    pub tsc_hz: u64,
    /// APIC bus frequency in Hz.
    pub apic_bus_hz: u32,
}

/// vCPU feature bits, from GET_VCPU_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VcpuInfo(u32);

impl VcpuInfo {
    const SYNC_VTSCS: u32 = 1 << 1;
    const LEGACY_X2APIC_OK: u32 = 1 << 3;
    const MMIO_HONORS_PAT: u32 = 1 << 4;
    /// Set by hosts that do not implement the command.
    const RESERVED: u32 = 1 << 31;

    /// All bits as the host reported them.
    #[must_use]
    pub fn bits(self) -> u32 {
        self.0
    }
    /// The virtual TSCs of all vCPUs are synchronized.
    #[must_use]
    pub fn sync_vtscs(self) -> bool {
        self.0 & Self::SYNC_VTSCS != 0
    }
    /// The guest may use x2APIC in legacy mode.
    #[must_use]
    pub fn legacy_x2apic_ok(self) -> bool {
        self.0 & Self::LEGACY_X2APIC_OK != 0
    }
    /// MMIO honours the page attribute table.
    #[must_use]
    pub fn mmio_honors_pat(self) -> bool {
        self.0 & Self::MMIO_HONORS_PAT != 0
    }
}

/// The BIOS UUID of the virtual machine, from GETBIOSUUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BiosUuid(pub [u8; 16]);

impl fmt::Display for BiosUuid {
    /// The 16 bytes in order as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BiosUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BiosUuid({self})")
    }
}

/// One LB call of `command` (sub-command 0) with `bx` as argument; `None` when the host left
/// every register as it was sent (EAX still the magic, the inputs untouched), which is how
/// some hosts (QEMU's `vmport` among them) pass over a command they do not implement.
fn call<B: Backdoor + ?Sized>(t: &mut B, command: u16, bx: u32) -> Option<Regs> {
    let sent = Regs {
        ax: MAGIC.into(),
        bx: bx.into(),
        cx: command.into(),
        dx: LB_PORT.into(),
        ..Regs::default()
    };
    let mut r = sent;
    t.lb(&mut r);
    (!r.lb_unchanged_from(&sent)).then_some(r)
}

/// The registers the GETVERSION knock loads: EBX is anything but the magic (so an answer is
/// told from an echo), `hi16(ECX)` = 0xFFFF marks "product type not reported" on old hosts.
pub(crate) fn knock_regs() -> Regs {
    Regs {
        ax: MAGIC.into(),
        bx: (!MAGIC).into(),
        cx: pack(0xFFFF, cmd::GETVERSION),
        dx: LB_PORT.into(),
        ..Regs::default()
    }
}

/// Reads the registers after a knock: `None` unless the backdoor answered (EAX not
/// 0xFFFFFFFF and EBX = magic).
pub(crate) fn knock_answer(r: &Regs) -> Option<Version> {
    if lo32(r.ax) == NO_ANSWER || lo32(r.bx) != MAGIC {
        return None;
    }
    let product = if hi16(r.cx) == 0xFFFF {
        Product::Unset
    } else {
        Product::from_raw(lo32(r.cx))
    };
    Some(Version {
        version: lo32(r.ax),
        product,
    })
}

/// GETVERSION.
pub(crate) fn get_version<B: Backdoor + ?Sized>(t: &mut B) -> Result<Version, VmwError> {
    let mut r = knock_regs();
    t.lb(&mut r);
    knock_answer(&r).ok_or_else(|| {
        VmwError::new(
            ErrorKind::NotVmware,
            "the VMware backdoor stopped answering GETVERSION (EBX is not the magic)",
        )
    })
}

/// GETHWVERSION: the virtual hardware version.
pub(crate) fn hardware_version<B: Backdoor + ?Sized>(t: &mut B) -> Option<u32> {
    let r = call(t, cmd::GETHWVERSION, !MAGIC)?;
    (lo32(r.bx) == MAGIC && lo32(r.ax) != NO_ANSWER).then_some(lo32(r.ax))
}

/// GETMHZ: the processor speed.
pub(crate) fn cpu_mhz<B: Backdoor + ?Sized>(t: &mut B) -> Option<u32> {
    let mhz = lo32(call(t, cmd::GETMHZ, !MAGIC)?.ax);
    // An unimplemented command leaves the magic or answers all ones; open-vm-tools treats
    // anything not positive as failure.
    (mhz != MAGIC && (mhz as i32) > 0).then_some(mhz)
}

/// GETBIOSUUID: four little-endian dwords in EAX, EBX, ECX, EDX.
pub(crate) fn bios_uuid<B: Backdoor + ?Sized>(t: &mut B) -> Option<BiosUuid> {
    let r = call(t, cmd::GETBIOSUUID, !MAGIC)?;
    // Unimplemented on VMware: all ones in EAX and the other three registers as they went in.
    let untouched = lo32(r.bx) == !MAGIC
        && lo32(r.cx) == u32::from(cmd::GETBIOSUUID)
        && lo32(r.dx) == u32::from(LB_PORT);
    if lo32(r.ax) == NO_ANSWER && untouched {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (dst, reg) in uuid.chunks_exact_mut(4).zip([r.ax, r.bx, r.cx, r.dx]) {
        dst.copy_from_slice(&lo32(reg).to_le_bytes());
    }
    Some(BiosUuid(uuid))
}

/// GETTIMEFULL, else GETTIME, as open-vm-tools' time sync reads the host clock.
///
/// GETTIMEFULL succeeds by leaving the magic in EAX, with seconds in ESI:EDX; GETTIME (which
/// overflows in 2106) answers the seconds in EAX, all ones when it cannot. Both give
/// microseconds in EBX and the allowed lag plus interrupt lag in ECX. A time of 0 seconds
/// is no time (open-vm-tools treats it as invalid too).
pub(crate) fn host_time<B: Backdoor + ?Sized>(t: &mut B) -> Result<Option<HostTime>, VmwError> {
    let full = call(t, cmd::GETTIMEFULL, !MAGIC).filter(|r| lo32(r.ax) == MAGIC);
    let (r, secs) = match full {
        Some(r) => (r, u64::from(lo32(r.si)) << 32 | u64::from(lo32(r.dx))),
        None => match call(t, cmd::GETTIME, !MAGIC) {
            Some(r) if lo32(r.ax) != NO_ANSWER && lo32(r.ax) != MAGIC => (r, lo32(r.ax).into()),
            _ => return Ok(None),
        },
    };
    if secs == 0 {
        return Ok(None);
    }
    let time = HostTime {
        secs,
        micros: lo32(r.bx),
        max_lag_micros: lo32(r.cx),
    };
    if time.micros >= 1_000_000 {
        return Err(VmwError::new(
            ErrorKind::Protocol,
            format_args!(
                "the host time has {} microseconds, which is not below one second",
                time.micros
            ),
        ));
    }
    Ok(Some(time))
}

/// GETHZ: TSC Hz in EBX:EAX, APIC bus Hz in ECX; EBX still all ones means unsupported.
pub(crate) fn frequencies<B: Backdoor + ?Sized>(t: &mut B) -> Option<Frequencies> {
    let r = call(t, cmd::GETHZ, NO_ANSWER)?;
    let tsc_hz = u64::from(lo32(r.bx)) << 32 | u64::from(lo32(r.ax));
    (lo32(r.bx) != NO_ANSWER && tsc_hz != 0).then_some(Frequencies {
        tsc_hz,
        apic_bus_hz: lo32(r.cx),
    })
}

/// GET_VCPU_INFO: bit 31 set means not implemented.
pub(crate) fn vcpu_info<B: Backdoor + ?Sized>(t: &mut B) -> Option<VcpuInfo> {
    let bits = lo32(call(t, cmd::GET_VCPU_INFO, 0)?.ax);
    (bits & VcpuInfo::RESERVED == 0).then_some(VcpuInfo(bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::partial_hosts::{Nothing, Silent};

    /// A transport that answers every LB call with fixed registers.
    struct Fixed(Regs);
    impl crate::Backdoor for Fixed {
        fn lb(&mut self, regs: &mut Regs) {
            *regs = self.0;
        }
        fn hb_out(&mut self, _: &mut Regs, _: &[u8]) {}
        fn hb_in(&mut self, _: &mut Regs, _: &mut [u8]) {}
    }

    #[test]
    fn no_device_means_every_command_is_unsupported() {
        assert!(get_version(&mut Nothing).is_err());
        assert_eq!(hardware_version(&mut Nothing), None);
        assert_eq!(cpu_mhz(&mut Nothing), None);
        assert_eq!(bios_uuid(&mut Nothing), None);
        assert_eq!(host_time(&mut Nothing).unwrap(), None);
        assert_eq!(frequencies(&mut Nothing), None);
        assert_eq!(vcpu_info(&mut Nothing), None);
    }

    #[test]
    fn a_silent_host_implements_no_command() {
        assert!(get_version(&mut Silent).is_err());
        assert_eq!(hardware_version(&mut Silent), None);
        assert_eq!(cpu_mhz(&mut Silent), None);
        assert_eq!(bios_uuid(&mut Silent), None);
        assert_eq!(host_time(&mut Silent).unwrap(), None);
        assert_eq!(frequencies(&mut Silent), None);
        assert_eq!(vcpu_info(&mut Silent), None);
    }

    #[test]
    fn old_hosts_without_product_type_read_as_unset() {
        let mut r = knock_regs();
        r.ax = 6;
        r.bx = MAGIC.into();
        assert_eq!(knock_answer(&r).unwrap().product, Product::Unset);
        r.cx = 4;
        assert_eq!(knock_answer(&r).unwrap().product, Product::Workstation);
    }

    /// A host that answers GETTIME only (`ax` the seconds), leaving GETTIMEFULL unanswered.
    struct OldClock(u32);
    impl crate::Backdoor for OldClock {
        fn lb(&mut self, regs: &mut Regs) {
            if lo32(regs.cx) == u32::from(cmd::GETTIME) {
                *regs = Regs {
                    ax: self.0.into(),
                    bx: 7,
                    cx: 500,
                    ..*regs
                };
            } else {
                regs.ax = NO_ANSWER.into();
            }
        }
        fn hb_out(&mut self, _: &mut Regs, _: &[u8]) {}
        fn hb_in(&mut self, _: &mut Regs, _: &mut [u8]) {}
    }

    #[test]
    fn host_time_falls_back_to_gettime_and_zero_seconds_are_no_time() {
        let t = host_time(&mut OldClock(1_700_000_000)).unwrap().unwrap();
        assert_eq!(
            (t.secs, t.micros, t.max_lag_micros),
            (1_700_000_000, 7, 500)
        );
        assert_eq!(host_time(&mut OldClock(0)).unwrap(), None);
        assert_eq!(host_time(&mut OldClock(NO_ANSWER)).unwrap(), None);
        let mut zero = Fixed(Regs {
            ax: MAGIC.into(),
            ..Regs::default()
        });
        assert_eq!(
            host_time(&mut zero).unwrap(),
            None,
            "GETTIMEFULL at 0 seconds"
        );
    }

    #[test]
    fn host_time_rejects_microseconds_past_a_second() {
        let mut t = Fixed(Regs {
            ax: MAGIC.into(),
            bx: 1_000_000,
            dx: 1_700_000_000,
            ..Regs::default()
        });
        assert_eq!(host_time(&mut t).unwrap_err().kind(), ErrorKind::Protocol);
    }

    #[test]
    fn uuid_is_printed_in_byte_order() {
        let u = BiosUuid(*b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10");
        assert_eq!(u.to_string(), "01020304-0506-0708-090a-0b0c0d0e0f10");
    }
}
