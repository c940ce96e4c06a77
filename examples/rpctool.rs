//! Sends one RPCI command to the host and answers as open-vm-tools' `vmware-rpctool` does.
//!
//! ```text
//! rpctool "info-get guestinfo.KEY"
//! rpctool "info-set guestinfo.KEY VALUE"
//! rpctool machine.id.get
//! ```
//!
//! What it prints and its exit status are vmware-rpctool 12.2's, byte for byte
//! (`tests/tool_parity.rs` runs both side by side), so scripts that parse one can call the
//! other:
//!
//! - the host's `1 REPLY`: REPLY and a newline on stdout (REPLY up to its first NUL byte, as
//!   C's `%s` prints it; a `set` or `log` prints an empty line), exit 0;
//! - the host's `0 TEXT` (a missing key's `No value found`, `Unknown command`,
//!   `Permission denied`): TEXT and a newline on stderr, exit 1;
//! - only the first argument is sent; the others are ignored. A first argument that starts
//!   with `-h` or `--help` (so `-hx` too) prints the usage on stderr and exits 0; no
//!   argument prints it and exits 1;
//! - outside VMware, whatever the arguments: `Error: ARGV0 must be run inside a virtual
//!   machine on a VMware hypervisor product.` on stderr, exit 255.
//!
//! Where it fails on its own side — no channel free on the host (vmware-rpctool prints
//! `NULL`), a request over 64 KiB, stdout that cannot be written — it says so in its own
//! words, with vmware-rpctool's exit status (1; 0 when only stdout failed: the host did
//! accept the command). Unlike vmware-rpctool it takes I/O privilege where the kernel
//! grants it, so as root it also works in a VM that restricts ring-3 backdoor access; and
//! it sends by vsock where the host takes it (privileged as root), as `vmtoolsd --cmd`
//! does, so it gets an answer where the VM reserves a command for the privileged channel.

#[path = "shared/guard.rs"]
mod guard;

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use vmw_backdoor::{ErrorKind, Route, Session, VmwError};

/// vmware-rpctool's usage text, on stderr.
const USAGE: &str = "rpctool syntax:\n\n  -h | --help\tprint usage.\n  rpctool <text>\tsend <text> as an RPC command.\n";

fn main() -> ExitCode {
    // Commands need not be UTF-8: the argument bytes as given (on Unix).
    let mut args = std::env::args_os().map(OsString::into_encoded_bytes);
    let argv0 = args.next().unwrap_or_default();
    ExitCode::from(run(&argv0, args.next().as_deref()))
}

fn run(argv0: &[u8], command: Option<&[u8]>) -> u8 {
    let name = String::from_utf8_lossy(argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0));
    // First of all, as vmware-rpctool: is this VMware? Any other failure to connect (no
    // channel free, say) is reported after the usage, where vmware-rpctool opens its channel.
    let session = match guard::session() {
        Err(e) if matches!(e.kind(), ErrorKind::NotVmware | ErrorKind::Unsupported) => {
            let line = [
                b"Error: ",
                argv0,
                b" must be run inside a virtual machine on a VMware hypervisor product.\n",
            ];
            print_err(&line.concat());
            return 255;
        }
        session => session,
    };
    let Some(command) = command else {
        print_err(USAGE.as_bytes());
        return 1;
    };
    if command.starts_with(b"-h") || command.starts_with(b"--help") {
        print_err(USAGE.as_bytes());
        return 0;
    }
    let reply = session.and_then(|mut session| {
        // vmware-rpctool sends an empty command by the backdoor; vsock's framing cannot.
        if command.is_empty() && session.route() != Route::Backdoor {
            session = Session::open(guard::probe()?)?;
        }
        // No cap of our own on the reply: vmware-rpctool prints whatever the host sends.
        session.set_max_reply_len(usize::MAX);
        session.rpc(command)
    });
    match reply {
        Ok(payload) => {
            if let Err(e) = print_line(&mut io::stdout().lock(), &payload) {
                print_err(format!("{name}: writing the reply: {e}\n").as_bytes());
            }
            0
        }
        Err(e) => match e.host_reply() {
            Some(text) => {
                let _ = print_line(&mut io::stderr().lock(), text);
                1
            }
            None => fail(&name, &e, 1),
        },
    }
}

/// `text` and a newline, as C's `printf("%s\n")` prints it: up to the first NUL byte.
fn print_line(out: &mut dyn Write, text: &[u8]) -> io::Result<()> {
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    out.write_all(text)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes to stderr; if even that fails there is no one left to tell (and no panic, which
/// `eprintln!` would raise).
fn print_err(text: &[u8]) {
    let _ = io::stderr().write_all(text);
}

fn fail(name: &str, e: &VmwError, status: u8) -> u8 {
    print_err(format!("{name}: {e}\n").as_bytes());
    status
}
