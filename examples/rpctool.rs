//! Sends one raw RPCI command, like `vmware-rpctool`.
//!
//! ```text
//! rpctool "info-get guestinfo.KEY"
//! rpctool machine.id.get
//! ```
//!
//! Several arguments are joined with spaces. The payload of the host's `1 …` reply goes to
//! stdout as raw bytes; on a `0 …` reply its text goes to stderr and the exit status is 1.

#[path = "shared/guard.rs"]
mod guard;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Commands need not be UTF-8: the argument bytes as given (on Unix).
    let args: Vec<Vec<u8>> = std::env::args_os()
        .skip(1)
        .map(std::ffi::OsString::into_encoded_bytes)
        .collect();
    if args.is_empty() {
        eprintln!("usage: rpctool COMMAND [ARGUMENT...]");
        return ExitCode::from(2);
    }
    let request = args.join(&b' ');
    match run(&request) {
        Ok(payload) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&payload).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rpctool: writing the reply: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            match e.host_reply() {
                Some(text) => eprintln!("{}", String::from_utf8_lossy(text)),
                None => eprintln!("rpctool: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(request: &[u8]) -> Result<Vec<u8>, vmw_backdoor::VmwError> {
    let mut guard = guard::probe()?;
    let mut chan = guard.open_enhanced_chan()?;
    chan.rpc(request)
}
