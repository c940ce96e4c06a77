//! Side by side: open-vm-tools' `vmtoolsd` and `examples/toolsd.rs` answer the same TCLO
//! script under the simulator; their replies must be identical and their side messages
//! (RPCI) identical but for the differences listed here, each with its reason.
//!
//! Skipped, with the reason printed, without vmtoolsd (`apt-get install open-vm-tools`),
//! without a mount namespace (root), or, on a CPU without CPUID faulting, without a C
//! compiler for the one-line shim described below; a failure instead where
//! `VMW_TOOLS_REQUIRED` is set (CI sets it, after installing open-vm-tools).
//!
//! How vmtoolsd runs, and why so:
//!
//! - Plugins: only `guestInfo` and `powerOps` (symlinked into a directory of their own),
//!   the two whose jobs toolsd does, plus the common ones (`hgfsServer`, `vix`). Not
//!   `timeSync` (it would set this machine's clock to the simulator's fixed host time),
//!   `vmbackup` (it would freeze this machine's filesystems on `vmbackup.start`),
//!   `deployPkg` or `componentMgr` (they change the system on the host's word).
//! - Inside a mount namespace where `/sbin/shutdown` is a script that records its
//!   arguments and sends vmtoolsd SIGTERM, and `/etc/vmware-tools` is empty (no power-op
//!   scripts run). The script ends with `OS_Halt` (or `OS_Reboot`): vmtoolsd reports the
//!   state change, calls `/sbin/shutdown -h now` as on a real VM, and the stand-in ends it
//!   cleanly (SIGTERM: capabilities withdrawn, last reply sent, channels closed). toolsd
//!   ends the same way: `--on-halt 'kill -TERM $PPID'`. No power operation ever reaches
//!   this machine: without the namespace, the vmtoolsd runs are skipped.
//! - `tools.conf` sets `[guestinfo] poll-interval=1` so its guest information is gathered
//!   within the script's 2.5 s pause (30 s by default), and turns off disk info.
//! - `--vmware-cpuid` where the CPU can fault CPUID; elsewhere CPUID names the real
//!   hypervisor and vmtoolsd would refuse to start, so `LD_PRELOAD` gives it a
//!   `VmCheck_IsVirtualWorld` that answers yes (vmtoolsd calls it from libvmtools through
//!   the PLT). The backdoor check that follows it is vmtoolsd's own, unchanged.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vmw_backdoor::sim::{Host, HostConfig};

const VMTOOLSD: &str = "/usr/bin/vmtoolsd";
const PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/open-vm-tools/plugins/vmsvc";

/// A script entry: a command, or a pause.
enum Entry {
    Cmd(&'static [u8]),
    Wait(u64),
}
use Entry::{Cmd, Wait};

/// The default script, OpenBSD vmt(4)'s command set (its handled commands, then the
/// options and commands it lists as sent but unsupported), a Set_Option burst, odd
/// commands, a pause for guest information, and a halt.
fn halt_script() -> Vec<Entry> {
    let mut s = vec![Cmd(b"reset"), Cmd(b"ping"), Cmd(b"Capabilities_Register")];
    for option in [
        &b"Set_Option autohide 0"[..],
        b"Set_Option copypaste 1",
        b"Set_Option enableDnD 1",
        b"Set_Option enableMessageBusTunnel 0",
        b"Set_Option linkRootHgfsShare 0",
        b"Set_Option mapRootHgfsShare 0",
        b"Set_Option synctime 1",
        b"Set_Option synctime.period 0",
        b"Set_Option time.synchronize.tools.enable 1",
        b"Set_Option time.synchronize.tools.percentCorrection 0",
        b"Set_Option time.synchronize.tools.slewCorrection 1",
        b"Set_Option time.synchronize.tools.startup 1",
        b"Set_Option toolScripts.afterPowerOn 1",
        b"Set_Option toolScripts.afterResume 1",
        b"Set_Option toolScripts.beforePowerOff 1",
        b"Set_Option toolScripts.beforeSuspend 1",
        b"Set_Option broadcastIP 1",
        b"Set_Option broadcastIP 0",
        b"Set_Option guestLogLevel message",
        b"Set_Option enableAppInfo 1",
        b"Set_Option noValue",
        b"Set_Option noValue ",
        b"Set_Option",
    ] {
        s.push(Cmd(option));
    }
    // Power operations without scripts (toolScripts.* 0, as a VMX configured so sends).
    for option in [
        &b"Set_Option toolScripts.afterPowerOn 0"[..],
        b"Set_Option toolScripts.afterResume 0",
        b"Set_Option toolScripts.beforeSuspend 0",
        b"Set_Option toolScripts.beforePowerOff 0",
    ] {
        s.push(Cmd(option));
    }
    for command in [
        &b"OS_PowerOn"[..],
        b"OS_Resume",
        b"OS_Suspend",
        b"vmbackup.start 1",
        b"vmbackup.abort",
        b"vmbackup.snapshotDone",
        b"Time_Synchronize 0",
        b"Vix_1_Relayed_Command \"38cdcae40e075d66\"",
        b"no_such_command",
        b" ",
        b"ping\0junk",
        b"  ping",
        b"ping extra args",
    ] {
        s.push(Cmd(command));
    }
    s.extend([Wait(2500), Cmd(b"ping"), Cmd(b"OS_Halt")]);
    s
}

fn reboot_script() -> Vec<Entry> {
    vec![
        Cmd(b"reset"),
        Cmd(b"Set_Option toolScripts.beforePowerOff 0"),
        Cmd(b"OS_Reboot"),
    ]
}

/// The host for `script`. Power operations are allowed: vmtoolsd runs where its
/// `/sbin/shutdown` is the stand-in, toolsd's handlers only stop it.
fn config(script: &[Entry]) -> HostConfig {
    script
        .iter()
        .fold(
            HostConfig::default().allow_power_ops(true),
            |c, e| match e {
                Cmd(command) => c.tclo(command),
                Wait(ms) => c.tclo_wait(Duration::from_millis(*ms)),
            },
        )
        .system_clock()
}

/// What is needed to run vmtoolsd here, or why it cannot be.
struct Setup {
    dir: PathBuf,
    shim: Option<PathBuf>,
}

fn run_quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A work directory of `tag`'s own (tests in one process run in parallel).
fn setup(tag: &str) -> Result<Setup, String> {
    if !Path::new(VMTOOLSD).exists() {
        return Err(format!(
            "{VMTOOLSD} is not installed (apt-get install open-vm-tools)"
        ));
    }
    for plugin in ["libguestInfo.so", "libpowerOps.so"] {
        if !Path::new(PLUGINS).join(plugin).exists() {
            return Err(format!("{PLUGINS}/{plugin} is missing"));
        }
    }
    let dir = std::env::temp_dir().join(format!("vmw-tools-fidelity-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    for plugin in ["libguestInfo.so", "libpowerOps.so"] {
        std::os::unix::fs::symlink(
            Path::new(PLUGINS).join(plugin),
            dir.join("plugins").join(plugin),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("tools.conf"),
        "[guestinfo]\npoll-interval=1\ndisable-query-diskinfo=true\n[logging]\nlog=false\n",
    )
    .unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("fake-shutdown"),
        format!("#!/bin/sh\necho \"$0 $*\" >> {d}/shutdown.log\nkill -TERM \"$(cat {d}/pid)\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("mounts.sh"),
        format!(
            "#!/bin/sh\nset -e\nmount --bind {d}/fake-shutdown /sbin/shutdown\n\
             mount --bind {d}/etc /etc/vmware-tools\n"
        ),
    )
    .unwrap();
    for f in ["fake-shutdown", "mounts.sh"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The namespace must work before any power operation is sent to vmtoolsd.
    let probe = format!(
        "{d}/mounts.sh && grep -q fake-shutdown /proc/self/mountinfo 2>/dev/null || \
         cmp -s /sbin/shutdown {d}/fake-shutdown"
    );
    if !Path::new("/sbin/shutdown").exists()
        || !run_quiet(Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &probe,
        ]))
    {
        return Err(
            "no private mount namespace to stand /sbin/shutdown in for (needs root)".into(),
        );
    }
    let shim = support::vmcheck_shim(&dir)?;
    Ok(Setup { dir, shim })
}

/// vmtoolsd under the simulator, in its namespace, answering `script`.
fn vmtoolsd(s: &Setup, script: &[Entry]) -> Host {
    let d = s.dir.display();
    let preload = s
        .shim
        .as_ref()
        .map(|p| format!("LD_PRELOAD={}", p.display()))
        .unwrap_or_default();
    let wrap = format!(
        "{d}/mounts.sh || exit 97\n\
         timeout 120 env {preload} {VMTOOLSD} -c {d}/tools.conf --plugin-path {d}/plugins \
         >{d}/vmtoolsd.out 2>&1 &\necho $! > {d}/pid\nwait $!\n"
    );
    let run = config(script)
        .vmware_cpuid(true)
        .run_command(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", &wrap])
                .stdin(Stdio::null()),
        )
        .expect("run vmtoolsd");
    assert!(run.exit.success(), "vmtoolsd's wrapper {}", run.exit);
    run.host
}

/// examples/toolsd.rs under the simulator, answering `script`, gathering guest information
/// every `interval` seconds.
fn toolsd(script: &[Entry], interval: &str) -> Host {
    let stop = "kill -TERM $PPID";
    let run = config(script)
        .run_command(
            Command::new(support::example("toolsd"))
                .args([
                    "--on-halt",
                    stop,
                    "--on-reboot",
                    stop,
                    "--guest-info-interval",
                    interval,
                ])
                .stdin(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("run toolsd");
    assert!(run.exit.success(), "toolsd {}", run.exit);
    run.host
}

fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Side messages that only vmtoolsd sends, and why toolsd does not; `None` when the
/// message is one both must send.
fn vmtoolsd_only(m: &[u8]) -> Option<(&'static [u8], &'static str)> {
    let reasons: [(&[u8], &str); 4] = [
        (
            b"tools.capability.hgfs_server ",
            "vmtoolsd's hgfsServer plugin serves shared folders; toolsd has none",
        ),
        (
            b"tools.capability.guest_conf_directory ",
            "vmtoolsd's configuration directory; toolsd has none (ToolsConfig::conf_directory sends one)",
        ),
        (
            b"info-set guestinfo.vmtools.",
            "vmtoolsd publishes its own version in guestinfo at start",
        ),
        (
            b"SetGuestInfo  ",
            "guest information: gathered on each agent's own timer, compared below",
        ),
    ];
    reasons
        .iter()
        .find(|(prefix, _)| m.starts_with(prefix))
        .copied()
}

/// Replies that differ, each for a reason: (vmtoolsd's reply, toolsd's, why).
fn known_reply_difference(command: &[u8]) -> Option<(&'static str, &'static str, &'static str)> {
    match command {
        b"Set_Option noValue" => Some((
            "OK ",
            "ERROR Unknown or invalid option",
            "vmtoolsd says `OK ` to an option without a value: ToolsCoreRpcSetOption steps one \
             byte past the option name (`index++`), here past the command's terminating NUL, \
             and reads the rest of its receive buffer, left over from a longer earlier \
             command, as the value (StrUtil_GetNextToken's ASSERT(*index <= strlen(str)) \
             would stop a debug build); toolsd answers what the code means for a missing \
             value, as both do for `Set_Option noValue ` and `Set_Option`",
        )),
        b"Vix_1_Relayed_Command \"38cdcae40e075d66\"" => Some((
            "OK 10000 0 \\x00",
            "ERROR Unknown Command",
            "vmtoolsd's vix plugin answers guest operations (run a program, copy a file, with \
             guest credentials; 10000 is a VIX error code); toolsd implements no guest \
             operations and answers as vmtoolsd without that plugin does",
        )),
        _ => None,
    }
}

/// A message as compared: the texts that differ by design made equal.
fn normalized(m: &[u8]) -> Vec<u8> {
    // Each agent logs its own version; each reports its own tools version number.
    for prefix in [&b"log toolbox: Version: "[..], b"tools.set.versiontype "] {
        if m.starts_with(prefix) {
            let kind = if prefix.starts_with(b"tools.set") {
                // The type (4, open-vm-tools) must match; the version is toolsd's own.
                m.rsplit(|&b| b == b' ').next().unwrap_or_default().to_vec()
            } else {
                Vec::new()
            };
            return [prefix, &b"<version> "[..], &kind].concat();
        }
    }
    m.to_vec()
}

/// The NICs of a NIC info v3 report (id 10): (MAC, [(type, address, prefix, status)]).
type Nics = Vec<(Vec<u8>, Vec<(u32, Vec<u8>, u32, Option<u32>)>)>;

/// Reads big-endian words and padded byte strings.
struct Xdr<'a>(&'a [u8], usize);

impl Xdr<'_> {
    fn word(&mut self) -> Option<u32> {
        let w = self.0.get(self.1..self.1 + 4)?;
        self.1 += 4;
        Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.word()? as usize;
        let b = self.0.get(self.1..self.1 + len)?.to_vec();
        self.1 += len.div_ceil(4) * 4;
        Some(b)
    }
}

fn decode_nics(xdr: &[u8]) -> Option<Nics> {
    let mut r = Xdr(xdr, 0);
    if r.word()? != 3 || r.word()? != 1 {
        return None;
    }
    let n = r.word()?;
    let mut nics = Vec::new();
    for _ in 0..n {
        let mac = r.bytes()?;
        let count = r.word()?;
        let mut ips = Vec::new();
        for _ in 0..count {
            let kind = r.word()?;
            let addr = r.bytes()?;
            let prefix = r.word()?;
            if r.word()? == 1 {
                r.word()?; // origin
            }
            let status = if r.word()? == 1 {
                Some(r.word()?)
            } else {
                None
            };
            ips.push((kind, addr, prefix, status));
        }
        // dnsConfigInfo, winsConfigInfo, dhcp v4, dhcp v6 of the NIC: absent in both.
        for _ in 0..4 {
            if r.word()? != 0 {
                return None;
            }
        }
        nics.push((mac, ips));
    }
    Some(nics)
}

/// The side messages sent while the `i`-th command was being answered.
fn sides(host: &Host, i: usize) -> Vec<Vec<u8>> {
    let x = &host.tclo_exchanges()[i];
    host.rpci_requests()[x.rpcs_before_command..x.rpcs_before_reply].to_vec()
}

/// Compares one script's runs; returns the differences found, each with its reason.
fn compare(name: &str, ovt: &Host, ours: &Host, notes: &mut BTreeSet<String>) {
    let (a, b) = (ovt.tclo_exchanges(), ours.tclo_exchanges());
    println!("===== {name}: {} exchanges", a.len());
    assert_eq!(a.len(), b.len(), "{name}: both answered the whole script");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.command, y.command);
        let (rx, ry) = (
            x.reply.clone().unwrap_or_default(),
            y.reply.clone().unwrap_or_default(),
        );
        let mark = if rx == ry { "same" } else { "DIFFERENT" };
        println!(
            "{:<48} vmtoolsd {:<34} toolsd {:<34} {mark}",
            esc(&x.command),
            esc(&rx),
            esc(&ry)
        );
        if let Some((theirs, ours, why)) = known_reply_difference(&x.command) {
            assert_eq!(
                esc(&rx),
                theirs,
                "{name}: vmtoolsd's reply to {}",
                esc(&x.command)
            );
            assert_eq!(
                esc(&ry),
                ours,
                "{name}: toolsd's reply to {}",
                esc(&x.command)
            );
            notes.insert(format!("reply to {}: {why}", esc(&x.command)));
        } else {
            assert_eq!(
                esc(&rx),
                esc(&ry),
                "{name}: the reply to {} differs",
                esc(&x.command)
            );
        }
        if x.command == b"Capabilities_Register" {
            // An uptime sent for the capabilities (vmtoolsd's guestInfo answers that
            // signal; both send it only when it changed since last sent) comes before them.
            for (who, h) in [("vmtoolsd", ovt), ("toolsd", ours)] {
                let m = sides(h, i);
                let cap = m.iter().position(|m| m == b"tools.capability.statechange ");
                let up = m.iter().position(|m| m.starts_with(b"SetGuestInfo  7 "));
                assert!(cap.is_some(), "{name}: {who} announces statechange");
                assert!(
                    up.map_or(true, |u| u < cap.unwrap_or(0)),
                    "{name}: {who}'s uptime"
                );
                if let Some(u) = up {
                    let v = m[u].strip_prefix(b"SetGuestInfo  7 ").unwrap_or_default();
                    let digits = v.strip_suffix(b"\0").unwrap_or_default();
                    assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit));
                }
            }
        }
        let mut keep = |h: &Host| -> Vec<Vec<u8>> {
            let mut kept = Vec::new();
            for m in sides(h, i) {
                if let Some((prefix, why)) = vmtoolsd_only(&m) {
                    notes.insert(format!("`{}…`: {why}", esc(prefix)));
                    continue;
                }
                let n = normalized(&m);
                if n != m {
                    notes.insert(format!(
                        "`{}`: compared without the version: each agent reports its own (vmtoolsd \
                         12.2.0: 12.2.0.41219 and 12352; toolsd: its crate version and 2147483647, unmanaged)",
                        esc(&n)
                    ));
                }
                kept.push(n);
            }
            kept
        };
        let sx = keep(ovt);
        let sy = keep(ours);
        for m in &sx {
            println!("    vmtoolsd side: {}", esc(m));
        }
        for m in &sy {
            println!("    toolsd   side: {}", esc(m));
        }
        assert_eq!(
            sx.iter().map(|m| esc(m)).collect::<Vec<_>>(),
            sy.iter().map(|m| esc(m)).collect::<Vec<_>>(),
            "{name}: side messages for {} differ",
            esc(&x.command)
        );
    }
    // Guest information, from each agent's own gathering.
    let (gx, gy) = (ovt.guest_info_reported(), ours.guest_info_reported());
    println!(
        "guest info ids: vmtoolsd {:?}, toolsd {:?}",
        gx.keys().collect::<Vec<_>>(),
        gy.keys().collect::<Vec<_>>()
    );
    if gx.is_empty() {
        notes.insert(
            "guest information: toolsd reports it right after each reset (and then on its \
             interval), vmtoolsd only when its gather timer fires (poll-interval after start), \
             so a short script sees toolsd's only"
                .into(),
        );
    } else {
        for id in [1u32, 7, 10] {
            assert!(
                gx.contains_key(&id) == gy.contains_key(&id),
                "{name}: SetGuestInfo {id}"
            );
        }
    }
    if let (Some(x), Some(y)) = (gx.get(&1), gy.get(&1)) {
        assert_eq!(esc(x), esc(y), "{name}: the DNS name");
    }
    for g in [gx, gy] {
        if let Some(up) = g.get(&7) {
            assert!(
                !up.is_empty() && up.iter().all(u8::is_ascii_digit),
                "uptime {}",
                esc(up)
            );
        }
    }
    if let (Some(x), Some(y)) = (gx.get(&10), gy.get(&10)) {
        let (nx, ny) = (decode_nics(x), decode_nics(y));
        assert!(nx.is_some() && ny.is_some(), "{name}: NIC info v3 decodes");
        assert_eq!(
            nx, ny,
            "{name}: the NICs, their addresses, prefixes and statuses"
        );
        if x.len() != y.len() {
            notes.insert(format!(
                "SetGuestInfo 10: vmtoolsd's report is {} bytes, toolsd's {}: vmtoolsd adds the \
                 routing table and resolver configuration (NicInfoV3.routes, dnsConfigInfo), \
                 toolsd sends none",
                x.len(),
                y.len()
            ));
        }
    }
    for id in gx
        .keys()
        .filter(|id| !gy.contains_key(id) && !gx.is_empty())
    {
        notes.insert(format!(
            "SetGuestInfo {id}: sent by vmtoolsd only ({})",
            match id {
                4 => "its build number",
                8 => "memory statistics",
                11 => "detailed OS data (a binary header); toolsd sends the names, 5 and 6, as vmtoolsd does when a host refuses 11",
                _ => "vmtoolsd-specific",
            }
        ));
    }
    for id in gy
        .keys()
        .filter(|id| !gx.contains_key(id) && !gx.is_empty())
    {
        notes.insert(format!(
            "SetGuestInfo {id}: sent by toolsd only (vmtoolsd sent 11, detailed OS data, \
             which the simulated host accepted)"
        ));
    }
    let (ux, uy) = (ovt.tools_unified_loop(), ours.tools_unified_loop());
    assert_eq!(ux, uy);
    assert_eq!(ovt.open_channels(), 0);
    assert_eq!(ours.open_channels(), 0);
}

#[test]
fn vmtoolsd_and_toolsd_answer_the_same_script_alike() {
    let s = match setup("script") {
        Ok(s) => s,
        Err(why) => {
            // CI sets it: there, open-vm-tools is installed and a missing piece is a failure.
            assert!(std::env::var_os("VMW_TOOLS_REQUIRED").is_none(), "{why}");
            println!("skipped: {why}");
            return;
        }
    };
    let mut notes = BTreeSet::new();
    for (name, script) in [
        ("halt script", halt_script()),
        ("reboot script", reboot_script()),
    ] {
        let ovt = vmtoolsd(&s, &script);
        let ours = toolsd(&script, "1");
        compare(name, &ovt, &ours, &mut notes);
    }
    let log = std::fs::read_to_string(s.dir.join("shutdown.log")).unwrap_or_default();
    assert_eq!(
        log.lines()
            .map(|l| l.rsplit_once(' ').map(|(_, a)| a.to_owned()))
            .collect::<Vec<_>>(),
        [Some("now".to_owned()), Some("now".to_owned())],
        "vmtoolsd called /sbin/shutdown (the stand-in) once per script: {log}"
    );
    assert!(log.contains("-h now") && log.contains("-r now"), "{log}");
    println!("===== differences, each with its reason");
    for n in &notes {
        println!("- {n}");
    }
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Backdoor calls per idle second of each agent, from the simulator's counters over a
/// 10 s pause of the host (after the default script). Run with `--ignored --nocapture`;
/// BENCHMARKS.md has the numbers.
#[test]
#[ignore = "takes 20 s; measures, asserts only that it measured"]
fn idle_cost() {
    let s = match setup("idle") {
        Ok(s) => s,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let script = vec![
        Cmd(b"reset"),
        Cmd(b"ping"),
        Cmd(b"Capabilities_Register"),
        Cmd(b"Set_Option toolScripts.beforePowerOff 0"),
        Wait(10_000),
        Cmd(b"ping"),
        Cmd(b"OS_Halt"),
    ];
    // Both at their default guest-information interval (30 s: no gathering in the pause).
    std::fs::write(s.dir.join("tools.conf"), "[logging]\nlog=false\n").unwrap();
    for (name, host) in [
        ("vmtoolsd", vmtoolsd(&s, &script)),
        ("toolsd", toolsd(&script, "30")),
    ] {
        let x = host.tclo_exchanges();
        let idle = x[4].calls_before_command - x[3].calls_before_reply;
        let rpcs = x[4].rpcs_before_command - x[3].rpcs_before_reply;
        println!(
            "{name}: {idle} backdoor calls in the 10 s pause ({:.1}/s), {rpcs} RPCI requests",
            idle as f64 / 10.0
        );
        assert!(idle > 0);
    }
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// `vmtoolsd --cmd "info-get guestinfo.x"` (open-vm-tools 12.2, unmodified) on a host that
/// serves `info-get` only on the privileged channel: it takes vsock first, as on VMware,
/// from a port below 1024 when it may bind one (root), and prints the value; unprivileged
/// it is refused. Over the backdoor (no vsock), and with `vmware-rpctool`, which only
/// knows the backdoor, it is refused too.
#[test]
fn vmtoolsd_cmd_takes_the_privileged_vsock_channel() {
    if !Path::new(VMTOOLSD).exists() {
        assert!(
            std::env::var_os("VMW_TOOLS_REQUIRED").is_none(),
            "no {VMTOOLSD}"
        );
        println!("skipped: {VMTOOLSD} is not installed (apt-get install open-vm-tools)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmw-tools-vsock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shim = match support::vmcheck_shim(&dir) {
        Ok(shim) => shim,
        Err(why) => {
            assert!(std::env::var_os("VMW_TOOLS_REQUIRED").is_none(), "{why}");
            println!("skipped: {why}");
            return;
        }
    };
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let cmd = |tool: &str, arg: &str| {
        let out = dir.join("out");
        let file = std::fs::File::create(&out).unwrap();
        let mut c = Command::new(tool);
        if let Some(shim) = &shim {
            c.env("LD_PRELOAD", shim);
        }
        c.args(if tool == VMTOOLSD {
            vec!["--cmd", arg]
        } else {
            vec![arg]
        })
        .stdin(Stdio::null())
        .stderr(file.try_clone().unwrap())
        .stdout(file);
        (c, out)
    };
    let host = || {
        HostConfig::default()
            .guestinfo("x", "v")
            .require_privileged("info-get")
            .vmware_cpuid(true)
    };
    let (mut c, out) = cmd(VMTOOLSD, "info-get guestinfo.x");
    let run = host().run_command(&mut c).expect("run vmtoolsd");
    let printed = std::fs::read_to_string(&out).unwrap();
    let counters = run.host.counters();
    assert_eq!(counters.vsock_rpcs, 1, "over vsock: {printed}");
    assert_eq!(counters.backdoor_calls(), 0, "no backdoor call");
    if root {
        assert!(run.exit.success(), "{}: {printed}", run.exit);
        assert_eq!(printed, "v\n", "privileged vsock serves info-get");
    } else {
        assert_eq!(
            printed, "Permission denied\n",
            "unprivileged vsock is refused"
        );
    }
    // The same vmtoolsd without vsock falls back to the backdoor, which refuses it.
    let (mut c, out) = cmd(VMTOOLSD, "info-get guestinfo.x");
    let run = host().vsock(false).run_command(&mut c).unwrap();
    assert!(!run.exit.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "Permission denied\n",
        "on stderr"
    );
    assert_eq!(run.host.counters().vsock_connections, 0);
    // vmware-rpctool has no vsock channel: refused as on a real host. It checks CPUID
    // itself (no shim reaches it): only where the simulator can show a VMware CPUID.
    if support::guest::cpuid_faulting() {
        let (mut c, out) = cmd("/usr/bin/vmware-rpctool", "info-get guestinfo.x");
        let run = host().run_command(&mut c).unwrap();
        assert!(!run.exit.success());
        assert_eq!(run.host.counters().vsock_connections, 0);
        assert!(run.host.counters().backdoor_calls() > 0);
        let _ = out;
    } else {
        println!("vmware-rpctool not run: no CPUID faulting here, and it checks CPUID itself");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
