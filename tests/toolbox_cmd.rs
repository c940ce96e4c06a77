//! Unmodified `vmware-toolbox-cmd` (open-vm-tools 12.2) against the host model's Guest API
//! (`stat`: RPCI `guestlib.info.get 3`) and removable devices (`device`: backdoor commands 11
//! and 12).
//!
//! Needs `apt-get install open-vm-tools` (skipped without it unless `VMW_TOOLS_REQUIRED` is
//! set) and, where the CPU cannot fault CPUID, a C compiler for the `VmCheck` shim
//! ([`support::vmcheck_shim`]).

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vmw_backdoor::proto::cmd;
use vmw_backdoor::sim::HostConfig;

const TOOLBOX: &str = "/usr/bin/vmware-toolbox-cmd";

/// A work directory, removed when the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A work directory and the shim to preload there, or `None` (said on stderr) where
/// open-vm-tools is not installed.
fn setup(tag: &str) -> Option<(Scratch, Option<PathBuf>)> {
    if !Path::new(TOOLBOX).exists() {
        assert!(
            std::env::var_os("VMW_TOOLS_REQUIRED").is_none(),
            "VMW_TOOLS_REQUIRED is set but {TOOLBOX} is missing: apt-get install open-vm-tools"
        );
        eprintln!("skipped: {TOOLBOX} missing");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("vmw-toolbox-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shim = support::vmcheck_shim(&dir).expect("the VmCheck shim");
    Some((Scratch(dir), shim))
}

/// `vmware-toolbox-cmd ARGS` under `host`: (exit code, stdout + stderr, the host after).
fn toolbox(
    shim: &Option<PathBuf>,
    host: HostConfig,
    args: &[&str],
) -> (i32, String, vmw_backdoor::sim::Host) {
    let mut command = Command::new(TOOLBOX);
    command.args(args).stdin(Stdio::null());
    if let Some(so) = shim {
        command.env("LD_PRELOAD", so);
    }
    let out = std::env::temp_dir().join(format!(
        "vmw-toolbox-out-{}-{}",
        std::process::id(),
        args.join("-").replace([' ', '/'], "_")
    ));
    let file = std::fs::File::create(&out).unwrap();
    command.stdout(file.try_clone().unwrap()).stderr(file);
    let run = host.vmware_cpuid(true).run_command(&mut command).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    (run.exit.code(), text, run.host)
}

#[test]
fn device_list_status_and_toggle_walk_command_11_and_12() {
    let Some((_dir, shim)) = setup("device") else {
        return;
    };
    let host = || {
        HostConfig::default()
            .removable_device("ide1:0", true)
            .removable_device("Ethernet0", false)
    };
    let (code, text, after) = toolbox(&shim, host(), &["device", "list"]);
    assert_eq!(
        (code, text.as_str()),
        (0, "ide1:0: Enabled\nEthernet0: Disabled\n")
    );
    // 10 calls of 4 bytes per 40-byte description for each device, and one refused call for
    // each of the other 48 of the 50 ids the tool tries.
    assert_eq!(
        after.counters().lb_calls_for(cmd::GETDEVICELISTELEMENT, 0),
        2 * 10 + 48
    );

    let (code, text, _) = toolbox(&shim, host(), &["device", "status", "Ethernet0"]);
    assert_eq!(
        (code, text.as_str()),
        (69, "Disabled\n"),
        "EX_UNAVAILABLE for a disabled one"
    );
    let (code, text, after) = toolbox(&shim, host(), &["device", "enable", "Ethernet0"]);
    assert_eq!((code, text.as_str()), (0, "Enabled\n"));
    assert_eq!(after.counters().lb_calls_for(cmd::TOGGLEDEVICE, 0), 1);
    let (code, text, _) = toolbox(&shim, host(), &["device", "status", "cdrom9"]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("device not found"), "{text}");
    // No devices (the default): an empty list.
    let (code, text, _) = toolbox(&shim, HostConfig::default(), &["device", "list"]);
    assert_eq!((code, text.as_str()), (0, ""));
}

#[test]
fn stat_reads_the_guest_api() {
    let Some((_dir, shim)) = setup("stat") else {
        return;
    };
    let host = || {
        HostConfig::default()
            .guest_session_id(0x1234_5678_9abc_def0)
            .guest_stat(12, 256)
            .guest_stat(13, 64)
            .guest_stat(7, 4_096)
            .guest_stat(1, 1_200)
    };
    for (what, expected) in [
        ("sessionid", "0x123456789abcdef0\n"),
        ("balloon", "256 MB\n"),
        ("swap", "64 MB\n"),
        ("memlimit", "4096 MB\n"),
        ("memres", "0 MB\n"),
        ("cpures", "1200 MHz\n"),
        ("cpulimit", "4294967295 MHz\n"),
    ] {
        let (code, text, after) = toolbox(&shim, host(), &["stat", what]);
        assert_eq!((code, text.as_str()), (0, expected), "stat {what}");
        assert_eq!(
            after.rpci_requests(),
            [b"guestlib.info.get 3".to_vec()],
            "stat {what}"
        );
        assert_eq!(after.counters().unknown_commands, 0);
    }
    let (code, text, _) = toolbox(
        &shim,
        HostConfig::default().no_guest_api(),
        &["stat", "balloon"],
    );
    assert!(text.contains("Guest API is not enabled"), "{code}: {text}");
}
