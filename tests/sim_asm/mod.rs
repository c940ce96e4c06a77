//! Hand-written guest instructions for the simulator tests (deliberately not the library:
//! these tests check the simulator against the protocol, independently of the guest code).
//!
//! Each call loads all seven protocol registers from a frame, executes one backdoor
//! instruction, and stores all seven back. RBX and RBP cannot be asm operands, so they are
//! saved, loaded, stored and restored inside the block.
#![allow(dead_code)]

use std::arch::asm;

use vmw_backdoor::proto::Regs;

/// The registers in a fixed layout the asm can address.
#[repr(C)]
#[derive(Clone, Copy)]
struct Frame {
    ax: u64,
    bx: u64,
    cx: u64,
    dx: u64,
    si: u64,
    di: u64,
    bp: u64,
}

macro_rules! backdoor_fn {
    ($(#[$doc:meta])* $name:ident, $($insn:literal),+) => {
        $(#[$doc])*
        pub fn $name(r: &mut Regs) {
            let mut f = Frame { ax: r.ax, bx: r.bx, cx: r.cx, dx: r.dx, si: r.si, di: r.di, bp: r.bp };
            // SAFETY: the block saves and restores RBX, RBP and its own stack use; every other
            // register it writes is declared clobbered. Memory it touches through RSI/RDI
            // is what the caller pointed them at (a live buffer), or nothing for LB calls.
            unsafe {
                asm!(
                    "push rbx",
                    "push rbp",
                    "push r8",
                    "mov rax, [r8]",
                    "mov rbx, [r8 + 8]",
                    "mov rcx, [r8 + 16]",
                    "mov rdx, [r8 + 24]",
                    "mov rsi, [r8 + 32]",
                    "mov rdi, [r8 + 40]",
                    "mov rbp, [r8 + 48]",
                    $($insn,)+
                    "xchg rax, [rsp]",
                    "mov [rax + 8], rbx",
                    "mov [rax + 16], rcx",
                    "mov [rax + 24], rdx",
                    "mov [rax + 32], rsi",
                    "mov [rax + 40], rdi",
                    "mov [rax + 48], rbp",
                    "pop rcx",
                    "mov [rax], rcx",
                    "pop rbp",
                    "pop rbx",
                    in("r8") &mut f as *mut Frame,
                    out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
                );
            }
            *r = Regs { ax: f.ax, bx: f.bx, cx: f.cx, dx: f.dx, si: f.si, di: f.di, bp: f.bp };
        }
    };
}

backdoor_fn!(
    /// `in eax, dx`: the low-bandwidth call.
    lb_in,
    "in eax, dx"
);
backdoor_fn!(
    /// `out dx, eax`: the low-bandwidth call as the published 0.2.4 crate makes it.
    lb_out,
    "out dx, eax"
);
backdoor_fn!(
    /// `cld; rep outsb`: high-bandwidth guest-to-host (buffer at RSI, count in RCX).
    hb_out,
    "cld",
    "rep outsb"
);
backdoor_fn!(
    /// `cld; rep insb`: high-bandwidth host-to-guest (buffer at RDI, count in RCX).
    hb_in,
    "cld",
    "rep insb"
);
backdoor_fn!(
    /// `std; rep insb; cld`: the same, walking downwards from RDI (direction flag set).
    hb_in_down,
    "std",
    "rep insb",
    "cld"
);
backdoor_fn!(
    /// `std; rep outsb; cld`: guest-to-host walking downwards from RSI.
    hb_out_down,
    "std",
    "rep outsb",
    "cld"
);
backdoor_fn!(
    /// `vmmcall`: the AMD hypercall form (flags instead of a port in `lo16(EDX)`).
    vmmcall,
    "vmmcall"
);

/// The magic every call carries in EAX.
pub const MAGIC: u64 = 0x564D_5868;

/// A low-bandwidth call with the given command (ECX) and the rest zero but the port.
pub fn lb_cmd(ecx: u64, ebx: u64) -> Regs {
    let mut r = Regs {
        ax: MAGIC,
        bx: ebx,
        cx: ecx,
        dx: 0x5658,
        ..Regs::default()
    };
    lb_in(&mut r);
    r
}

/// Port words: `lo16(EDX)` of each kind of call.
pub const LB_PORT: u64 = 0x5658;
pub const HB_PORT: u64 = 0x5659;
/// Message-channel command and protocols.
pub const MESSAGE: u64 = 0x1e;
pub const RPCI: u64 = 0x4943_5052;
pub const TCLO: u64 = 0x4F4C_4354;
pub const COOKIE: u64 = 0x8000_0000;
/// Status words as the host answers them (`status << 16`).
pub const ST_OK: u64 = 0x1_0000;
pub const ST_OK_HB: u64 = 0x81_0000;
pub const ST_DORECV_HB: u64 = 0x83_0000;
pub const ST_DORECV: u64 = 0x3_0000;
pub const ST_CPT: u64 = 0x10_0000;

/// One open channel, as the guest sees it.
#[derive(Clone, Copy, Debug)]
pub struct Chan {
    pub id: u64,
    pub high: u64,
    pub low: u64,
}

impl Chan {
    /// OPEN with `ebx` (protocol | flags); the full answer registers.
    pub fn open_raw(ebx: u64) -> Regs {
        let mut r = Regs {
            ax: MAGIC,
            bx: ebx,
            cx: MESSAGE,
            dx: LB_PORT,
            ..Regs::default()
        };
        lb_in(&mut r);
        r
    }

    /// OPEN; `None` when the host refuses.
    pub fn open(ebx: u64) -> Option<Chan> {
        let r = Self::open_raw(ebx);
        (r.cx == ST_OK).then_some(Chan {
            id: r.dx >> 16,
            high: r.si,
            low: r.di,
        })
    }

    /// A low-bandwidth sub-command on this channel; returns all registers after it.
    pub fn lb(&self, sub: u64, ebx: u64) -> Regs {
        let mut r = Regs {
            ax: MAGIC,
            bx: ebx,
            cx: (sub << 16) | MESSAGE,
            dx: (self.id << 16) | LB_PORT,
            si: self.high,
            di: self.low,
            bp: 0,
        };
        lb_in(&mut r);
        r
    }

    /// `rep outsb` of `data` (send layout: ESI buffer, EDI cookie low, EBP cookie high).
    pub fn hb_send(&self, data: &[u8]) -> Regs {
        let mut r = Regs {
            ax: MAGIC,
            bx: ST_OK,
            cx: data.len() as u64,
            dx: (self.id << 16) | HB_PORT,
            si: data.as_ptr() as u64,
            di: self.low,
            bp: self.high,
        };
        hb_out(&mut r);
        r
    }

    /// `rep insb` into `buf` (receive layout: ESI cookie high, EDI buffer, EBP cookie low).
    pub fn hb_recv(&self, buf: &mut [u8]) -> Regs {
        let mut r = Regs {
            ax: MAGIC,
            bx: ST_OK,
            cx: buf.len() as u64,
            dx: (self.id << 16) | HB_PORT,
            si: self.high,
            di: buf.as_mut_ptr() as u64,
            bp: self.low,
        };
        hb_in(&mut r);
        r
    }

    /// Sends `msg` (HB when offered and `hb`, else 4-byte SENDPAYLOADs).
    pub fn send(&self, msg: &[u8], hb: bool) -> Result<(), String> {
        let r = self.lb(1, msg.len() as u64);
        if r.cx & ST_OK == 0 {
            return Err(format!("SENDSIZE: ecx={:#x}", r.cx));
        }
        if msg.is_empty() {
            return Ok(());
        }
        if hb && r.cx & (0x80 << 16) != 0 {
            let r = self.hb_send(msg);
            return if r.bx == ST_OK {
                Ok(())
            } else {
                Err(format!("HB out: ebx={:#x}", r.bx))
            };
        }
        for chunk in msg.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            let r = self.lb(2, u32::from_le_bytes(word).into());
            if r.cx != ST_OK {
                return Err(format!("SENDPAYLOAD: ecx={:#x}", r.cx));
            }
        }
        Ok(())
    }

    /// Receives the pending message (None when nothing is pending) and acknowledges it.
    pub fn recv(&self, hb: bool) -> Result<Option<Vec<u8>>, String> {
        let r = self.lb(3, 0);
        if r.cx & ST_OK == 0 {
            return Err(format!("RECVSIZE: ecx={:#x}", r.cx));
        }
        if r.cx & (2 << 16) == 0 {
            return Ok(None);
        }
        let len = r.bx as u32 as usize;
        let mut buf = vec![0u8; len];
        if hb && r.cx & (0x80 << 16) != 0 && len > 0 {
            let r = self.hb_recv(&mut buf);
            if r.bx != ST_OK {
                return Err(format!("HB in: ebx={:#x}", r.bx));
            }
        } else {
            for chunk in buf.chunks_mut(4) {
                let r = self.lb(4, 1);
                if r.cx != ST_OK {
                    return Err(format!("RECVPAYLOAD: ecx={:#x}", r.cx));
                }
                let n = chunk.len();
                chunk.copy_from_slice(&(r.bx as u32).to_le_bytes()[..n]);
            }
        }
        let r = self.lb(5, 1);
        if r.cx != ST_OK {
            return Err(format!("RECVSTATUS: ecx={:#x}", r.cx));
        }
        Ok(Some(buf))
    }

    /// CLOSE; the status word.
    pub fn close(&self) -> u64 {
        self.lb(6, 0).cx
    }
}

/// One RPCI request on a fresh cookie channel (cookie-less if the host refuses cookies).
pub fn rpc(request: &[u8], hb: bool) -> Result<Vec<u8>, String> {
    let ch = Chan::open(RPCI | COOKIE)
        .or_else(|| Chan::open(RPCI))
        .ok_or("OPEN failed")?;
    ch.send(request, hb)?;
    let reply = ch.recv(hb)?.ok_or("no reply")?;
    ch.close();
    Ok(reply)
}

/// `iopl(level)` through the raw system call; the errno on failure.
pub fn iopl(level: i32) -> Result<(), i32> {
    // SAFETY: a system call with an integer argument.
    let r = unsafe { libc::syscall(libc::SYS_iopl, level) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// `ioperm(from, num, on)` through the raw system call; the errno on failure.
pub fn ioperm(from: u64, num: u64, on: bool) -> Result<(), i32> {
    // SAFETY: a system call with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_ioperm, from, num, i32::from(on)) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Environment variable that turns a test binary into a guest program ([`guest_program`]).
pub const GUEST_ENV: &str = "VMW_SIM_TEST_GUEST";

/// This test binary as a guest program doing `actions` (see [`guest_program`]): it runs
/// only its ignored test `guest_program`, which must call [`guest_program`].
pub fn guest_command(actions: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "guest_program",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env(GUEST_ENV, actions);
    cmd
}

/// A small guest program driven by `VMW_SIM_TEST_GUEST`: `;`-separated actions, each
/// printing one line on stdout, then `exit(0)`:
/// `getversion` (prints `version V product P`, exits 10 unless V = 6), `rpc:REQ` /
/// `rpclb:REQ` (prints the reply; exits 11 on a protocol error), `tclo` (one TCLO poll:
/// prints `tclo COMMAND` or `tclo none`), `iopl:N` (prints `iopl: 0`
/// or `iopl: errno E`), `cpuid` (prints `hypervisor NAME`, exits 12 unless VMware),
/// `exit:N`, `segv` (a real segfault).
pub fn guest_program() {
    use std::io::Write;
    let Ok(actions) = std::env::var(GUEST_ENV) else {
        panic!("helper for other tests: run it through guest_command()");
    };
    let mut out = std::io::stdout();
    for action in actions.split(';') {
        let (verb, arg) = action.split_once(':').unwrap_or((action, ""));
        match verb {
            "getversion" => {
                let r = lb_cmd(10, 0);
                let _ = writeln!(out, "version {} product {}", r.ax, r.cx);
                if r.ax != 6 {
                    std::process::exit(10);
                }
            }
            "rpc" | "rpclb" => match rpc(arg.as_bytes(), verb == "rpc") {
                Ok(reply) => {
                    let _ = writeln!(out, "{}", String::from_utf8_lossy(&reply));
                }
                Err(e) => {
                    let _ = writeln!(out, "error {e}");
                    std::process::exit(11);
                }
            },
            "iopl" => {
                let r = iopl(arg.parse().unwrap_or(3));
                let _ = match r {
                    Ok(()) => writeln!(out, "iopl: 0"),
                    Err(e) => writeln!(out, "iopl: errno {e}"),
                };
            }
            "tclo" => {
                // One TCLO poll: announce ourselves, fetch a command, answer it.
                let ch = Chan::open(TCLO | COOKIE).unwrap_or_else(|| std::process::exit(11));
                let got = ch.send(b"", true).and_then(|()| ch.recv(true));
                let _ = match got {
                    Ok(Some(cmd)) => writeln!(out, "tclo {}", String::from_utf8_lossy(&cmd)),
                    Ok(None) => writeln!(out, "tclo none"),
                    Err(e) => writeln!(out, "error {e}"),
                };
                let _ = ch.send(b"OK ", true);
                ch.close();
            }
            "cpuid" => {
                let name = hypervisor_name();
                let _ = writeln!(out, "hypervisor {}", String::from_utf8_lossy(&name));
                if name != b"VMwareVMware" {
                    std::process::exit(12);
                }
            }
            "exit" => std::process::exit(arg.parse().unwrap_or(1)),
            "segv" => {
                // SAFETY: deliberately not safe: the point is a real SIGSEGV.
                unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            }
            other => panic!("unknown guest action {other}"),
        }
    }
    let _ = out.flush();
    std::process::exit(0);
}

/// The 12-byte hypervisor name CPUID leaf 0x40000000 reports.
pub fn hypervisor_name() -> Vec<u8> {
    let r = std::arch::x86_64::__cpuid(0x4000_0000);
    [r.ebx, r.ecx, r.edx]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// Whether this CPU and kernel can make CPUID fault (so the simulator can answer it).
pub fn cpuid_faulting() -> bool {
    // SAFETY: arch_prctl(ARCH_SET_CPUID) with integer arguments, undone at once; nothing
    // runs CPUID in between.
    unsafe {
        libc::syscall(libc::SYS_arch_prctl, 0x1012, 0) == 0
            && libc::syscall(libc::SYS_arch_prctl, 0x1012, 1) == 0
    }
}
