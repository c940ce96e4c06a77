//! Reads or writes one guestinfo value, like `vmware-rpctool "info-get guestinfo.KEY"`.
//!
//! ```text
//! guestinfo KEY            print the value (raw bytes, no newline); exit 1 if it is not set
//! guestinfo --decode KEY   the same, decoded as KEY.encoding says (base64, gzip+base64, ...)
//! guestinfo KEY VALUE      set it
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
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let decode = args.first().is_some_and(|a| a == "--decode");
    if decode {
        args.remove(0);
    }
    let (key, value) = match args.as_slice() {
        // Keys and values need not be UTF-8: the argument bytes as given (on Unix).
        [key] => (key.as_encoded_bytes().to_vec(), None),
        [key, value] if !decode => (
            key.as_encoded_bytes().to_vec(),
            Some(value.as_encoded_bytes().to_vec()),
        ),
        _ => {
            eprintln!("usage: guestinfo [--decode] KEY | guestinfo KEY VALUE");
            return ExitCode::from(2);
        }
    };
    match run(&key, value.as_deref(), decode) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("guestinfo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    key: &[u8],
    value: Option<&[u8]>,
    decode: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // The best channel there is: privileged vsock (which a VM can require for guestinfo),
    // vsock, else the backdoor.
    let mut session = guard::session()?;
    if let Some(value) = value {
        session.set_guestinfo(key, value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let value = if decode {
        session.get_decoded_guestinfo(key)?
    } else {
        session.get_guestinfo(key)?
    };
    match value {
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
