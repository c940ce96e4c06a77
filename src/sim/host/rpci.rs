//! The RPCI command interpreter: guest-to-host text commands and their `1 ` / `0 ` replies.
//!
//! A request is read up to its first NUL (guests variously send none, one, or a zero-padded
//! buffer). The command name is everything before the first space, the argument everything
//! after it. Replies the sources do not pin down are chosen here and documented on
//! [`Rpci::execute`].

use std::collections::{BTreeMap, BTreeSet};

use super::counters::Counters;
use crate::proto::GUESTINFO_PREFIX;

/// Bytes of guestinfo (keys plus values) the guest may add beyond what the host configured:
/// a memory guard, far above the 1 MiB a real VMX allows by default.
const GUEST_STORE_BUDGET: usize = 16 << 20;

/// Bytes of `log` text kept; later lines are counted (`Counters::vmx_log_dropped`) but not
/// kept.
const LOG_BUDGET: usize = 16 << 20;

pub(super) const OK: &[u8] = b"1 ";
const NO_VALUE: &[u8] = b"0 No value found";
const DENIED: &[u8] = b"0 Permission denied";
const UNKNOWN: &[u8] = b"0 Unknown command";
const SET_ARGS: &[u8] = b"0 Two and exactly two arguments expected";
const STORE_FULL: &[u8] = b"0 Too much guestinfo data";

/// The state RPCI commands read and write.
#[derive(Debug)]
pub(super) struct Rpci {
    pub(super) guestinfo: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(super) vmx_log: Vec<Vec<u8>>,
    pub(super) tools_version: Option<Vec<u8>>,
    pub(super) tools_version_type: Option<Vec<u8>>,
    /// What the tools agent reported.
    pub(super) tools: super::tools::Tools,
    /// Every request, as sent (`requests_bytes` charged against [`LOG_BUDGET`]).
    pub(super) requests: Vec<Vec<u8>>,
    requests_bytes: usize,
    /// Commands served only on a privileged channel (`guest_rpc.rpci.auth.cmd.NAME`).
    privileged_only: BTreeSet<Vec<u8>>,
    accept_empty_values: bool,
    machine_id: Vec<u8>,
    guest_api: Option<super::guestlib::GuestApi>,
    /// Whether each exchange is written to stderr as it happens ([`super::HostConfig::trace`]).
    pub(super) trace: bool,
    store_bytes: usize,
    store_limit: usize,
    log_bytes: usize,
}

/// Splits at the first space: (before, Some(after)) or (all, None).
fn split_space(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(i) => {
            let (head, tail) = bytes.split_at(i);
            (head, tail.get(1..))
        }
        None => (bytes, None),
    }
}

fn reply(status: &[u8], payload: &[u8]) -> Vec<u8> {
    [status, payload].concat()
}

impl Rpci {
    /// An interpreter over the configured store.
    pub(super) fn new(
        guestinfo: BTreeMap<Vec<u8>, Vec<u8>>,
        privileged_only: BTreeSet<Vec<u8>>,
        accept_empty_values: bool,
        machine_id: Vec<u8>,
        guest_api: Option<super::guestlib::GuestApi>,
    ) -> Self {
        let store_bytes = guestinfo
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
        Rpci {
            guestinfo,
            vmx_log: Vec::new(),
            tools_version: None,
            tools_version_type: None,
            tools: super::tools::Tools::default(),
            requests: Vec::new(),
            requests_bytes: 0,
            privileged_only,
            accept_empty_values,
            machine_id,
            guest_api,
            trace: false,
            store_bytes,
            store_limit: store_bytes.saturating_add(GUEST_STORE_BUDGET),
            log_bytes: 0,
        }
    }

    /// Runs one request that came by a channel that is `privileged` (a vsock connection
    /// from a port below 1024) or not (the backdoor, any other vsock connection), and returns
    /// the reply; counts it (`rpcs`) and a `log` line it could not keep (`vmx_log_dropped`)
    /// in `counters`.
    ///
    /// | request | reply |
    /// |---|---|
    /// | `info-get guestinfo.KEY` | `1 VALUE`, or `0 No value found` (also for a key without the `guestinfo.` prefix or an empty key) |
    /// | `info-set guestinfo.KEY VALUE` | `1 `; VALUE is everything after the first space after the key; an empty VALUE (unless [`super::HostConfig::empty_guestinfo_values`]), no space after the key or an empty key: `0 Two and exactly two arguments expected`; a key without the prefix: `0 Permission denied`; the guest's additions beyond 16 MiB: `0 Too much guestinfo data` |
    /// | a command of [`super::HostConfig::require_privileged`] on an unprivileged channel | `0 Permission denied` |
    /// | `log TEXT` | `1 `; TEXT (possibly empty) becomes a VMX log line |
    /// | `tools.set.version N`, `tools.set.versiontype N T` | `1 `; the argument is recorded as sent |
    /// | `machine.id.get` | `1 ID` |
    /// | `guestlib.info.get 3` | `1 ` and the Guest API's statistics ([`super::guestlib`]); another version: `0 3:Unsupported version`; with [`super::HostConfig::no_guest_api`]: `0 Unknown command` |
    /// | anything else | `0 Unknown command` |
    pub(super) fn execute(
        &mut self,
        request: &[u8],
        privileged: bool,
        counters: &mut Counters,
    ) -> Vec<u8> {
        counters.rpcs += 1;
        let cost = request.len().saturating_add(super::ENTRY_OVERHEAD);
        if self.requests_bytes.saturating_add(cost) <= LOG_BUDGET {
            self.requests_bytes += cost;
            self.requests.push(request.to_vec());
        }
        let reply = self.answer(request, privileged, counters);
        if self.trace {
            super::logs::trace("rpci", request, &reply);
        }
        reply
    }

    fn answer(&mut self, request: &[u8], privileged: bool, counters: &mut Counters) -> Vec<u8> {
        let raw = request;
        let request = request.split(|&b| b == 0).next().unwrap_or_default();
        let (name, arg) = split_space(request);
        if !privileged && self.privileged_only.contains(name) {
            return DENIED.to_vec();
        }
        if let Some(answer) = self.tools.execute(name, arg, raw) {
            return answer.to_vec();
        }
        match name {
            b"info-get" => self.info_get(arg.unwrap_or_default()),
            b"info-set" => self.info_set(arg),
            b"log" => {
                if !self.log(arg.unwrap_or_default()) {
                    counters.vmx_log_dropped = counters.vmx_log_dropped.saturating_add(1);
                }
                OK.to_vec()
            }
            b"tools.set.version" => {
                self.tools_version = Some(arg.unwrap_or_default().to_vec());
                OK.to_vec()
            }
            b"tools.set.versiontype" => {
                self.tools_version_type = Some(arg.unwrap_or_default().to_vec());
                OK.to_vec()
            }
            b"machine.id.get" => reply(OK, &self.machine_id),
            b"guestlib.info.get" if self.guest_api.is_some() => self.guest_lib(arg),
            _ => {
                counters.unknown_commands += 1;
                UNKNOWN.to_vec()
            }
        }
    }

    fn guest_lib(&self, version: Option<&[u8]>) -> Vec<u8> {
        match self.guest_api.as_ref().map(|api| api.info_get(version)) {
            Some(Ok(stats)) => reply(OK, &stats),
            Some(Err(text)) => reply(b"0 ", text),
            None => UNKNOWN.to_vec(),
        }
    }

    fn info_get(&self, key: &[u8]) -> Vec<u8> {
        let key = key.to_ascii_lowercase();
        let key = key.as_slice();
        match self.guestinfo.get(key) {
            Some(value) if key.starts_with(GUESTINFO_PREFIX) => reply(OK, value),
            _ => NO_VALUE.to_vec(),
        }
    }

    fn info_set(&mut self, arg: Option<&[u8]>) -> Vec<u8> {
        let (key, value) = match arg.map(split_space) {
            Some((key, Some(value))) if !key.is_empty() => (key, value),
            _ => return SET_ARGS.to_vec(),
        };
        // Guest tools never send an empty value: cloud-init and Ignition both say hosts do
        // not store one (they write a blank or a placeholder instead).
        if value.is_empty() && !self.accept_empty_values {
            return SET_ARGS.to_vec();
        }
        // VMX configuration keys match in any case (`guestinfo.ovfEnv` and `ovfenv` name one
        // key in the field): the store keeps them in lower case.
        let key = key.to_ascii_lowercase();
        let key = key.as_slice();
        if !key.starts_with(GUESTINFO_PREFIX) {
            return DENIED.to_vec();
        }
        let old = self.guestinfo.get(key).map_or(0, |v| key.len() + v.len());
        let new_total = self
            .store_bytes
            .saturating_sub(old)
            .saturating_add(key.len() + value.len());
        if new_total > self.store_limit {
            return STORE_FULL.to_vec();
        }
        self.store_bytes = new_total;
        self.guestinfo.insert(key.to_vec(), value.to_vec());
        OK.to_vec()
    }

    /// Keeps a `log` line; false when its budget is spent (the line is dropped).
    fn log(&mut self, text: &[u8]) -> bool {
        let cost = text.len().saturating_add(super::ENTRY_OVERHEAD);
        if self.log_bytes.saturating_add(cost) > LOG_BUDGET {
            return false;
        }
        self.log_bytes += cost;
        self.vmx_log.push(text.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Rpci {
        /// `execute`, counting into a throw-away set of counters.
        fn exec(&mut self, request: &[u8]) -> Vec<u8> {
            self.execute(request, false, &mut Counters::default())
        }
    }

    fn rpci() -> Rpci {
        let mut store = BTreeMap::new();
        store.insert(b"guestinfo.present".to_vec(), b"yes".to_vec());
        Rpci::new(store, BTreeSet::new(), false, b"vm-42".to_vec(), None)
    }

    #[test]
    fn info_get_serves_stored_values_and_misses_cleanly() {
        let mut r = rpci();
        assert_eq!(r.exec(b"info-get guestinfo.present"), b"1 yes");
        assert_eq!(r.exec(b"info-get guestinfo.present\0"), b"1 yes");
        assert_eq!(r.exec(b"info-get guestinfo.present\0\0\0garbage"), b"1 yes");
        assert_eq!(r.exec(b"info-get guestinfo.absent"), b"0 No value found");
        assert_eq!(r.exec(b"info-get present"), b"0 No value found");
        assert_eq!(r.exec(b"info-get"), b"0 No value found");
        assert_eq!(r.exec(b"info-get "), b"0 No value found");
    }

    #[test]
    fn info_set_takes_everything_after_the_key_as_value() {
        let mut r = rpci();
        assert_eq!(r.exec(b"info-set guestinfo.a hello world "), b"1 ");
        assert_eq!(
            r.guestinfo.get(&b"guestinfo.a"[..]).unwrap(),
            b"hello world "
        );
        assert_eq!(r.exec(b"info-set guestinfo.empty "), SET_ARGS);
        assert_eq!(
            r.exec(b"info-set guestinfo.empty \0after the NUL"),
            SET_ARGS
        );
        assert_eq!(r.exec(b"info-get guestinfo.empty"), NO_VALUE);
        let mut lenient = Rpci::new(BTreeMap::new(), BTreeSet::new(), true, Vec::new(), None);
        assert_eq!(lenient.exec(b"info-set guestinfo.empty "), b"1 ");
        assert_eq!(lenient.exec(b"info-get guestinfo.empty"), b"1 ");
        assert_eq!(r.exec(b"info-set guestinfo.bin \xff\x01\0ignored"), b"1 ");
        assert_eq!(r.guestinfo.get(&b"guestinfo.bin"[..]).unwrap(), b"\xff\x01");
        assert_eq!(r.exec(b"info-set guestinfo.novalue"), SET_ARGS);
        assert_eq!(r.exec(b"info-set"), SET_ARGS);
        assert_eq!(r.exec(b"info-set  v"), SET_ARGS);
        assert_eq!(r.exec(b"info-set other.key v"), b"0 Permission denied");
        assert!(!r.guestinfo.contains_key(&b"other.key"[..]));
    }

    #[test]
    fn privileged_commands_are_refused_on_other_channels_only() {
        let mut store = BTreeMap::new();
        store.insert(b"guestinfo.x".to_vec(), b"v".to_vec());
        let only: BTreeSet<Vec<u8>> = [b"info-get".to_vec(), b"info-set".to_vec()].into();
        let mut r = Rpci::new(store, only, false, Vec::new(), None);
        assert_eq!(r.exec(b"info-get guestinfo.x"), b"0 Permission denied");
        assert_eq!(r.exec(b"info-set guestinfo.x 1"), b"0 Permission denied");
        assert_eq!(r.guestinfo.get(&b"guestinfo.x"[..]).unwrap(), b"v");
        let mut counters = Counters::default();
        assert_eq!(
            r.execute(b"info-get guestinfo.x", true, &mut counters),
            b"1 v"
        );
        assert_eq!(
            r.execute(b"info-set guestinfo.x 2", true, &mut counters),
            b"1 "
        );
        // The first word is the command: a longer name is another command.
        assert_eq!(r.exec(b"info-get-x guestinfo.x"), b"0 Unknown command");
        assert_eq!(r.exec(b"log still served"), b"1 ");
        assert_eq!(r.requests.len(), 6, "refused requests are logged too");
    }

    #[test]
    fn log_version_machine_id_and_unknown() {
        let mut r = rpci();
        assert_eq!(r.exec(b"log hello from the guest"), b"1 ");
        assert_eq!(r.exec(b"log"), b"1 ");
        assert_eq!(
            r.vmx_log,
            vec![b"hello from the guest".to_vec(), Vec::new()]
        );
        assert_eq!(r.exec(b"tools.set.version 2147483647"), b"1 ");
        assert_eq!(r.tools_version.as_deref(), Some(&b"2147483647"[..]));
        assert_eq!(r.exec(b"tools.set.versiontype 12389 4\0"), b"1 ");
        assert_eq!(r.tools_version_type.as_deref(), Some(&b"12389 4"[..]));
        assert_eq!(r.exec(b"machine.id.get"), b"1 vm-42");
        assert_eq!(r.exec(b"tools.capability.statechange "), b"1 ");
        assert_eq!(r.exec(b""), b"0 Unknown command");
        assert_eq!(
            r.exec(b"\0info-get guestinfo.present"),
            b"0 Unknown command"
        );
    }

    #[test]
    fn guest_additions_are_capped_but_host_values_are_not() {
        let big = vec![b'x'; 1 << 20];
        let mut store = BTreeMap::new();
        store.insert(b"guestinfo.big".to_vec(), big.clone());
        let mut r = Rpci::new(store, BTreeSet::new(), false, Vec::new(), None);
        assert_eq!(r.exec(b"info-get guestinfo.big").len(), 2 + big.len());
        let value = vec![b'v'; 60_000];
        let mut accepted = 0;
        for i in 0..400 {
            let mut req = format!("info-set guestinfo.k{i} ").into_bytes();
            req.extend_from_slice(&value);
            if r.exec(&req) == b"1 " {
                accepted += 1;
            } else {
                assert_eq!(r.exec(&req), STORE_FULL);
            }
        }
        assert!(accepted > 200 && accepted < 300, "{accepted}");
        // Overwriting an existing key with a smaller value still works when full.
        assert_eq!(r.exec(b"info-set guestinfo.k0 small"), b"1 ");
    }
}
