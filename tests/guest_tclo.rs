//! The TCLO service (`vmw_backdoor::tools`) against the host model.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use support::transport::Transport;
use vmw_backdoor::sim::HostConfig;
use vmw_backdoor::tools::{Clock, StopHandle, ToolsHandler, ToolsService};

/// Virtual time: every wait advances it at once.
#[derive(Clone, Default)]
struct VirtualClock(Rc<Cell<Duration>>);

impl Clock for VirtualClock {
    fn now(&mut self) -> Duration {
        self.0.get()
    }
    fn sleep(&mut self, duration: Duration, _stop: &StopHandle) {
        self.0.set(self.0.get() + duration);
    }
}

struct Quiet;
impl ToolsHandler for Quiet {}

#[test]
fn smoke() {
    for t in Transport::LIBRARY {
        let config = HostConfig::default()
            .tclo("reset")
            .tclo("ping")
            .tclo("Capabilities_Register");
        let host = t.run(config, |b| {
            let mut s = ToolsService::new(b);
            s.set_clock(Box::new(VirtualClock::default()));
            s.run_for(&mut Quiet, Duration::from_secs(1)).unwrap();
        });
        eprintln!("{t:?} {:?}", host.tclo_replies());
        eprintln!("{:?}", host.counters());
    }
}
