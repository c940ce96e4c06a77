//! What the perf benches and `tests/perf_counts.rs` share: the operations and payload sizes
//! measured, the hosts they run on, the protocol's floor of backdoor calls, the counting
//! allocator (`tests/support/alloc.rs`), and the measurement of calls and allocations per operation under the simulator.
//!
//! Included with `#[path]` by `benches/rpc.rs`, `benches/counts.rs`,
//! `benches/side_by_side.rs` and `tests/perf_counts.rs`; each uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use vmw_backdoor::proto::{cmd, msg};
use vmw_backdoor::sim::{Counters, HostConfig};
use vmw_backdoor::{BackdoorGuard, EnhancedChan};

/// guestinfo values read: empty, small, a page, the largest message a guest may send, and
/// the 1 MiB a VM's configuration allows by default.
pub const GET_SIZES: [usize; 5] = [0, 100, 4 << 10, 64 << 10, 1 << 20];
/// guestinfo values written (a set request must fit the host's 64 KiB message cap).
pub const SET_SIZES: [usize; 3] = [100, 4 << 10, 60 << 10];
/// Length of the `log` text.
pub const LOG_LEN: usize = 100;

/// One operation the benches repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `info-get` of a value of this many bytes.
    Get(usize),
    /// `info-set` of a value of this many bytes.
    Set(usize),
    /// `log` of [`LOG_LEN`] bytes.
    Log,
    /// The GETVERSION command (one LB call, no channel).
    Version,
}

impl Op {
    /// Every operation measured, in table order.
    pub fn all() -> Vec<Op> {
        let mut ops: Vec<Op> = GET_SIZES.iter().map(|&s| Op::Get(s)).collect();
        ops.extend(SET_SIZES.iter().map(|&s| Op::Set(s)));
        ops.extend([Op::Log, Op::Version]);
        ops
    }

    /// `get`, `set`, `log` or `version` (the peers' command names).
    pub fn name(self) -> &'static str {
        match self {
            Op::Get(_) => "get",
            Op::Set(_) => "set",
            Op::Log => "log",
            Op::Version => "version",
        }
    }

    /// Payload size: the value for get and set, the text for log, 0 for GETVERSION.
    pub fn size(self) -> usize {
        match self {
            Op::Get(s) | Op::Set(s) => s,
            Op::Log => LOG_LEN,
            Op::Version => 0,
        }
    }

    /// Whether the operation is an RPC on a channel (everything but GETVERSION).
    pub fn is_rpc(self) -> bool {
        self != Op::Version
    }

    /// The full guestinfo key (with the `guestinfo.` prefix); empty for log and GETVERSION.
    pub fn key(self) -> String {
        match self {
            Op::Get(s) => format!("guestinfo.perf.get.{s}"),
            Op::Set(s) => format!("guestinfo.perf.set.{s}"),
            Op::Log | Op::Version => String::new(),
        }
    }

    /// The value written (set) or the text logged (log); empty otherwise.
    pub fn argument(self) -> String {
        match self {
            Op::Set(s) => filler(s),
            Op::Log => filler(LOG_LEN),
            Op::Get(_) | Op::Version => String::new(),
        }
    }

    /// The RPCI request as it goes over the wire (no trailing NUL).
    pub fn request(self) -> Vec<u8> {
        match self {
            Op::Get(_) => format!("info-get {}", self.key()).into_bytes(),
            Op::Set(_) => format!("info-set {} {}", self.key(), self.argument()).into_bytes(),
            Op::Log => format!("log {}", self.argument()).into_bytes(),
            Op::Version => Vec::new(),
        }
    }

    /// Length of the host's reply on the wire: `1 ` plus the value for get, `1 ` otherwise.
    pub fn reply_len(self) -> usize {
        match self {
            Op::Get(s) => 2 + s,
            Op::Set(_) | Op::Log => 2,
            Op::Version => 0,
        }
    }

    /// The operation with its key and argument built, so that running it allocates only
    /// what the library allocates.
    pub fn prepare(self) -> Prepared {
        Prepared {
            op: self,
            key: self.key(),
            argument: self.argument(),
        }
    }
}

/// An [`Op`] ready to run: its strings are built once, outside any measured region.
#[derive(Clone, Debug)]
pub struct Prepared {
    op: Op,
    key: String,
    argument: String,
}

impl Prepared {
    /// Runs the RPC once on `chan`, checking the answer (panics in the guest otherwise).
    pub fn run(&self, chan: &mut EnhancedChan<'_>) {
        match self.op {
            Op::Get(size) => {
                let value = chan.get_guestinfo(self.key.as_bytes());
                let len = value.as_ref().map(|v| v.as_ref().map(Vec::len));
                assert_eq!(len.ok(), Some(Some(size)), "get {size}: {value:?}");
            }
            Op::Set(_) => chan
                .set_guestinfo(self.key.as_bytes(), self.argument.as_bytes())
                .expect("info-set"),
            Op::Log => chan.log(&self.argument).expect("log"),
            Op::Version => panic!("GETVERSION is not an RPC"),
        }
    }

    /// One operation on its own channel: OPEN, the RPC, CLOSE.
    pub fn run_per_op(&self, guard: &mut BackdoorGuard) {
        let mut chan = guard.open_enhanced_chan().expect("open");
        self.run(&mut chan);
        chan.close().expect("close");
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Version => f.write_str("GETVERSION"),
            op => write!(f, "{} {}", op.name(), human(op.size())),
        }
    }
}

/// `100 B`, `4 KiB`, `1 MiB`.
pub fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// `len` printable bytes without spaces or NULs (safe in a command line and in `info-set`).
pub fn filler(len: usize) -> String {
    (b'a'..=b'z').cycle().take(len).map(char::from).collect()
}

/// The simulated host: with high-bandwidth transfers or LB only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// The default host: HB bit set, `rep outsb`/`rep insb` accepted.
    Hb,
    /// `no_hb()`: every payload byte goes through LB calls.
    LbOnly,
}

impl HostKind {
    /// Both, HB first.
    pub const ALL: [HostKind; 2] = [HostKind::Hb, HostKind::LbOnly];

    /// `hb` or `lb`.
    pub fn name(self) -> &'static str {
        match self {
            HostKind::Hb => "hb",
            HostKind::LbOnly => "lb",
        }
    }

    /// The host, with every value [`Op::Get`] reads preloaded.
    pub fn config(self) -> HostConfig {
        let mut config = HostConfig::default();
        for size in GET_SIZES {
            config = config.guestinfo(Op::Get(size).key(), filler(size));
        }
        match self {
            HostKind::Hb => config,
            HostKind::LbOnly => config.no_hb(),
        }
    }
}

/// Whether an RPC runs on one long-lived channel or opens and closes its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanMode {
    /// One channel for every operation.
    Reused,
    /// OPEN and CLOSE around every operation.
    PerOp,
}

impl ChanMode {
    /// Both, reused first.
    pub const ALL: [ChanMode; 2] = [ChanMode::Reused, ChanMode::PerOp];

    /// `reused` or `per-op` (the peers' mode names).
    pub fn name(self) -> &'static str {
        match self {
            ChanMode::Reused => "reused",
            ChanMode::PerOp => "per-op",
        }
    }
}

/// Backdoor calls of one operation, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// LB calls by `(command, sub-command)`, as [`Counters::lb_by_command`] keys them.
    pub lb: BTreeMap<(u16, u16), u64>,
    /// `rep outsb` transfers.
    pub hb_out: u64,
    /// `rep insb` transfers.
    pub hb_in: u64,
    /// LB calls the host did not accept (wrong magic or port): still a VM exit each.
    pub lb_rejected: u64,
}

impl Calls {
    /// Every backdoor call: each LB call and each HB transfer is one VM exit.
    pub fn total(&self) -> u64 {
        self.lb.values().sum::<u64>() + self.lb_rejected + self.hb_out + self.hb_in
    }

    /// The calls a run made beyond those of a run that stopped earlier (`base`).
    pub fn between(base: &Counters, with: &Counters) -> Result<Calls, String> {
        let diff = |name: &str, a: u64, b: u64| {
            b.checked_sub(a)
                .ok_or_else(|| format!("{name} went down: {a} -> {b}"))
        };
        let rejected = |c: &Counters| c.lb_calls - c.lb_by_command.values().sum::<u64>();
        let mut calls = Calls {
            hb_out: diff("OUTSB", base.hb_out_calls, with.hb_out_calls)?,
            hb_in: diff("INSB", base.hb_in_calls, with.hb_in_calls)?,
            lb_rejected: diff("rejected LB calls", rejected(base), rejected(with))?,
            ..Calls::default()
        };
        for (key, &count) in &with.lb_by_command {
            let before = base.lb_by_command.get(key).copied().unwrap_or(0);
            let d = diff(&format!("LB {key:?}"), before, count)?;
            if d > 0 {
                calls.lb.insert(*key, d);
            }
        }
        Ok(calls)
    }

    /// These calls divided among `n` operations, if every count divides exactly.
    pub fn per_op(&self, n: u64) -> Option<Calls> {
        let div = |x: u64| (n > 0 && x % n == 0).then(|| x / n);
        let mut lb = BTreeMap::new();
        for (&key, &count) in &self.lb {
            lb.insert(key, div(count)?);
        }
        Some(Calls {
            lb,
            hb_out: div(self.hb_out)?,
            hb_in: div(self.hb_in)?,
            lb_rejected: div(self.lb_rejected)?,
        })
    }

    /// LB calls to one message sub-command.
    pub fn msg(&self, sub: u16) -> u64 {
        self.lb.get(&(cmd::MESSAGE, sub)).copied().unwrap_or(0)
    }

    fn add_msg(&mut self, sub: u16, n: u64) {
        if n > 0 {
            *self.lb.entry((cmd::MESSAGE, sub)).or_insert(0) += n;
        }
    }

    /// `OPEN 1, SENDSIZE 1, OUTSB 1, ...`: every non-zero count, in protocol order.
    pub fn breakdown(&self) -> String {
        let lb = |command: u16, sub: u16| self.lb.get(&(command, sub)).copied().unwrap_or(0);
        let mut parts = vec![
            ("GETVERSION".to_string(), lb(cmd::GETVERSION, 0)),
            ("OPEN".to_string(), self.msg(msg::OPEN)),
            ("SENDSIZE".to_string(), self.msg(msg::SENDSIZE)),
            ("OUTSB".to_string(), self.hb_out),
            ("SENDPAYLOAD".to_string(), self.msg(msg::SENDPAYLOAD)),
            ("RECVSIZE".to_string(), self.msg(msg::RECVSIZE)),
            ("INSB".to_string(), self.hb_in),
            ("RECVPAYLOAD".to_string(), self.msg(msg::RECVPAYLOAD)),
            ("RECVSTATUS".to_string(), self.msg(msg::RECVSTATUS)),
            ("CLOSE".to_string(), self.msg(msg::CLOSE)),
            ("rejected LB".to_string(), self.lb_rejected),
        ];
        let named = [
            (cmd::GETVERSION, 0),
            (cmd::MESSAGE, msg::OPEN),
            (cmd::MESSAGE, msg::SENDSIZE),
            (cmd::MESSAGE, msg::SENDPAYLOAD),
            (cmd::MESSAGE, msg::RECVSIZE),
            (cmd::MESSAGE, msg::RECVPAYLOAD),
            (cmd::MESSAGE, msg::RECVSTATUS),
            (cmd::MESSAGE, msg::CLOSE),
        ];
        for (&(command, sub), &n) in &self.lb {
            if !named.contains(&(command, sub)) {
                parts.push((format!("LB command {command}.{sub}"), n));
            }
        }
        parts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The fewest calls the protocol allows for `op` (open-vm-tools' `lib/message/message.c`,
/// `Message_Send` and `Message_Receive`): SENDSIZE, the request
/// (one OUTSB, or a SENDPAYLOAD per 4 bytes), RECVSIZE, the reply (one INSB, or a
/// RECVPAYLOAD per 4 bytes), RECVSTATUS; plus OPEN and CLOSE when the channel is per
/// operation. GETVERSION is one call.
pub fn floor(op: Op, host: HostKind, mode: ChanMode) -> Calls {
    let mut calls = Calls::default();
    if !op.is_rpc() {
        calls.lb.insert((cmd::GETVERSION, 0), 1);
        return calls;
    }
    let (request, reply) = (op.request().len() as u64, op.reply_len() as u64);
    calls.add_msg(msg::SENDSIZE, 1);
    calls.add_msg(msg::RECVSIZE, 1);
    calls.add_msg(msg::RECVSTATUS, 1);
    match host {
        HostKind::Hb => {
            calls.hb_out = u64::from(request > 0);
            calls.hb_in = u64::from(reply > 0);
        }
        HostKind::LbOnly => {
            calls.add_msg(msg::SENDPAYLOAD, request.div_ceil(4));
            calls.add_msg(msg::RECVPAYLOAD, reply.div_ceil(4));
        }
    }
    if mode == ChanMode::PerOp {
        calls.add_msg(msg::OPEN, 1);
        calls.add_msg(msg::CLOSE, 1);
    }
    calls
}

// ---------------------------------------------------------------------------------------
// Counting allocator

/// The global allocator of every binary that includes this module (the tests' and the fuzz
/// crate's too): the system allocator, plus per-thread allocation statistics.
#[path = "../../tests/support/alloc.rs"]
mod alloc;

#[allow(unused_imports)] // not every bench makes it its global allocator
pub use alloc::CountingAlloc;

/// Runs `f` and returns how many heap allocations (including reallocations) it made.
///
/// Counts the calling thread's allocations: in the guest process of a simulated run, a
/// single-threaded fork, all of them. Needs [`CountingAlloc`] as the global allocator.
pub fn count_allocations(f: impl FnOnce()) -> u64 {
    alloc::measure(f).1.count
}

// ---------------------------------------------------------------------------------------
// Memory shared with the guest

/// A few `u64`s in anonymous shared memory: a forked guest writes them, the parent reads
/// them after the run.
pub struct Shared {
    ptr: std::ptr::NonNull<AtomicU64>,
    len: usize,
}

impl Shared {
    /// `len` zeroed slots.
    pub fn new(len: usize) -> Shared {
        let bytes = len.max(1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: a fresh anonymous mapping, no existing memory involved; failure is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of {bytes} bytes failed");
        let ptr = std::ptr::NonNull::new(p.cast()).expect("mmap returned null");
        Shared { ptr, len }
    }

    fn slots(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `len` zero-initialised, page-aligned u64s (AtomicU64 has
        // u64's size and alignment) and lives until `self` is dropped; every access is atomic.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Stores `value` in slot `i` (ignored past the end).
    pub fn set(&self, i: usize, value: u64) {
        if let Some(slot) = self.slots().get(i) {
            slot.store(value, Ordering::SeqCst);
        }
    }

    /// Slot `i` (0 past the end).
    pub fn get(&self, i: usize) -> u64 {
        self.slots().get(i).map_or(0, |s| s.load(Ordering::SeqCst))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let bytes = self.len.max(1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: unmaps exactly the mapping `new` made, once; no reference outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
    }
}

// ---------------------------------------------------------------------------------------
// Calls and allocations per operation

/// What one operation cost, measured in the guest and from the host's counters.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Backdoor calls per operation.
    pub calls: Calls,
    /// Message bytes guest to host and host to guest, per operation.
    pub bytes_to_host: u64,
    /// See `bytes_to_host`.
    pub bytes_to_guest: u64,
    /// Heap allocations: the fewest and the most any single operation made.
    pub allocs_min: u64,
    /// See `allocs_min`.
    pub allocs_max: u64,
}

/// Runs `op` `n` times in a guest of `host` (channel per `mode`) through the real
/// instructions, and returns the cost of one: host counters of this run minus those of the
/// same guest with no operation, divided by `n` (which must divide them exactly);
/// allocations counted around each operation inside the guest.
pub fn measure(op: Op, host: HostKind, mode: ChanMode, n: u64) -> Result<Measured, String> {
    let (base, _) = guest_run(op, host, mode, 0)?;
    let (with, allocs) = guest_run(op, host, mode, n)?;
    let exact = |name: &str, d: u64| -> Result<u64, String> {
        if n == 0 || d % n != 0 {
            return Err(format!(
                "{name}: {d} over {n} operations is not a whole number"
            ));
        }
        Ok(d / n)
    };
    let calls = Calls::between(&base, &with)?;
    Ok(Measured {
        calls: calls
            .per_op(n)
            .ok_or_else(|| format!("{} calls over {n} operations", calls.breakdown()))?,
        bytes_to_host: exact("bytes to host", with.bytes_to_host - base.bytes_to_host)?,
        bytes_to_guest: exact("bytes to guest", with.bytes_to_guest - base.bytes_to_guest)?,
        allocs_min: allocs.0,
        allocs_max: allocs.1,
    })
}

/// One guest: probe, then `n` operations; returns the host's counters and the fewest and
/// most allocations of one operation.
fn guest_run(
    op: Op,
    host: HostKind,
    mode: ChanMode,
    n: u64,
) -> Result<(Counters, (u64, u64)), String> {
    let shared = Shared::new(2);
    let prepared = op.prepare();
    let run = host
        .config()
        .run(|| {
            let mut guard = vmw_backdoor::probe_backdoor().expect("probe_backdoor");
            let (mut min, mut max) = (u64::MAX, 0);
            let mut note = |allocs: u64| {
                min = min.min(allocs);
                max = max.max(allocs);
            };
            match (op, mode) {
                (Op::Version, _) => {
                    for _ in 0..n {
                        note(count_allocations(|| {
                            guard.get_version().expect("GETVERSION");
                        }));
                    }
                }
                (_, ChanMode::Reused) => {
                    let mut chan = guard.open_enhanced_chan().expect("open");
                    for _ in 0..n {
                        note(count_allocations(|| prepared.run(&mut chan)));
                    }
                    chan.close().expect("close");
                }
                (_, ChanMode::PerOp) => {
                    for _ in 0..n {
                        note(count_allocations(|| prepared.run_per_op(&mut guard)));
                    }
                }
            }
            shared.set(0, min);
            shared.set(1, max);
        })
        .map_err(|e| format!("starting the guest: {e}"))?;
    if !run.exit.success() {
        return Err(format!(
            "{op} on {} ({}): guest {}",
            host.name(),
            mode.name(),
            run.exit
        ));
    }
    Ok((run.host.counters().clone(), (shared.get(0), shared.get(1))))
}

/// Makes the simulator's own large buffers come from the heap.
///
/// The host model allocates a fresh buffer of the message size for each RPC and each
/// high-bandwidth transfer. Whether glibc serves a 1 MiB one from its heap or from a fresh
/// `mmap` (then 256 page faults in the tracer) depends on what the tracer process allocated
/// and freed before, and moved a 1 MiB HB get between 0.34 and 0.88 ms on the machine of
/// BENCHMARKS.md. Pinning the thresholds takes the tracer's allocation history out of the
/// numbers. A closure guest forked afterwards inherits the setting (an exec'd one does not).
pub fn pin_malloc_thresholds() {
    // glibc's largest allowed mmap threshold on 64-bit (HEAP_MAX_SIZE / 2).
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = 256 << 20;
    // SAFETY: mallopt only changes allocator tuning; called before any guest starts, on the
    // thread that will trace, with in-range values (it returns 0 and changes nothing
    // otherwise).
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if !ok {
        eprintln!("warning: mallopt refused the thresholds; 1 MiB timings may vary");
    }
}

/// Keeps the calling thread, and every guest it starts from now on, on the CPU it is
/// running on.
///
/// The tracer and its guest never run at the same time: each backdoor call stops the guest,
/// wakes the tracer, and the tracer's answer wakes the guest. On two CPUs each of those
/// wake-ups can land on an idle CPU, and inside a virtual machine waking an idle vCPU goes
/// through the hypervisor: on the machine of BENCHMARKS.md, when it was otherwise idle, a
/// bare ptrace stop and resume took 66 µs instead of 3 µs. On one CPU the wake-ups are
/// plain context switches, whatever else the machine is doing.
pub fn pin_to_one_cpu() {
    // SAFETY: sched_getcpu has no arguments and no memory effects.
    let cpu = unsafe { libc::sched_getcpu() };
    let cpu = usize::try_from(cpu).unwrap_or(0);
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it (it ignores CPUs
    // beyond the set's size); sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if ok {
        eprintln!("pinned to CPU {cpu} (tracer and guests)");
    } else {
        eprintln!(
            "warning: could not pin to CPU {cpu}: {}; timings will depend on how idle the other CPUs are",
            std::io::Error::last_os_error()
        );
    }
}
