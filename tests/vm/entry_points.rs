//! The guest of the real-kernel tests (`tests/kernels.rs`, `tests/kernels_arm64.rs`): every
//! public probe and access function, and every method of each guard they hand out, one
//! transcript line each (errors by kind), marked with [`ENTRY`]. Included with `#[path]`;
//! each test binary runs it inside the VMs as its `guest_entry_points` test.

#![allow(dead_code)] // the host side of a test uses only ENTRY

/// How the guest marks its transcript lines among the test harness's own.
pub const ENTRY: &str = "@entry ";

/// Prints the transcript of this machine.
pub fn transcript() {
    use std::fmt::Debug;
    use vmw_backdoor::{BackdoorGuard, EnhancedChan, VmwError};

    fn show<T: Debug>(name: &str, r: Result<T, VmwError>) {
        match r {
            Ok(v) => println!("{ENTRY}{name}: Ok({v:?})"),
            Err(e) => println!("{ENTRY}{name}: Err({:?})", e.kind()),
        }
    }
    fn guard(name: &str, r: Result<BackdoorGuard, VmwError>) -> Option<BackdoorGuard> {
        match r {
            Ok(g) => {
                let access = if g.is_privileged() {
                    "privileged"
                } else {
                    "unprivileged"
                };
                println!("{ENTRY}{name}: Ok({access})");
                Some(g)
            }
            Err(e) => {
                println!("{ENTRY}{name}: Err({:?})", e.kind());
                None
            }
        }
    }
    fn methods(mut g: BackdoorGuard) {
        show("  probe_vmware_backdoor", g.probe_vmware_backdoor());
        show("  get_version", g.get_version());
        show("  hardware_version", g.hardware_version());
        show("  cpu_mhz", g.cpu_mhz());
        show("  bios_uuid", g.bios_uuid());
        // The time itself changes; whether there is one does not.
        show("  host_time", g.host_time().map(|t| t.map(|_| "time")));
        show("  frequencies", g.frequencies());
        show("  vcpu_info", g.vcpu_info());
        show("  EnhancedChan::open", EnhancedChan::open(&mut g).map(drop));
    }

    println!("{ENTRY}is_vmware_cpu: {}", vmw_backdoor::is_vmware_cpu());
    guard("probe_backdoor", vmw_backdoor::probe_backdoor());
    guard(
        "probe_backdoor_privileged",
        vmw_backdoor::probe_backdoor_privileged(),
    );
    // What most callers write (the README's first example).
    guard(
        "probe_backdoor_privileged.or_else(probe_backdoor)",
        vmw_backdoor::probe_backdoor_privileged().or_else(|_| vmw_backdoor::probe_backdoor()),
    );
    if let Some(g) = guard("access_backdoor", vmw_backdoor::access_backdoor()) {
        methods(g);
    }
    if let Some(g) = guard(
        "access_backdoor_privileged",
        vmw_backdoor::access_backdoor_privileged(),
    ) {
        methods(g);
    }
}
