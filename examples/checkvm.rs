//! Tells whether this is a VMware virtual machine, and answers as open-vm-tools'
//! `vmware-checkvm` does.
//!
//! ```text
//! checkvm                     "VMware software version 6 (good)", exit 0 on VMware
//! checkvm -p | --prod         the product: "ESX Server", "Workstation" or "Unknown"
//! checkvm -h | --help         help
//! checkvm --hardware-version  the VM's virtual hardware version (this program only)
//! ```
//!
//! What it prints and its exit status are vmware-checkvm 12.2's, byte for byte
//! (`tests/tool_parity.rs` runs both side by side). Outside VMware it prints `Error: checkvm
//! must be run inside a virtual machine on a VMware hypervisor product.` on stderr and exits
//! 1, whatever the options; it never dies of a signal, since the backdoor knock runs
//! contained. Options are read the way vmware-checkvm's glib parser reads them: short
//! options combine (`-ph` is help, `-px` an unknown option), `--prod=anything` is `--prod`,
//! `--` ends the options and other arguments are ignored; an unknown option prints
//! `checkvm: Unknown option OPTION` and exits 1. Its text goes out as glib prints it in the
//! C locale vmware-checkvm runs in (see `glib_ascii`).
//!
//! `--hardware-version` is this program's own: vmware-checkvm has no such option, and `-h`
//! is help in both. The help is vmware-checkvm's, byte for byte, so it does not list it. If
//! stdout cannot be written, this program says so on stderr but keeps the exit status, which
//! answers the question "is this VMware?" (vmware-checkvm does not notice, and exits 0).

#[path = "shared/guard.rs"]
mod guard;

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use vmw_backdoor::{ErrorKind, Product};

/// What the options ask for.
enum Action {
    Version,
    Product,
    HardwareVersion,
    Help,
    Unknown(Vec<u8>),
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().map(OsString::into_encoded_bytes);
    let argv0 = args.next().unwrap_or_default();
    // vmware-checkvm calls itself by the last component of argv[0].
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    let args: Vec<Vec<u8>> = args.collect();
    ExitCode::from(run(name, &args))
}

fn run(name: &[u8], args: &[Vec<u8>]) -> u8 {
    let not_vmware = || {
        let why = b" must be run inside a virtual machine on a VMware hypervisor product.\n";
        print_err(&[b"Error: ", name, why].concat());
        1
    };
    // Is this VMware? Before the options are read, as in vmware-checkvm.
    let mut guard = match guard::probe() {
        Ok(guard) => guard,
        Err(e) if matches!(e.kind(), ErrorKind::NotVmware | ErrorKind::Unsupported) => {
            return not_vmware();
        }
        Err(e) => {
            // Ours alone (a bad VMW_BACKDOOR_TRANSPORT, a failed system call): our words.
            print_err(&[name, format!(": {e}\n").as_bytes()].concat());
            return 1;
        }
    };
    let version = match guard.get_version() {
        Ok(v) if v.is_compatible() => v,
        // vmware-checkvm takes any other backdoor version for "not VMware" too.
        Ok(_) => return not_vmware(),
        Err(_) => {
            print_err(&[name, b": Couldn't get version\n"].concat());
            return 1;
        }
    };
    let text = match parse(args) {
        Action::Help => help(name),
        Action::Unknown(option) => {
            print_err(&[name, b": Unknown option ", &option, b"\n"].concat());
            return 1;
        }
        Action::Product => format!("{}\n", product_name(version.product)).into_bytes(),
        Action::Version => {
            format!("VMware software version {} (good)\n", version.version).into_bytes()
        }
        Action::HardwareVersion => match guard.hardware_version() {
            Ok(Some(v)) => format!("VMware virtual hardware version {v}\n").into_bytes(),
            Ok(None) => {
                print_err(&[name, b": the host does not report a hardware version\n"].concat());
                return 1;
            }
            Err(e) => {
                print_err(&[name, format!(": {e}\n").as_bytes()].concat());
                return 1;
            }
        },
    };
    if let Err(e) = print(&text) {
        print_err(&[name, format!(": writing to stdout: {e}\n").as_bytes()].concat());
    }
    0
}

/// The options as glib's `g_option_context_parse` reads vmware-checkvm's one entry
/// (`-p`/`--prod`) and its help options, in order: the first help option or unknown option
/// decides.
fn parse(args: &[Vec<u8>]) -> Action {
    let (mut product, mut hardware_version) = (false, false);
    let is_flag = |long: &[u8], name: &[u8]| {
        long.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'=')
    };
    for arg in args {
        if let Some(long) = arg.strip_prefix(b"--") {
            match long {
                b"" => break, // `--`: the rest are arguments
                b"help" | b"help-all" => return Action::Help,
                _ if is_flag(long, b"prod") => product = true,
                _ if is_flag(long, b"hardware-version") => hardware_version = true,
                _ => return Action::Unknown(arg.clone()),
            }
        } else if let Some(short) = arg.strip_prefix(b"-").filter(|s| !s.is_empty()) {
            for c in short {
                match c {
                    b'h' | b'?' => return Action::Help,
                    b'p' => product = true,
                    _ => return Action::Unknown(arg.clone()),
                }
            }
        } // anything else, `-` and `` included, is an argument, and ignored
    }
    match (product, hardware_version) {
        (true, _) => Action::Product,
        (false, true) => Action::HardwareVersion,
        (false, false) => Action::Version,
    }
}

/// glib's help for vmware-checkvm's options.
fn help(name: &[u8]) -> Vec<u8> {
    let options = "\n\nHelp Options:\n  -h, --help       Show help options\n\n\
                   Application Options:\n  -p, --prod       print VMware hypervisor product.\n\n";
    [
        b"Usage:\n  ",
        name,
        " [OPTION…]".as_bytes(),
        options.as_bytes(),
    ]
    .concat()
}

/// The products vmware-checkvm names; every other one is "Unknown" there.
fn product_name(product: Product) -> &'static str {
    match product {
        Product::EsxServer => "ESX Server",
        Product::Workstation => "Workstation",
        _ => "Unknown",
    }
}

/// What glib's `g_print` and `g_printerr` make of `text` in the C locale vmware-checkvm
/// runs in (it never calls `setlocale`): UTF-8 text is converted to ASCII, each other
/// character becoming `?` (so the help's `[OPTION…]` reads `[OPTION?]`); other bytes are
/// marked `[Invalid UTF-8] ` and escaped as `\xNN`, as are control characters then.
fn glib_ascii(text: &[u8]) -> Vec<u8> {
    if let Ok(text) = std::str::from_utf8(text) {
        let ascii = text.chars().map(|c| if c.is_ascii() { c } else { '?' });
        return ascii.collect::<String>().into_bytes();
    }
    let mut out = b"[Invalid UTF-8] ".to_vec();
    for (i, &b) in text.iter().enumerate() {
        let control = b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') || b == 0x7f;
        let lone_cr = b == b'\r' && text.get(i + 1) != Some(&b'\n');
        if b.is_ascii() && !control && !lone_cr {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    out
}

fn print(text: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(&glib_ascii(text))?;
    out.flush()
}

/// Writes to stderr; if even that fails there is no one left to tell (and no panic, which
/// `eprintln!` would raise).
fn print_err(text: &[u8]) {
    let _ = io::stderr().write_all(&glib_ascii(text));
}
