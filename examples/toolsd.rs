//! `toolsd`: a minimal VMware Tools agent for systems that cannot run open-vm-tools (the
//! shape of Talos's): the host sees "tools running", the guest's host name and addresses,
//! and its power buttons work.
//!
//! ```text
//! toolsd [--on-halt CMD] [--on-reboot CMD] [--on-poweron CMD] [--on-resume CMD]
//!        [--on-suspend CMD] [--guest-info-interval SECONDS]
//! ```
//!
//! Each power operation the host asks for is logged on stderr; after the host has been
//! told (status, then `OK `), its command, if any, runs through `sh -c` and toolsd waits
//! for it (`--on-halt poweroff`, `--on-reboot reboot`). SIGTERM or SIGINT stops it
//! cleanly: the owed reply goes out, capabilities are withdrawn, channels close, exit 0.
//! Exits 1 outside VMware, 2 on a usage error.

use std::io::Write;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use vmw_backdoor::tools::{GuestInfo, PowerOp, ToolsConfig, ToolsHandler, ToolsService};

/// The write end of the self-pipe the signal handler writes to; -1 before it exists.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a live local byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// SIGTERM and SIGINT write a byte to a pipe; a thread blocked on the pipe stops the
/// service. The handler does nothing else, so nothing unsafe runs in signal context.
fn stop_on_signals(stop: vmw_backdoor::tools::StopHandle) -> std::io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: installs the handler above, which only calls write(2).
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let read_end = fds[0];
    std::thread::spawn(move || {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a live local from the pipe's read end.
        while unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) } < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
        stop.stop();
    });
    Ok(())
}

/// The agent: power operations run their configured commands; the guest reports itself.
#[derive(Default)]
struct Agent {
    commands: [Option<String>; 5],
}

impl ToolsHandler for Agent {
    fn power_op(&mut self, op: PowerOp) -> bool {
        eprintln!("toolsd: the host requests {op}");
        true
    }

    fn after_power_op(&mut self, op: PowerOp, _accepted: bool) {
        let Some(cmd) = self.commands[op.id() as usize - 1].as_deref() else {
            return;
        };
        eprintln!("toolsd: {op}: running {cmd}");
        match Command::new("/bin/sh").arg("-c").arg(cmd).status() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("toolsd: {op}: {cmd}: {status}"),
            Err(e) => eprintln!("toolsd: {op}: cannot run {cmd}: {e}"),
        }
    }

    fn guest_info(&mut self) -> GuestInfo {
        GuestInfo::from_system()
    }

    fn channel_error(&mut self, error: &vmw_backdoor::VmwError) {
        eprintln!("toolsd: host channel: {error}; reopening");
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "toolsd: {msg}\nusage: toolsd [--on-halt CMD] [--on-reboot CMD] [--on-poweron CMD] \
         [--on-resume CMD] [--on-suspend CMD] [--guest-info-interval SECONDS]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut agent = Agent::default();
    let mut config = ToolsConfig::default();
    config.version_log = Some(format!(
        "toolsd (vmw_backdoor {})",
        env!("CARGO_PKG_VERSION")
    ));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--on-halt" => Some(PowerOp::Halt),
            "--on-reboot" => Some(PowerOp::Reboot),
            "--on-poweron" => Some(PowerOp::PowerOn),
            "--on-resume" => Some(PowerOp::Resume),
            "--on-suspend" => Some(PowerOp::Suspend),
            "--guest-info-interval" => {
                let Some(secs) = args.next().and_then(|s| s.parse::<u64>().ok()) else {
                    return usage("--guest-info-interval needs a number of seconds");
                };
                config.guest_info_interval = Duration::from_secs(secs.max(1));
                None
            }
            "-h" | "--help" => return usage("a VMware Tools agent"),
            other => return usage(&format!("unknown argument '{other}'")),
        };
        if let Some(op) = slot {
            let Some(cmd) = args.next() else {
                return usage(&format!("{arg} needs a command"));
            };
            agent.commands[op.id() as usize - 1] = Some(cmd);
        }
    }

    let guard = match vmw_backdoor::probe_backdoor_privileged()
        .or_else(|_| vmw_backdoor::probe_backdoor())
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("toolsd: {e}");
            return ExitCode::from(1);
        }
    };
    let mut service = ToolsService::with_config(guard, config);
    if let Err(e) = stop_on_signals(service.stop_handle()) {
        eprintln!("toolsd: cannot watch for signals: {e}");
        return ExitCode::from(1);
    }
    match service.run(&mut agent) {
        Ok(()) => {
            let _ = std::io::stderr().flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("toolsd: {e}");
            ExitCode::from(1)
        }
    }
}
