//! What the guest's tools agent told the host over RPCI: the Tools commands a VMX accepts
//! (`1 `) and keeps.

use std::collections::BTreeMap;

/// Bytes of tools records kept (guest info values, state changes, backup events).
const BUDGET: usize = 16 << 20;

/// The agent's reports, as the VMX keeps them.
#[derive(Debug, Default)]
pub(super) struct Tools {
    /// `vmx.capability.unified_loop NAME`: the agent's name.
    pub(super) unified_loop: Option<Vec<u8>>,
    /// `tools.capability.NAME VALUE`, by name; `None` for the no-value form.
    pub(super) capabilities: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// `tools.os.statechange.status SUCCESS ID`, each argument as sent.
    pub(super) state_changes: Vec<Vec<u8>>,
    /// `SetGuestInfo  ID VALUE`, the last value by id (binary ones whole).
    pub(super) guest_info: BTreeMap<u32, Vec<u8>>,
    /// `vmbackup.eventSet EVENT CODE TEXT`, each argument as sent.
    pub(super) backup_events: Vec<Vec<u8>>,
    bytes: usize,
}

/// The host's answer to a tools command it does not take.
pub(super) const REFUSED: &[u8] = b"0 Unknown command";

impl Tools {
    fn charge(&mut self, len: usize) -> bool {
        let cost = len.saturating_add(super::ENTRY_OVERHEAD);
        if self.bytes.saturating_add(cost) > BUDGET {
            return false;
        }
        self.bytes += cost;
        true
    }

    /// A tools command by name, with its argument (the text after the first space, up to
    /// the first NUL) and the whole request (for binary values); `None` when `name` is not
    /// one, else the reply.
    pub(super) fn execute(
        &mut self,
        name: &[u8],
        arg: Option<&[u8]>,
        raw: &[u8],
    ) -> Option<&'static [u8]> {
        let arg_bytes = arg.unwrap_or_default();
        if let Some(cap) = name.strip_prefix(b"tools.capability.") {
            if cap.is_empty() || !self.charge(cap.len() + arg_bytes.len()) {
                return Some(REFUSED);
            }
            let value = arg.filter(|a| !a.is_empty()).map(<[u8]>::to_vec);
            self.capabilities.insert(cap.to_vec(), value);
            return Some(super::rpci::OK);
        }
        match name {
            b"vmx.capability.unified_loop" => {
                self.unified_loop = Some(arg_bytes.to_vec());
                Some(super::rpci::OK)
            }
            b"tools.os.statechange.status" => {
                if self.charge(arg_bytes.len()) {
                    self.state_changes.push(arg_bytes.to_vec());
                }
                Some(super::rpci::OK)
            }
            b"vmbackup.eventSet" => {
                if self.charge(arg_bytes.len()) {
                    self.backup_events.push(arg_bytes.to_vec());
                }
                Some(super::rpci::OK)
            }
            b"SetGuestInfo" => Some(self.set_guest_info(raw)),
            _ => None,
        }
    }

    /// `SetGuestInfo DID D VALUE`: the character after `SetGuestInfo ` is the delimiter
    /// (a space), then the id, the delimiter, the value. Text values end at their NUL;
    /// binary ones (NIC info, ids 2, 9, 10; detailed OS data, 11) are kept whole.
    fn set_guest_info(&mut self, raw: &[u8]) -> &'static [u8] {
        let Some(rest) = raw.strip_prefix(b"SetGuestInfo ") else {
            return REFUSED;
        };
        let Some((&delim, rest)) = rest.split_first() else {
            return REFUSED;
        };
        let Some(end) = rest.iter().position(|&b| b == delim) else {
            return REFUSED;
        };
        let (id, value) = rest.split_at(end);
        let value = value.get(1..).unwrap_or_default();
        let Some(id) = std::str::from_utf8(id)
            .ok()
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|id| (1..=11).contains(id))
        else {
            return REFUSED;
        };
        let value = if matches!(id, 2 | 9 | 10 | 11) {
            value
        } else {
            value.split(|&b| b == 0).next().unwrap_or_default()
        };
        if !self.charge(value.len()) {
            return REFUSED;
        }
        self.guest_info.insert(id, value.to_vec());
        super::rpci::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_commands_are_kept() {
        let mut t = Tools::default();
        let ok = Some(super::super::rpci::OK);
        assert_eq!(
            t.execute(b"vmx.capability.unified_loop", Some(b"toolbox"), b""),
            ok
        );
        assert_eq!(t.unified_loop.as_deref(), Some(&b"toolbox"[..]));
        assert_eq!(
            t.execute(b"tools.capability.statechange", Some(b""), b""),
            ok
        );
        assert_eq!(
            t.execute(b"tools.capability.hgfs_server", Some(b"toolbox 1"), b""),
            ok
        );
        assert_eq!(t.capabilities.get(&b"statechange"[..]), Some(&None));
        assert_eq!(
            t.capabilities.get(&b"hgfs_server"[..]),
            Some(&Some(b"toolbox 1".to_vec()))
        );
        assert_eq!(
            t.execute(b"tools.os.statechange.status", Some(b"1 2"), b""),
            ok
        );
        assert_eq!(t.state_changes, [b"1 2".to_vec()]);
        let raw = b"SetGuestInfo  1 node-1\0";
        assert_eq!(t.execute(b"SetGuestInfo", None, raw), ok);
        let nic = b"SetGuestInfo  10 \0\0\0\x03";
        assert_eq!(t.execute(b"SetGuestInfo", None, nic), ok);
        assert_eq!(
            t.guest_info.get(&1).map(Vec::as_slice),
            Some(&b"node-1"[..])
        );
        assert_eq!(
            t.guest_info.get(&10).map(Vec::as_slice),
            Some(&b"\0\0\0\x03"[..])
        );
        for bad in [
            &b"SetGuestInfo"[..],
            b"SetGuestInfo  x v",
            b"SetGuestInfo  99 v",
            b"SetGuestInfo  1",
        ] {
            assert_eq!(
                t.execute(b"SetGuestInfo", None, bad),
                Some(REFUSED),
                "{bad:?}"
            );
        }
        assert_eq!(
            t.execute(b"vmbackup.eventSet", Some(b"req.done 0 "), b""),
            ok
        );
        assert_eq!(t.execute(b"machine.id.get", None, b""), None);
    }
}
