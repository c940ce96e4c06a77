//! Where a scenario's guest code runs, after memchr's test `Runner`: each scenario is
//! written once against a [`Guest`] (`&mut dyn Backdoor`) and run over every transport of
//! its set — in memory for speed, through real instructions for truth.
//!
//! - The library's guest code (channel, RPCI, conveniences) runs over [`Transport::library`]:
//!   in memory, through the library's own port instructions, and by the library's own
//!   hypercall where this CPU hands one to the runner.
//! - The host model is checked with the reference client over [`Transport::REFERENCE`]: in
//!   memory and through hand-written instructions, so neither depends on the library's asm.
//!
//! On aarch64 (the arm64 VM of `tests/kernels_arm64.rs`) the library's transports are
//! memory and its port calls (the trapped `mrs`); hypercalls and the hand-written x86 asm
//! do not exist there.

use vmw_backdoor::sim::{Host, HostConfig, Hypercall};

#[cfg(target_arch = "x86_64")]
use super::guest::{trapping_hypercalls, HandAsm};
use super::Backdoor;

/// What a scenario's guest talks to.
pub type Guest = dyn Backdoor + 'static;

/// How the guest's three backdoor calls reach the host model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `&mut Host` in this process: registers and buffers go straight to the model; no
    /// instructions, no fork, microseconds.
    Memory,
    /// The library's own `in` / `rep outsb` / `rep insb`, lent by a probed guard
    /// (privileged where the simulated kernel allows), in a child under `HostConfig::run`.
    Library,
    /// The same, with the guard's transport set to this hypercall (`vmcall`/`vmmcall`).
    LibraryHypercall(Hypercall),
    /// [`HandAsm`] in a child under `HostConfig::run`: real instructions of the tests' own.
    #[cfg(target_arch = "x86_64")]
    HandAsm,
}

impl Transport {
    /// The library's scenarios: in memory, by port, and by each hypercall the runner can
    /// serve on this CPU (inside a KVM guest the outer hypervisor answers its own vendor's
    /// instruction; the other one traps).
    pub fn library() -> Vec<Transport> {
        #[allow(unused_mut)] // no hypercalls on aarch64
        let mut all = vec![Transport::Memory, Transport::Library];
        #[cfg(target_arch = "x86_64")]
        all.extend(
            trapping_hypercalls()
                .into_iter()
                .map(Transport::LibraryHypercall),
        );
        all
    }
    /// The host model's scenarios.
    #[cfg(target_arch = "x86_64")]
    pub const REFERENCE: [Transport; 2] = [Transport::Memory, Transport::HandAsm];

    /// Runs `guest` against a fresh host from `config`; the host it leaves. A failed
    /// assertion in the guest fails the test (under the runner, with the guest's panic
    /// message on its stderr and a non-zero exit).
    #[track_caller]
    pub fn run(self, config: HostConfig, guest: impl FnOnce(&mut Guest)) -> Host {
        match self {
            Transport::Memory => {
                let mut host = Host::new(config);
                guest(&mut host);
                host
            }
            Transport::Library => config
                .run(|| {
                    let guard = vmw_backdoor::probe_backdoor_privileged()
                        .or_else(|_| vmw_backdoor::probe_backdoor())
                        .expect("probe under the simulator");
                    // The guest is a child that exits after this: the guard may live forever.
                    let guard = Box::leak(Box::new(guard));
                    guest(&mut guard.instructions().expect("a probed guard lends them"));
                })
                .expect("start the guest")
                .expect_success(),
            Transport::LibraryHypercall(hc) => config
                .run(|| {
                    let mut guard = vmw_backdoor::access_backdoor().expect("ring-3 access");
                    guard.set_transport(match hc {
                        Hypercall::Vmcall => vmw_backdoor::Transport::VMCALL,
                        Hypercall::Vmmcall => vmw_backdoor::Transport::VMMCALL,
                    });
                    guard.probe_vmware_backdoor().expect("probe by hypercall");
                    // The guest is a child that exits after this: the guard may live forever.
                    let guard = Box::leak(Box::new(guard));
                    guest(&mut guard.instructions().expect("a probed guard lends them"));
                })
                .expect("start the guest")
                .expect_success(),
            #[cfg(target_arch = "x86_64")]
            Transport::HandAsm => config
                .run(|| guest(&mut HandAsm))
                .expect("start the guest")
                .expect_success(),
        }
    }

    /// Every backdoor call the host saw while `guest` ran.
    #[track_caller]
    pub fn calls(self, config: HostConfig, guest: impl FnOnce(&mut Guest)) -> u64 {
        self.run(config, guest).counters().backdoor_calls()
    }
}

/// `guest` on a fresh host from `config` over every [`Transport::REFERENCE`] transport, then
/// `check` on the host it leaves.
#[cfg(target_arch = "x86_64")]
pub fn each_transport(config: HostConfig, guest: impl Fn(&mut Guest), check: impl Fn(&Host)) {
    for transport in Transport::REFERENCE {
        // Captured by the test harness: names the transport of a failure.
        eprintln!("transport {transport:?}");
        check(&transport.run(config.clone(), &guest));
    }
}
