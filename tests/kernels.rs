//! The crate's own programs inside real Linux kernels (Debian's 5.10, 6.1 and 6.12, booted under
//! QEMU by `tests/vm/harness.rs`), on QEMU's `vmport` (an independent, partial VMware
//! backdoor), on `vmport` with unknown commands left silent, and on a machine with nothing
//! on the port; each as root and as an unprivileged user.
//!
//! Every example path and every public probe and access function runs there. Each run must
//! end with its typed error or the right answer — exit status 0 or 1 (255 for `rpctool`
//! outside VMware, as `vmware-rpctool`), never a signal — and leave no core file and no
//! fault line in the kernel log. On Linux before 5.16 a knock child dying of SIGSEGV took its
//! caller with it; 5.10 is in the matrix for that.
//!
//! The kernels come from `tests/vm/setup.sh`. Without them these tests say so and pass,
//! unless `VMW_VM_REQUIRED` is set (CI sets it).

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "vm/entry_points.rs"]
mod entry_points;
#[path = "vm/harness.rs"]
mod harness;
mod support;

use entry_points::ENTRY;
use harness::{Case, Kernel, Machine, Outcome, Status, NOBODY, VM_UUID};

/// The test binary's own guest, run inside the VM: [`guest_entry_points`].
const GUEST_ARGS: [&str; 5] = [
    "guest_entry_points",
    "--exact",
    "--ignored",
    "--nocapture",
    "--test-threads=1",
];

fn kernels_or_skip() -> Vec<Kernel> {
    let kernels = harness::kernels();
    if kernels.is_empty() {
        let dir = harness::cache_dir();
        assert!(
            std::env::var_os("VMW_VM_REQUIRED").is_none(),
            "VMW_VM_REQUIRED is set but {} holds no kernel: run tests/vm/setup.sh",
            dir.display()
        );
        eprintln!(
            "skipped: no kernels in {} (run tests/vm/setup.sh)",
            dir.display()
        );
    }
    kernels
}

/// Every example path and the entry-point guest, as root and as nobody.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (user, uid) in [("root", 0), ("nobody", NOBODY)] {
        for (i, (name, args)) in support::EXAMPLE_RUNS.iter().enumerate() {
            cases.push(Case {
                id: format!("{user}.{name}.{i}"),
                uid,
                program: support::example(name),
                args: args.iter().map(|a| a.to_string()).collect(),
                timeout: None,
            });
        }
        cases.push(Case {
            id: format!("{user}.entry-points"),
            uid,
            program: std::env::current_exe().expect("test executable"),
            args: GUEST_ARGS.iter().map(|a| a.to_string()).collect(),
            timeout: None,
        });
    }
    cases
}

/// What an example prints on stdout, and its exit status, where it reaches QEMU's vmport:
/// GETVERSION answers 6 and product type 2 (ESX); GETHWVERSION and the message channel are
/// not implemented.
fn example_on_vmport(name: &str, args: &[&str]) -> (&'static str, i32) {
    match (name, args) {
        ("checkvm", []) => ("VMware software version 6 (good)\n", 0),
        ("checkvm", ["-p"]) => ("ESX Server\n", 0),
        _ => ("", 1), // hardware version, guestinfo, RPCs, log: no answer there
    }
}

/// The guest's transcript on `machine`, as root or not. Root raises I/O privilege (ioperm);
/// an unprivileged `in` faults on every machine, contained.
fn expected_entry_points(machine: Machine, root: bool) -> Vec<String> {
    let unanswered = [
        "probe_vmware_backdoor: Err(NotVmware)",
        "get_version: Err(NotVmware)",
        "hardware_version: Err(NotVmware)",
        "cpu_mhz: Err(NotVmware)",
        "bios_uuid: Err(NotVmware)",
        "host_time: Err(NotVmware)",
        "frequencies: Err(NotVmware)",
        "vcpu_info: Err(NotVmware)",
        "EnhancedChan::open: Err(NotVmware)",
    ];
    let mut lines = vec![
        "is_vmware_cpu: false".to_owned(),
        "probe_backdoor: Err(NotVmware)".to_owned(),
    ];
    let vmport = machine != Machine::Bare;
    lines.push(
        match (root, vmport) {
            (false, _) => "probe_backdoor_privileged: Err(Privilege)",
            (true, true) => "probe_backdoor_privileged: Ok(privileged)",
            (true, false) => "probe_backdoor_privileged: Err(NotVmware)",
        }
        .to_owned(),
    );
    lines.push(
        if root && vmport {
            "probe_backdoor_privileged.or_else(probe_backdoor): Ok(privileged)"
        } else {
            "probe_backdoor_privileged.or_else(probe_backdoor): Err(NotVmware)"
        }
        .to_owned(),
    );
    lines.push("access_backdoor: Ok(unprivileged)".to_owned());
    lines.extend(unanswered.iter().map(|l| format!("  {l}")));
    if !root {
        lines.push("access_backdoor_privileged: Err(Privilege)".to_owned());
        return lines;
    }
    lines.push("access_backdoor_privileged: Ok(privileged)".to_owned());
    if !vmport {
        lines.extend(unanswered.iter().map(|l| format!("  {l}")));
        return lines;
    }
    // QEMU's vmport (hw/i386/vmport.c): GETBIOSUUID gives -uuid, GET_VCPU_INFO the x2APIC
    // bit (clear on TCG's default CPU), GETHZ all ones in EBX without a known TSC frequency;
    // GETHWVERSION, GETMHZ, GETTIMEFULL and the message channel are not implemented, which
    // the silent variant answers by leaving every register alone.
    lines.extend(
        [
            "probe_vmware_backdoor: Ok(())".to_owned(),
            "get_version: Ok(Version { version: 6, product: EsxServer })".to_owned(),
            "hardware_version: Ok(None)".to_owned(),
            "cpu_mhz: Ok(None)".to_owned(),
            format!("bios_uuid: Ok(Some(BiosUuid({VM_UUID})))"),
            "host_time: Ok(None)".to_owned(),
            "frequencies: Ok(None)".to_owned(),
            "vcpu_info: Ok(Some(VcpuInfo(0)))".to_owned(),
            "EnhancedChan::open: Err(NoChannel)".to_owned(),
        ]
        .into_iter()
        .map(|l| format!("  {l}")),
    );
    lines
}

/// Boots every kernel on `machine`, runs every case, checks each and counts the runs.
fn matrix(machine: Machine) {
    let kernels = kernels_or_skip();
    let cases = cases();
    let mut runs = 0;
    for kernel in &kernels {
        let boot = harness::boot(kernel, machine, &cases)
            .unwrap_or_else(|e| panic!("{kernel} on {machine:?}: {e}"));
        for case in &cases {
            let o = &boot.outcomes[&case.id];
            let what = format!("{} on {kernel} ({}), {machine:?}", case.id, kernel.package);
            check_case(machine, case, o, &what);
            runs += 1;
        }
        println!(
            "{kernel} on {machine:?}: {} runs in {:.1} s",
            cases.len(),
            boot.took.as_secs_f64()
        );
    }
    println!(
        "{machine:?}: {runs} runs on {} kernels ({}): every one exited 0, 1 or 255, no signal, \
         no core file, no fault line",
        kernels.len(),
        kernels
            .iter()
            .map(|k| k.version.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(runs, kernels.len() * cases.len());
}

fn check_case(machine: Machine, case: &Case, o: &Outcome, what: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        matches!(o.status, Status::Exited(0 | 1 | 255)),
        "{what}: {}\nstdout: {stdout}\nstderr: {stderr}\nkernel: {:#?}",
        o.status,
        o.kmsg
    );
    assert_eq!(o.cores, 0, "{what}: core file written");
    assert!(
        o.fault_lines().is_empty(),
        "{what}: kernel log: {:#?}",
        o.fault_lines()
    );
    let root = case.uid == 0;
    if case.args.first().map(String::as_str) == Some(GUEST_ARGS[0]) {
        assert_eq!(o.status, Status::Exited(0), "{what}: {stdout}{stderr}");
        let transcript: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_once(ENTRY).map(|(_, entry)| entry))
            .collect();
        assert_eq!(
            transcript,
            expected_entry_points(machine, root),
            "{what}: {stderr}"
        );
        return;
    }
    let name = case.program.file_name().unwrap().to_string_lossy();
    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
    let reached = root && machine != Machine::Bare;
    let (out, code) = if reached {
        example_on_vmport(&name, &args)
    } else {
        ("", not_vmware_status(&name))
    };
    assert_eq!(o.status, Status::Exited(code), "{what}: {stderr}");
    assert_eq!(stdout, out, "{what}: {stderr}");
    if code != 0 {
        // rpctool and checkvm say "not VMware" as open-vm-tools' programs do.
        let says = match &*name {
            "rpctool" | "checkvm" if !reached => "Error: ".to_owned(),
            _ => format!("{name}: "),
        };
        assert!(
            stderr.starts_with(&says),
            "{what}: says why on stderr: {stderr:?}"
        );
    }
}

/// An example's exit status where the backdoor does not answer: 1, and 255 for rpctool (as
/// vmware-rpctool).
fn not_vmware_status(name: &str) -> i32 {
    if name == "rpctool" {
        255
    } else {
        1
    }
}

#[test]
fn on_qemu_vmport() {
    matrix(Machine::Vmport);
}

#[test]
fn on_qemu_vmport_that_ignores_unknown_commands() {
    matrix(Machine::SilentVmport);
}

#[test]
fn on_a_machine_without_a_backdoor() {
    matrix(Machine::Bare);
}

/// A test binary of this crate built beside this one (`target/<profile>/deps/<name>-<hash>`,
/// the newest if there are several).
fn sibling_test_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps directory");
    let prefix = format!("{name}-");
    std::fs::read_dir(deps)
        .expect("read deps")
        .flatten()
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.starts_with(&prefix) && !file.contains('.')
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| {
            panic!(
                "no {name} test binary beside {}: build the tests",
                exe.display()
            )
        })
}

/// The library's scenario suites inside the newest kernel, where QEMU's TCG raises #UD for
/// both `vmcall` and `vmmcall` in ring 3 (on this machine's KVM only one of them traps), so
/// the simulator's runner serves both: each scenario runs in memory, by port, by VMCALL and
/// by VMMCALL. Left out there for time: the 1 MiB low-bandwidth sizes and the 1,000 open and
/// close cycles (both run natively), and the cases that start `vmw-sim` (not in the VM).
#[test]
fn the_library_scenarios_by_every_hypercall_inside_the_vm() {
    let Some(kernel) = kernels_or_skip().pop() else {
        return;
    };
    let suites: [(&str, &[&str]); 3] = [
        (
            "guest_channel",
            &[
                "--skip",
                "values_of_awkward_sizes",
                "--skip",
                "eight_channels",
            ],
        ),
        ("guest_hypercall", &["--skip", "vmw_sim"]),
        ("guest_session", &[]),
    ];
    let cases: Vec<Case> = suites
        .iter()
        .map(|(name, skips)| Case {
            id: (*name).to_owned(),
            uid: 0,
            program: sibling_test_binary(name),
            args: ["--test-threads=1", "--nocapture"]
                .iter()
                .chain(skips.iter())
                .map(|a| a.to_string())
                .collect(),
            timeout: None,
        })
        .collect();
    let boot =
        harness::boot(&kernel, Machine::Bare, &cases).unwrap_or_else(|e| panic!("{kernel}: {e}"));
    for case in &cases {
        let o = &boot.outcomes[&case.id];
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        let what = format!("{} in {kernel}", case.id);
        assert_eq!(o.status, Status::Exited(0), "{what}:\n{out}\n{err}");
        assert!(out.contains("test result: ok"), "{what}: {out}");
        assert!(
            !err.contains("does not trap"),
            "{what}: a hypercall was not tested: {err}"
        );
        let summary = out
            .lines()
            .find(|l| l.starts_with("test result"))
            .unwrap_or_default();
        println!("{what}: {summary}");
    }
    println!("{kernel}: one boot in {:.1} s", boot.took.as_secs_f64());
}

/// The guest of the matrix ([`entry_points::transcript`]). Run inside the VMs; elsewhere it
/// only prints what this machine answers.
#[test]
#[ignore = "runs inside the test VMs (tests/kernels.rs)"]
fn guest_entry_points() {
    entry_points::transcript();
}
