//! A guest agent's side of the host's conversation: the TCLO loop of VMware Tools.
//!
//! The host (the VMX) talks to the guest's tools agent over a *TCLO* channel (protocol
//! `0x4F4C4354`, "TCLO" in memory order), opened like an RPCI channel, cookies first. The
//! roles are reversed: the guest polls, the host commands. Each turn the guest sends the
//! reply to the previous command — an empty message when there is none; the first message
//! after OPEN is always empty, and that empty send is how the host learns an agent exists —
//! then asks for the next command (RECVSIZE): no DORECV means the host has nothing to say.
//! A host that sees no poll for a while says the tools are not running (the simulator
//! waits 20 s, `sim::HostConfig::tools_heartbeat`; the VMX's own timeout is not published).
//!
//! Replies are text, `OK ` or `ERROR ` and a result, with no trailing NUL. The command is
//! read as a C string (up to its first NUL) and dispatched on its first space-delimited
//! word:
//!
//! | command | reply | side messages (RPCI), sent before the reply |
//! |---|---|---|
//! | `reset` | `OK ATR toolbox` (the agent's name) | `vmx.capability.unified_loop toolbox`; once, `log toolbox: Version: …` |
//! | `ping` | `OK ` | |
//! | `Capabilities_Register` | `OK ` | uptime (`SetGuestInfo  7 …`), each capability (`tools.capability.NAME VALUE`, or `tools.capability.NAME ` without a value), `tools.set.versiontype V T` (on refusal `tools.set.version V`) |
//! | `Set_Option NAME VALUE` | `OK ` (vmtoolsd 12 takes every option); `ERROR Unknown or invalid option` without a value | `broadcastIP 1`: `info-set guestinfo.ip IPV4`; other options go to [`ToolsHandler::set_option`] |
//! | `OS_Halt`, `OS_Reboot`, `OS_PowerOn`, `OS_Resume`, `OS_Suspend` | `OK ` | `tools.os.statechange.status 1 ID` (ids 1 to 5), for a halt or reboot `log Initiating halt.` (`reboot.`); then the application acts |
//! | anything else | what [`ToolsHandler::command`] answers, else `ERROR Unknown Command` | |
//! | nothing (empty, only spaces) | `ERROR Bad command` | |
//!
//! Side messages go over an RPCI channel of their own, exactly as open-vm-tools' `vmtoolsd`
//! sends them: each with a trailing NUL, except the no-value capabilities (the host wants
//! the trailing space and no NUL) and the binary NIC report. Guest information is reported
//! as `SetGuestInfo  ID VALUE` (two spaces): 5 the OS's full name, 6 its short name, 1 the
//! DNS name, 10 the NIC list (NIC info version 3, in XDR), 7 the uptime in hundredths of a
//! second; after each `reset` and every 30 seconds, each value only when it changed. When
//! the run ends, capabilities with a value are withdrawn (`tools.capability.NAME 0`), the
//! reply still owed is sent, and both channels close.
//!
//! The poll schedule is vmtoolsd's: the next turn at once after a command, then 10, 20,
//! 40, 80, 100, 100, … ms while the host is quiet. A failed turn (a checkpoint that would
//! not end, a channel the host closed) closes both channels; they are reopened after 1 s,
//! then 2, 4, … up to 60 s while failures go on.
//!
//! ```no_run
//! use vmw_backdoor::tools::{GuestInfo, PowerOp, ToolsHandler, ToolsService};
//!
//! struct Agent;
//!
//! impl ToolsHandler for Agent {
//!     fn after_power_op(&mut self, op: PowerOp, accepted: bool) {
//!         if accepted && op == PowerOp::Halt {
//!             // The host's "shut down guest": the application does it (the library never
//!             // shuts the machine down by itself).
//!             let _ = std::process::Command::new("poweroff").status();
//!         }
//!     }
//!     fn guest_info(&mut self) -> GuestInfo {
//!         GuestInfo::from_system()
//!     }
//! }
//!
//! # fn main() -> Result<(), vmw_backdoor::VmwError> {
//! let guard = vmw_backdoor::probe_backdoor()?;
//! let mut service = ToolsService::new(guard);
//! let stop = service.stop_handle(); // give a clone to a signal-watching thread
//! # let _ = stop;
//! service.run(&mut Agent)?; // until stop.stop()
//! # Ok(()) }
//! ```

mod dispatch;
mod nicinfo;
#[cfg(unix)]
mod system;

use core::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::erpc::channel::Channel;
use crate::erpc::rpci::{split_status, Reply};
use crate::proto::{MAX_GUEST_MESSAGE, PROTO_RPCI, PROTO_TCLO};
use crate::{BackdoorAccess, ErrorKind, VmwError};

/// `tools.set.version` value meaning "tools not managed by VMware" (`TOOLS_VERSION_UNMANAGED`).
pub const TOOLS_VERSION_UNMANAGED: u32 = 0x7FFF_FFFF;
/// `tools.set.versiontype` type of open-vm-tools (`TOOLS_TYPE_OVT`).
pub const TOOLS_TYPE_OVT: u32 = 4;

/// A tick of the poll schedule: vmtoolsd counts its delay in 10 ms units.
const TICK: Duration = Duration::from_millis(10);
/// Longest RPCI reply a side message's answer may be (answers are short: `1 `).
const SIDE_REPLY_CAP: usize = 64 << 10;
/// Guest-info ids (open-vm-tools' `GuestInfoType`).
const INFO_DNS_NAME: u32 = 1;
const INFO_OS_NAME_FULL: u32 = 5;
const INFO_OS_NAME: u32 = 6;
const INFO_UPTIME: u32 = 7;
const INFO_IPADDRESS_V3: u32 = 10;

/// A power operation the host asks for (the host's power buttons with "guest" actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerOp {
    /// `OS_Halt`: shut the guest down (state id 1).
    Halt,
    /// `OS_Reboot`: restart the guest (state id 2).
    Reboot,
    /// `OS_PowerOn`: the VM was just powered on (state id 3); run start-up actions.
    PowerOn,
    /// `OS_Resume`: the VM resumed from suspend (state id 4); refresh what went stale.
    Resume,
    /// `OS_Suspend`: the VM is about to be suspended (state id 5).
    Suspend,
}

impl PowerOp {
    /// Every operation, in state-id order.
    pub const ALL: [PowerOp; 5] = [
        PowerOp::Halt,
        PowerOp::Reboot,
        PowerOp::PowerOn,
        PowerOp::Resume,
        PowerOp::Suspend,
    ];

    /// The state id `tools.os.statechange.status` reports (`GuestOsState`: 1 to 5).
    #[must_use]
    pub fn id(self) -> u32 {
        match self {
            PowerOp::Halt => 1,
            PowerOp::Reboot => 2,
            PowerOp::PowerOn => 3,
            PowerOp::Resume => 4,
            PowerOp::Suspend => 5,
        }
    }

    /// The TCLO command the host sends for it (`OS_Halt`, …).
    #[must_use]
    pub fn command(self) -> &'static str {
        match self {
            PowerOp::Halt => "OS_Halt",
            PowerOp::Reboot => "OS_Reboot",
            PowerOp::PowerOn => "OS_PowerOn",
            PowerOp::Resume => "OS_Resume",
            PowerOp::Suspend => "OS_Suspend",
        }
    }

    fn from_command(name: &[u8]) -> Option<PowerOp> {
        PowerOp::ALL
            .into_iter()
            .find(|op| op.command().as_bytes() == name)
    }
}

impl fmt::Display for PowerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command())
    }
}

/// One address of a [`Nic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicAddr {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length (24 for a /24; 0 when unknown).
    pub prefix_len: u8,
}

/// A network interface as the host lists it in the VM's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nic {
    /// MAC address, as vmtoolsd writes it: lowercase hex pairs with colons
    /// (`00:50:56:aa:bb:cc`); at most 18 bytes are sent.
    pub mac: String,
    /// Its addresses, loopback excluded, in order of preference.
    pub ips: Vec<NicAddr>,
}

/// What the guest tells the host about itself; `None` and empty fields are not reported.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestInfo {
    /// The DNS (host) name, `SetGuestInfo  1`.
    pub dns_name: Option<String>,
    /// The OS's full name (`Linux 6.1.0-18-amd64 Debian GNU/Linux 12 (bookworm)`),
    /// `SetGuestInfo  5`.
    pub os_name_full: Option<String>,
    /// The OS's short name, one the host knows (`other6xlinux-64`, `debian12-64`),
    /// `SetGuestInfo  6`.
    pub os_name: Option<String>,
    /// Time since boot in hundredths of a second, `SetGuestInfo  7` (the host detects
    /// guest reboots by it).
    pub uptime_centis: Option<u64>,
    /// The network interfaces, `SetGuestInfo  10` (NIC info v3), primary first: the
    /// first IPv4 address of the first NIC that has one answers `Set_Option broadcastIP 1`.
    pub nics: Vec<Nic>,
}

impl GuestInfo {
    /// The address `Set_Option broadcastIP 1` reports: the first IPv4 address of the first
    /// NIC that has one.
    #[must_use]
    pub fn primary_ipv4(&self) -> Option<Ipv4Addr> {
        self.nics
            .iter()
            .flat_map(|n| &n.ips)
            .find_map(|a| match a.addr {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
    }
}

/// A capability the agent announces on `Capabilities_Register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// Its name after `tools.capability.` (`statechange`, `hgfs_server`, …).
    pub name: String,
    /// Its value: `tools.capability.NAME VALUE`; `None` sends the no-value form,
    /// `tools.capability.NAME ` (trailing space, no NUL), as the power-operation
    /// capabilities are sent.
    pub value: Option<u32>,
}

/// How the service presents itself; `ToolsConfig::default()` is vmtoolsd's main service
/// with power operations (`toolbox`, capabilities `statechange` and `softpowerop_retry`,
/// unmanaged version), polling every 100 ms at most.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolsConfig {
    /// The agent's name, in `OK ATR NAME` and `vmx.capability.unified_loop NAME`
    /// (`toolbox` is the main tools service; `toolbox-dnd` the user session's).
    pub app_name: String,
    /// Announced on `Capabilities_Register`, in order.
    pub capabilities: Vec<Capability>,
    /// The version `tools.set.versiontype` (or `tools.set.version`) reports; default
    /// [`TOOLS_VERSION_UNMANAGED`] (tools the host does not manage or upgrade).
    pub tools_version: u32,
    /// The type `tools.set.versiontype` reports; default [`TOOLS_TYPE_OVT`].
    pub tools_type: u32,
    /// Sent once, after the first `reset`, as the VMX log line `log NAME: Version: TEXT`
    /// (vmtoolsd logs its version this way); `None` sends nothing.
    pub version_log: Option<String>,
    /// `tools.capability.guest_conf_directory PATH`, after the capabilities (vmtoolsd
    /// sends its configuration directory); `None` sends nothing.
    pub conf_directory: Option<String>,
    /// How often guest information is gathered and changed values sent (vmtoolsd: 30 s).
    pub guest_info_interval: Duration,
    /// The longest idle poll interval (vmtoolsd: 100 ms); the schedule doubles from
    /// 10 ms up to it. Rounded down to 10 ms, at least 10 ms.
    pub max_poll_interval: Duration,
    /// The first wait before reopening after a failure; it doubles while failures go on.
    pub reopen_delay: Duration,
    /// The longest wait before reopening.
    pub max_reopen_delay: Duration,
    /// The longest host command accepted; a longer one fails the turn (and the channel is
    /// reopened) before it is fetched.
    pub max_command_len: usize,
    /// Whether every well-formed `Set_Option NAME VALUE` is answered `OK ` whatever
    /// [`ToolsHandler::set_option`] says (default: yes, as vmtoolsd 12 answers: its core
    /// takes every option, for `guestLogLevel`); with `false` an option nobody takes gets
    /// `ERROR Unknown or invalid option`, as older vmtoolsd answered.
    pub accept_all_options: bool,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        let noval = |name: &str| Capability {
            name: name.into(),
            value: None,
        };
        ToolsConfig {
            app_name: "toolbox".into(),
            capabilities: vec![noval("statechange"), noval("softpowerop_retry")],
            tools_version: TOOLS_VERSION_UNMANAGED,
            tools_type: TOOLS_TYPE_OVT,
            version_log: Some(format!("vmw_backdoor {}", env!("CARGO_PKG_VERSION"))),
            conf_directory: None,
            guest_info_interval: Duration::from_secs(30),
            max_poll_interval: Duration::from_millis(100),
            reopen_delay: Duration::from_secs(1),
            max_reopen_delay: Duration::from_secs(60),
            max_command_len: 1 << 20,
            accept_all_options: true,
        }
    }
}

/// What the application decides and does; every method has a default, so an agent
/// implements only what it handles.
///
/// Called on the service's thread, between polls: keep each call short (the host waits
/// for the reply; vmtoolsd's host gives up on a command after some seconds).
pub trait ToolsHandler {
    /// The host asks for a power operation: whether the guest will do it (default: yes).
    /// The answer is reported first (`tools.os.statechange.status 1 ID`, or `0 ID`), then
    /// the host gets `OK `, then [`after_power_op`](Self::after_power_op) is called.
    fn power_op(&mut self, op: PowerOp) -> bool {
        let _ = op;
        true
    }

    /// The host has been told (status, then `OK `): now act — shut down, reboot, refresh.
    /// `accepted` is what [`power_op`](Self::power_op) answered. The library never shuts
    /// the machine down itself. Default: nothing.
    fn after_power_op(&mut self, op: PowerOp, accepted: bool) {
        let _ = (op, accepted);
    }

    /// `Set_Option NAME VALUE` for an option the library does not handle itself (it
    /// handles `broadcastIP` and the `toolScripts.*` switches): whether the application
    /// takes it (default: no). The host hears `OK ` either way unless
    /// [`ToolsConfig::accept_all_options`] is off, when an option nobody takes gets
    /// `ERROR Unknown or invalid option`.
    fn set_option(&mut self, name: &[u8], value: &[u8]) -> bool {
        let _ = (name, value);
        false
    }

    /// A command the library does not know: `Some(Ok(result))` answers `OK result`,
    /// `Some(Err(text))` answers `ERROR text`, `None` (the default) answers
    /// `ERROR Unknown Command`. `args` is everything after the command name, leading
    /// space included. The answer is cut to fit a message (65,536 bytes).
    fn command(&mut self, name: &[u8], args: &[u8]) -> Option<Result<Vec<u8>, Vec<u8>>> {
        let _ = (name, args);
        None
    }

    /// What to report to the host now (default: nothing). Called after each `reset`,
    /// on `Capabilities_Register` (for the uptime) and every
    /// [`ToolsConfig::guest_info_interval`]; cheap calls are best.
    fn guest_info(&mut self) -> GuestInfo {
        GuestInfo::default()
    }

    /// A turn failed (the channels are closed and will be reopened after a back-off);
    /// for logging. Default: nothing (the library logs at debug level).
    fn channel_error(&mut self, error: &VmwError) {
        let _ = error;
    }
}

/// Stops a running [`ToolsService`] from another thread; clones stop the same service.
///
/// The service finishes its turn (sending a pending reply), closes its channels and
/// returns from [`ToolsService::run`]; a stop before `run` makes it return at once.
#[derive(Clone, Default)]
pub struct StopHandle {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopHandle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl StopHandle {
    /// Asks the service to stop; wakes it if it is waiting between polls.
    pub fn stop(&self) {
        let (flag, wake) = &*self.inner;
        *flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
    }

    /// Whether [`stop`](Self::stop) was called.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        *self
            .inner
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits `duration` or until stopped, whichever comes first (for [`Clock`]
    /// implementations); true when stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        let (flag, wake) = &*self.inner;
        let deadline = Instant::now().checked_add(duration);
        let mut stopped = flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !*stopped {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                break;
            }
            stopped = match wake.wait_timeout(stopped, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        *stopped
    }
}

/// Where the service reads the time and how it waits: the system's monotonic clock by
/// default ([`SystemClock`]); a test can give it a virtual one that advances on every
/// wait, to count what the schedule does over a minute without waiting a minute.
pub trait Clock {
    /// Time since any fixed point, never going back.
    fn now(&mut self) -> Duration;

    /// Waits `duration`, or less if `stop` is stopped meanwhile.
    fn sleep(&mut self, duration: Duration, stop: &StopHandle);
}

/// The system's monotonic clock ([`Instant`]); waits wake early when stopped.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&mut self) -> Duration {
        self.start.elapsed()
    }

    fn sleep(&mut self, duration: Duration, stop: &StopHandle) {
        stop.sleep(duration);
    }
}

/// What a [`ToolsService`] has done so far.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Loop turns (each one send and one receive on the TCLO channel, when it works).
    pub turns: u64,
    /// Host commands answered.
    pub commands: u64,
    /// Turns that failed (the channels were then closed and reopened later).
    pub errors: u64,
    /// TCLO channels opened (the first and every reopen).
    pub opens: u64,
    /// Side messages sent over RPCI.
    pub side_messages: u64,
}

/// The TCLO service a guest agent embeds: polls the host, answers its commands, reports
/// the guest. See the [module documentation](self) for the protocol.
///
/// Generic over any [`BackdoorAccess`]: a [`BackdoorGuard`](crate::BackdoorGuard) in
/// production, the simulator's in-memory host in tests. Blocking, one thread, no runtime:
/// [`run`](Self::run) until a [`StopHandle`] stops it, or [`run_for`](Self::run_for) a
/// while. Channels are opened on the first turn and closed when the run ends.
pub struct ToolsService<A: BackdoorAccess> {
    access: A,
    config: ToolsConfig,
    tclo: Option<Channel>,
    side: Option<Channel>,
    clock: Box<dyn Clock>,
    stop: StopHandle,
    /// The reply owed to the host's last command, sent on the next turn.
    reply: Option<Vec<u8>>,
    /// A power operation answered this turn, to act on after its reply went out.
    acting: Option<(PowerOp, bool)>,
    /// The poll delay in 10 ms ticks (vmtoolsd's `delay`).
    delay: u32,
    /// The next reopen wait after a failure.
    backoff: Duration,
    /// When the next guest-information report is due (clock time).
    next_gather: Duration,
    /// Guest info last sent, by id (only changes are sent again).
    sent: [Option<Vec<u8>>; 11],
    version_logged: bool,
    /// Capabilities were announced: they are withdrawn when the run ends.
    caps_registered: bool,
    stats: ServiceStats,
}

impl<A: BackdoorAccess> fmt::Debug for ToolsService<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolsService")
            .field("access", &format_args!("{}", std::any::type_name::<A>()))
            .field("app_name", &self.config.app_name)
            .field("tclo", &self.tclo)
            .field("side", &self.side)
            .field("delay_ms", &(u64::from(self.delay) * 10))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Whether an error means there is no backdoor to talk to (nothing to retry).
fn fatal(e: &VmwError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotVmware | ErrorKind::Unsupported | ErrorKind::Privilege | ErrorKind::System
    )
}

fn too_large_command(len: usize) -> VmwError {
    VmwError::new(
        ErrorKind::TooLarge,
        format_args!("the host's TCLO command is {len} bytes, over ToolsConfig::max_command_len"),
    )
}

fn too_large_reply(len: usize) -> VmwError {
    VmwError::new(
        ErrorKind::TooLarge,
        format_args!("the host's answer to a side message is {len} bytes"),
    )
}

/// `OK ` / `ERROR ` and the result, cut to one message.
fn reply(ok: bool, result: &[u8]) -> Vec<u8> {
    let status: &[u8] = if ok { b"OK " } else { b"ERROR " };
    let room = MAX_GUEST_MESSAGE - status.len();
    [status, result.get(..room).unwrap_or(result)].concat()
}

/// Text with the trailing NUL vmtoolsd's `strlen + 1` sends.
fn with_nul(parts: &[&[u8]]) -> Vec<u8> {
    let mut m = parts.concat();
    m.push(0);
    m
}

impl<A: BackdoorAccess> ToolsService<A> {
    /// A service over `access` with the default [`ToolsConfig`]. Nothing is sent yet.
    pub fn new(access: A) -> Self {
        Self::with_config(access, ToolsConfig::default())
    }

    /// A service over `access` presenting itself as `config` says. Nothing is sent yet.
    pub fn with_config(access: A, config: ToolsConfig) -> Self {
        let backoff = config.reopen_delay;
        ToolsService {
            access,
            config,
            tclo: None,
            side: None,
            clock: Box::new(SystemClock::default()),
            stop: StopHandle::default(),
            reply: None,
            acting: None,
            delay: 0,
            backoff,
            next_gather: Duration::MAX,
            sent: Default::default(),
            version_logged: false,
            caps_registered: false,
            stats: ServiceStats::default(),
        }
    }

    /// A handle that stops [`run`](Self::run) from another thread (or a signal-watching
    /// one).
    #[must_use]
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Replaces the clock the schedule runs on (default [`SystemClock`]).
    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.clock = clock;
    }

    /// What the service has done so far.
    #[must_use]
    pub fn stats(&self) -> ServiceStats {
        self.stats
    }

    /// Serves the host until the [`StopHandle`] is stopped, then sends the reply still
    /// owed, closes the channels and returns `Ok(())`.
    ///
    /// Channel failures (checkpoints that would not end, a channel the host closed, a
    /// host with no channel free) are not returned: [`ToolsHandler::channel_error`] hears
    /// of them and the channels are reopened after a back-off.
    ///
    /// # Errors
    ///
    /// When there is no backdoor to talk to: [`ErrorKind::NotVmware`],
    /// [`ErrorKind::Unsupported`], or the access's own errors
    /// ([`ErrorKind::Privilege`], [`ErrorKind::System`]).
    pub fn run<H: ToolsHandler + ?Sized>(&mut self, handler: &mut H) -> Result<(), VmwError> {
        self.run_until(handler, None)
    }

    /// As [`run`](Self::run), but returns after `limit` of [`Clock`] time at the latest.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub fn run_for<H: ToolsHandler + ?Sized>(
        &mut self,
        handler: &mut H,
        limit: Duration,
    ) -> Result<(), VmwError> {
        let end = self.clock.now().saturating_add(limit);
        self.run_until(handler, Some(end))
    }

    fn run_until<H: ToolsHandler + ?Sized>(
        &mut self,
        handler: &mut H,
        end: Option<Duration>,
    ) -> Result<(), VmwError> {
        let result = loop {
            if self.stop.is_stopped() || end.is_some_and(|e| self.clock.now() >= e) {
                break Ok(());
            }
            let wait = match self.turn(handler) {
                Ok(wait) => wait,
                Err(e) => break Err(e),
            };
            if !wait.is_zero() {
                let wait = match end {
                    Some(e) => wait.min(e.saturating_sub(self.clock.now())),
                    None => wait,
                };
                self.clock.sleep(wait, &self.stop);
            }
        };
        self.finish(handler);
        result
    }

    /// One turn: send what is owed, take a command, answer it. Returns how long to wait
    /// before the next turn.
    fn turn<H: ToolsHandler + ?Sized>(&mut self, handler: &mut H) -> Result<Duration, VmwError> {
        self.stats.turns += 1;
        let acting = self.acting.take();
        let polled = self.poll();
        if let Some((op, accepted)) = acting {
            handler.after_power_op(op, accepted);
        }
        let command = match polled {
            Ok(command) => command,
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => return Ok(self.failed(handler, &e)),
        };
        self.backoff = self.config.reopen_delay;
        match command {
            Some(command) => {
                self.stats.commands += 1;
                let answer = self.answer(handler, &command)?;
                self.reply = Some(answer);
                self.delay = 0;
            }
            None => {
                // vmtoolsd's RpcInUpdateDelayTime: 1 tick, then doubling up to the cap.
                let max = (self.config.max_poll_interval.as_millis() / 10).clamp(1, 100_000) as u32;
                self.delay = match self.delay {
                    0 => 1,
                    d => d.saturating_mul(2),
                }
                .min(max);
            }
        }
        if self.clock.now() >= self.next_gather {
            self.gather(handler)?;
        }
        Ok(TICK * self.delay)
    }

    /// The TCLO send and receive, opening the channel first when needed.
    fn poll(&mut self) -> Result<Option<Vec<u8>>, VmwError> {
        let mut b = self.access.backdoor()?;
        if self.tclo.is_none() {
            let channel = Channel::open(&mut b, PROTO_TCLO)?;
            self.stats.opens += 1;
            // A new channel starts with the empty "I am here": nothing is owed on it.
            self.reply = None;
            self.tclo = Some(channel);
        }
        let Some(tclo) = self.tclo.as_mut() else {
            return Ok(None);
        };
        let message = self.reply.take().unwrap_or_default();
        let cap = self.config.max_command_len;
        let too_large = |len: usize| too_large_command(len);
        tclo.poll(&mut b, &message, cap, &too_large)
    }

    /// After a failed turn: both channels closed, the wait before reopening.
    fn failed<H: ToolsHandler + ?Sized>(&mut self, handler: &mut H, e: &VmwError) -> Duration {
        log::debug!("TCLO turn failed, reopening after {:?}: {e}", self.backoff);
        self.stats.errors += 1;
        handler.channel_error(e);
        self.close_channels();
        self.reply = None;
        self.delay = 0;
        let wait = self.backoff;
        self.backoff = self
            .backoff
            .saturating_mul(2)
            .min(self.config.max_reopen_delay.max(self.config.reopen_delay));
        wait
    }

    fn close_channels(&mut self) {
        let Ok(mut b) = self.access.backdoor() else {
            self.tclo = None;
            self.side = None;
            return;
        };
        for channel in [self.tclo.take(), self.side.take()].into_iter().flatten() {
            let mut channel = channel;
            if channel.is_open() {
                if let Err(e) = channel.close(&mut b) {
                    log::debug!("closing a tools channel: {e}");
                }
            }
        }
    }

    /// The end of a run: the owed reply goes out (as vmtoolsd's RpcIn_stop sends it, with
    /// no receive after it), a power operation it answered is acted on, both channels
    /// close.
    fn finish<H: ToolsHandler + ?Sized>(&mut self, handler: &mut H) {
        if std::mem::take(&mut self.caps_registered) {
            // As vmtoolsd unloading its plugins: valued capabilities go back to 0; the
            // no-value ones are not sent.
            for cap in self.config.capabilities.clone() {
                if cap.value.is_some() {
                    let request = with_nul(&[b"tools.capability.", cap.name.as_bytes(), b" 0"]);
                    if let Err(e) = self.tell(&request) {
                        log::debug!("withdrawing capability {}: {e}", cap.name);
                    }
                }
            }
        }
        if let (Some(message), Some(tclo)) = (self.reply.take(), self.tclo.as_mut()) {
            if let Ok(mut b) = self.access.backdoor() {
                if let Err(e) = tclo.send_message(&mut b, &message) {
                    log::debug!("sending the last TCLO reply: {e}");
                }
            }
        }
        if let Some((op, accepted)) = self.acting.take() {
            handler.after_power_op(op, accepted);
        }
        self.close_channels();
        self.delay = 0;
    }

    /// One side message over RPCI: the host's answer, `Ok(true)` for `1 …`.
    fn side(&mut self, request: &[u8]) -> Result<(bool, Vec<u8>), VmwError> {
        self.stats.side_messages += 1;
        let mut b = self.access.backdoor()?;
        let side = match self.side.as_mut() {
            Some(side) => side,
            None => self.side.insert(Channel::open(&mut b, PROTO_RPCI)?),
        };
        let raw = side.exchange(&mut b, request, SIDE_REPLY_CAP, &too_large_reply)?;
        Ok(match split_status(raw)? {
            Reply::Success(payload) => (true, payload),
            Reply::Refused(text) => (false, text),
        })
    }

    /// A side message whose failure is only logged (as vmtoolsd only warns); whether the
    /// host said `1 `. Errors that mean no backdoor at all are returned.
    fn tell(&mut self, request: &[u8]) -> Result<bool, VmwError> {
        match self.side(request) {
            Ok((true, _)) => Ok(true),
            Ok((false, text)) => {
                log::debug!(
                    "the host refused \"{}\": {}",
                    dispatch::c_str(request).escape_ascii(),
                    text.escape_ascii()
                );
                Ok(false)
            }
            Err(e) if fatal(&e) => Err(e),
            Err(e) => {
                // The channel closed itself after the failure; the next message reopens it.
                log::debug!("side message failed: {e}");
                Ok(false)
            }
        }
    }

    /// The reply to one host command (side messages sent on the way).
    fn answer<H: ToolsHandler + ?Sized>(
        &mut self,
        handler: &mut H,
        command: &[u8],
    ) -> Result<Vec<u8>, VmwError> {
        let Some((name, args)) = dispatch::split_command(command) else {
            return Ok(reply(false, b"Bad command"));
        };
        let app = self.config.app_name.clone();
        Ok(match name {
            b"reset" => {
                self.tell(&with_nul(&[
                    b"vmx.capability.unified_loop ",
                    app.as_bytes(),
                ]))?;
                if !self.version_logged {
                    self.version_logged = true;
                    if let Some(text) = self.config.version_log.clone() {
                        let line = format!("log {app}: Version: {text}");
                        self.tell(&with_nul(&[line.as_bytes()]))?;
                    }
                }
                // As after vmtoolsd's reset: everything is reported again, soon.
                self.sent = Default::default();
                self.next_gather = self.clock.now();
                reply(true, format!("ATR {app}").as_bytes())
            }
            b"ping" => reply(true, b""),
            b"Capabilities_Register" => {
                let info = handler.guest_info();
                if let Some(uptime) = info.uptime_centis {
                    self.report(INFO_UPTIME, uptime.to_string().as_bytes())?;
                }
                for cap in self.config.capabilities.clone() {
                    let request = match cap.value {
                        Some(v) => with_nul(&[
                            b"tools.capability.",
                            cap.name.as_bytes(),
                            b" ",
                            v.to_string().as_bytes(),
                        ]),
                        None => [b"tools.capability.", cap.name.as_bytes(), b" "].concat(),
                    };
                    self.tell(&request)?;
                }
                if let Some(dir) = self.config.conf_directory.clone() {
                    self.tell(&with_nul(&[
                        b"tools.capability.guest_conf_directory ",
                        dir.as_bytes(),
                    ]))?;
                }
                self.caps_registered = true;
                let (version, kind) = (self.config.tools_version, self.config.tools_type);
                let typed = format!("tools.set.versiontype {version} {kind}");
                if !self.tell(&with_nul(&[typed.as_bytes()]))? {
                    let plain = format!("tools.set.version {version}");
                    self.tell(&with_nul(&[plain.as_bytes()]))?;
                }
                reply(true, b"")
            }
            b"Set_Option" => {
                let well_formed = dispatch::split_option(args).is_some();
                let taken = match dispatch::split_option(args) {
                    Some((b"broadcastIP", b"0")) => true,
                    Some((b"broadcastIP", b"1")) => {
                        let ip = handler
                            .guest_info()
                            .primary_ipv4()
                            .map(|ip| ip.to_string())
                            .unwrap_or_default();
                        self.tell(&with_nul(&[b"info-set guestinfo.ip ", ip.as_bytes()]))?
                    }
                    Some((b"broadcastIP", _)) | None => false,
                    // vmtoolsd's powerOps takes these (run its scripts around power
                    // operations, or not); here the application's handler is the action.
                    Some((
                        b"toolScripts.afterPowerOn"
                        | b"toolScripts.beforePowerOff"
                        | b"toolScripts.afterResume"
                        | b"toolScripts.beforeSuspend",
                        b"0" | b"1",
                    )) => true,
                    Some((option, value)) => handler.set_option(option, value),
                };
                if taken || (well_formed && self.config.accept_all_options) {
                    reply(true, b"")
                } else {
                    reply(false, b"Unknown or invalid option")
                }
            }
            _ => {
                if let Some(op) = PowerOp::from_command(name) {
                    let accepted = handler.power_op(op);
                    let status = format!(
                        "tools.os.statechange.status {} {}",
                        u8::from(accepted),
                        op.id()
                    );
                    self.tell(&with_nul(&[status.as_bytes()]))?;
                    // vmtoolsd logs these two to the VM's log before it acts.
                    let line: &[u8] = match op {
                        PowerOp::Halt => b"log Initiating halt.",
                        PowerOp::Reboot => b"log Initiating reboot.",
                        _ => b"",
                    };
                    if accepted && !line.is_empty() {
                        self.tell(&with_nul(&[line]))?;
                    }
                    self.acting = Some((op, accepted));
                    reply(true, b"")
                } else {
                    match handler.command(name, args) {
                        Some(Ok(result)) => reply(true, &result),
                        Some(Err(text)) => reply(false, &text),
                        None => reply(false, b"Unknown Command"),
                    }
                }
            }
        })
    }

    /// `SetGuestInfo  ID VALUE` when VALUE changed since it was last accepted.
    fn report(&mut self, id: u32, value: &[u8]) -> Result<(), VmwError> {
        let slot = id as usize;
        if self.sent.get(slot).and_then(Option::as_deref) == Some(value) {
            return Ok(());
        }
        let request = with_nul(&[format!("SetGuestInfo  {id} ").as_bytes(), value]);
        if self.tell(&request)? {
            if let Some(s) = self.sent.get_mut(slot) {
                *s = Some(value.to_vec());
            }
        }
        Ok(())
    }

    /// Gathers guest information and sends what changed, in vmtoolsd's order: OS names,
    /// DNS name, NICs, uptime.
    fn gather<H: ToolsHandler + ?Sized>(&mut self, handler: &mut H) -> Result<(), VmwError> {
        self.next_gather = self
            .clock
            .now()
            .saturating_add(self.config.guest_info_interval);
        let info = handler.guest_info();
        for (id, value) in [
            (INFO_OS_NAME_FULL, &info.os_name_full),
            (INFO_OS_NAME, &info.os_name),
            (INFO_DNS_NAME, &info.dns_name),
        ] {
            if let Some(v) = value
                .as_deref()
                .filter(|v| !v.is_empty() && !v.contains('\0'))
            {
                self.report(id, v.as_bytes())?;
            }
        }
        if !info.nics.is_empty() {
            let prefix = format!("SetGuestInfo  {INFO_IPADDRESS_V3} ");
            let request = nicinfo::encode(prefix.as_bytes(), &info.nics, MAX_GUEST_MESSAGE);
            let slot = INFO_IPADDRESS_V3 as usize;
            if self.sent.get(slot).and_then(Option::as_deref) != Some(&request[..])
                && self.tell(&request)?
            {
                if let Some(s) = self.sent.get_mut(slot) {
                    *s = Some(request);
                }
            }
        }
        if let Some(uptime) = info.uptime_centis {
            self.report(INFO_UPTIME, uptime.to_string().as_bytes())?;
        }
        Ok(())
    }
}

impl<A: BackdoorAccess> Drop for ToolsService<A> {
    fn drop(&mut self) {
        self.close_channels();
    }
}
