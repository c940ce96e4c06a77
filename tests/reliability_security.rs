//! Security promises, through the real instructions under the simulator:
//!
//! - channel cookies never appear in `Debug` output, error messages or log records (at
//!   trace level);
//! - channels are closed on drop, also while a panic unwinds, and privilege is given back;
//! - privileged access takes only the four backdoor ports (`ioperm`), not every port
//!   (`iopl`), where the kernel allows it.
//!
//! See SECURITY.md for the whole list of promises and the tests behind each.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

use std::arch::asm;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use vmw_backdoor::sim::{Answer, GuestExit, HostConfig, IoplPolicy, Mode, Step};
use vmw_backdoor::{EnhancedChan, ErrorKind};

const MAGIC: u64 = 0x564D_5868;
const RPCI_WITH_COOKIE: u64 = 0x4943_5052 | 0x8000_0000;
const MESSAGE: u64 = 0x1E;
const OPEN: u64 = 0;
const RECVSIZE: u64 = 3;
const SUCCESS: u64 = 1;

/// One `in eax, dx` on port 0x5658 with these registers; returns (ECX, EDX, ESI, EDI).
fn lb(bx: u64, cx: u64, dx: u64, si: u64, di: u64) -> (u64, u64, u64, u64) {
    let (mut cx, mut dx, mut si, mut di) = (cx, dx | 0x5658, si, di);
    // SAFETY: under the simulator the instruction is answered by the host model; it
    // touches only the named registers (RBX is swapped with a scratch register and back).
    unsafe {
        asm!(
            "xchg rbx, {bx}",
            "in eax, dx",
            "xchg rbx, {bx}",
            bx = inout(reg) bx => _,
            inout("rax") MAGIC => _,
            inout("rcx") cx,
            inout("rdx") dx,
            inout("rsi") si,
            inout("rdi") di,
            options(nostack),
        );
    }
    (cx, dx, si, di)
}

/// A cookie-protected RPCI OPEN by hand: the cookie halves (high, low).
fn open_by_hand() -> (u32, u32) {
    let (cx, _, si, di) = lb(RPCI_WITH_COOKIE, MESSAGE | OPEN << 16, 0, 0, 0);
    assert_eq!(cx >> 16 & SUCCESS, SUCCESS, "OPEN by hand");
    (si as u32, di as u32)
}

/// Whether the host takes `cookie` for channel `id` (a RECVSIZE, which changes nothing
/// between exchanges).
fn host_accepts(id: u64, (high, low): (u32, u32)) -> bool {
    let (cx, ..) = lb(
        0,
        MESSAGE | RECVSIZE << 16,
        id << 16,
        high.into(),
        low.into(),
    );
    cx >> 16 & SUCCESS == SUCCESS
}

/// Every way a cookie could be written out as text.
fn spellings((high, low): (u32, u32)) -> Vec<String> {
    let mut out = Vec::new();
    for half in [high, low] {
        out.extend([
            half.to_string(),
            format!("{half:x}"),
            format!("{half:X}"),
            format!("{half:08x}"),
            (half as i32).to_string(),
        ]);
    }
    let both = u64::from(high) << 32 | u64::from(low);
    out.extend([both.to_string(), format!("{both:x}"), format!("{both:X}")]);
    out
}

/// Everything the library logged in this process, formatted.
static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!(
            "{} {} {:?} {:?}: {}",
            record.level(),
            record.target(),
            record.module_path(),
            record.file(),
            record.args()
        );
        RECORDS.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// The host both runs use: the same seed, so the same cookies in the same order.
fn cookie_host() -> HostConfig {
    HostConfig::default()
        .seed(0x0123_4567_89AB_CDEF)
        .guestinfo("k", "v")
        .machine_id("vm-9")
}

#[test]
fn cookies_never_appear_in_debug_output_errors_or_log_records() {
    // Run 1 learns the first five cookies this host hands out, by hand, and reports them
    // through guestinfo.
    let learned = cookie_host()
        .run(|| {
            let cookies: Vec<String> = (0..5)
                .map(|_| {
                    let (high, low) = open_by_hand();
                    format!("{high} {low}")
                })
                .collect();
            let mut g = vmw_backdoor::probe_backdoor().unwrap();
            let mut c = g.open_enhanced_chan().unwrap();
            c.set_guestinfo(b"cookies", cookies.join(" ").as_bytes())
                .unwrap();
        })
        .unwrap()
        .expect_success();
    let words: Vec<u32> = std::str::from_utf8(&learned.guestinfo()[&b"guestinfo.cookies"[..]])
        .unwrap()
        .split(' ')
        .map(|w| w.parse().unwrap())
        .collect();
    let cookies: Vec<(u32, u32)> = words.chunks(2).map(|p| (p[0], p[1])).collect();
    assert_eq!(cookies.len(), 5);
    assert!(cookies.iter().all(|&(h, l)| h != 0 && l != 0));

    // Run 2: the library gets the same five cookies, in channels that are opened, dropped
    // by the host, failed, refused to close, at trace level with every record captured.
    let config = cookie_host()
        .fault(Step::SendSize, 2, Answer::CloseChannel) // the set: reopened (cookie 2)
        .fault(Step::RecvStatus, 3, Answer::Fail) // the log: a failed exchange ...
        .fault(Step::Close, 1, Answer::Fail) // ... whose CLOSE fails (id 0 kept)
        .fault(Step::Close, 2, Answer::Fail) // close() fails
        .fault(Step::Close, 3, Answer::Fail); // so does the CLOSE on drop
    let guest_cookies = cookies.clone();
    let run = config
        .run(move || {
            let cookies = guest_cookies;
            log::set_logger(&CAPTURE).unwrap();
            log::set_max_level(log::LevelFilter::Trace);
            let mut texts: Vec<String> = Vec::new();
            let mut g = vmw_backdoor::probe_backdoor_privileged().unwrap();
            texts.push(format!("{g:?} {:?}", g.get_version()));
            let mut c = g.open_enhanced_chan().unwrap();
            // The cookies learned are the live ones: the host takes them, and not others.
            assert!(host_accepts(0, cookies[0]), "cookie 1 is channel 0's");
            assert!(!host_accepts(0, (cookies[0].0, cookies[0].1 ^ 1)));
            texts.push(format!("{c:?} {c:#?}"));
            assert_eq!(c.get_guestinfo(b"k").unwrap().as_deref(), Some(&b"v"[..]));
            c.set_guestinfo(b"k", b"w").unwrap();
            assert!(host_accepts(0, cookies[1]), "reopened with cookie 2");
            texts.push(format!("{c:?}"));
            let e = c.log("a line").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol);
            texts.push(format!("{e} {e:?}"));
            assert_eq!(c.rpc(b"machine.id.get").unwrap(), b"vm-9");
            assert!(host_accepts(1, cookies[2]), "reopened with cookie 3");
            texts.push(format!("{c:?}"));
            let e = c.rpc(b"no.such.command").unwrap_err();
            texts.push(format!("{e} {e:?}"));
            let e = c.set_guestinfo(b"bad key", b"v").unwrap_err();
            texts.push(format!("{e} {e:?}"));
            let c = c.close().unwrap_err();
            texts.push(format!("{c:?}"));
            drop(c);
            let mut c = EnhancedChan::open(&mut g).unwrap();
            assert!(host_accepts(2, cookies[3]), "cookie 4");
            c.set_max_reply_len(0);
            let e = c.get_guestinfo(b"k").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TooLarge);
            texts.push(format!("{e} {e:?}"));
            c.set_max_reply_len(100);
            c.report_agent().unwrap();
            assert!(
                host_accepts(2, cookies[3]),
                "still cookie 4: a small reply over the cap is read whole, the channel kept"
            );
            texts.push(format!("{c:?}"));
            drop(c);
            texts.push(format!("{g:?}"));

            let records = RECORDS.lock().unwrap().clone();
            for needle in [
                "reopening the channel",
                "closing the channel after a failed exchange",
                "closing the RPCI channel:",
                "closing the RPCI channel on drop",
            ] {
                assert!(
                    records.iter().any(|r| r.contains(needle)),
                    "the library logged {needle:?}: {records:#?}"
                );
            }
            for text in texts.iter().chain(&records) {
                for cookie in &cookies {
                    for s in spellings(*cookie) {
                        assert!(!text.contains(&s), "cookie {s} in {text:?}");
                    }
                }
            }
        })
        .unwrap();
    assert_eq!(run.exit, GuestExit::Exited(0));
    let host_debug = format!("{:?}", run.host);
    for cookie in &cookies {
        for s in spellings(*cookie) {
            assert!(
                !host_debug.contains(&s),
                "the host model's Debug: {host_debug}"
            );
        }
    }
}

#[test]
fn channels_are_closed_while_a_panic_unwinds() {
    for config in [HostConfig::default(), HostConfig::default().no_hb()] {
        let run = config
            .guestinfo("k", "v")
            .run(|| {
                let mut first = vmw_backdoor::probe_backdoor().unwrap();
                let mut second = vmw_backdoor::probe_backdoor().unwrap();
                let mut a = first.open_enhanced_chan().unwrap();
                let mut b = EnhancedChan::open(&mut second).unwrap();
                for i in 0.. {
                    a.get_guestinfo(b"k").unwrap();
                    b.log("working").unwrap();
                    if i == 3 {
                        panic!("the agent hit a bug mid-use");
                    }
                }
            })
            .unwrap();
        assert_eq!(
            run.exit,
            GuestExit::Panicked("the agent hit a bug mid-use".into())
        );
        assert_eq!(run.host.counters().channels_opened, 2);
        assert_eq!(run.host.open_channels(), 0, "both closed during the unwind");
    }

    // A panic in a worker thread, and one caught by the agent itself: the channel is closed
    // and a privileged guard gives back its privilege (on a host that restricts ring 3, the
    // unprivileged probe then fails again).
    let run = HostConfig::default()
        .mode(Mode::RestrictBackdoor)
        .iopl(IoplPolicy::Allow)
        .run(|| {
            let worker = std::thread::spawn(|| {
                let mut g = vmw_backdoor::probe_backdoor_privileged().unwrap();
                let mut c = g.open_enhanced_chan().unwrap();
                c.log("worker").unwrap();
                panic!("worker bug");
            });
            assert!(worker.join().is_err());
            let caught = std::panic::catch_unwind(|| {
                let mut g = vmw_backdoor::probe_backdoor_privileged().unwrap();
                let mut c = g.open_enhanced_chan().unwrap();
                c.log("main").unwrap();
                assert!(vmw_backdoor::probe_backdoor().is_ok(), "privileged now");
                panic!("caught bug");
            });
            assert!(caught.is_err());
            let e = vmw_backdoor::probe_backdoor().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotVmware, "privilege given back: {e}");
        })
        .unwrap();
    assert_eq!(run.exit, GuestExit::Exited(0));
    assert_eq!(run.host.vmx_log().len(), 2);
    assert_eq!(run.host.open_channels(), 0);
}

/// Port-access faults the guest took (and skipped).
static FAULTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn skip_faulting_in(_: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: an SA_SIGINFO handler gets valid siginfo and ucontext pointers.
    unsafe {
        // SI_KERNEL: a #GP from the `in`, not a signal someone sent.
        if (*info).si_code == 0x80 {
            FAULTS.fetch_add(1, Ordering::SeqCst);
            let uc = ctx.cast::<libc::ucontext_t>();
            // `in al, dx` is one byte (0xEC): resume after it.
            (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] += 1;
        }
    }
}

/// Whether a one-byte `in` on `port` is allowed to this thread (a fault is caught).
fn port_allowed(port: u16) -> bool {
    let before = FAULTS.load(Ordering::SeqCst);
    // SAFETY: a byte read from an I/O port; under the simulator it is emulated (no device:
    // all ones), or faults and the handler resumes after it.
    unsafe { asm!("in al, dx", in("dx") port, out("al") _, options(nostack)) };
    FAULTS.load(Ordering::SeqCst) == before
}

#[test]
fn privileged_access_takes_only_the_backdoor_ports() {
    let run = HostConfig::default()
        .mode(Mode::RestrictBackdoor)
        .iopl(IoplPolicy::Allow)
        .run(|| {
            // SAFETY: installs a handler that touches only an atomic and the interrupted
            // context.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = skip_faulting_in as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
            }
            let backdoor = 0x5658..=0x565B;
            let others = [0x5657, 0x565C, 0x80, 0x3F8, 0xCF8];
            assert!(!port_allowed(0x5658), "no privilege yet");
            let mut g = vmw_backdoor::probe_backdoor_privileged().unwrap();
            assert!(g.is_privileged());
            for port in backdoor.clone() {
                assert!(port_allowed(port), "{port:#x}: a backdoor port");
            }
            for port in others {
                assert!(!port_allowed(port), "{port:#x}: not the backdoor's");
            }
            g.open_enhanced_chan().unwrap().log("privileged").unwrap();
            drop(g);
            for port in backdoor.chain(others) {
                assert!(!port_allowed(port), "{port:#x}: given back");
            }
        })
        .unwrap();
    assert_eq!(run.exit, GuestExit::Exited(0));
    assert_eq!(
        run.traps.io_syscalls, 2,
        "one ioperm to take the ports, one to give them back; no iopl"
    );
    assert_eq!(run.host.vmx_log().len(), 1);
}
