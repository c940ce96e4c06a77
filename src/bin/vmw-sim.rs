//! `vmw-sim`: run any program as the guest of a simulated VMware host.
//!
//! ```text
//! vmw-sim -e guestinfo.ignition.config.data=@config.ign --stats stats.json -- ./my-agent
//! ```
//!
//! See `vmw-sim --help` ([`USAGE`]). The option names are a contract other tools build on.

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn main() {
    std::process::exit(cli::main(std::env::args_os().skip(1).collect()));
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn main() {
    eprintln!("vmw-sim: runs on Linux x86_64 and aarch64 only");
    std::process::exit(2);
}

/// The help text.
#[cfg_attr(
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )),
    allow(dead_code)
)]
const USAGE: &str = "\
vmw-sim: run a program as the guest of a simulated VMware host

Usage: vmw-sim [OPTIONS] -- COMMAND [ARGS...]

COMMAND and every process and thread it starts run traced: their VMware backdoor
instructions (in/out on port 0x5658, rep outsb/insb on 0x5659, and vmcall/vmmcall
where the CPU traps them; on arm64 the same port calls described in X7 and trapped with
mrs xzr, mdccsr_el0) are answered by a model of the VMware host, as inside a VMware VM.
vmw-sim waits for every process COMMAND started, then exits with COMMAND's status (128+N
when signal N killed it; 127 when it could not be started). Processes left stopped
(SIGSTOP, SIGTSTP) once all others have ended are not waited for: they are let go, still
stopped, as a shell leaves them. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to vmw-sim are
passed on to COMMAND, and the outputs are still written when it has exited.

Host:
  -e guestinfo.KEY=VALUE     set a guestinfo entry (repeatable); VALUE = @FILE reads the
                             value from FILE. -e machine.id=VALUE sets what
                             `machine.id.get` answers.
  --product esx|workstation  product type GETVERSION reports (default: esx)
  --no-hb                    offer no high-bandwidth transfers
  --no-cookies               no cookie-protected channels (an old host)
  --channels N               channels open at once (default: 128; old hosts: 8)
  --cpt-every N              a checkpoint at every Nth message-payload step
  --deny-guestinfo           answer info-get/info-set with \"Permission denied\" on
                             every channel but privileged vsock (= --require-privileged
                             info-get --require-privileged info-set)
  --require-privileged CMD   serve the RPCI command CMD (its first word) only on the
                             privileged channel, as a VMX with
                             guest_rpc.rpci.auth.cmd.CMD = \"TRUE\" does (repeatable): the
                             backdoor and unprivileged vsock answer \"0 Permission
                             denied\". Offers vsock unless --no-vsock
  --vsock                    offer RPCI over vsock (x86_64): the guest's AF_VSOCK
                             sockets are served by the simulator, a connection to CID 0
                             or 2, port 976, reaches the host (privileged from a source
                             port below 1024, which needs CAP_NET_BIND_SERVICE; other
                             CIDs and ports: ECONNRESET). Never this machine's vsock
  --no-vsock                 no vsock (the default without --require-privileged):
                             socket(AF_VSOCK) fails with EAFNOSUPPORT, as on a kernel
                             without vsock
  --vsock-reset N            reset the first N vsock connections (connect fails with
                             ECONNRESET; open-vm-tools tries the next port, 8 times)
  --guest-stat ID=VALUE      a Guest API statistic (guestlib.info.get, what
                             `vmware-toolbox-cmd stat` reads; ids as open-vm-tools'
                             guestlibV3.x numbers them: 7 memory limit MB, 12 ballooned
                             MB, 13 swapped MB, ...; repeatable)
  --no-guest-api             a host without the Guest API
  --device NAME=connected|disconnected
                             a removable device (backdoor commands 11 and 12, what
                             `vmware-toolbox-cmd device` lists and toggles; repeatable)
  --tclo COMMAND             queue a host-to-guest TCLO command (repeatable); each is
                             sent when the reply to the previous one came back. Without
                             any: reset, ping, Capabilities_Register
  --tclo-close               queue a close of the guest's TCLO channel (it must reopen)
  --tclo-wait MS             queue a pause: no command for MS milliseconds
  --allow-power-ops          allow --tclo OS_Halt, OS_Reboot, OS_PowerOn, OS_Resume,
                             OS_Suspend. WARNING: an unmodified vmtoolsd running as root
                             acts on them -- on this machine. Refused without this option.

Machine:
  --not-vmware               bare metal: backdoor access faults (SIGSEGV) unless the
                             guest holds I/O privilege, and then finds no device
  --restrict-backdoor        VMware with ring-3 backdoor access restricted: it faults
                             unless the guest holds I/O privilege
  --iopl creds|ok|eperm|enosys
                             what the guest's iopl/ioperm calls do: what the calling
                             thread's credentials get (default: with CAP_SYS_RAWIO, as
                             root, they succeed, else EPERM), succeed, fail with EPERM
                             (lockdown) or ENOSYS (kernel without CONFIG_X86_IOPL_IOPERM)
  --vmware-cpuid             make CPUID name the hypervisor VMwareVMware, for tools
                             that check it (vmware-checkvm, vmware-rpctool); needs CPUID
                             faulting, and makes every trap slower inside a VM
  --hypercall vmcall|vmmcall advertise that hypercall in CPUID leaf 0x40000010 (seen
                             with --vmware-cpuid; repeatable). Both are served anyway
                             where the CPU traps them (KVM answers its own vendor's)
  --sev-es                   an AMD SEV-ES guest: the ports carry only EAX (unprivileged
                             access faults), vmcall faults, vmmcall works for
                             low-bandwidth calls and fails high-bandwidth ones
  --tdx                      an Intel TDX guest: every backdoor access faults; with
                             --vmware-cpuid, CPUID leaf 0x21 says IntelTDX
  (arm64 has no I/O privilege, no CPUID and no hypercall instruction: there --iopl,
  --vmware-cpuid and --hypercall change nothing, and a machine whose backdoor faults makes
  the trap a SIGILL)

Output (written when COMMAND has exited, each to a temporary file then renamed, so a
killed run never leaves a half-written or emptied file; in the text outputs a byte
outside printable ASCII, and a backslash, is written \\xNN):
  --stats FILE               the host's counters as one JSON object (port calls in
                             lb_calls/hb_in_calls/hb_out_calls, hypercalls in
                             vmcall_calls/vmmcall_calls, vsock in
                             vsock_connections/vsock_rpcs)
  --vmx-log FILE             every `log` line the guest sent, one a line
  --dump-guestinfo FILE      the final guestinfo store as KEY=VALUE lines (keys in
                             lower case: the host matches them in any case, as VMware does)
  --tclo-log FILE            each TCLO command, a tab, the guest's reply, one a line
  --rpci-log FILE            every RPCI request the guest sent (backdoor and vsock), one
                             a line
  --trace                    while the guest runs, write each RPCI request with the
                             host's reply, and each TCLO command with the guest's, to
                             stderr: \"vmw-sim: rpci: REQUEST -> REPLY\", escaped as above

Warnings (an option the simulator cannot honour here, ...) go to stderr; RUST_LOG=debug
(or error, warn, info, trace, off) changes how much is said.

  -h, --help                 print this help
";

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod cli {
    use std::ffi::{OsStr, OsString};
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;
    use std::process::Command;

    use vmw_backdoor::proto::GUESTINFO_PREFIX;
    use vmw_backdoor::sim::{HostConfig, Hypercall, IoplPolicy, Mode, SimRun};
    use vmw_backdoor::Product;

    /// Exit status for a usage error.
    const USAGE_EXIT: i32 = 2;

    /// A parsed command line.
    struct Options {
        config: HostConfig,
        iopl: IoplPolicy,
        vmware_cpuid: bool,
        outputs: Vec<(OsString, Output)>,
        command: Vec<OsString>,
    }

    /// What the command line asks for.
    enum Parsed {
        Run(Box<Options>),
        Help,
    }

    pub fn main(args: Vec<OsString>) -> i32 {
        Logger::install();
        let opts = match parse(args) {
            Ok(Parsed::Run(opts)) => opts,
            Ok(Parsed::Help) => {
                let mut out = std::io::stdout().lock();
                return match out
                    .write_all(super::USAGE.as_bytes())
                    .and_then(|()| out.flush())
                {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("vmw-sim: cannot write the help: {e}");
                        1
                    }
                };
            }
            Err(msg) => {
                eprintln!("vmw-sim: {msg}\nTry 'vmw-sim --help'.");
                return USAGE_EXIT;
            }
        };
        // Create the temporary files first: a typo in a path should not cost a whole run.
        let mut outputs = Vec::new();
        for (path, kind) in &opts.outputs {
            match Pending::create(path) {
                Ok(p) => outputs.push((p, *kind)),
                Err(e) => {
                    eprintln!("vmw-sim: cannot create {}: {e}", path.to_string_lossy());
                    return USAGE_EXIT;
                }
            }
        }
        let Some((program, args)) = opts.command.split_first() else {
            return USAGE_EXIT;
        };
        let mut cmd = Command::new(program);
        cmd.args(args);
        let sim = opts
            .config
            .iopl(opts.iopl)
            .vmware_cpuid(opts.vmware_cpuid)
            .forward_signals(true);
        let run = match sim.run_command(&mut cmd) {
            Ok(run) => run,
            Err(e) => {
                eprintln!("vmw-sim: cannot run {}: {e}", program.to_string_lossy());
                return match e.kind() {
                    std::io::ErrorKind::PermissionDenied => 126,
                    _ => 127,
                };
            }
        };
        let mut status = run.exit.code();
        for (pending, kind) in outputs {
            let path = pending.path.clone();
            if let Err(e) = pending.finish(&kind.render(&run)) {
                eprintln!("vmw-sim: cannot write {}: {e}", path.to_string_lossy());
                if status == 0 {
                    status = 1;
                }
            }
        }
        status
    }

    /// An output file being written: a temporary file beside it, renamed over it when
    /// complete (removed if never finished).
    struct Pending {
        path: PathBuf,
        temp: PathBuf,
        file: Option<File>,
    }

    impl Pending {
        fn create(path: &OsStr) -> std::io::Result<Pending> {
            let path = PathBuf::from(path);
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".vmw-sim-{}.tmp", std::process::id()));
            let temp = path.with_file_name(name);
            let file = File::create(&temp)?;
            Ok(Pending {
                path,
                temp,
                file: Some(file),
            })
        }

        fn finish(mut self, bytes: &[u8]) -> std::io::Result<()> {
            let mut file = self.file.take().expect("written once");
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&self.temp, &self.path)
        }
    }

    impl Drop for Pending {
        fn drop(&mut self) {
            if self.file.is_some() || self.temp.exists() {
                let _ = std::fs::remove_file(&self.temp);
            }
        }
    }

    /// Bytes as text, one record a line: printable ASCII as it is, anything else and the
    /// backslash as `\xNN`, so a value or log line with a newline stays on its line and
    /// the original bytes can be read back.
    fn escape(bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            if (0x20..0x7f).contains(&b) && b != b'\\' {
                out.push(b);
            } else {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
        }
    }

    /// The warnings and debug records of the library and the runner, on stderr.
    struct Logger(log::LevelFilter);

    impl Logger {
        fn install() {
            let level = match std::env::var("RUST_LOG").ok().as_deref().map(str::trim) {
                Some("off") => log::LevelFilter::Off,
                Some("error") => log::LevelFilter::Error,
                Some("info") => log::LevelFilter::Info,
                Some("debug") => log::LevelFilter::Debug,
                Some("trace") => log::LevelFilter::Trace,
                _ => log::LevelFilter::Warn,
            };
            static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();
            if log::set_logger(LOGGER.get_or_init(|| Logger(level))).is_ok() {
                log::set_max_level(level);
            }
        }
    }

    impl log::Log for Logger {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= self.0
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                let level = record.level().as_str().to_ascii_lowercase();
                eprintln!("vmw-sim: {level}: {}", record.args());
            }
        }
        fn flush(&self) {}
    }

    /// The files `vmw-sim` writes after the run.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Output {
        Stats,
        VmxLog,
        Guestinfo,
        TcloLog,
        RpciLog,
    }

    impl Output {
        /// The option that asks for this output.
        fn option(self) -> &'static str {
            match self {
                Output::Stats => "--stats",
                Output::VmxLog => "--vmx-log",
                Output::Guestinfo => "--dump-guestinfo",
                Output::TcloLog => "--tclo-log",
                Output::RpciLog => "--rpci-log",
            }
        }

        fn render(self, run: &SimRun) -> Vec<u8> {
            let mut out = Vec::new();
            match self {
                Output::Stats => {
                    out.extend_from_slice(run.host.stats_json().as_bytes());
                    out.push(b'\n');
                }
                Output::VmxLog => {
                    for line in run.host.vmx_log() {
                        escape(line, &mut out);
                        out.push(b'\n');
                    }
                }
                Output::TcloLog => out = run.host.tclo_log(),
                Output::RpciLog => out = run.host.rpci_log(),
                Output::Guestinfo => {
                    for (key, value) in run.host.guestinfo() {
                        escape(key, &mut out);
                        out.push(b'=');
                        escape(value, &mut out);
                        out.push(b'\n');
                    }
                }
            }
            out
        }
    }

    fn parse(args: Vec<OsString>) -> Result<Parsed, String> {
        let mut config = HostConfig::default();
        let mut iopl = IoplPolicy::Credentials;
        let mut vmware_cpuid = false;
        let mut allow_power_ops = false;
        let mut power_op: Option<String> = None;
        let mut tclo_given = false;
        let mut outputs: Vec<(OsString, Output)> = Vec::new();
        let mut mode: Option<Mode> = None;
        let mut vsock: Option<bool> = None;
        let mut command = Vec::new();
        let mut args = args.into_iter();
        // Each round consumes at least one argument.
        while let Some(arg) = args.next() {
            let Some(text) = arg.to_str() else {
                return Err(format!("unexpected argument '{}'", arg.to_string_lossy()));
            };
            if text == "--" {
                break;
            }
            if !text.starts_with('-') || text == "-" {
                // The command starts here (the `--` is optional when it cannot be mistaken
                // for an option).
                command.push(arg);
                break;
            }
            // `--opt=value` is the same as `--opt value`.
            let (name, inline) = match text.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(OsString::from(v))),
                _ => (text, None),
            };
            let mut value = |what: &str| -> Result<OsString, String> {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs {what}"))
            };
            match name {
                "-h" | "--help" => return Ok(Parsed::Help),
                "-e" => config = setting(config, &value("KEY=VALUE")?)?,
                "--no-hb" => config = config.no_hb(),
                "--no-cookies" => config = config.no_cookies(),
                "--channels" => {
                    let n: usize = number(name, &value("a number")?)?;
                    if n == 0 {
                        return Err("--channels: a host has at least one channel".into());
                    }
                    config = config.channels(n);
                }
                "--product" => {
                    let p = value("esx or workstation")?;
                    config = config.product(match p.to_str() {
                        Some("esx") => Product::EsxServer,
                        Some("workstation") => Product::Workstation,
                        _ => number(name, &p).map(Product::from_raw).map_err(|_| {
                            format!(
                                "--product: expected esx or workstation, got '{}'",
                                p.to_string_lossy()
                            )
                        })?,
                    });
                }
                "--not-vmware" | "--restrict-backdoor" => {
                    let m = if name == "--not-vmware" {
                        Mode::NotVmware
                    } else {
                        Mode::RestrictBackdoor
                    };
                    if mode.is_some_and(|prev| prev != m) {
                        return Err(
                            "--not-vmware and --restrict-backdoor exclude each other".into()
                        );
                    }
                    mode = Some(m);
                    config = config.mode(m);
                }
                "--cpt-every" => config = config.cpt_every(number(name, &value("a number")?)?),
                "--deny-guestinfo" => config = config.deny_guestinfo(),
                "--require-privileged" => {
                    let command = value("a command")?;
                    if command.is_empty() || command.as_bytes().contains(&b' ') {
                        return Err(format!(
                            "--require-privileged: expected one command name, got '{}'",
                            command.to_string_lossy()
                        ));
                    }
                    config = config.require_privileged(command.as_bytes());
                }
                "--vsock" | "--no-vsock" => {
                    let on = name == "--vsock";
                    if vsock.is_some_and(|prev| prev != on) {
                        return Err("--vsock and --no-vsock exclude each other".into());
                    }
                    vsock = Some(on);
                    config = config.vsock(on);
                }
                "--vsock-reset" => {
                    config = config.vsock_reset_connects(number(name, &value("a number")?)?);
                }
                "--guest-stat" => {
                    let v = value("ID=VALUE")?;
                    let parsed = v
                        .to_str()
                        .and_then(|t| t.split_once('='))
                        .and_then(|(id, n)| {
                            Some((id.parse::<u32>().ok()?, n.parse::<u64>().ok()?))
                        });
                    match parsed {
                        Some((id, n)) if (1..=38).contains(&id) && id != 18 && id != 37 => {
                            config = config.guest_stat(id, n);
                        }
                        _ => {
                            return Err(format!(
                                "--guest-stat: expected ID=VALUE with a numeric statistic id \
                                 1..=38 (not the strings 18, 37), got '{}'",
                                v.to_string_lossy()
                            ))
                        }
                    }
                }
                "--no-guest-api" => config = config.no_guest_api(),
                "--trace" => config = config.trace(true),
                "--device" => {
                    let v = value("NAME=connected|disconnected")?;
                    let (device, state) = v
                        .to_str()
                        .and_then(|t| t.rsplit_once('='))
                        .unwrap_or_default();
                    let connected = match state {
                        "connected" => true,
                        "disconnected" => false,
                        _ => {
                            return Err(format!(
                                "--device: expected NAME=connected or NAME=disconnected, got '{}'",
                                v.to_string_lossy()
                            ))
                        }
                    };
                    if device.is_empty() || device.len() > 31 {
                        return Err(format!(
                            "--device: a device name has 1 to 31 bytes, got '{device}'"
                        ));
                    }
                    config = config.removable_device(device, connected);
                }
                "--vmware-cpuid" => vmware_cpuid = true,
                "--hypercall" => {
                    let v = value("vmcall or vmmcall")?;
                    config = config.hypercall(match v.to_str() {
                        Some("vmcall") => Hypercall::Vmcall,
                        Some("vmmcall") => Hypercall::Vmmcall,
                        _ => {
                            return Err(format!(
                                "--hypercall: expected vmcall or vmmcall, got '{}'",
                                v.to_string_lossy()
                            ))
                        }
                    });
                }
                "--sev-es" => config = config.sev_es(true),
                "--tdx" => config = config.tdx(true),
                "--tclo" => {
                    let command = value("a command")?;
                    if HostConfig::is_power_op(command.as_bytes()) && power_op.is_none() {
                        power_op = Some(command.to_string_lossy().into_owned());
                    }
                    config = config.tclo(command.as_bytes());
                    tclo_given = true;
                }
                "--tclo-wait" => {
                    let ms: u64 = number(name, &value("milliseconds")?)?;
                    config = config.tclo_wait(std::time::Duration::from_millis(ms));
                    tclo_given = true;
                }
                "--tclo-close" => {
                    config = config.tclo_close();
                    tclo_given = true;
                }
                "--allow-power-ops" => allow_power_ops = true,
                "--iopl" => {
                    let v = value("creds, ok, eperm or enosys")?;
                    iopl = match v.to_str() {
                        Some("creds") => IoplPolicy::Credentials,
                        Some("ok") => IoplPolicy::Allow,
                        Some("eperm") => IoplPolicy::Eperm,
                        Some("enosys") => IoplPolicy::Enosys,
                        _ => {
                            return Err(format!(
                                "--iopl: expected creds, ok, eperm or enosys, got '{}'",
                                v.to_string_lossy()
                            ))
                        }
                    };
                }
                "--stats" | "--vmx-log" | "--dump-guestinfo" | "--tclo-log" | "--rpci-log" => {
                    let kind = match name {
                        "--stats" => Output::Stats,
                        "--vmx-log" => Output::VmxLog,
                        "--tclo-log" => Output::TcloLog,
                        "--rpci-log" => Output::RpciLog,
                        _ => Output::Guestinfo,
                    };
                    let path = value("a file")?;
                    if let Some((_, other)) = outputs.iter().find(|(p, _)| *p == path) {
                        return Err(format!(
                            "{name} and {} name the same file '{}'",
                            other.option(),
                            path.to_string_lossy()
                        ));
                    }
                    outputs.retain(|(_, k)| *k != kind);
                    outputs.push((path, kind));
                }
                _ => return Err(format!("unknown option '{text}'")),
            }
            if inline.is_some() && !takes_value(name) {
                return Err(format!("{name} takes no value"));
            }
        }
        command.extend(args);
        if !tclo_given {
            for c in vmw_backdoor::sim::DEFAULT_TCLO_SCRIPT {
                config = config.tclo(c);
            }
        }
        if command.is_empty() {
            return Err("no command given (vmw-sim [OPTIONS] -- COMMAND [ARGS...])".into());
        }
        if vmware_cpuid && mode == Some(Mode::NotVmware) {
            return Err(
                "--vmware-cpuid has no effect with --not-vmware (bare metal shows its \
                        own CPUID)"
                    .into(),
            );
        }
        if let (Some(op), false) = (&power_op, allow_power_ops) {
            return Err(format!(
                "--tclo {op} is a power operation: a real tools daemon (vmtoolsd as root) \
                 would act on it, on this machine; pass --allow-power-ops to send it anyway"
            ));
        }
        let config = config.allow_power_ops(allow_power_ops);
        Ok(Parsed::Run(Box::new(Options {
            config,
            iopl,
            vmware_cpuid,
            outputs,
            command,
        })))
    }

    fn takes_value(name: &str) -> bool {
        matches!(
            name,
            "--channels"
                | "--product"
                | "--cpt-every"
                | "--tclo"
                | "--guest-stat"
                | "--device"
                | "--iopl"
                | "--hypercall"
                | "--stats"
                | "--vmx-log"
                | "--dump-guestinfo"
                | "--tclo-log"
                | "--rpci-log"
                | "--tclo-wait"
                | "--require-privileged"
                | "--vsock-reset"
        )
    }

    /// One `-e KEY=VALUE` setting.
    fn setting(config: HostConfig, arg: &OsStr) -> Result<HostConfig, String> {
        let bytes = arg.as_bytes();
        let Some(eq) = bytes.iter().position(|&b| b == b'=') else {
            return Err(format!(
                "-e: expected KEY=VALUE, got '{}'",
                arg.to_string_lossy()
            ));
        };
        let (key, value) = bytes.split_at(eq);
        let value = value.get(1..).unwrap_or_default();
        let value = match value.strip_prefix(b"@") {
            Some(path) => std::fs::read(OsStr::from_bytes(path)).map_err(|e| {
                format!(
                    "-e {}: cannot read {}: {e}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(path)
                )
            })?,
            None => value.to_vec(),
        };
        let prefixed = key
            .get(..GUESTINFO_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(GUESTINFO_PREFIX));
        match key {
            b"machine.id" => Ok(config.machine_id(value)),
            k if prefixed && k.len() > GUESTINFO_PREFIX.len() => {
                if k.iter().any(|b| b.is_ascii_whitespace() || *b == 0) {
                    return Err(format!(
                        "-e: the key '{}' contains whitespace or NUL, which no guest can name",
                        String::from_utf8_lossy(k).escape_debug()
                    ));
                }
                Ok(config.guestinfo(k, value))
            }
            _ => Err(format!(
                "-e: only guestinfo.KEY and machine.id can be set, not '{}'",
                String::from_utf8_lossy(key)
            )),
        }
    }

    fn number<T: std::str::FromStr>(name: &str, v: &OsStr) -> Result<T, String> {
        v.to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{name}: expected a number, got '{}'", v.to_string_lossy()))
    }
}
