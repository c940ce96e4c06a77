//! [`Counters`]: what the guest did to the host, and the `--stats` JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Running totals of the guest's backdoor traffic, read with [`super::Host::counters`].
///
/// Every field only grows; [`Counters::channels_open`] is computed from two of them.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every low-bandwidth call: each `in` on port 0x5658 whatever its registers, and each
    /// `out` a live backdoor takes (EAX the magic, on a VMware host; any other `out` is a
    /// write to an empty port and never reaches the host).
    pub lb_calls: u64,
    /// Low-bandwidth calls addressed to the backdoor (magic and port right, on a VMware
    /// host), unknown commands included, by `(command, sub-command)`, whether they came by
    /// port or hypercall; the sub-command is `hi16(ECX)` for MESSAGE and 0 for every other
    /// command.
    pub lb_by_command: BTreeMap<(u16, u16), u64>,
    /// Every `rep insb` on port 0x5659.
    pub hb_in_calls: u64,
    /// Every `rep outsb` on port 0x5659.
    pub hb_out_calls: u64,
    /// Every `vmcall` the host answered (low- and high-bandwidth; the port calls are the
    /// three above).
    pub vmcall_calls: u64,
    /// Every `vmmcall` the host answered (low- and high-bandwidth).
    pub vmmcall_calls: u64,
    /// Message bytes the host accepted from the guest (SENDPAYLOAD and high-bandwidth out).
    pub bytes_to_host: u64,
    /// Message bytes the host handed to the guest (RECVPAYLOAD and high-bandwidth in).
    pub bytes_to_guest: u64,
    /// Successful OPENs.
    pub channels_opened: u64,
    /// Channels closed, by the guest's CLOSE or by the host ([`super::Answer::CloseChannel`]).
    pub channels_closed: u64,
    /// RPCI requests executed (each complete guest-to-host message on an RPCI channel).
    pub rpcs: u64,
    /// RPCI requests the host did not know (answered `0 Unknown command`): what a guest
    /// expected the simulator to model and it does not.
    pub unknown_commands: u64,
    /// TCLO commands handed to the guest.
    pub tclo_commands: u64,
    /// Messages the guest sent on TCLO channels (empty polls included).
    pub tclo_messages: u64,
    /// Steps answered with status CPT (periodic and one-shot).
    pub cpts_injected: u64,
    /// One-shot faults that fired ([`super::HostConfig::fault`]), whatever their answer.
    pub faults_injected: u64,
    /// Connections the host's vsock end accepted ([`super::HostConfig::vsock`]); a reset
    /// one is not accepted.
    pub vsock_connections: u64,
    /// RPCI requests that came over vsock (also counted in [`Counters::rpcs`]).
    pub vsock_rpcs: u64,
    /// `log` lines answered `1 ` but not kept in [`super::Host::vmx_log`] (its memory budget
    /// was spent).
    pub vmx_log_dropped: u64,
}

impl Counters {
    /// Every backdoor call the host saw: low-bandwidth calls and high-bandwidth transfers
    /// both ways, by port or hypercall (on VMware, each is one VM exit).
    #[must_use]
    pub fn backdoor_calls(&self) -> u64 {
        self.lb_calls + self.hb_in_calls + self.hb_out_calls + self.hypercalls()
    }

    /// Every hypercall the host answered: `vmcall` and `vmmcall`.
    #[must_use]
    pub fn hypercalls(&self) -> u64 {
        self.vmcall_calls + self.vmmcall_calls
    }

    /// Low-bandwidth calls accepted for `command` and `sub_command` (0 unless MESSAGE).
    #[must_use]
    pub fn lb_calls_for(&self, command: u16, sub_command: u16) -> u64 {
        self.lb_by_command
            .get(&(command, sub_command))
            .copied()
            .unwrap_or(0)
    }

    /// Channels open now: those opened and not yet closed.
    #[must_use]
    pub fn channels_open(&self) -> u64 {
        self.channels_opened.saturating_sub(self.channels_closed)
    }

    /// Counts one accepted low-bandwidth call.
    pub(super) fn count_lb(&mut self, command: u16, sub_command: u16) {
        let n = self
            .lb_by_command
            .entry((command, sub_command))
            .or_insert(0);
        *n = n.saturating_add(1);
    }

    /// The counters as one JSON object (the runner's `--stats` file).
    ///
    /// Keys: `lb_calls`, `hb_in_calls`, `hb_out_calls` (the port calls), `vmcall_calls`,
    /// `vmmcall_calls` (the hypercalls), `bytes_to_host`, `bytes_to_guest`,
    /// `channels_opened`, `channels_closed`, `channels_open_at_exit`, `rpcs`, `unknown_commands`,
    /// `tclo_commands`,
    /// `tclo_messages`, `cpts_injected`, `faults_injected`, `vmx_log_dropped`,
    /// `vsock_connections`, `vsock_rpcs`, and
    /// `lb_by_command`, an array of
    /// `{"command": C, "subcommand": S, "calls": N}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        let fields: [(&str, u64); 19] = [
            ("lb_calls", self.lb_calls),
            ("hb_in_calls", self.hb_in_calls),
            ("hb_out_calls", self.hb_out_calls),
            ("vmcall_calls", self.vmcall_calls),
            ("vmmcall_calls", self.vmmcall_calls),
            ("bytes_to_host", self.bytes_to_host),
            ("bytes_to_guest", self.bytes_to_guest),
            ("channels_opened", self.channels_opened),
            ("channels_closed", self.channels_closed),
            ("channels_open_at_exit", self.channels_open()),
            ("rpcs", self.rpcs),
            ("unknown_commands", self.unknown_commands),
            ("tclo_commands", self.tclo_commands),
            ("tclo_messages", self.tclo_messages),
            ("cpts_injected", self.cpts_injected),
            ("faults_injected", self.faults_injected),
            ("vmx_log_dropped", self.vmx_log_dropped),
            ("vsock_connections", self.vsock_connections),
            ("vsock_rpcs", self.vsock_rpcs),
        ];
        let mut out = String::from("{");
        for (name, value) in fields {
            // Writing to a String cannot fail.
            let _ = write!(out, "\"{name}\":{value},");
        }
        out.push_str("\"lb_by_command\":[");
        for (i, ((command, sub), calls)) in self.lb_by_command.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"command\":{command},\"subcommand\":{sub},\"calls\":{calls}}}"
            );
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_required_key_and_balanced_brackets() {
        let mut c = Counters {
            lb_calls: 3,
            channels_opened: 5,
            channels_closed: 3,
            ..Counters::default()
        };
        c.count_lb(30, 0);
        c.count_lb(30, 0);
        c.count_lb(10, 0);
        let j = c.to_json();
        for key in [
            "lb_calls",
            "hb_in_calls",
            "hb_out_calls",
            "vmcall_calls",
            "vmmcall_calls",
            "bytes_to_host",
            "bytes_to_guest",
            "channels_opened",
            "channels_closed",
            "channels_open_at_exit",
            "rpcs",
            "unknown_commands",
            "cpts_injected",
            "vmx_log_dropped",
            "vsock_connections",
            "vsock_rpcs",
        ] {
            assert!(j.contains(&format!("\"{key}\":")), "{key} missing in {j}");
        }
        assert!(j.contains("\"lb_calls\":3,"), "{j}");
        assert!(j.contains("\"channels_open_at_exit\":2,"), "{j}");
        assert!(j.contains("{\"command\":10,\"subcommand\":0,\"calls\":1},{\"command\":30,\"subcommand\":0,\"calls\":2}"), "{j}");
        assert!(j.starts_with('{') && j.ends_with("]}"), "{j}");
        assert_eq!(c.lb_calls_for(30, 0), 2);
        assert_eq!(c.lb_calls_for(30, 1), 0);
    }
}
