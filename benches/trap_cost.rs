//! The cost of one emulated backdoor call under the runner, against the floor any ptrace
//! emulator pays: a bare stop/resume round trip, measured in the same run.
//!
//! ```text
//! cargo bench --features sim --bench trap_cost
//! ```
//!
//! Both guests time each call from inside (`Instant` around one instruction) and leave the
//! samples in shared memory; the medians are compared. The emulated call is GETVERSION
//! (`in eax, dx` on port 0x5658) answered by the host model; the bare round trip is an
//! `int3` whose SIGTRAP stop a minimal tracer resumes without looking at anything.

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
fn main() {
    bench::main();
}

#[cfg(not(all(feature = "sim", target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("trap_cost needs Linux x86_64 and `--features sim`");
}

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
mod bench {
    use std::arch::asm;
    use std::time::Instant;

    use vmw_backdoor::sim::HostConfig;

    /// Calls timed per round and guest.
    const CALLS: usize = 20_000;
    /// Rounds, alternating the two guests so drift on a shared machine hits both alike.
    const ROUNDS: usize = 5;

    /// Anonymous memory shared with a forked guest, where it leaves its samples.
    struct Shared {
        ptr: *mut u64,
    }

    impl Shared {
        fn new() -> Shared {
            // SAFETY: a fresh anonymous shared mapping; checked for failure below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    CALLS * 8,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert!(p != libc::MAP_FAILED, "mmap failed");
            Shared { ptr: p.cast() }
        }

        /// Fills the samples by timing `call` CALLS times (run in the guest).
        fn record(&self, call: impl Fn()) {
            for i in 0..CALLS {
                let t = Instant::now();
                call();
                let ns = t.elapsed().as_nanos() as u64;
                // SAFETY: i < CALLS, inside the mapping.
                unsafe { self.ptr.add(i).write_volatile(ns) };
            }
        }

        fn samples(&self) -> Vec<u64> {
            // SAFETY: the mapping holds CALLS u64s and the guest that wrote them has exited.
            unsafe { std::slice::from_raw_parts(self.ptr, CALLS).to_vec() }
        }
    }

    impl Drop for Shared {
        fn drop(&mut self) {
            // SAFETY: unmapping our own mapping once.
            unsafe { libc::munmap(self.ptr.cast(), CALLS * 8) };
        }
    }

    fn getversion() {
        // SAFETY: GETVERSION touches EAX, EBX (saved/restored), ECX, EDX only.
        unsafe {
            asm!(
                "mov {b}, rbx",
                "in eax, dx",
                "mov rbx, {b}",
                b = out(reg) _,
                inout("eax") 0x564D_5868u32 => _,
                inout("ecx") 10u32 => _,
                inout("edx") 0x5658u32 => _,
            );
        }
    }

    fn int3() {
        // SAFETY: int3 only raises SIGTRAP, which the bare tracer swallows.
        unsafe { asm!("int3") };
    }

    /// Per-call samples of GETVERSION under the runner.
    fn emulated() -> Vec<u64> {
        let shared = Shared::new();
        let run = HostConfig::default()
            .run(|| shared.record(getversion))
            .expect("run the guest");
        assert!(run.exit.success(), "emulated guest {}", run.exit);
        assert_eq!(run.host.counters().lb_calls, CALLS as u64);
        shared.samples()
    }

    /// Per-call samples of a bare ptrace stop/resume round trip.
    fn bare() -> Vec<u64> {
        let shared = Shared::new();
        // SAFETY: the child only calls raw system calls and the recording loop, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain system calls in the child.
            unsafe {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                libc::raise(libc::SIGSTOP);
            }
            shared.record(int3);
            // SAFETY: ends the child.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // Bounded by the number of stops the child makes (one per call, plus set-up).
        for _ in 0..CALLS + 10 {
            // SAFETY: waiting for and resuming our own traced child.
            unsafe {
                if libc::waitpid(pid, &mut status, libc::__WALL) != pid || !libc::WIFSTOPPED(status)
                {
                    break;
                }
                let sig = libc::WSTOPSIG(status);
                let pass = if sig == libc::SIGTRAP || sig == libc::SIGSTOP {
                    0
                } else {
                    sig
                };
                libc::ptrace(libc::PTRACE_CONT, pid, 0, pass);
            }
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "bare guest failed"
        );
        shared.samples()
    }

    fn median(mut v: Vec<u64>) -> u64 {
        v.sort_unstable();
        v[v.len() / 2]
    }

    pub fn main() {
        let (mut emu, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            raw.extend(bare());
            emu.extend(emulated());
        }
        let (e, b) = (median(emu), median(raw));
        println!(
            "trap_cost: {} calls per guest over {ROUNDS} rounds",
            CALLS * ROUNDS
        );
        println!("  bare ptrace stop/resume round trip (int3): median {b} ns");
        println!("  emulated backdoor call (GETVERSION):       median {e} ns");
        println!(
            "  ratio emulated / bare: {:.2} (goal <= 1.5)",
            e as f64 / b as f64
        );
    }
}
