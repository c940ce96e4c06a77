//! Thin safe wrappers over every raw system call the runner makes: `ptrace`, `waitpid` and
//! `process_vm_*` on tracees, and `fork`, pipes, `prctl`/seccomp, `arch_prctl`, `tgkill` and
//! the CPUID instruction for the runner's own process (the last two on x86_64 only; the
//! registers are read with `PTRACE_GETREGS` there and `PTRACE_GETREGSET` on aarch64). The only file of the runner with
//! `unsafe`. Nothing here knows about the backdoor; the functions report failure as
//! `io::Result` (or an errno) and never panic, whatever the tracee does (a tracee may vanish
//! between any two calls).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libc::{c_int, c_long, c_void, pid_t};

/// Registers of a stopped tracee, as `PTRACE_GETREGS` (x86_64) or `PTRACE_GETREGSET` with
/// `NT_PRSTATUS` (aarch64: X0..X30, SP, PC, PSTATE) fills them.
pub(crate) type UserRegs = libc::user_regs_struct;

/// The smallest page size of x86_64 and aarch64; remote memory ranges are split at these
/// boundaries so a partial transfer reports how far it got instead of failing whole.
const PAGE: u64 = 4096;
/// The most page pieces one `process_vm_*` call carries (well under `IOV_MAX`).
const IOV_PER_CALL: usize = 32;

// ptrace requests and options (stable kernel ABI numbers; x86_64 and aarch64 share all but
// PTRACE_GETREGS/SETREGS, which only x86 has).
const PTRACE_PEEKDATA: c_long = 2;
#[cfg(target_arch = "x86_64")] // the CPUID re-arm stub only
const PTRACE_POKEDATA: c_long = 5;
const PTRACE_CONT: c_long = 7;
const PTRACE_SINGLESTEP: c_long = 9;
#[cfg(target_arch = "x86_64")]
const PTRACE_GETREGS: c_long = 12;
#[cfg(target_arch = "x86_64")]
const PTRACE_SETREGS: c_long = 13;
#[cfg(target_arch = "aarch64")]
const PTRACE_GETREGSET: c_long = 0x4204;
#[cfg(target_arch = "aarch64")]
const PTRACE_SETREGSET: c_long = 0x4205;
/// The general-purpose register set of `PTRACE_GETREGSET` (`NT_PRSTATUS` in `elf.h`).
#[cfg(target_arch = "aarch64")]
const NT_PRSTATUS: usize = 1;
const PTRACE_GETEVENTMSG: c_long = 0x4201;
const PTRACE_GETSIGINFO: c_long = 0x4202;
const PTRACE_SEIZE: c_long = 0x4206;
const PTRACE_LISTEN: c_long = 0x4208;
const PTRACE_INTERRUPT: c_long = 0x4207;
const PTRACE_DETACH: c_long = 17;
#[cfg(target_arch = "x86_64")] // the vsock calls only
const PTRACE_SYSCALL: c_long = 24;

/// `PTRACE_O_*` options the runner sets when it seizes the guest.
pub(crate) const TRACE_OPTIONS: usize = (libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_EXITKILL) as usize;

/// The stop signal of a syscall-stop (`PTRACE_O_TRACESYSGOOD` sets bit 7), which only
/// [`cont_to_syscall_exit`] asks for: no signal has this number.
#[cfg(target_arch = "x86_64")]
pub(crate) const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;

/// One raw ptrace request.
fn ptrace(request: c_long, pid: pid_t, addr: usize, data: usize) -> io::Result<c_long> {
    // SAFETY: every caller passes either plain integers or, for requests that write
    // through `data`, a pointer to a live, writable object of the size that request writes
    // (`user_regs_struct`, `siginfo_t`, `c_ulong`; for the register sets an `iovec` that
    // describes a live `user_regs_struct`). The kernel validates the pid itself.
    let r = unsafe { libc::syscall(libc::SYS_ptrace, request, pid, addr, data) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attaches to `pid` with `PTRACE_SEIZE` (no stop is caused) and the runner's options.
pub(crate) fn seize(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_SEIZE, pid, 0, TRACE_OPTIONS).map(drop)
}

/// Resumes a stopped tracee, delivering `sig` (0 = none).
pub(crate) fn cont(pid: pid_t, sig: i32) -> io::Result<()> {
    ptrace(PTRACE_CONT, pid, 0, usize::try_from(sig).unwrap_or(0)).map(drop)
}

/// Resumes a tracee stopped at a system call's entry until that call's exit, where it
/// stops again ([`SYSCALL_STOP`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn cont_to_syscall_exit(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_SYSCALL, pid, 0, 0).map(drop)
}

/// Resumes a stopped tracee for one instruction (it stops again with SIGTRAP).
pub(crate) fn single_step(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_SINGLESTEP, pid, 0, 0).map(drop)
}

/// Writes 8 bytes of tracee memory at `addr`, the way a debugger does (read-only code pages
/// get a private copy).
#[cfg(target_arch = "x86_64")]
pub(crate) fn poke8(pid: pid_t, addr: u64, bytes: [u8; 8]) -> io::Result<()> {
    let addr = usize::try_from(addr).map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
    ptrace(
        PTRACE_POKEDATA,
        pid,
        addr,
        u64::from_le_bytes(bytes) as usize,
    )
    .map(drop)
}

/// Stops a running or listening tracee (`PTRACE_INTERRUPT`); it reports a
/// `PTRACE_EVENT_STOP`.
pub(crate) fn interrupt(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_INTERRUPT, pid, 0, 0).map(drop)
}

/// Stops tracing a tracee in a ptrace-stop; one in group-stop stays stopped.
pub(crate) fn detach(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_DETACH, pid, 0, 0).map(drop)
}

/// Lets a tracee in group-stop stay stopped while still reporting events (`PTRACE_LISTEN`).
pub(crate) fn listen(pid: pid_t) -> io::Result<()> {
    ptrace(PTRACE_LISTEN, pid, 0, 0).map(drop)
}

/// The general-purpose registers of a stopped tracee.
#[cfg(target_arch = "x86_64")]
pub(crate) fn get_regs(pid: pid_t) -> io::Result<UserRegs> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: UserRegs = unsafe { std::mem::zeroed() };
    ptrace(PTRACE_GETREGS, pid, 0, &mut regs as *mut UserRegs as usize)?;
    Ok(regs)
}

/// Writes back the general-purpose registers of a stopped tracee.
#[cfg(target_arch = "x86_64")]
pub(crate) fn set_regs(pid: pid_t, regs: &UserRegs) -> io::Result<()> {
    ptrace(PTRACE_SETREGS, pid, 0, regs as *const UserRegs as usize).map(drop)
}

/// The general-purpose registers of a stopped AArch64 tracee. A 32-bit (AArch32) tracee's
/// set is shorter and is an error (`EINVAL`): the runner serves 64-bit programs only.
#[cfg(target_arch = "aarch64")]
pub(crate) fn get_regs(pid: pid_t) -> io::Result<UserRegs> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: UserRegs = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut UserRegs).cast::<c_void>(),
        iov_len: std::mem::size_of::<UserRegs>(),
    };
    // The kernel writes at most iov_len bytes into `regs` and stores the length it wrote
    // in `iov`, both live locals.
    ptrace(
        PTRACE_GETREGSET,
        pid,
        NT_PRSTATUS,
        &mut iov as *mut libc::iovec as usize,
    )?;
    if iov.iov_len != std::mem::size_of::<UserRegs>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(regs)
}

/// Writes back the general-purpose registers of a stopped AArch64 tracee.
#[cfg(target_arch = "aarch64")]
pub(crate) fn set_regs(pid: pid_t, regs: &UserRegs) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: (regs as *const UserRegs).cast_mut().cast::<c_void>(),
        iov_len: std::mem::size_of::<UserRegs>(),
    };
    // SETREGSET only reads through `iov_base`.
    ptrace(
        PTRACE_SETREGSET,
        pid,
        NT_PRSTATUS,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(drop)
}

/// The program counter in `regs`.
pub(crate) fn pc(regs: &UserRegs) -> u64 {
    #[cfg(target_arch = "x86_64")]
    return regs.rip;
    #[cfg(target_arch = "aarch64")]
    return regs.pc;
}

/// The message of the last ptrace event (new pid, former tid, seccomp data).
pub(crate) fn event_msg(pid: pid_t) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    ptrace(
        PTRACE_GETEVENTMSG,
        pid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    )?;
    Ok(msg)
}

/// `si_code` of the signal a tracee is stopped with: positive when the kernel raised it
/// (a fault), zero or negative when a process sent it (`kill`, `tgkill`, `sigqueue`).
pub(crate) fn signal_code(pid: pid_t) -> io::Result<i32> {
    // SAFETY: siginfo_t is a plain C union of integers; all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    ptrace(
        PTRACE_GETSIGINFO,
        pid,
        0,
        &mut info as *mut libc::siginfo_t as usize,
    )?;
    Ok(info.si_code)
}

/// One 8-byte word of tracee memory (any alignment), read the way a debugger does (it
/// works on execute-only pages too).
fn peek(pid: pid_t, addr: u64) -> io::Result<u64> {
    let mut word: libc::c_ulong = 0;
    let addr = usize::try_from(addr).map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
    ptrace(
        PTRACE_PEEKDATA,
        pid,
        addr,
        &mut word as *mut libc::c_ulong as usize,
    )?;
    Ok(word)
}

/// Eight bytes of tracee memory at `addr` (any alignment): the cheapest way to fetch the
/// start of an instruction (one call, no page pinning).
pub(crate) fn peek8(pid: pid_t, addr: u64) -> io::Result<[u8; 8]> {
    peek(pid, addr).map(u64::to_le_bytes)
}

/// Remote iovecs for `len` bytes at `addr`, cut at page boundaries (at most
/// [`IOV_PER_CALL`]); returns how many are filled.
fn remote_pieces(addr: u64, len: usize, out: &mut [libc::iovec; IOV_PER_CALL]) -> usize {
    let mut n = 0;
    let mut at = addr;
    let mut left = len as u64;
    while left > 0 {
        let Some(slot) = out.get_mut(n) else { break };
        let room = PAGE - (at % PAGE);
        let take = room.min(left);
        *slot = libc::iovec {
            iov_base: at as usize as *mut c_void,
            iov_len: take as usize,
        };
        n += 1;
        at = at.wrapping_add(take);
        left -= take;
    }
    n
}

/// The local side of a `process_vm_*` transfer: where the bytes go (a read) or come from
/// (a write).
enum Local<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Local<'_> {
    fn len(&self) -> usize {
        match self {
            Local::Read(buf) => buf.len(),
            Local::Write(data) => data.len(),
        }
    }
}

/// Moves bytes between `local` and tracee memory at `addr` with `process_vm_readv` or
/// `process_vm_writev`; returns how many leading bytes moved (stops at the first
/// unmapped page) or the error when not even the call worked.
fn transfer(pid: pid_t, addr: u64, mut local: Local<'_>) -> io::Result<usize> {
    let len = local.len();
    let mut done = 0usize;
    // Each round moves up to IOV_PER_CALL pages, so this ends after len / (32 * 4 KiB) + 1.
    while done < len {
        let mut remote = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; IOV_PER_CALL];
        let at = addr.wrapping_add(done as u64);
        let pieces = remote_pieces(at, len - done, &mut remote);
        let want: usize = remote.iter().take(pieces).map(|v| v.iov_len).sum();
        let end = done + want;
        // The local side is one IoSlice / IoSliceMut, which std guarantees to be
        // ABI-compatible with `struct iovec` on Unix.
        let r = match &mut local {
            Local::Read(buf) => {
                let Some(part) = buf.get_mut(done..end) else {
                    break;
                };
                let local_iov = [IoSliceMut::new(part)];
                // SAFETY: `local_iov` describes `part`, a live, writable buffer of its length,
                // and is layout-compatible with one iovec; the remote iovecs are checked by
                // the kernel, which reports EFAULT or a short count for bad addresses.
                unsafe {
                    libc::process_vm_readv(
                        pid,
                        local_iov.as_ptr().cast::<libc::iovec>(),
                        1,
                        remote.as_ptr(),
                        pieces as _,
                        0,
                    )
                }
            }
            Local::Write(data) => {
                let Some(part) = data.get(done..end) else {
                    break;
                };
                let local_iov = [IoSlice::new(part)];
                // SAFETY: as above; the kernel only reads `part` for a write.
                unsafe {
                    libc::process_vm_writev(
                        pid,
                        local_iov.as_ptr().cast::<libc::iovec>(),
                        1,
                        remote.as_ptr(),
                        pieces as _,
                        0,
                    )
                }
            }
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            return if done > 0 || err.raw_os_error() == Some(libc::EFAULT) {
                Ok(done)
            } else {
                Err(err)
            };
        }
        let moved = r as usize;
        done += moved;
        if moved < want {
            break;
        }
    }
    Ok(done)
}

/// Reads tracee memory at `addr` into `buf`; returns how many leading bytes could be read.
///
/// Falls back to word-wise `PTRACE_PEEKDATA` for what `process_vm_readv` could not read
/// (execute-only code pages, or a kernel without the call).
pub(crate) fn read_mem(pid: pid_t, addr: u64, buf: &mut [u8]) -> usize {
    let mut got = transfer(pid, addr, Local::Read(buf)).unwrap_or(0);
    // At most len / 8 + 2 words; stops at the first word that cannot be read.
    while got < buf.len() {
        let at = addr.wrapping_add(got as u64);
        let aligned = at & !7;
        let Ok(word) = peek(pid, aligned) else { break };
        let bytes = word.to_le_bytes();
        let skip = (at - aligned) as usize;
        for b in bytes.iter().skip(skip) {
            let Some(slot) = buf.get_mut(got) else { break };
            *slot = *b;
            got += 1;
        }
    }
    got
}

/// Writes `data` into tracee memory at `addr`, as the tracee itself could (a read-only page
/// is an error, as it would fault the tracee). Returns false when not all bytes landed.
pub(crate) fn write_mem(pid: pid_t, addr: u64, data: &[u8]) -> bool {
    matches!(transfer(pid, addr, Local::Write(data)), Ok(n) if n == data.len())
}

/// What `waitpid` reported for one tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Killed(i32),
    /// It is stopped: signal number and ptrace event (0 for a signal-delivery-stop).
    Stopped { sig: i32, event: i32 },
}

/// Waits for the next state change of any tracee of the calling thread. `None` when there
/// is none left (ECHILD).
pub(crate) fn wait_any() -> io::Result<Option<(pid_t, Status)>> {
    wait_for(-1)
}

/// Waits for the next state change of `pid` (-1: any tracee of the calling thread).
pub(crate) fn wait_for(pid: pid_t) -> io::Result<Option<(pid_t, Status)>> {
    // EINTR only repeats when a signal hits the tracer; bounded so a signal storm errors out.
    for _ in 0..10_000 {
        let mut raw = 0;
        // SAFETY: plain syscall with a valid out-pointer. __WNOTHREAD keeps other threads'
        // children (a concurrent run in another test thread) out of this wait.
        let got = unsafe { libc::waitpid(pid, &mut raw, libc::__WALL | libc::__WNOTHREAD) };
        if got == -1 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(None),
                _ => return Err(err),
            }
        }
        let status = if libc::WIFEXITED(raw) {
            Status::Exited(libc::WEXITSTATUS(raw))
        } else if libc::WIFSIGNALED(raw) {
            Status::Killed(libc::WTERMSIG(raw))
        } else if libc::WIFSTOPPED(raw) {
            Status::Stopped {
                sig: libc::WSTOPSIG(raw),
                event: (raw >> 16) & 0xff,
            }
        } else {
            // WIFCONTINUED is not requested; nothing else is defined.
            continue;
        };
        return Ok(Some((got, status)));
    }
    Err(io::Error::from_raw_os_error(libc::EINTR))
}

// ---- Passing the caller's termination signals on to the guest ----

/// The guest that [`forward_signals`] passes signals to (0: none).
static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signals a person or a supervisor ends a run with.
const FORWARDED: [c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn pass_on(sig: c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // A signal the kernel sent to the whole process group (Ctrl-C, a hang-up on the
    // terminal) reached the guest already; one a process sent to this one alone did not.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let from_a_process = unsafe { (*info).si_code } <= 0;
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 && from_a_process {
        // SAFETY: kill is async-signal-safe and takes integers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// While alive, SIGINT, SIGTERM, SIGHUP and SIGQUIT no longer end this process: one sent
/// to it by another process (`kill`, a supervisor) is passed on to `pid`, the guest; one
/// the kernel sent to the whole process group (a terminal's Ctrl-C) already reached the
/// guest and is only absorbed. Dropping it restores the previous handlers.
pub(crate) struct SignalForwarding {
    previous: [libc::sigaction; 4],
}

/// Starts passing termination signals on to `pid`; an error if another run already does.
pub(crate) fn forward_signals(pid: pid_t) -> io::Result<SignalForwarding> {
    use std::sync::atomic::Ordering;
    if FORWARD_TO
        .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Err(io::Error::other(
            "signals are already being passed on to the guest of another run",
        ));
    }
    // SAFETY: sigaction is plain data; all-zero is a valid value to fill in.
    let mut previous: [libc::sigaction; 4] = unsafe { std::mem::zeroed() };
    for (sig, old) in FORWARDED.iter().zip(previous.iter_mut()) {
        // SAFETY: as above; the handler only loads an atomic and calls kill.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction =
            pass_on as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as usize;
        // SA_RESTART: the tracer's waitpid goes on waiting instead of failing with EINTR.
        sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        // SAFETY: valid pointers to live sigaction structs.
        if unsafe { libc::sigaction(*sig, &sa, old) } != 0 {
            let e = io::Error::last_os_error();
            FORWARD_TO.store(0, Ordering::SeqCst);
            return Err(e);
        }
    }
    Ok(SignalForwarding { previous })
}

impl Drop for SignalForwarding {
    fn drop(&mut self) {
        for (sig, old) in FORWARDED.iter().zip(self.previous.iter()) {
            // SAFETY: restores the disposition saved by forward_signals.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        FORWARD_TO.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

// ---- Process plumbing: fork, pipes, the child's own set-up ----

/// Which side of [`fork`] the caller is on.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The caller, with the child's pid.
    Parent(pid_t),
}

/// Forks the calling process.
///
/// The child is a copy of the caller with only the calling thread; locks other threads held
/// at that moment stay held for ever in it. That is a hazard for liveness (the child may
/// hang), not for memory safety: the runner's child makes only system calls until it runs
/// the guest, and the guest closure's contract (`HostConfig::run`) says to keep to what is safe
/// after `fork`.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions; what the child may do afterwards is
    // the caller's contract described above.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Kills `pid` (a child of the caller) and reaps it; best effort.
pub(crate) fn kill_and_reap(pid: pid_t) {
    // SAFETY: kill and waitpid take integers (and a null status pointer, which waitpid
    // allows); pid is our own child, so nothing else is affected.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// A close-on-exec pipe (read end, write end); the read end is non-blocking if asked.
pub(crate) fn pipe(nonblocking_read: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [r, w] = fds;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) };
    if nonblocking_read {
        // SAFETY: fcntl with integer arguments on a descriptor we own.
        if unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((r, w))
}

/// Ends the calling process at once with `code`: no atexit handlers, no buffer flushing
/// (for the forked child, whose buffers are the parent's).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Forbids the calling process and its descendants to gain privileges (set-uid, file
/// capabilities), which an unprivileged seccomp filter requires. Returns the errno on
/// failure. One raw system call: safe between `fork` and `exec`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn set_no_new_privs() -> Result<(), i32> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Installs the classic BPF `filter` as a seccomp filter of the calling thread. Returns the
/// errno on failure. One raw system call: safe between `fork` and `exec`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn seccomp_filter(filter: &'static [libc::sock_filter]) -> Result<(), i32> {
    let len = u16::try_from(filter.len()).map_err(|_| libc::EINVAL)?;
    let prog = libc::sock_fprog {
        len,
        // The C struct has one pointer type; SECCOMP_SET_MODE_FILTER only reads through it.
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points to `filter` for its whole length, and `filter` lives for ever;
    // the kernel copies the program and never writes through the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `arch_prctl` code that turns CPUID faulting on (argument 0) or off (1).
#[cfg(target_arch = "x86_64")]
pub(crate) const ARCH_SET_CPUID: u64 = 0x1012;

/// Turns CPUID faulting on or off for the calling thread (`arch_prctl(ARCH_SET_CPUID)`);
/// false when the CPU or kernel cannot. One raw system call: safe between `fork` and `exec`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn set_cpuid_faulting(on: bool) -> bool {
    // SAFETY: arch_prctl with integer arguments; no memory is passed.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, u64::from(!on)) == 0 }
}

/// EAX, EBX, ECX, EDX of the real CPU's CPUID `leaf`/`subleaf`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    // `__cpuid_count` is an unsafe fn in older Rust (including the 1.77 MSRV) and safe in
    // recent releases; the block serves both.
    #[allow(unused_unsafe)]
    // SAFETY: every x86_64 CPU has CPUID; it only reads identification registers. The
    // tracer itself never runs with CPUID faulting, so it does not trap here.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Sends `sig` to thread `tid` of thread group `tgid` (`tgkill`).
pub(crate) fn tgkill(tgid: pid_t, tid: pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes integers only; the kernel checks that the thread exists.
    if unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---- A guest's sockets, reached from the runner ----

/// A pidfd for `pid` (`pidfd_open`, Linux 5.3); `thread`: for that thread itself
/// (`PIDFD_THREAD`, Linux 6.9) rather than its thread group, whose leader `pid` must be.
#[cfg(target_arch = "x86_64")]
pub(crate) fn pidfd_open(pid: pid_t, thread: bool) -> io::Result<OwnedFd> {
    let flags = if thread { libc::O_EXCL } else { 0 };
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as c_int) })
}

/// A duplicate of the process's (or thread's) descriptor `fd` (`pidfd_getfd`, Linux 5.6;
/// close-on-exec). It shares the open file: a socket bound or connected through it is
/// the guest's socket.
#[cfg(target_arch = "x86_64")]
pub(crate) fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(r as c_int) })
}

/// The `AF_UNIX` address of the abstract name `name` (the leading NUL is added here).
#[cfg(target_arch = "x86_64")]
fn abstract_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain integers; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = addr
        .sun_path
        .get_mut(1..=name.len())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    for (dst, &b) in path.iter_mut().zip(name) {
        *dst = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((addr, len as libc::socklen_t))
}

/// Binds socket `fd` to the abstract `AF_UNIX` name `name`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn bind_abstract(fd: &OwnedFd, name: &[u8]) -> io::Result<()> {
    at_abstract(fd, name, libc::bind)
}

/// Connects socket `fd` to the abstract `AF_UNIX` name `name`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn connect_abstract(fd: &OwnedFd, name: &[u8]) -> io::Result<()> {
    at_abstract(fd, name, libc::connect)
}

/// `bind` or `connect` (`call`) of `fd` to the abstract name `name`.
#[cfg(target_arch = "x86_64")]
fn at_abstract(
    fd: &OwnedFd,
    name: &[u8],
    call: unsafe extern "C" fn(c_int, *const libc::sockaddr, libc::socklen_t) -> c_int,
) -> io::Result<()> {
    let (addr, len) = abstract_addr(name)?;
    // SAFETY: `call` is libc's bind or connect; `addr` is a live sockaddr_un and `len`
    // does not exceed its size.
    let r = unsafe {
        call(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's errno (no allocation: usable in the forked child).
#[cfg(target_arch = "x86_64")]
fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}
