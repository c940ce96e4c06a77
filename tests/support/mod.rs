//! Helpers shared by the integration tests (`mod support;` in each).

#![allow(dead_code)] // each test binary takes what it needs

use std::path::PathBuf;
use std::process::Command;

pub use vmw_backdoor::{proto::Regs, Backdoor};

#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
pub mod guest;
pub mod reference;
#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
pub mod vsock;
// The library's transports run on aarch64 too (tests/kernels_arm64.rs runs the suites in
// an arm64 VM); the hand-written asm of `guest` is x86's.
#[cfg(all(
    feature = "sim",
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub mod transport;

/// `target/<profile>/examples/<name>`, next to the running test's own `deps` directory;
/// built on demand if the test runner did not build examples.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(status.success(), "building example {name}");
    }
    path
}

/// An example built for i686 Linux (`target/i686-unknown-linux-gnu/debug/examples/<name>`),
/// built now; needs `rustup target add i686-unknown-linux-gnu` and a 32-bit libc.
pub fn i686_example(name: &str) -> PathBuf {
    const TARGET: &str = "i686-unknown-linux-gnu";
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--target", TARGET, "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the i686 example {name}");
    let exe = std::env::current_exe().expect("test executable path");
    let target_dir = exe.ancestors().nth(3).expect("target/<profile>/deps/<exe>");
    target_dir.join(TARGET).join("debug/examples").join(name)
}

/// Where open-vm-tools needs telling it runs in a VM: `None` where the simulator's
/// `--vmware-cpuid` can show it (CPUID faulting), else an `LD_PRELOAD` library, built in
/// `dir`, whose `VmCheck_IsVirtualWorld` answers yes (the open-vm-tools programs call it
/// from libvmtools through the PLT; the backdoor checks that follow are their own).
#[cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]
pub fn vmcheck_shim(dir: &std::path::Path) -> Result<Option<PathBuf>, String> {
    if guest::cpuid_faulting() {
        return Ok(None);
    }
    let src = dir.join("shim.c");
    std::fs::write(&src, "int VmCheck_IsVirtualWorld(void) { return 1; }\n")
        .map_err(|e| e.to_string())?;
    let so = dir.join("libvmcheck-shim.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if built {
        Ok(Some(so))
    } else {
        Err("no CPUID faulting here and no C compiler for the VmCheck shim".into())
    }
}

/// Every path of every example program that touches the backdoor.
pub const EXAMPLE_RUNS: [(&str, &[&str]); 7] = [
    ("checkvm", &[]),
    ("checkvm", &["-p"]),
    ("checkvm", &["--hardware-version"]),
    ("guestinfo", &["k"]),
    ("guestinfo", &["k", "v"]),
    ("rpctool", &["machine.id.get"]),
    ("log", &["a", "line"]),
];
