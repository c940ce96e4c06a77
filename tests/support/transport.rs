//! Where a scenario's guest code runs. Each scenario is written once, against
//! `&mut dyn Backdoor`, and run over every [`Transport`]: in memory for speed, through the
//! real instructions for truth. Included with `#[path]` by the tests that need it.

#![allow(dead_code)] // each test binary takes what it needs

use vmw_backdoor::sim::{Host, HostConfig};
use vmw_backdoor::Backdoor;

/// How the guest's three backdoor calls reach the host model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Calls on the host model in this process: no instructions, no fork, microseconds.
    Memory,
    /// The library's own `in` / `rep outsb` / `rep insb`, in a child traced by the
    /// simulator's trap-and-emulate runner, after a real probe (privileged if allowed).
    Port,
}

impl Transport {
    /// Every transport, in the order scenarios run over them.
    pub const ALL: [Transport; 2] = [Transport::Memory, Transport::Port];

    /// Runs `guest` against a fresh host made from `config` and returns the host after it.
    /// A guest that panics fails the test (under [`Transport::Port`] its message is on the
    /// child's stderr, and the run ends with a non-zero status).
    #[track_caller]
    pub fn run(self, config: HostConfig, guest: impl FnOnce(&mut dyn Backdoor)) -> Host {
        match self {
            Transport::Memory => {
                let mut host = Host::new(config);
                guest(&mut host);
                host
            }
            Transport::Port => config
                .run(|| {
                    let mut guard = vmw_backdoor::probe_backdoor_privileged()
                        .or_else(|_| vmw_backdoor::probe_backdoor())
                        .expect("probe under the simulator");
                    guest(
                        &mut guard
                            .instructions()
                            .expect("a probed guard lends instructions"),
                    );
                })
                .expect("start the guest")
                .expect_success(),
        }
    }

    /// Every backdoor call the host saw while `guest` ran.
    #[track_caller]
    pub fn calls(self, config: HostConfig, guest: impl FnOnce(&mut dyn Backdoor)) -> u64 {
        self.run(config, guest).counters().backdoor_calls()
    }
}
