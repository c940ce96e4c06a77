//! Writes one line to the VM's log (`vmware.log` on the host).
//!
//! ```text
//! log TEXT...
//! ```
//!
//! The arguments are joined with spaces.

#[path = "shared/guard.rs"]
mod guard;

use std::process::ExitCode;

fn main() -> ExitCode {
    let text = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        eprintln!("usage: log TEXT...");
        return ExitCode::from(2);
    }
    let result = guard::session().and_then(|mut session| session.log(&text));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("log: {e}");
            ExitCode::FAILURE
        }
    }
}
