//! Each host-model scenario over every transport, after memchr's test `Runner`: a scenario
//! is written once against `Backdoor`, and a transport is one way a guest reaches the host.

use vmw_backdoor::sim::{Host, HostConfig};

use super::guest::HandAsm;
use super::Backdoor;

/// What a scenario's guest talks to.
pub type Guest = dyn Backdoor + 'static;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `&mut Host`: registers and buffers go straight to the model.
    InMemory,
    /// `HandAsm` in a child under `HostConfig::run`: real `in`, `rep outsb`, `rep insb`.
    Instructions,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::InMemory, Transport::Instructions];

    /// `guest` against a host built from `config`; the host it leaves. A failed assertion
    /// in the guest fails the test (under the runner, with the guest's panic message).
    pub fn run(self, config: HostConfig, guest: impl FnOnce(&mut Guest)) -> Host {
        match self {
            Transport::InMemory => {
                let mut host = Host::new(config);
                guest(&mut host);
                host
            }
            Transport::Instructions => config
                .run(|| guest(&mut HandAsm))
                .expect("start the guest")
                .expect_success(),
        }
    }
}

/// `guest` on a fresh host from `config` over every transport, then `check` on the host it
/// leaves.
pub fn each_transport(config: HostConfig, guest: impl Fn(&mut Guest), check: impl Fn(&Host)) {
    for transport in Transport::ALL {
        // Captured by the test harness: names the transport of a failure.
        eprintln!("transport {transport:?}");
        check(&transport.run(config.clone(), &guest));
    }
}
