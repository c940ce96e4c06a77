//! One RPCI request over vsock against one over the backdoor, under the simulator: runner
//! stops (ptrace round trips), the guest's system calls and time per `info-get`, and what
//! opening the vsock connection costs once.
//!
//! ```text
//! cargo bench --features sim --bench vsock
//! ```
//!
//! The vsock guest is written here from the protocol (one `write` of the request packet,
//! then `read`s until the 4-byte header and the body are in, as open-vm-tools'
//! `Socket_SendPacket` and `Socket_RecvPacket` do) and counts its own `read` calls; the
//! runner's stops come from `TrapStats`. The backdoor guest is the library's RPCI channel
//! (5 backdoor calls per RPC with high-bandwidth transfers, `tests/perf_counts.rs`).

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
fn main() {
    bench::main();
}

#[cfg(not(all(feature = "sim", target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("vsock needs Linux x86_64 and `--features sim`");
}

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
mod bench {
    use std::time::Instant;

    use vmw_backdoor::sim::{HostConfig, TrapStats};

    /// RPCs per guest.
    const N: u64 = 2_000;

    /// What a guest reports back, through memory shared with the runner's process.
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Report {
        nanos: u64,
        syscalls: u64,
    }

    fn shared() -> *mut Report {
        // SAFETY: a fresh anonymous shared mapping, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Report>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED);
        p.cast()
    }

    fn stops(t: &TrapStats) -> u64 {
        t.port_io + t.hypercalls + t.io_syscalls + t.vsock_syscalls + t.signals_delivered
    }

    /// A vsock connection to the host's RPCI port (unprivileged: any source port).
    fn connect() -> i32 {
        // SAFETY: plain system calls with a live sockaddr_vm.
        unsafe {
            let fd = libc::socket(40, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket(AF_VSOCK)");
            let mut a = [0u8; 16];
            a[..2].copy_from_slice(&40u16.to_ne_bytes());
            a[4..8].copy_from_slice(&976u32.to_ne_bytes()); // CID 0, port 976
            assert_eq!(libc::connect(fd, a.as_ptr().cast(), 16), 0, "connect");
            fd
        }
    }

    /// One request; returns the reads it took.
    fn rpc(fd: i32, packet: &[u8], reply: &mut Vec<u8>) -> u64 {
        // SAFETY: writes and reads from live buffers.
        unsafe {
            assert_eq!(
                libc::write(fd, packet.as_ptr().cast(), packet.len()),
                packet.len() as isize
            );
            let mut reads = 0;
            let mut fill = |buf: &mut [u8]| {
                let mut got = 0;
                while got < buf.len() {
                    let n = libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got);
                    assert!(n > 0, "read");
                    got += n as usize;
                    reads += 1;
                }
            };
            let mut header = [0u8; 4];
            fill(&mut header);
            reply.resize(u32::from_be_bytes(header) as usize, 0);
            fill(reply);
            reads
        }
    }

    fn request(command: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for w in [1u32, 1, 1, 0, 2, 2, command.len() as u32] {
            body.extend_from_slice(&w.to_be_bytes());
        }
        body.extend_from_slice(command);
        [&(body.len() as u32).to_be_bytes()[..], &body].concat()
    }

    struct Row {
        what: &'static str,
        stops: f64,
        syscalls: f64,
        micros: f64,
    }

    fn vsock_rpcs(n: u64) -> (Report, TrapStats) {
        let out = shared();
        let run = HostConfig::default()
            .vsock(true)
            .guestinfo("x", "value")
            .run(move || {
                let fd = connect();
                let packet = request(b"info-get guestinfo.x");
                let mut reply = Vec::new();
                let t = Instant::now();
                let mut reads = 0;
                for _ in 0..n {
                    reads += rpc(fd, &packet, &mut reply);
                }
                let r = Report {
                    nanos: t.elapsed().as_nanos() as u64,
                    syscalls: n + reads, // one write each, and the reads
                };
                // SAFETY: the shared mapping outlives the guest.
                unsafe { out.write(r) };
            })
            .unwrap();
        assert!(run.exit.success(), "{}", run.exit);
        assert_eq!(run.host.counters().vsock_rpcs, n);
        // SAFETY: written by the guest, which has exited.
        (unsafe { out.read() }, run.traps)
    }

    fn backdoor_rpcs(n: u64) -> (Report, TrapStats, u64) {
        let out = shared();
        let run = HostConfig::default()
            .guestinfo("x", "value")
            .run(move || {
                let mut guard = vmw_backdoor::probe_backdoor().unwrap();
                let mut chan = guard.open_enhanced_chan().unwrap();
                let t = Instant::now();
                for _ in 0..n {
                    chan.get_guestinfo(b"x").unwrap();
                }
                let r = Report {
                    nanos: t.elapsed().as_nanos() as u64,
                    syscalls: 0,
                };
                // SAFETY: as above.
                unsafe { out.write(r) };
            })
            .unwrap();
        assert!(run.exit.success(), "{}", run.exit);
        // SAFETY: as above.
        let calls = run.host.counters().backdoor_calls();
        (unsafe { out.read() }, run.traps, calls)
    }

    pub fn main() {
        if !std::env::args().any(|a| a == "--bench") {
            eprintln!("vsock: run it with `cargo bench --features sim --bench vsock`");
            return;
        }
        let mut rows = Vec::new();
        // Per RPC: N RPCs on one connection, minus one RPC (the connection's own cost).
        let (r1, t1) = vsock_rpcs(1);
        let (rn, tn) = vsock_rpcs(N);
        let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / (N - 1) as f64;
        rows.push(Row {
            what: "vsock, open connection",
            stops: per(stops(&t1), stops(&tn)),
            syscalls: per(r1.syscalls, rn.syscalls),
            micros: rn.nanos as f64 / N as f64 / 1000.0,
        });
        let (b1, bt1, c1) = backdoor_rpcs(1);
        let (bn, btn, cn) = backdoor_rpcs(N);
        rows.push(Row {
            what: "backdoor, open channel (HB)",
            stops: per(stops(&bt1), stops(&btn)),
            syscalls: 0.0,
            micros: bn.nanos as f64 / N as f64 / 1000.0,
        });
        let _ = (b1, r1);
        println!("| {N} `info-get`s | runner stops / RPC | guest system calls / RPC | backdoor calls / RPC | µs / RPC |");
        println!("|---|---:|---:|---:|---:|");
        for (i, r) in rows.iter().enumerate() {
            let calls = if i == 0 { 0.0 } else { per(c1, cn) };
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.1} |",
                r.what, r.stops, r.syscalls, calls, r.micros
            );
        }
        println!(
            "\nopening the vsock connection: {} calls served by the runner (socket, whose \
             rewrite stops at entry and exit, and connect with its auto-bind)",
            t1.vsock_syscalls
        );
    }
}
