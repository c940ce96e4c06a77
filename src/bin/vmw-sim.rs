//! `vmw-sim`: run any program as the guest of a simulated VMware host.
//!
//! ```text
//! vmw-sim -e guestinfo.ignition.config.data=@config.ign --stats stats.json -- ./my-agent
//! ```
//!
//! See `vmw-sim --help` ([`USAGE`]). The option names are a contract other tools build on.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    std::process::exit(cli::main(std::env::args_os().skip(1).collect()));
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("vmw-sim: runs on Linux x86_64 only");
    std::process::exit(2);
}

/// The help text.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
const USAGE: &str = "\
vmw-sim: run a program as the guest of a simulated VMware host

Usage: vmw-sim [OPTIONS] -- COMMAND [ARGS...]

COMMAND and every process and thread it starts run traced: their VMware backdoor
instructions (in/out on port 0x5658, rep outsb/insb on 0x5659) are answered by a model of
the VMware host, as inside a VMware VM. vmw-sim waits for every process COMMAND started,
then exits with COMMAND's status (128+N when signal N killed it; 127 when it could not be
started).

Host:
  -e guestinfo.KEY=VALUE     set a guestinfo entry (repeatable); VALUE = @FILE reads the
                             value from FILE. -e machine.id=VALUE sets what
                             `machine.id.get` answers.
  --product esx|workstation  product type GETVERSION reports (default: esx)
  --no-hb                    offer no high-bandwidth transfers
  --no-cookies               no cookie-protected channels (an old host)
  --channels N               channels open at once (default: 128; old hosts: 8)
  --cpt-every N              a checkpoint at every Nth message-payload step
  --deny-guestinfo           answer info-get/info-set with \"Permission denied\"
  --tclo COMMAND             queue a host-to-guest TCLO command (repeatable); each is
                             sent when the reply to the previous one came back. Without
                             any: reset, ping, Capabilities_Register
  --tclo-close               queue a close of the guest's TCLO channel (it must reopen)
  --tclo-wait MS             queue a pause: no command for MS milliseconds

Machine:
  --not-vmware               bare metal: backdoor access faults (SIGSEGV) unless the
                             guest holds I/O privilege, and then finds no device
  --restrict-backdoor        VMware with ring-3 backdoor access restricted: it faults
                             unless the guest holds I/O privilege
  --iopl ok|eperm|enosys     what the guest's iopl/ioperm calls do: succeed (default),
                             fail with EPERM (no CAP_SYS_RAWIO, lockdown) or ENOSYS
                             (kernel without CONFIG_X86_IOPL_IOPERM)
  --vmware-cpuid             make CPUID name the hypervisor VMwareVMware, for tools
                             that check it (vmware-checkvm, vmware-rpctool); needs CPUID
                             faulting, and makes every trap slower inside a VM

Output (written when COMMAND has exited):
  --stats FILE               the host's counters as one JSON object
  --vmx-log FILE             every `log` line the guest sent, one a line
  --dump-guestinfo FILE      the final guestinfo store as KEY=VALUE lines
  --tclo-log FILE            each TCLO command, a tab, the guest's reply, one a line
  --rpci-log FILE            every RPCI request the guest sent, one a line
                             (in both, bytes outside printable ASCII and \\ as \\xNN)

  -h, --help                 print this help
";

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod cli {
    use std::ffi::{OsStr, OsString};
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::process::Command;

    use vmw_backdoor::proto::GUESTINFO_PREFIX;
    use vmw_backdoor::sim::{HostConfig, IoplPolicy, Mode, SimRun};
    use vmw_backdoor::Product;

    /// Exit status for a usage error.
    const USAGE_EXIT: i32 = 2;

    /// A parsed command line.
    struct Options {
        config: HostConfig,
        iopl: IoplPolicy,
        vmware_cpuid: bool,
        stats: Option<OsString>,
        vmx_log: Option<OsString>,
        dump_guestinfo: Option<OsString>,
        tclo_log: Option<OsString>,
        rpci_log: Option<OsString>,
        command: Vec<OsString>,
    }

    /// What the command line asks for.
    enum Parsed {
        Run(Box<Options>),
        Help,
    }

    pub fn main(args: Vec<OsString>) -> i32 {
        let opts = match parse(args) {
            Ok(Parsed::Run(opts)) => opts,
            Ok(Parsed::Help) => {
                print!("{}", super::USAGE);
                return 0;
            }
            Err(msg) => {
                eprintln!("vmw-sim: {msg}\nTry 'vmw-sim --help'.");
                return USAGE_EXIT;
            }
        };
        // Create the output files first: a typo in a path should not cost a whole run.
        let mut outputs = Vec::new();
        for (path, kind) in [
            (&opts.stats, Output::Stats),
            (&opts.vmx_log, Output::VmxLog),
            (&opts.dump_guestinfo, Output::Guestinfo),
            (&opts.tclo_log, Output::TcloLog),
            (&opts.rpci_log, Output::RpciLog),
        ] {
            if let Some(path) = path {
                match File::create(path) {
                    Ok(f) => outputs.push((f, kind, path.clone())),
                    Err(e) => {
                        eprintln!("vmw-sim: cannot create {}: {e}", path.to_string_lossy());
                        return USAGE_EXIT;
                    }
                }
            }
        }
        let Some((program, args)) = opts.command.split_first() else {
            return USAGE_EXIT;
        };
        let mut cmd = Command::new(program);
        cmd.args(args);
        let sim = opts.config.iopl(opts.iopl).vmware_cpuid(opts.vmware_cpuid);
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
        for (mut file, kind, path) in outputs {
            if let Err(e) = file.write_all(&kind.render(&run)) {
                eprintln!("vmw-sim: cannot write {}: {e}", path.to_string_lossy());
                if status == 0 {
                    status = 1;
                }
            }
        }
        status
    }

    /// The files `vmw-sim` writes after the run.
    #[derive(Clone, Copy)]
    enum Output {
        Stats,
        VmxLog,
        Guestinfo,
        TcloLog,
        RpciLog,
    }

    impl Output {
        fn render(self, run: &SimRun) -> Vec<u8> {
            let mut out = Vec::new();
            match self {
                Output::Stats => {
                    out.extend_from_slice(run.host.stats_json().as_bytes());
                    out.push(b'\n');
                }
                Output::VmxLog => {
                    for line in run.host.vmx_log() {
                        out.extend_from_slice(line);
                        out.push(b'\n');
                    }
                }
                Output::TcloLog => out = run.host.tclo_log(),
                Output::RpciLog => out = run.host.rpci_log(),
                Output::Guestinfo => {
                    for (key, value) in run.host.guestinfo() {
                        out.extend_from_slice(key);
                        out.push(b'=');
                        out.extend_from_slice(value);
                        out.push(b'\n');
                    }
                }
            }
            out
        }
    }

    fn parse(args: Vec<OsString>) -> Result<Parsed, String> {
        let mut config = HostConfig::default();
        let mut iopl = IoplPolicy::Allow;
        let mut vmware_cpuid = false;
        let (mut stats, mut vmx_log, mut dump_guestinfo) = (None, None, None);
        let (mut tclo_log, mut rpci_log, mut tclo_given) = (None, None, false);
        let mut mode: Option<Mode> = None;
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
                "--channels" => config = config.channels(number(name, &value("a number")?)?),
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
                "--vmware-cpuid" => vmware_cpuid = true,
                "--tclo" => {
                    config = config.tclo(value("a command")?.as_bytes());
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
                "--tclo-log" => tclo_log = Some(value("a file")?),
                "--rpci-log" => rpci_log = Some(value("a file")?),
                "--iopl" => {
                    let v = value("ok, eperm or enosys")?;
                    iopl = match v.to_str() {
                        Some("ok") => IoplPolicy::Allow,
                        Some("eperm") => IoplPolicy::Eperm,
                        Some("enosys") => IoplPolicy::Enosys,
                        _ => {
                            return Err(format!(
                                "--iopl: expected ok, eperm or enosys, got '{}'",
                                v.to_string_lossy()
                            ))
                        }
                    };
                }
                "--stats" => stats = Some(value("a file")?),
                "--vmx-log" => vmx_log = Some(value("a file")?),
                "--dump-guestinfo" => dump_guestinfo = Some(value("a file")?),
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
        Ok(Parsed::Run(Box::new(Options {
            config,
            iopl,
            vmware_cpuid,
            stats,
            vmx_log,
            dump_guestinfo,
            tclo_log,
            rpci_log,
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
                | "--iopl"
                | "--stats"
                | "--vmx-log"
                | "--dump-guestinfo"
                | "--tclo-log"
                | "--tclo-wait"
                | "--rpci-log"
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
        match key {
            b"machine.id" => Ok(config.machine_id(value)),
            k if k.len() > GUESTINFO_PREFIX.len() && k.starts_with(GUESTINFO_PREFIX) => {
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
