//! Tells whether this is a VMware virtual machine, like `vmware-checkvm`.
//!
//! ```text
//! checkvm       "VMware software version 6 (good)", exit 0 on VMware
//! checkvm -p    the product: "ESX Server", "Workstation", ...
//! checkvm -h    the virtual hardware version
//! ```
//!
//! Outside VMware it prints why on stderr and exits 1; it never dies of a signal, since the
//! backdoor knock runs contained.

#[path = "shared/guard.rs"]
mod guard;

use std::process::ExitCode;

use vmw_backdoor::VmwError;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = match args.as_slice() {
        [] => What::Version,
        [flag] if flag == "-p" => What::Product,
        [flag] if flag == "-h" => What::HardwareVersion,
        _ => {
            eprintln!("usage: checkvm [-p | -h]");
            return ExitCode::from(2);
        }
    };
    match run(what) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("checkvm: not running in a VMware VM: {e}");
            ExitCode::FAILURE
        }
    }
}

enum What {
    Version,
    Product,
    HardwareVersion,
}

fn run(what: What) -> Result<ExitCode, VmwError> {
    let mut guard = guard::probe()?;
    let version = guard.get_version()?;
    match what {
        What::Version => {
            let verdict = if version.is_compatible() {
                "good"
            } else {
                "bad"
            };
            println!("VMware software version {} ({verdict})", version.version);
            if !version.is_compatible() {
                return Ok(ExitCode::FAILURE);
            }
        }
        What::Product => println!("{}", version.product),
        What::HardwareVersion => match guard.hardware_version()? {
            Some(v) => println!("VMware virtual hardware version {v}"),
            None => {
                eprintln!("checkvm: the host does not report a hardware version");
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
