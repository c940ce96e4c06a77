//! Runs one program of this machine inside a real kernel under QEMU, by hand:
//!
//! ```sh
//! tests/vm/setup.sh                                   # once: QEMU and the kernels
//! rustc --edition 2021 -O -o target/vm-run tests/vm/run.rs
//! target/vm-run --kernel 5.10 --machine vmport -- target/debug/examples/checkvm -p
//! # arm64 (QEMU's virt machine): a cross-built program
//! target/vm-run --machine virt -- target/aarch64-unknown-linux-gnu/debug/examples/checkvm
//! ```
//!
//! Prints the program's stdout and stderr as it wrote them, the kernel log lines of its run
//! on stderr (`--kmsg`), and exits with its status (128 + N when signal N ended it).
//! `--with PROGRAM` puts another program in the VM's `/bin` (and `PATH`), for one that
//! runs it:
//!
//! ```sh
//! target/vm-run --machine virt --with target/aarch64-unknown-linux-gnu/debug/examples/guestinfo \
//!     -- target/aarch64-unknown-linux-gnu/debug/vmw-sim -e guestinfo.hello=world -- guestinfo hello
//! ```

#[path = "harness.rs"]
mod harness;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use harness::{Case, Machine, Status};

const USAGE: &str = "usage: vm-run [--kernel VERSION-PREFIX] [--machine vmport|silent|bare|virt] \
                     [--uid N] [--kmsg] [--with PROGRAM]... -- PROGRAM [ARGS...]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vm-run: {e}");
            ExitCode::from(125)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let (mut kernel, mut machine, mut uid, mut kmsg) = (None, Machine::Vmport, 0, false);
    let mut with = Vec::new();
    loop {
        match args.next().as_deref() {
            Some("--kernel") => kernel = Some(args.next().ok_or(USAGE)?),
            Some("--machine") => {
                let name = args.next().ok_or(USAGE)?;
                machine = Machine::from_name(&name).ok_or(USAGE)?;
            }
            Some("--uid") => {
                uid = args
                    .next()
                    .ok_or(USAGE)?
                    .parse()
                    .map_err(|e| format!("--uid: {e}"))?
            }
            Some("--kmsg") => kmsg = true,
            Some("--with") => with.push(PathBuf::from(args.next().ok_or(USAGE)?)),
            Some("--") => break,
            _ => return Err(USAGE.to_owned()),
        }
    }
    let program = PathBuf::from(args.next().ok_or(USAGE)?);
    let kernels = harness::kernels_for(machine.arch());
    let kernel = match &kernel {
        Some(prefix) => kernels.iter().find(|k| k.version.starts_with(prefix.as_str())),
        None => kernels.last(),
    }
    .ok_or_else(|| {
        format!(
            "no such kernel in {} (have: {:?}); run tests/vm/setup.sh",
            harness::cache_dir().display(),
            kernels.iter().map(|k| &k.version).collect::<Vec<_>>()
        )
    })?;
    let case = Case {
        id: "run".to_owned(),
        uid,
        program,
        args: args.collect(),
        timeout: Some(600),
    };
    let boot = harness::boot_with(kernel, machine, std::slice::from_ref(&case), &with)
        .map_err(|e| e.to_string())?;
    let outcome = &boot.outcomes["run"];
    let _ = std::io::stdout().write_all(&outcome.stdout);
    let _ = std::io::stderr().write_all(&outcome.stderr);
    if kmsg {
        for line in &outcome.kmsg {
            eprintln!("kernel: {line}");
        }
    }
    if outcome.cores > 0 {
        eprintln!("vm-run: {} core file(s) written", outcome.cores);
    }
    Ok(ExitCode::from(match outcome.status {
        Status::Exited(code) => code as u8,
        Status::Signaled { signal, .. } => 128 + signal as u8,
    }))
}
