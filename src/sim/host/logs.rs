//! The `--tclo-log` and `--rpci-log` files and the `--trace` lines: one line per exchange
//! or request, bytes that are not printable ASCII (and the backslash) written `\xNN`, so a
//! line is always one line.

use super::Host;

/// `bytes` with everything outside printable ASCII, and `\`, as `\xNN`.
pub(super) fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if (0x20..0x7F).contains(&b) && b != b'\\' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

/// Writes one `--trace` line to stderr: `vmw-sim: KIND: REQUEST -> REPLY`, escaped as the
/// logs are. The one output the model writes itself, so it shows while the guest runs.
pub(super) fn trace(kind: &str, request: &[u8], reply: &[u8]) {
    use std::io::Write;
    let mut line = format!("vmw-sim: {kind}: ").into_bytes();
    escape(&mut line, request);
    line.extend_from_slice(b" -> ");
    escape(&mut line, reply);
    line.push(b'\n');
    // A closed stderr loses the trace, never the run.
    let _ = std::io::stderr().lock().write_all(&line);
}

impl Host {
    /// The TCLO exchanges as `vmw-sim --tclo-log` writes them: per command, the command,
    /// a tab and the guest's reply (nothing after the tab when none came), each escaped
    /// (bytes outside printable ASCII and `\` as `\xNN`), one a line.
    #[must_use]
    pub fn tclo_log(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for x in self.tclo_exchanges() {
            escape(&mut out, &x.command);
            out.push(b'\t');
            escape(&mut out, x.reply.as_deref().unwrap_or_default());
            out.push(b'\n');
        }
        out
    }

    /// Every RPCI request as `vmw-sim --rpci-log` writes them: one a line, escaped as in
    /// [`Host::tclo_log`] (a trailing NUL shows as `\x00`).
    #[must_use]
    pub fn rpci_log(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for r in self.rpci_requests() {
            escape(&mut out, r);
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaping() {
        let mut out = Vec::new();
        super::escape(&mut out, b"OK ATR\ttool\\box\0\xff~");
        assert_eq!(out, b"OK ATR\\x09tool\\x5cbox\\x00\\xff~");
    }
}
