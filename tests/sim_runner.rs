//! The trap-and-emulate runner: instructions, signals, processes, threads, exec.
#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

mod sim_asm;

use sim_asm::{lb_cmd, MAGIC};
use vmw_backdoor::sim::{GuestExit, HostConfig};

#[test]
fn getversion_is_answered() {
    let run = HostConfig::default()
        .run(|| {
            let r = lb_cmd(10, 0);
            assert_eq!((r.ax, r.bx, r.cx), (6, MAGIC, 2));
        })
        .unwrap();
    assert_eq!(run.exit, GuestExit::Exited(0), "{:?}", run.exit);
    assert_eq!(run.host.counters().lb_calls, 1);
    assert_eq!(run.traps.port_io, 1);
}
