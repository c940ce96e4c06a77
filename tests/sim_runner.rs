//! The trap-and-emulate runner: virtual I/O privilege, machine modes, signals, processes,
//! threads, exec, group-stops and hypercalls, with hand-written guest instructions.
#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::arch::asm;
use std::sync::atomic::{AtomicI32, Ordering};

use support::guest::*;
use support::reference::{self as rc, cmd, st, status, Chan, HB_OK, HB_PORT, LB_PORT, MAGIC};
use support::reference::{COOKIE, RPCI};
use vmw_backdoor::proto::Regs;
use vmw_backdoor::sim::{GuestExit, HostConfig, Hypercall, IoplPolicy, Mode, SimRun};
use vmw_backdoor::Backdoor;

const EINVAL: i32 = libc::EINVAL;
const SIGSEGV: i32 = libc::SIGSEGV;

/// Not a test: the guest program other tests run (see `support::guest::guest_program`).
#[test]
#[ignore = "helper: run by other tests as a guest program"]
fn guest_program() {
    support::guest::guest_program();
}

fn sim(config: HostConfig, guest: impl FnOnce()) -> SimRun {
    config.run(guest).expect("start the guest")
}

fn ok(run: &SimRun) {
    assert!(run.exit.success(), "guest {}", run.exit);
}

/// GETVERSION's EAX, or the guest dies trying.
fn getversion() -> u64 {
    rc::lb(&mut HandAsm, cmd::GETVERSION, 0).ax
}

#[test]
fn getversion_is_answered() {
    let run = sim(HostConfig::default(), || {
        let r = rc::lb(&mut HandAsm, cmd::GETVERSION, 0);
        assert_eq!((r.ax, r.bx, r.cx), (6, MAGIC.into(), 2));
    });
    ok(&run);
    assert_eq!(run.host.counters().lb_calls, 1);
    assert_eq!((run.traps.port_io, run.traps.faults_delivered), (1, 0));
}

#[test]
fn iopl_and_ioperm_are_answered_virtually() {
    let run = sim(HostConfig::default(), || {
        assert_eq!(iopl(3), Ok(()));
        assert_eq!(iopl(4), Err(EINVAL), "level above 3");
        assert_eq!(iopl(0), Ok(()));
        assert_eq!(ioperm(0x5658, 2, true), Ok(()));
        assert_eq!(ioperm(0x5658, 2, false), Ok(()));
        assert_eq!(
            ioperm(0xffff, 2, true),
            Err(EINVAL),
            "range past port 65535"
        );
        assert_eq!(ioperm(0x80, 0, true), Err(EINVAL), "empty range");
        assert_eq!(ioperm(u64::MAX, 2, true), Err(EINVAL), "wrap-around");
        assert_eq!(ioperm(0, 65_536, true), Ok(()), "the whole space");
        // Through the C library too.
        // SAFETY: iopl has no memory effects.
        assert_eq!(unsafe { libc::iopl(3) }, 0);
    });
    ok(&run);
    assert_eq!(run.traps.io_syscalls, 10);
}

#[test]
fn iopl_can_fail_with_eperm() {
    let run = HostConfig::default()
        .iopl(IoplPolicy::Eperm)
        .run(|| {
            assert_eq!(iopl(3), Err(libc::EPERM), "raising needs CAP_SYS_RAWIO");
            assert_eq!(iopl(0), Ok(()), "lowering does not");
            assert_eq!(iopl(9), Err(EINVAL), "arguments are checked first");
            assert_eq!(ioperm(0x5658, 2, true), Err(libc::EPERM));
            assert_eq!(ioperm(0x5658, 2, false), Ok(()));
            assert_eq!(ioperm(0x10000, 1, true), Err(EINVAL));
        })
        .unwrap();
    ok(&run);
}

#[test]
fn iopl_can_fail_with_enosys() {
    let run = HostConfig::default()
        .iopl(IoplPolicy::Enosys)
        .run(|| {
            assert_eq!(iopl(3), Err(libc::ENOSYS));
            assert_eq!(iopl(0), Err(libc::ENOSYS));
            assert_eq!(ioperm(0x5658, 4, true), Err(libc::ENOSYS));
            // The VMware backdoor does not care.
            assert_eq!(getversion(), 6);
        })
        .unwrap();
    ok(&run);
}

#[test]
fn restricted_backdoor_faults_without_privilege() {
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        getversion();
    });
    assert_eq!(run.exit, GuestExit::Signaled(SIGSEGV));
    assert_eq!(run.exit.code(), 139);
    // Rust's runtime catches the first SIGSEGV (stack-overflow check), restores the default
    // action and returns; the instruction faults again and that one kills.
    assert!(run.traps.faults_delivered >= 1);
    assert_eq!(run.host.counters().lb_calls, 0);
}

#[test]
fn restricted_backdoor_answers_with_iopl() {
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        iopl(3).unwrap();
        assert_eq!(getversion(), 6);
        assert_eq!(
            rc::rpc_once(&mut HandAsm, b"log privileged", true).unwrap(),
            b"1 "
        );
    });
    ok(&run);
    assert_eq!(run.host.vmx_log(), [b"privileged".to_vec()]);
}

#[test]
fn a_32_bit_in_needs_all_four_ports() {
    // ioperm(0x5658, 2): the HB port is covered, the 4-byte LB `in` is not.
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        ioperm(0x5658, 2, true).unwrap();
        let mut buf = [0u8; 4];
        let r = rc::hb_in(&mut HandAsm, Chan::default(), &mut buf);
        assert_eq!(r.bx, 0, "HB on 0x5659 reached the host (no such channel)");
        getversion();
        unreachable!("the LB in must fault");
    });
    assert_eq!(run.exit, GuestExit::Signaled(SIGSEGV));
    assert_eq!(
        (
            run.host.counters().hb_in_calls,
            run.host.counters().lb_calls
        ),
        (1, 0)
    );

    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        ioperm(0x5658, 4, true).unwrap();
        assert_eq!(getversion(), 6);
    });
    ok(&run);
}

#[test]
fn bare_metal_kills_an_unprivileged_probe() {
    let run = sim(HostConfig::default().mode(Mode::NotVmware), || {
        getversion();
    });
    assert_eq!(run.exit, GuestExit::Signaled(SIGSEGV));
}

#[test]
fn bare_metal_privileged_access_finds_no_device() {
    let run = sim(HostConfig::default().mode(Mode::NotVmware), || {
        iopl(3).unwrap();
        let r = rc::lb(&mut HandAsm, cmd::GETVERSION, 0x1234);
        assert_eq!(
            (r.ax, r.bx, r.cx),
            (0xffff_ffff, 0x1234, 10),
            "EAX all ones, EBX unchanged"
        );
        let mut buf = [0u8; 16];
        let mut r = Regs {
            ax: MAGIC.into(),
            bx: HB_OK,
            dx: HB_PORT.into(),
            ..Regs::default()
        };
        HandAsm.hb_in(&mut r, &mut buf);
        assert_eq!(buf, [0xff; 16], "rep insb reads 0xFF");
        assert_eq!((r.cx, r.di), (0, buf.as_ptr() as u64 + 16));
        let r = rc::open_raw(&mut HandAsm, RPCI);
        assert_eq!(r.ax, 0xffff_ffff, "no message channel");
    });
    ok(&run);
}

#[test]
fn an_out_no_backdoor_takes_changes_no_register() {
    let frame = |ax| Regs {
        ax,
        bx: 0x1234,
        cx: 10,
        dx: LB_PORT.into(),
        si: 0x5555,
        di: 0x6666,
        bp: 0x7777,
    };
    let unchanged = |ax| {
        let mut r = frame(ax);
        lb_out(&mut r);
        assert_eq!(r, frame(ax), "`out dx, eax` with EAX {ax:#x}");
    };
    // Bare metal, privileged: an empty port, magic or not.
    let run = sim(HostConfig::default().mode(Mode::NotVmware), move || {
        iopl(3).unwrap();
        unchanged(MAGIC.into());
        unchanged(0x1111);
    });
    ok(&run);
    // VMware without the magic: the backdoor ignores it (with or without restriction).
    ok(&sim(HostConfig::default(), move || unchanged(0x1111)));
    ok(&sim(
        HostConfig::default().mode(Mode::RestrictBackdoor),
        move || {
            iopl(3).unwrap();
            unchanged(0x1111);
        },
    ));
    // With the magic, VMware answers an `out` like an `in`.
    let run = sim(HostConfig::default(), || {
        let mut r = frame(MAGIC.into());
        lb_out(&mut r);
        assert_eq!((r.ax, r.bx), (6, MAGIC.into()));
    });
    ok(&run);
}

#[test]
fn bare_metal_long_rep_insb_is_served_in_pieces() {
    const LEN: usize = 3 << 20;
    let run = sim(HostConfig::default().mode(Mode::NotVmware), || {
        iopl(3).unwrap();
        let mut buf = vec![0u8; LEN];
        let mut r = Regs {
            ax: MAGIC.into(),
            bx: HB_OK,
            dx: HB_PORT.into(),
            ..Regs::default()
        };
        HandAsm.hb_in(&mut r, &mut buf);
        assert!(buf.iter().all(|&b| b == 0xff));
        assert_eq!((r.cx, r.di), (0, buf.as_ptr() as u64 + LEN as u64));
    });
    ok(&run);
    assert!(
        run.host.counters().hb_in_calls > 1,
        "re-executed as an interrupted REP"
    );
}

#[test]
fn other_ports_need_privilege_and_find_nothing() {
    let run = sim(HostConfig::default(), || {
        // SAFETY: port 0x80 reads are harmless, and without privilege this one faults.
        unsafe { asm!("in al, 0x80", out("al") _) };
    });
    assert_eq!(
        run.exit,
        GuestExit::Signaled(SIGSEGV),
        "no privilege, no device access"
    );

    let run = sim(HostConfig::default(), || {
        iopl(3).unwrap();
        let (mut rax, mut rsi, mut rcx): (u64, u64, u64) = (0x1122_3344_5566_7700, 0x1000, 5);
        // SAFETY: port I/O on ports without a device, emulated by the runner; `rep outsb`
        // reads nothing (the runner drops writes without reading memory).
        unsafe {
            asm!("in al, 0x80", inout("rax") rax);
            assert_eq!(rax, 0x1122_3344_5566_77ff, "AL all ones, the rest kept");
            asm!("in ax, dx", inout("rax") rax, in("dx") 0x3f8u16);
            assert_eq!(rax, 0x1122_3344_5566_ffff);
            asm!("in eax, dx", inout("rax") rax, in("dx") 0x3f8u16);
            assert_eq!(rax, 0xffff_ffff, "a 32-bit write clears the upper half");
            asm!("out 0x80, al", "out dx, eax", in("eax") 0u32, in("dx") 0x3f8u16);
            asm!("cld", "rep outsb", inout("rsi") rsi, inout("rcx") rcx, in("dx") 0x3f8u16);
        }
        assert_eq!((rsi, rcx), (0x1005, 0));
        let mut words = [0u16; 3];
        let (mut rdi, mut rcx) = (words.as_mut_ptr() as u64, 3u64);
        // SAFETY: writes 6 bytes into `words`.
        unsafe { asm!("cld", "rep insw", inout("rdi") rdi, inout("rcx") rcx, in("dx") 0x3f8u16) };
        assert_eq!(
            (words, rcx, rdi),
            ([0xffff; 3], 0, words.as_ptr() as u64 + 6)
        );
    });
    ok(&run);
    assert_eq!(run.traps.port_io, 7);
    assert_eq!(
        run.host.counters().lb_calls,
        0,
        "nothing reached the backdoor"
    );
}

#[test]
fn backdoor_port_in_other_sizes_is_an_empty_port_on_vmware() {
    let run = sim(HostConfig::default(), || {
        let mut rax: u64 = 0x564D_5868;
        // SAFETY: a byte `in` on the backdoor port; VMware lets ring 3 touch it.
        unsafe { asm!("in al, dx", inout("rax") rax, in("dx") 0x5658u16) };
        assert_eq!(rax, 0x564d_58ff);
    });
    ok(&run);
    assert_eq!(run.host.counters().lb_calls, 0);
}

static SEEN_CODE: AtomicI32 = AtomicI32::new(0);
static SEEN_COUNT: AtomicI32 = AtomicI32::new(0);

extern "C" fn skip_in(_sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to an SA_SIGINFO handler.
    unsafe {
        SEEN_CODE.store((*info).si_code, Ordering::SeqCst);
        SEEN_COUNT.fetch_add(1, Ordering::SeqCst);
        let uc = ctx.cast::<libc::ucontext_t>();
        let rip = &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize];
        // Skip a faulting `in eax, dx` (one byte); a signal sent by kill() resumes as is.
        if (*info).si_code == 0x80 {
            *rip += 1;
        }
    }
}

fn catch_sigsegv() {
    // SAFETY: installs a handler that only touches atomics and the interrupted context.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = skip_in as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(SIGSEGV, &sa, std::ptr::null_mut()), 0);
    }
}

#[test]
fn a_faulting_probe_reaches_the_guests_handler_intact() {
    // How a careful library probes off VMware: catch the SIGSEGV and carry on.
    let run = sim(HostConfig::default().mode(Mode::NotVmware), || {
        catch_sigsegv();
        let r = rc::lb(&mut HandAsm, cmd::GETVERSION, 0);
        assert_eq!(SEEN_COUNT.load(Ordering::SeqCst), 1);
        assert_eq!(
            SEEN_CODE.load(Ordering::SeqCst),
            0x80,
            "si_code SI_KERNEL, as from #GP"
        );
        assert_eq!(r.ax, MAGIC.into(), "nothing answered");
    });
    ok(&run);
    assert_eq!(
        (run.traps.faults_delivered, run.traps.signals_delivered),
        (1, 1)
    );
}

#[test]
fn a_sigsegv_sent_by_a_process_is_not_taken_for_a_fault() {
    let run = sim(HostConfig::default(), || {
        catch_sigsegv();
        // SAFETY: raising a signal that has a handler.
        unsafe { libc::raise(SIGSEGV) };
        assert_eq!(SEEN_COUNT.load(Ordering::SeqCst), 1);
        assert_eq!(SEEN_CODE.load(Ordering::SeqCst), libc::SI_TKILL);
        assert_eq!(
            getversion(),
            6,
            "backdoor still served, handler not involved"
        );
        assert_eq!(SEEN_COUNT.load(Ordering::SeqCst), 1);
    });
    ok(&run);
}

#[test]
fn real_faults_and_signals_pass_through() {
    let run = sim(HostConfig::default(), || {
        // SAFETY: deliberately not: a null write must kill the guest.
        unsafe { std::ptr::null_mut::<u32>().write_volatile(7) };
    });
    assert_eq!(run.exit, GuestExit::Signaled(SIGSEGV));
    assert_eq!(run.traps.faults_delivered, 0, "not port I/O");

    let run = sim(HostConfig::default(), || std::process::abort());
    assert_eq!(run.exit, GuestExit::Signaled(libc::SIGABRT));
    assert_eq!(run.exit.code(), 134);

    let run = sim(HostConfig::default(), || {
        // SAFETY: ud2 raises SIGILL, which must reach the guest and kill it.
        unsafe { asm!("ud2") };
    });
    assert_eq!(run.exit, GuestExit::Signaled(libc::SIGILL));
}

#[test]
fn exit_status_and_panics_come_back() {
    let run = sim(HostConfig::default(), || std::process::exit(3));
    assert_eq!(run.exit, GuestExit::Exited(3));
    let run = sim(HostConfig::default(), || panic!("boom {}", 7));
    assert_eq!(run.exit, GuestExit::Panicked("boom 7".into()));
    assert_eq!(run.exit.code(), 101);
}

fn fork_and_wait(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs `child` and _exits; the parent only waits.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
            libc::_exit(code);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }
}

#[test]
fn forked_children_are_served_and_inherit_privilege() {
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        iopl(3).unwrap();
        for i in 0..3 {
            let code = fork_and_wait(|| {
                if getversion() != 6 {
                    return 1;
                }
                let set = format!("info-set guestinfo.child{i} here");
                rc::rpc_once(&mut HandAsm, set.as_bytes(), i % 2 == 0).map_or(2, |_| 0)
            });
            assert_eq!(code, 0, "child {i}");
        }
        assert_eq!(getversion(), 6);
    });
    ok(&run);
    assert_eq!(run.traps.tracees, 4);
    assert_eq!(run.host.guestinfo().len(), 3);
}

#[test]
fn a_child_without_privilege_dies_alone() {
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        // SAFETY: fork, then the child only does a backdoor call and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            getversion();
            // SAFETY: ends the child.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == SIGSEGV);
    });
    ok(&run);
}

#[test]
fn threads_are_served_with_their_own_privilege() {
    let run = sim(HostConfig::default(), || {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..50).all(|_| getversion() == 6)))
            .collect();
        assert!(handles.into_iter().all(|h| h.join().unwrap()));
    });
    ok(&run);
    assert_eq!(run.host.counters().lb_calls, 200);
    assert!(run.traps.tracees >= 5);

    // Privilege is per thread: a thread's iopl does not cover its parent.
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        std::thread::spawn(|| {
            iopl(3).unwrap();
            assert_eq!(getversion(), 6);
        })
        .join()
        .unwrap();
        getversion();
    });
    assert_eq!(run.exit, GuestExit::Signaled(SIGSEGV));
    assert_eq!(run.host.counters().lb_calls, 1);

    // ... but a new thread inherits its creator's.
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        ioperm(0x5658, 4, true).unwrap();
        assert!(std::thread::spawn(|| getversion() == 6).join().unwrap());
    });
    ok(&run);
}

#[test]
fn group_stop_really_stops_until_sigcont() {
    let run = sim(HostConfig::default(), || {
        // SAFETY: fork; the child stops itself, then makes a backdoor call and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain system calls.
            unsafe {
                libc::raise(libc::SIGSTOP);
                libc::_exit(if getversion() == 6 { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for and signalling our own child.
        unsafe {
            assert_eq!(libc::waitpid(pid, &mut status, libc::WUNTRACED), pid);
            assert!(libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGSTOP);
            // Still stopped a moment later: nothing resumed it behind our back.
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert_eq!(
                libc::waitpid(pid, &mut status, libc::WNOHANG | libc::WCONTINUED),
                0
            );
            assert_eq!(libc::kill(pid, libc::SIGCONT), 0);
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
    });
    ok(&run);
    assert_eq!(run.host.counters().lb_calls, 1);
}

#[test]
fn exec_is_followed() {
    let run = HostConfig::default()
        .run_command(&mut std::process::Command::new("/bin/true"))
        .unwrap();
    assert_eq!(
        (run.exit.clone(), run.traps.execs),
        (GuestExit::Exited(0), 1)
    );

    let run = HostConfig::default()
        .run_command(std::process::Command::new("/bin/sh").args(["-c", "/bin/true; exit 3"]))
        .unwrap();
    assert_eq!(run.exit, GuestExit::Exited(3));
    assert!(
        run.traps.execs >= 2 && run.traps.tracees >= 2,
        "{:?}",
        run.traps
    );

    let err = HostConfig::default()
        .run_command(&mut std::process::Command::new("/no/such/program"))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);

    // A program making backdoor calls, started directly and through a shell.
    let run = HostConfig::default()
        .run_command(&mut guest_command(
            "getversion;rpc:info-set guestinfo.exec yes",
        ))
        .unwrap();
    ok(&run);
    assert_eq!(
        run.host
            .guestinfo()
            .get(&b"guestinfo.exec"[..])
            .map(Vec::as_slice),
        Some(&b"yes"[..])
    );
    let guest = guest_command("");
    let mut shell = std::process::Command::new("/bin/sh");
    shell
        .args(["-c", "\"$0\" \"$@\" && \"$0\" \"$@\""])
        .arg(guest.get_program())
        .args(guest.get_args());
    shell.env(GUEST_ENV, "getversion");
    let run = HostConfig::default().run_command(&mut shell).unwrap();
    ok(&run);
    assert_eq!(
        run.host.counters().lb_calls,
        2,
        "both children of the shell served"
    );
}

#[test]
fn virtual_privilege_survives_exec_even_from_a_thread() {
    use std::os::unix::process::CommandExt;
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        iopl(3).unwrap();
        let err = guest_command("getversion").exec();
        panic!("exec failed: {err}");
    });
    ok(&run);
    assert_eq!(run.host.counters().lb_calls, 1);

    // A non-leader thread execs: it takes over the process id, with its privilege.
    let run = sim(HostConfig::default().mode(Mode::RestrictBackdoor), || {
        std::thread::spawn(|| {
            iopl(3).unwrap();
            let err = guest_command("getversion").exec();
            panic!("exec failed: {err}");
        });
        loop {
            std::thread::park();
        }
    });
    ok(&run);
    assert_eq!(run.host.counters().lb_calls, 1);
}

#[test]
fn programs_started_by_the_guest_are_served() {
    let run = sim(HostConfig::default().guestinfo("who", "child"), || {
        let out = guest_command("rpc:info-get guestinfo.who")
            .output()
            .expect("spawn");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 child"));
    });
    ok(&run);
    assert_eq!(run.host.counters().rpcs, 1);
}

#[test]
fn parallel_runs_do_not_mix() {
    let handles: Vec<_> = (0..4u64)
        .map(|n| {
            std::thread::spawn(move || {
                let run = HostConfig::default()
                    .run(|| {
                        for _ in 0..(n + 1) * 10 {
                            assert_eq!(getversion(), 6);
                        }
                    })
                    .unwrap();
                (run.exit, run.host.counters().lb_calls)
            })
        })
        .collect();
    for (n, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.join().unwrap(),
            (GuestExit::Exited(0), (n as u64 + 1) * 10)
        );
    }
}

#[test]
fn hypercall_backdoor_where_the_cpu_traps_it() {
    // The runner serves a hypercall only where the CPU hands it to the process as a signal
    // (inside a KVM guest the outer hypervisor answers its own vendor's instruction).
    for hc in trapping_hypercalls() {
        let call = move |r: &mut Regs| match hc {
            Hypercall::Vmcall => vmcall(r),
            Hypercall::Vmmcall => vmmcall(r),
        };
        hypercall_exchange(hc, call);
    }
}

fn hypercall_exchange(hc: Hypercall, vmmcall: impl Fn(&mut Regs) + Copy) {
    let run = sim(HostConfig::default().guestinfo("hc", "yes"), move || {
        let mut r = Regs {
            ax: MAGIC.into(),
            cx: 10,
            dx: 0,
            ..Regs::default()
        };
        vmmcall(&mut r);
        assert_eq!(
            (r.ax, r.bx, r.cx, r.dx),
            (6, MAGIC.into(), 2, 0),
            "GETVERSION, flags left in EDX"
        );
        // An RPCI exchange: LB steps with flags 0, HB with flags 3 (out) and 1 (in).
        let mut r = Regs {
            ax: MAGIC.into(),
            bx: (RPCI | COOKIE).into(),
            cx: cmd::MESSAGE.into(),
            ..Regs::default()
        };
        vmmcall(&mut r);
        assert_eq!(r.cx, st(status::SUCCESS));
        let (id, high, low) = (r.dx >> 16, r.si, r.di);
        let req = b"info-get guestinfo.hc";
        let lb = |sub: u64, bx: u64| {
            let mut r = Regs {
                ax: MAGIC.into(),
                bx,
                cx: (sub << 16) | u64::from(cmd::MESSAGE),
                dx: id << 16,
                si: high,
                di: low,
                bp: 0,
            };
            vmmcall(&mut r);
            r
        };
        assert_eq!(lb(1, req.len() as u64).cx, st(status::SUCCESS | status::HB));
        let mut r = Regs {
            ax: MAGIC.into(),
            bx: HB_OK,
            cx: req.len() as u64,
            dx: (id << 16) | 3,
            si: req.as_ptr() as u64,
            di: low,
            bp: high,
        };
        vmmcall(&mut r);
        assert_eq!(r.bx, HB_OK);
        assert_eq!(lb(3, 0).bx, 5);
        let mut buf = [0u8; 5];
        let mut r = Regs {
            ax: MAGIC.into(),
            bx: HB_OK,
            cx: 5,
            dx: (id << 16) | 1,
            si: high,
            di: buf.as_mut_ptr() as u64,
            bp: low,
        };
        vmmcall(&mut r);
        assert_eq!((r.bx, &buf), (HB_OK, b"1 yes"));
    });
    ok(&run);
    assert_eq!(run.traps.hypercalls, 6, "{hc:?}");
}

#[test]
fn cpuid_names_vmware_on_request_where_it_can_fault() {
    if !cpuid_faulting() {
        eprintln!("no CPUID faulting here: CPUID stays the real one");
        return;
    }
    let vmware = || HostConfig::default().vmware_cpuid(true);
    let run = vmware()
        .run(|| {
            assert_eq!(hypervisor_name(), b"VMwareVMware");
            let leaf1 = std::arch::x86_64::__cpuid(1);
            assert_ne!(leaf1.ecx & (1 << 31), 0, "hypervisor present bit");
            let max = std::arch::x86_64::__cpuid(0x4000_0000).eax;
            assert!(max >= 0x4000_0010);
            assert_eq!(
                std::arch::x86_64::__cpuid(0x4000_0010).ecx & 3,
                0,
                "no hypercall offered"
            );
            // Forked children and threads keep it.
            assert_eq!(
                fork_and_wait(|| i32::from(hypervisor_name() != b"VMwareVMware")),
                0
            );
            assert!(std::thread::spawn(|| hypervisor_name() == b"VMwareVMware")
                .join()
                .unwrap());
        })
        .unwrap();
    ok(&run);
    assert!(run.traps.cpuid >= 6, "{:?}", run.traps);

    // After execve, directly and through a shell.
    ok(&vmware().run_command(&mut guest_command("cpuid")).unwrap());
    let guest = guest_command("");
    let mut shell = std::process::Command::new("/bin/sh");
    shell
        .args(["-c", "\"$0\" \"$@\""])
        .arg(guest.get_program())
        .args(guest.get_args());
    shell.env(GUEST_ENV, "cpuid");
    ok(&vmware().run_command(&mut shell).unwrap());

    // Off by default and on bare metal.
    let real = hypervisor_name();
    let run = sim(HostConfig::default(), move || {
        assert_eq!(hypervisor_name(), real)
    });
    ok(&run);
    assert_eq!(run.traps.cpuid, 0);
    let real = hypervisor_name();
    let run = HostConfig::default()
        .mode(Mode::NotVmware)
        .vmware_cpuid(true)
        .run(move || assert_eq!(hypervisor_name(), real))
        .unwrap();
    ok(&run);
    assert_eq!(run.traps.cpuid, 0);
}

/// A minimal static i386 ELF program: exits 0 if CPUID leaf 0x40000000 names
/// `VMwareVMware`, else 1.
fn i386_vmware_probe() -> Vec<u8> {
    const BASE: u32 = 0x0804_8000;
    const HEADERS: u32 = 52 + 32;
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xb8, 0x00, 0x00, 0x00, 0x40, // mov eax, 0x40000000
        0x0f, 0xa2,                   // cpuid
        0x81, 0xf3, 0x56, 0x4d, 0x77, 0x61, // xor ebx, "VMwa"
        0x81, 0xf1, 0x72, 0x65, 0x56, 0x4d, // xor ecx, "reVM"
        0x81, 0xf2, 0x77, 0x61, 0x72, 0x65, // xor edx, "ware"
        0x09, 0xcb,                   // or ebx, ecx
        0x09, 0xd3,                   // or ebx, edx
        0x74, 0x05,                   // jz exit (status 0)
        0xbb, 0x01, 0x00, 0x00, 0x00, // mov ebx, 1
        0xb8, 0x01, 0x00, 0x00, 0x00, // exit: mov eax, 1 (exit)
        0xcd, 0x80,                   // int 0x80
    ];
    let size = HEADERS + code.len() as u32;
    let mut elf = Vec::new();
    // ELF header: 32-bit, little-endian, version 1, executable, i386.
    elf.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&3u16.to_le_bytes()); // EM_386
    elf.extend_from_slice(&1u32.to_le_bytes()); // version
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&52u32.to_le_bytes()); // program headers offset
    elf.extend_from_slice(&0u32.to_le_bytes()); // section headers offset
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [52u16, 32, 1, 0, 0, 0] {
        // header size, program header size and count, no section headers
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // One PT_LOAD of the whole file, readable and executable.
    for word in [1u32, 0, BASE, BASE, size, size, 5, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    elf
}

#[test]
fn a_32_bit_program_sees_vmware_cpuid_too() {
    use std::os::unix::fs::OpenOptionsExt;
    if !cpuid_faulting() {
        eprintln!("no CPUID faulting here: CPUID stays the real one");
        return;
    }
    let path = std::env::temp_dir().join(format!("vmw-sim-i386-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &i386_vmware_probe()))
        .unwrap();
    // Another test's fork may briefly hold the file open for writing (ETXTBSY).
    let run = (0..50)
        .find_map(|_| {
            let r = HostConfig::default()
                .vmware_cpuid(true)
                .run_command(&mut std::process::Command::new(&path));
            match r {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                }
                r => Some(r),
            }
        })
        .expect("exec kept failing with ETXTBSY");
    let _ = std::fs::remove_file(&path);
    let run = run.unwrap();
    assert_eq!(run.exit, GuestExit::Exited(0), "{}", run.exit);
    assert_eq!(run.traps.cpuid, 1);
}

#[test]
fn a_forked_child_returning_from_the_closure_is_not_taken_for_the_guest() {
    let run = sim(HostConfig::default(), || {
        // SAFETY: fork; the child returns from the closure (the runner ends it).
        if unsafe { libc::fork() } == 0 {
            panic!("the child's panic");
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::wait(&mut status) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 101);
        panic!("the guest's panic");
    });
    assert_eq!(run.exit, GuestExit::Panicked("the guest's panic".into()));
}

#[test]
fn by_default_iopl_answers_as_the_guests_credentials_would() {
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let run = sim(HostConfig::default(), move || {
        if !root {
            assert_eq!(iopl(3), Err(libc::EPERM), "a normal user gets EPERM");
            assert_eq!(ioperm(0x5658, 4, true), Err(libc::EPERM));
            return;
        }
        assert_eq!(iopl(3), Ok(()), "root has CAP_SYS_RAWIO");
        assert_eq!(iopl(0), Ok(()), "lowering is always allowed");
        // SAFETY: plain system calls; the guest is a child of its own.
        unsafe {
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
        assert_eq!(iopl(3), Err(libc::EPERM), "nobody lost CAP_SYS_RAWIO");
        assert_eq!(ioperm(0x5658, 4, true), Err(libc::EPERM));
    });
    ok(&run);
    assert!(run.traps.io_syscalls >= 2);
}

#[test]
fn power_operations_are_refused_unless_allowed() {
    for op in [
        "OS_Halt",
        "OS_Reboot",
        "OS_PowerOn",
        "OS_Resume",
        "OS_Suspend",
    ] {
        let e = HostConfig::default()
            .tclo(op)
            .run(|| {})
            .expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{op}");
        assert!(e.to_string().contains("allow_power_ops"), "{e}");
        let run = HostConfig::default()
            .tclo(op)
            .allow_power_ops(true)
            .run(|| {})
            .expect("allowed");
        assert_eq!(
            run.host.tclo_pending(),
            1,
            "{op} queued, not sent: no agent polled"
        );
    }
    assert!(HostConfig::default().tclo("ping").run(|| {}).is_ok());
}

#[test]
fn a_child_cloned_with_clone_untraced_is_served_all_the_same() {
    extern "C" fn child(_: *mut libc::c_void) -> libc::c_int {
        // 0 when GETVERSION was answered; a real fault would kill this child instead.
        i32::from(getversion() != 6)
    }
    let run = sim(HostConfig::default(), || {
        let mut stack = vec![0u8; 64 << 10];
        let top = (stack.as_mut_ptr_range().end as usize & !15) as *mut libc::c_void;
        // SAFETY: the child runs `child` on its own stack in a copy of this process (no
        // CLONE_VM); the parent waits for it before the stack goes away.
        let pid = unsafe {
            libc::clone(
                child,
                top,
                libc::CLONE_UNTRACED | libc::SIGCHLD,
                std::ptr::null_mut(),
            )
        };
        assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the untraced child: status {status:#x} (SIGSEGV is {})",
            libc::SIGSEGV
        );
        drop(stack);
    });
    ok(&run);
    assert!(run.traps.tracees >= 2, "the child was traced");
}

#[test]
fn clone3_fails_with_enosys_so_the_c_library_falls_back_to_clone() {
    let run = sim(HostConfig::default(), || {
        // A raw clone3 with CLONE_UNTRACED (its flags are in memory, where the filter cannot
        // see them) would escape the runner: it is refused before it creates anything.
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
        }
        let args = CloneArgs {
            flags: libc::CLONE_UNTRACED as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with a valid argument block; it fails (ENOSYS) under the runner, and
        // a child, if one were made, would exit at once.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if rc == 0 {
            // SAFETY: the child leaves at once, running nothing of the parent's.
            unsafe { libc::_exit(0) };
        }
        assert_eq!(
            (rc, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ENOSYS))
        );
        // glibc's pthread_create tries clone3 first and falls back to clone: threads work
        // and are served.
        let answer = std::thread::spawn(getversion).join().unwrap();
        assert_eq!(answer, 6);
    });
    ok(&run);
    assert!(run.traps.tracees >= 2, "the thread was traced");
}
