//! How a TCLO command is read: the command name, its arguments, and `Set_Option`'s two.
//!
//! As open-vm-tools reads them (`RpcChannel_Dispatch` and `ToolsCoreRpcSetOption`, through
//! `StrUtil_GetNextToken`): the host's message is a C string, so it ends at its first NUL;
//! the name is the first run of non-space bytes after any leading spaces (only the space
//! separates; a tab does not); the arguments are the message from the name's *length* on,
//! counted from the start of the message, so a name preceded by spaces leaves its last
//! bytes in the arguments (open-vm-tools' behaviour, kept so that replies match).

/// The first token of `text` from `index`: (start, end) of the run of bytes that are not
/// in `delimiters`, after skipping those that are; `None` when only delimiters are left.
fn next_token(text: &[u8], index: usize, delimiters: &[u8]) -> Option<(usize, usize)> {
    let start = index
        + text
            .get(index..)?
            .iter()
            .position(|b| !delimiters.contains(b))?;
    let len = text
        .get(start..)?
        .iter()
        .position(|b| delimiters.contains(b))
        .unwrap_or(text.len() - start);
    Some((start, start + len))
}

/// The message as the C string it is: up to its first NUL.
pub(super) fn c_str(message: &[u8]) -> &[u8] {
    let end = message
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(message.len());
    message.get(..end).unwrap_or_default()
}

/// The command name and its arguments; `None` for a message with no name (empty, only
/// spaces, or starting with NUL): "Bad command".
pub(super) fn split_command(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let text = c_str(message);
    let (start, end) = next_token(text, 0, b" ")?;
    let name = text.get(start..end)?;
    let args = text.get(name.len()..).unwrap_or_default();
    Some((name, args))
}

/// `Set_Option`'s option name and value: the first space-separated token of `args`, then,
/// one byte past its end, the rest of the string. `None` when either is missing or the
/// value is empty (the host then hears "Unknown or invalid option").
pub(super) fn split_option(args: &[u8]) -> Option<(&[u8], &[u8])> {
    let (start, end) = next_token(args, 0, b" ")?;
    let option = args.get(start..end)?;
    // One byte is skipped after the name, whatever it is; past the end there is no value.
    let value = args.get(end + 1..).filter(|v| !v.is_empty())?;
    Some((option, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arguments_as_open_vm_tools_reads_them() {
        assert_eq!(split_command(b"ping"), Some((&b"ping"[..], &b""[..])));
        assert_eq!(split_command(b"ping\0\0"), Some((&b"ping"[..], &b""[..])));
        assert_eq!(split_command(b"ping\0junk"), Some((&b"ping"[..], &b""[..])));
        assert_eq!(
            split_command(b"Set_Option broadcastIP 1"),
            Some((&b"Set_Option"[..], &b" broadcastIP 1"[..]))
        );
        assert_eq!(split_command(b"  ping"), Some((&b"ping"[..], &b"ng"[..])));
        assert_eq!(split_command(b"ping\tx"), Some((&b"ping\tx"[..], &b""[..])));
        for bad in [&b""[..], b" ", b"   ", b"\0ping", b" \0 ping"] {
            assert_eq!(split_command(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn options_as_tools_core_reads_them() {
        let ok = split_option;
        assert_eq!(
            ok(b" broadcastIP 1"),
            Some((&b"broadcastIP"[..], &b"1"[..]))
        );
        assert_eq!(ok(b" a b c"), Some((&b"a"[..], &b"b c"[..])));
        assert_eq!(ok(b"   a  1"), Some((&b"a"[..], &b" 1"[..])));
        assert_eq!(ok(b" synctime"), None);
        assert_eq!(ok(b" synctime "), None);
        assert_eq!(ok(b""), None);
        assert_eq!(ok(b"  "), None);
    }
}
