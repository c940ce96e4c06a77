//! Reads or writes one guestinfo value, like `vmware-rpctool "info-get guestinfo.KEY"`.
//!
//! ```text
//! guestinfo KEY          print the value (raw bytes, no newline); exit 1 if it is not set
//! guestinfo KEY VALUE    set it
//! ```
//!
//! KEY may be given with or without the `guestinfo.` prefix. Without a VMware host at hand,
//! run it under the simulator:
//!
//! ```text
//! cargo run --features sim --bin vmw-sim -- -e guestinfo.greeting=hello -- \
//!     cargo run --example guestinfo greeting
//! ```

#[path = "shared/guard.rs"]
mod guard;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (key, value) = match args.as_slice() {
        // Keys and values need not be UTF-8: the argument bytes as given (on Unix).
        [key] => (key.as_encoded_bytes().to_vec(), None),
        [key, value] => (
            key.as_encoded_bytes().to_vec(),
            Some(value.as_encoded_bytes().to_vec()),
        ),
        _ => {
            eprintln!("usage: guestinfo KEY [VALUE]");
            return ExitCode::from(2);
        }
    };
    match run(&key, value.as_deref()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("guestinfo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(key: &[u8], value: Option<&[u8]>) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Privileged access where the kernel grants it, else ring 3 (which VMware allows).
    let mut guard = guard::probe()?;
    let mut chan = guard.open_enhanced_chan()?;
    if let Some(value) = value {
        chan.set_guestinfo(key, value)?;
        return Ok(ExitCode::SUCCESS);
    }
    match chan.get_guestinfo(key)? {
        Some(v) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&v)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("No value found");
            Ok(ExitCode::FAILURE)
        }
    }
}
