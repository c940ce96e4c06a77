//! What a guest under the runner does by hand: the backdoor instructions in asm of their
//! own (deliberately not the library's, so the simulator is checked independently of the
//! guest code), the privilege system calls, CPUID, and a small guest program.
//!
//! Each instruction form loads all seven protocol registers from a frame, executes one
//! instruction, and stores all seven back. RBX and RBP cannot be asm operands, so they are
//! saved, loaded, stored and restored inside the block. The string forms move memory at
//! RSI/RDI: the caller points them at a live buffer of RCX bytes.

use std::arch::asm;
use std::sync::atomic::{AtomicI32, Ordering};

use vmw_backdoor::sim::{GuestExit, HostConfig, Hypercall, Mode};

use super::reference::{self as rc, cmd, COOKIE, TCLO};
use super::{Backdoor, Regs};

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
    rep_outsb,
    "cld",
    "rep outsb"
);
backdoor_fn!(
    /// `cld; rep insb`: high-bandwidth host-to-guest (buffer at RDI, count in RCX).
    rep_insb,
    "cld",
    "rep insb"
);
backdoor_fn!(
    /// `std; rep insb; cld`: the same, walking downwards from RDI (direction flag set).
    rep_insb_down,
    "std",
    "rep insb",
    "cld"
);
backdoor_fn!(
    /// `std; rep outsb; cld`: guest-to-host walking downwards from RSI.
    rep_outsb_down,
    "std",
    "rep outsb",
    "cld"
);
backdoor_fn!(
    /// `vmcall`: the Intel hypercall form (flags instead of a port in `lo16(EDX)`).
    vmcall,
    "vmcall"
);
backdoor_fn!(
    /// `vmmcall`: the AMD hypercall form (flags instead of a port in `lo16(EDX)`).
    vmmcall,
    "vmmcall"
);

/// The three backdoor calls through the instructions above: a guest under the runner.
#[derive(Debug)]
pub struct HandAsm;

impl Backdoor for HandAsm {
    fn lb(&mut self, regs: &mut Regs) {
        lb_in(regs);
    }

    fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        regs.cx = data.len() as u64;
        regs.si = data.as_ptr() as u64;
        rep_outsb(regs);
    }

    fn hb_in(&mut self, regs: &mut Regs, buf: &mut [u8]) {
        regs.cx = buf.len() as u64;
        regs.di = buf.as_mut_ptr() as u64;
        rep_insb(regs);
    }
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
/// `exit:N`, `segv` (a real segfault), `await-signal:FILE` (prints `ready`, waits for
/// SIGINT or SIGTERM, writes its number to FILE, exits 7), `vsock:REQ` / `vsock-unpriv:REQ`
/// (one RPC over a privileged or unprivileged vsock connection, [`super::vsock`]: prints
/// `port P: REPLY`, or `vsock STEP errno E`, or `vsock no privilege`).
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
                let r = rc::lb(&mut HandAsm, cmd::GETVERSION, 0);
                let _ = writeln!(out, "version {} product {}", r.ax, r.cx);
                if r.ax != 6 {
                    std::process::exit(10);
                }
            }
            "rpc" | "rpclb" => match rc::rpc_once(&mut HandAsm, arg.as_bytes(), verb == "rpc") {
                Ok(reply) => {
                    let _ = writeln!(out, "{}", String::from_utf8_lossy(&reply));
                }
                Err(e) => {
                    let _ = writeln!(out, "error {e:?}");
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
                let b = &mut HandAsm;
                let ch = rc::open(b, TCLO | COOKIE).unwrap_or_else(|_| std::process::exit(11));
                let got = rc::send(b, ch, b"", true).and_then(|()| rc::recv(b, ch, true));
                let _ = match got {
                    Ok(Some(cmd)) => writeln!(out, "tclo {}", String::from_utf8_lossy(&cmd)),
                    Ok(None) => writeln!(out, "tclo none"),
                    Err(e) => writeln!(out, "error {e:?}"),
                };
                let _ = rc::send(b, ch, b"OK ", true);
                let _ = rc::close(b, ch);
            }
            "cpuid" => {
                let name = hypervisor_name();
                let _ = writeln!(out, "hypervisor {}", String::from_utf8_lossy(&name));
                if name != b"VMwareVMware" {
                    std::process::exit(12);
                }
            }
            "vsock" | "vsock-unpriv" => {
                use super::vsock::{self as vs, Connected};
                let _ = match vs::connect_rpci(vs::CID_HYPERVISOR, verb == "vsock") {
                    Connected::Port(fd, port) => match vs::rpc(&fd, arg.as_bytes(), true) {
                        Ok(reply) => {
                            writeln!(out, "port {port}: {}", String::from_utf8_lossy(&reply))
                        }
                        Err(e) => writeln!(out, "vsock reply {e:?}"),
                    },
                    Connected::NoPrivilege => writeln!(out, "vsock no privilege"),
                    Connected::Failed(step, e) => writeln!(out, "vsock {step} errno {e}"),
                };
            }
            "exit" => std::process::exit(arg.parse().unwrap_or(1)),
            "await-signal" => {
                // Prints `ready`, waits for SIGINT or SIGTERM, writes its number to the
                // file `arg` (its own clean-up) and exits 7.
                static GOT: AtomicI32 = AtomicI32::new(0);
                extern "C" fn note(sig: i32) {
                    GOT.store(sig, Ordering::SeqCst);
                }
                for sig in [libc::SIGINT, libc::SIGTERM] {
                    // SAFETY: installs a handler that only stores to an atomic.
                    unsafe { libc::signal(sig, note as extern "C" fn(i32) as libc::sighandler_t) };
                }
                let _ = writeln!(out, "ready");
                let _ = out.flush();
                while GOT.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                let _ = std::fs::write(arg, GOT.load(Ordering::SeqCst).to_string());
                std::process::exit(7);
            }
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

static TRAPPED: AtomicI32 = AtomicI32::new(0);

extern "C" fn skip_insn(_sig: i32, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    TRAPPED.store(1, Ordering::SeqCst);
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler; both hypercalls
    // are 3 bytes long.
    unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] += 3 };
}

/// One GETVERSION by `hc`, written out here (not the library's), for the probe.
fn raw_getversion(hc: Hypercall) {
    let mut ax: u64 = 0x564D_5868;
    // SAFETY: the instruction touches only the named registers (RBX is swapped with a scratch
    // register and back); where it faults, the probe's handler skips it.
    unsafe {
        match hc {
            Hypercall::Vmcall => std::arch::asm!(
                "xchg {b}, rbx", "vmcall", "xchg {b}, rbx",
                b = inout(reg) 0u64 => _, inout("rax") ax, inout("rcx") 10u64 => _,
                inout("rdx") 0u64 => _, lateout("rsi") _, lateout("rdi") _,
            ),
            Hypercall::Vmmcall => std::arch::asm!(
                "xchg {b}, rbx", "vmmcall", "xchg {b}, rbx",
                b = inout(reg) 0u64 => _, inout("rax") ax, inout("rcx") 10u64 => _,
                inout("rdx") 0u64 => _, lateout("rsi") _, lateout("rdi") _,
            ),
        }
    }
    std::hint::black_box(ax);
}

/// Whether this CPU hands `hc` from ring 3 to the process as a fault, which is what the
/// runner serves: probed on the simulator's bare-metal machine, which never serves one.
fn traps(hc: Hypercall) -> bool {
    let run = HostConfig::default()
        .mode(Mode::NotVmware)
        .run(move || {
            // SAFETY: installs a handler that only skips the 3-byte instruction.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = skip_insn as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
                libc::sigaction(libc::SIGILL, &sa, std::ptr::null_mut());
            }
            raw_getversion(hc);
            std::process::exit(TRAPPED.load(Ordering::SeqCst));
        })
        .expect("start the probe");
    run.exit == GuestExit::Exited(1)
}

/// The hypercalls the runner can serve on this machine; says which it cannot.
fn probe_trapping() -> Vec<Hypercall> {
    let mut out = Vec::new();
    for hc in [Hypercall::Vmcall, Hypercall::Vmmcall] {
        if traps(hc) {
            out.push(hc);
        } else {
            eprintln!(
                "{hc:?} does not trap on this CPU (the outer hypervisor answers it from ring 3): \
                 not tested here"
            );
        }
    }
    out
}

/// The hypercalls the runner can serve on this machine, probed once per test binary; says on
/// stderr which it cannot.
pub fn trapping_hypercalls() -> Vec<Hypercall> {
    static TRAPPING: std::sync::OnceLock<Vec<Hypercall>> = std::sync::OnceLock::new();
    TRAPPING.get_or_init(probe_trapping).clone()
}
