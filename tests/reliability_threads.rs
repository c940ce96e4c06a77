//! Many threads, each with its own guard and channel, through the real instructions under
//! the simulator: 8 threads × 500 RPCs on a host with 128 channels, and on one with 8 while
//! a ninth holder keeps a channel, so opens fail with `NoChannel` and are retried. Every
//! reply must match its request: each thread writes and reads back its own keys, with
//! values that name the thread and the iteration.
//!
//! That the privilege types cannot cross threads is checked at compile time by the
//! trybuild cases in `tests/ui/` (run by `tests/guest_ui.rs`).

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vmw_backdoor::proto::{cmd, msg};
use vmw_backdoor::sim::{Host, HostConfig};
use vmw_backdoor::{BackdoorGuard, EnhancedChan, ErrorKind};

const THREADS: usize = 8;
const RPCS_PER_THREAD: usize = 500;
/// Keys per thread, written in turn.
const KEYS: usize = 4;

fn key(thread: usize, slot: usize) -> String {
    format!("t{thread}.k{slot}")
}

fn value(thread: usize, iteration: usize) -> String {
    format!("thread {thread} iteration {iteration}")
}

/// Opens a channel, retrying while the host has none free (counting the refusals), and
/// runs `f` on it. (A loop that returns the channel instead is refused by today's borrow
/// checker: the failed attempts' borrows of the guard would have to end early.)
fn with_channel_retrying<R>(
    g: &mut BackdoorGuard,
    refusals: &AtomicU64,
    f: impl FnOnce(EnhancedChan<'_>) -> R,
) -> R {
    for _ in 0..1_000_000 {
        match EnhancedChan::open(g) {
            Ok(chan) => return f(chan),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::NoChannel, "{e}");
                refusals.fetch_add(1, Ordering::Relaxed);
                // Give a holder the processor to finish its batch and close.
                std::thread::yield_now();
            }
        }
    }
    panic!("no channel came free");
}

/// One set and one get, checked: two RPCs.
fn set_and_check(chan: &mut EnhancedChan<'_>, thread: usize, iteration: usize) {
    let (k, v) = (key(thread, iteration % KEYS), value(thread, iteration));
    chan.set_guestinfo(k.as_bytes(), v.as_bytes()).unwrap();
    let back = chan.get_guestinfo(k.as_bytes()).unwrap();
    assert_eq!(back.as_deref(), Some(v.as_bytes()), "thread {thread}");
}

/// What every run must leave: exactly the RPCs sent, each thread's last values, no
/// channel open.
fn check_host(host: &Host, what: &str) {
    assert_eq!(
        host.counters().rpcs,
        (THREADS * RPCS_PER_THREAD) as u64,
        "{what}: each request executed once"
    );
    let last = RPCS_PER_THREAD / 2 - 1;
    for thread in 0..THREADS {
        for slot in 0..KEYS {
            let iteration = last - (last - slot) % KEYS;
            let k = format!("guestinfo.{}", key(thread, slot));
            assert_eq!(
                host.guestinfo().get(k.as_bytes()).map(Vec::as_slice),
                Some(value(thread, iteration).as_bytes()),
                "{what}: {k}"
            );
        }
    }
    assert_eq!(host.open_channels(), 0, "{what}");
}

#[test]
fn eight_threads_with_their_own_channels_on_128() {
    let host = HostConfig::default()
        .run(|| {
            let workers: Vec<_> = (0..THREADS)
                .map(|thread| {
                    std::thread::spawn(move || {
                        let mut g = vmw_backdoor::probe_backdoor().unwrap();
                        let mut chan = g.open_enhanced_chan().unwrap();
                        for iteration in 0..RPCS_PER_THREAD / 2 {
                            set_and_check(&mut chan, thread, iteration);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("worker");
            }
        })
        .unwrap()
        .expect_success();
    check_host(&host, "128 channels");
    assert_eq!(host.counters().channels_opened, THREADS as u64);
}

#[test]
fn eight_threads_on_8_channels_with_a_ninth_holder_retry_no_channel() {
    /// RPCs each worker makes per channel before closing it and opening another.
    const BATCH: usize = 50;
    let host = HostConfig::default()
        .channels(8)
        .no_hb()
        .run(|| {
            // The ninth holder: seven channels are left for eight workers.
            let mut holder_guard = vmw_backdoor::probe_backdoor().unwrap();
            let holder = holder_guard.open_enhanced_chan().unwrap();
            let refusals = Arc::new(AtomicU64::new(0));
            let first_opens = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (refusals, first_opens) = (refusals.clone(), first_opens.clone());
                    std::thread::spawn(move || {
                        let mut g = vmw_backdoor::probe_backdoor().unwrap();
                        for batch in 0..RPCS_PER_THREAD / BATCH {
                            with_channel_retrying(&mut g, &refusals, |mut chan| {
                                if batch == 0 {
                                    // Hold the first channel until some worker has been
                                    // refused, so a refusal is certain, not a matter of timing.
                                    first_opens.fetch_add(1, Ordering::SeqCst);
                                    while refusals.load(Ordering::SeqCst) == 0 {
                                        assert!(first_opens.load(Ordering::SeqCst) < 8);
                                        std::thread::yield_now();
                                    }
                                }
                                for i in 0..BATCH / 2 {
                                    set_and_check(&mut chan, thread, batch * BATCH / 2 + i);
                                }
                                if batch % 2 == 0 {
                                    chan.close().expect("close");
                                } // else dropped, which closes it too
                            });
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("worker");
            }
            let refused = refusals.load(Ordering::SeqCst);
            assert!(refused > 0, "some opens were refused");
            println!("8 channels: {refused} refused opens, retried");
            drop(holder);
        })
        .unwrap()
        .expect_success();
    check_host(&host, "8 channels");
    let c = host.counters();
    // Workers open RPCS_PER_THREAD / BATCH channels each, the holder one.
    let opened = (THREADS * RPCS_PER_THREAD / BATCH + 1) as u64;
    assert_eq!(c.channels_opened, opened);
    assert!(
        c.lb_calls_for(cmd::MESSAGE, msg::OPEN) > opened,
        "the host refused some OPENs"
    );
    assert_eq!(c.channels_closed, opened);
}
