//! Virtual I/O privilege: what `iopl` and `ioperm` would have granted a guest thread, kept
//! by the runner instead of the kernel, with the kernel's argument checks and errors.

#![forbid(unsafe_code)]

use crate::sim::IoplPolicy;

/// Ports in the x86 I/O space (and bits in an I/O permission bitmap).
const PORTS: usize = 65_536;
const WORDS: usize = PORTS / 64;

/// The I/O privilege one guest thread holds. Copied to threads and processes it creates and
/// kept across `execve`, as the kernel does.
#[derive(Debug, Clone, Default)]
pub(crate) struct IoPrivilege {
    /// `iopl` level 0..=3; 3 grants every port.
    level: u8,
    /// The `ioperm` bitmap, one bit per port (set = allowed); allocated on first use.
    bitmap: Option<Box<[u64; WORDS]>>,
}

impl IoPrivilege {
    /// Whether an access of `width` bytes starting at `port` is allowed: every port it
    /// touches must be (a 32-bit `in` on 0x5658 touches 0x5658..=0x565b).
    pub(crate) fn allows(&self, port: u16, width: u8) -> bool {
        if self.level == 3 {
            return true;
        }
        let Some(map) = &self.bitmap else {
            return false;
        };
        (0..usize::from(width)).all(|k| {
            let p = usize::from(port) + k;
            // Past the last port the hardware bitmap reads as "denied".
            p < PORTS && map.get(p / 64).is_some_and(|w| w & (1 << (p % 64)) != 0)
        })
    }

    /// The `iopl(level)` system call (with the policy resolved: never `Credentials`); returns what the syscall returns (0 or -errno).
    pub(crate) fn iopl(&mut self, level: u32, policy: IoplPolicy) -> i64 {
        match policy {
            IoplPolicy::Enosys => return -i64::from(libc::ENOSYS),
            _ if level > 3 => return -i64::from(libc::EINVAL),
            // Raising needs CAP_SYS_RAWIO and no lockdown; lowering is always allowed.
            IoplPolicy::Eperm if level > u32::from(self.level) => return -i64::from(libc::EPERM),
            _ => {}
        }
        self.level = level as u8;
        0
    }

    /// The `ioperm(from, num, turn_on)` system call; returns 0 or -errno.
    pub(crate) fn ioperm(&mut self, from: u64, num: u64, turn_on: bool, policy: IoplPolicy) -> i64 {
        if policy == IoplPolicy::Enosys {
            return -i64::from(libc::ENOSYS);
        }
        // The kernel rejects an empty range, wrap-around and anything past the last port.
        let end = match from.checked_add(num) {
            Some(end) if end > from && end <= PORTS as u64 => end,
            _ => return -i64::from(libc::EINVAL),
        };
        if turn_on && policy == IoplPolicy::Eperm {
            return -i64::from(libc::EPERM);
        }
        if !turn_on && self.bitmap.is_none() {
            return 0;
        }
        let map = self.bitmap.get_or_insert_with(|| Box::new([0; WORDS]));
        for p in from as usize..end as usize {
            if let Some(w) = map.get_mut(p / 64) {
                if turn_on {
                    *w |= 1 << (p % 64);
                } else {
                    *w &= !(1 << (p % 64));
                }
            }
        }
        0
    }
}

/// Whether thread `tid` has `CAP_SYS_RAWIO` (bit 17) in its effective capabilities, as the
/// kernel checks for `iopl`/`ioperm`; false when that cannot be read.
pub(crate) fn has_sys_rawio(tid: libc::pid_t) -> bool {
    const CAP_SYS_RAWIO: u32 = 17;
    has_capability(tid, CAP_SYS_RAWIO)
}

/// Whether thread `tid` has capability number `cap` in its effective set (`CapEff` in
/// `/proc/<tid>/status`); false when that cannot be read.
pub(crate) fn has_capability(tid: libc::pid_t, cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| cap < 64 && caps & (1 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iopl_levels_and_errors() {
        let mut p = IoPrivilege::default();
        assert!(!p.allows(0x5658, 4));
        assert_eq!(p.iopl(4, IoplPolicy::Allow), -i64::from(libc::EINVAL));
        assert_eq!(p.iopl(3, IoplPolicy::Allow), 0);
        assert!(p.allows(0x5658, 4) && p.allows(0xffff, 1));
        assert_eq!(
            p.iopl(0, IoplPolicy::Eperm),
            0,
            "lowering needs no privilege"
        );
        assert!(!p.allows(0x5658, 1));
        assert_eq!(p.iopl(3, IoplPolicy::Eperm), -i64::from(libc::EPERM));
        assert_eq!(p.iopl(0, IoplPolicy::Enosys), -i64::from(libc::ENOSYS));
    }

    #[test]
    fn ioperm_ranges_and_width() {
        let mut p = IoPrivilege::default();
        assert_eq!(p.ioperm(0x5658, 2, true, IoplPolicy::Allow), 0);
        assert!(p.allows(0x5659, 1));
        assert!(p.allows(0x5658, 2));
        assert!(
            !p.allows(0x5658, 4),
            "a 32-bit in touches 0x565a and 0x565b too"
        );
        assert_eq!(p.ioperm(0x5658, 4, true, IoplPolicy::Allow), 0);
        assert!(p.allows(0x5658, 4));
        assert_eq!(
            p.ioperm(0x5659, 1, false, IoplPolicy::Eperm),
            0,
            "dropping needs no privilege"
        );
        assert!(!p.allows(0x5659, 1) && p.allows(0x5658, 1));
        assert_eq!(p.ioperm(0xffff, 1, true, IoplPolicy::Allow), 0);
        assert!(p.allows(0xffff, 1) && !p.allows(0xffff, 2));
    }

    #[test]
    fn ioperm_rejects_like_the_kernel() {
        let mut p = IoPrivilege::default();
        let einval = -i64::from(libc::EINVAL);
        assert_eq!(p.ioperm(0, 0, true, IoplPolicy::Allow), einval);
        assert_eq!(p.ioperm(0xffff, 2, true, IoplPolicy::Allow), einval);
        assert_eq!(p.ioperm(u64::MAX, 2, true, IoplPolicy::Allow), einval);
        assert_eq!(p.ioperm(0, 65_536, true, IoplPolicy::Allow), 0);
        assert_eq!(
            p.ioperm(0x5658, 2, true, IoplPolicy::Eperm),
            -i64::from(libc::EPERM)
        );
        assert_eq!(
            p.ioperm(0x5658, 2, true, IoplPolicy::Enosys),
            -i64::from(libc::ENOSYS)
        );
        assert_eq!(
            p.ioperm(0, 0, true, IoplPolicy::Enosys),
            -i64::from(libc::ENOSYS)
        );
    }
}
