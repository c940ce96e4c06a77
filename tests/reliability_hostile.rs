//! A hostile or broken host, through the real instructions under the simulator: wrong
//! message types, reply lengths over the cap, replies without a status prefix, DORECV with
//! nothing behind it, garbage status words, a host that never stops saying DORECV, a
//! channel closed under the guest, checkpoints without end.
//!
//! Each case runs on a fresh host with the fault aimed at the guest's first exchange (a
//! `get_guestinfo`) and checks what a boot agent relies on: the call returns a typed error
//! (or the right value), no panic, no allocation sized by what the host claims, a bounded
//! number of backdoor calls, and the next call on the same channel works. The broad matrix
//! (every answer at every step, on every transport) is in `guest_channel.rs`; these cases
//! pin the exact error and the work bounds, measured in the traced guest process.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

#[path = "support/alloc.rs"]
mod alloc;

use vmw_backdoor::proto::{cmd, msg};
use vmw_backdoor::sim::{Answer, GuestExit, Host, HostConfig, Step};
use vmw_backdoor::ErrorKind;
use vmw_backdoor::DEFAULT_MAX_REPLY_LEN;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

/// The largest single allocation `f` makes (the guest process is single-threaded).
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (out, allocs) = alloc::measure(f);
    (out, allocs.largest)
}

/// No call here may allocate more than this: the request and the real reply are a few bytes,
/// and what a host merely claims must not be allocated.
const ALLOCATION_BOUND: usize = 64 << 10;

/// Backdoor calls one case may cost in all (probe, open, the faulted get with its retries,
/// the next get, close): far below anything a loop without a bound would reach.
const CALL_BOUND: u64 = 200;

const VALUE: &[u8] = b"value";

/// What the faulted `get_guestinfo` must give.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The right value.
    Value,
    /// An error of this kind.
    Error(ErrorKind),
    /// Garbage status words: the library acts on the bits it sees, so it either gets
    /// through (and then with the right value) or fails with one of these kinds.
    ValueOrError(&'static [ErrorKind]),
}

struct Case {
    name: String,
    config: HostConfig,
    want: Want,
    /// The host freed the channel itself: the guest must not CLOSE that id again.
    host_closed: bool,
}

fn case(host: &str, step: Step, answer: Answer, want: Want) -> Case {
    let config = HostConfig::default().guestinfo("k", VALUE);
    let config = if host == "LB" { config.no_hb() } else { config };
    Case {
        name: format!("{host}, {answer:?} at {step:?}"),
        host_closed: answer == Answer::CloseChannel,
        config: config.fault(step, 1, answer),
        want,
    }
}

/// Steps of the first exchange on each kind of host.
fn exchange_steps(host: &str) -> [Step; 5] {
    if host == "HB" {
        [
            Step::SendSize,
            Step::HbOut,
            Step::RecvSize,
            Step::HbIn,
            Step::RecvStatus,
        ]
    } else {
        [
            Step::SendSize,
            Step::SendPayload,
            Step::RecvSize,
            Step::RecvPayload,
            Step::RecvStatus,
        ]
    }
}

fn cases() -> Vec<Case> {
    use ErrorKind::{ChannelClosed, Checkpoint, Protocol, TooLarge};
    let over_cap = u32::try_from(DEFAULT_MAX_REPLY_LEN + 3).unwrap();
    let mut cases = Vec::new();
    for host in ["HB", "LB"] {
        let mut add = |step, answer, want| cases.push(case(host, step, answer, want));
        // The wrong message type after RECVSIZE (and after RECVPAYLOAD, LB only).
        add(
            Step::RecvSize,
            Answer::WrongMessageType(7),
            Want::Error(Protocol),
        );
        if host == "LB" {
            add(
                Step::RecvPayload,
                Answer::WrongMessageType(7),
                Want::Error(Protocol),
            );
        }
        // Reply lengths over the cap: refused before anything is allocated.
        add(
            Step::RecvSize,
            Answer::ClaimLength(u32::MAX),
            Want::Error(TooLarge),
        );
        add(
            Step::RecvSize,
            Answer::ClaimLength(over_cap),
            Want::Error(TooLarge),
        );
        add(
            Step::RecvSize,
            Answer::Phantom(u32::MAX),
            Want::Error(TooLarge),
        );
        // A reply without its `1 ` / `0 ` prefix.
        add(Step::RecvSize, Answer::NoPrefix, Want::Error(Protocol));
        // DORECV with nothing behind it, with and without a length.
        add(Step::RecvSize, Answer::Phantom(9), Want::Error(Protocol));
        add(Step::RecvSize, Answer::Phantom(0), Want::Error(Protocol));
        for step in exchange_steps(host) {
            // The channel closed under the guest: a refused SENDSIZE is retried on a new
            // channel; anywhere later the exchange is lost.
            let want = if step == Step::SendSize {
                Want::Value
            } else {
                Want::Error(ChannelClosed)
            };
            add(step, Answer::CloseChannel, want);
            // Garbage in the status register (all 32 bits: ECX for LB steps, EBX for HB).
            for raw in [0xFFFF_FFFF, 0xDEAD_BEEF, 0x00FE_0000, 0x0002_0000] {
                add(
                    step,
                    Answer::Raw(raw),
                    Want::ValueOrError(&[Protocol, ChannelClosed, Checkpoint]),
                );
            }
        }
    }
    cases
}

fn calls(host: &Host) -> u64 {
    let c = host.counters();
    c.backdoor_calls()
}

/// The guest of every case: one faulted get, then one that must work, on the same channel.
fn faulted_get(want: Want) {
    let mut g = vmw_backdoor::probe_backdoor().expect("probe");
    let mut chan = g.open_enhanced_chan().expect("open");
    let (got, largest) = largest_allocation(|| chan.get_guestinfo(b"k"));
    assert!(
        largest <= ALLOCATION_BOUND,
        "allocated {largest} bytes for a {}-byte reply",
        VALUE.len() + 2
    );
    match (got, want) {
        (Ok(v), Want::Value | Want::ValueOrError(_)) => assert_eq!(v.as_deref(), Some(VALUE)),
        (Err(e), Want::Error(kind)) => assert_eq!(e.kind(), kind, "{e}"),
        (Err(e), Want::ValueOrError(kinds)) => assert!(kinds.contains(&e.kind()), "{e}"),
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
    let next = chan.get_guestinfo(b"k").expect("the next call recovers");
    assert_eq!(next.as_deref(), Some(VALUE));
}

#[test]
fn hostile_answers_give_typed_errors_bounded_work_and_a_channel_that_recovers() {
    let cases = cases();
    for c in &cases {
        let want = c.want;
        let run = c.config.clone().run(move || faulted_get(want)).unwrap();
        assert_eq!(run.exit, GuestExit::Exited(0), "{}", c.name);
        let host = run.host;
        assert_eq!(host.counters().faults_injected, 1, "{}: fired", c.name);
        assert!(
            calls(&host) <= CALL_BOUND,
            "{}: {} calls",
            c.name,
            calls(&host)
        );
        assert_eq!(host.open_channels(), 0, "{}: channels left open", c.name);
        if c.host_closed {
            assert_eq!(
                host.counters().lb_calls_for(cmd::MESSAGE, msg::CLOSE),
                1,
                "{}: the id the host freed is not closed again, only the new channel",
                c.name
            );
        }
    }
    println!("hostile answers: {} cases", cases.len());
    // Per host kind: 7 RECVSIZE answers, 5 steps x (1 close + 4 garbage words); LB also has
    // the wrong type after RECVPAYLOAD.
    assert_eq!(cases.len(), 2 * (7 + 5 * 5) + 1);
}

#[test]
fn a_garbage_status_at_open_is_survived() {
    // A status with SUCCESS set but no channel behind it: the first exchange is refused at
    // SENDSIZE, and the library reopens for real and sends again.
    for raw in [0xFFFF_FFFFu32, 0x0001_0000] {
        let config =
            HostConfig::default()
                .guestinfo("k", VALUE)
                .fault(Step::Open, 1, Answer::Raw(raw));
        let host = config
            .run(|| {
                let mut g = vmw_backdoor::probe_backdoor().unwrap();
                let mut chan = g.open_enhanced_chan().expect("open");
                assert_eq!(chan.get_guestinfo(b"k").unwrap().as_deref(), Some(VALUE));
            })
            .unwrap()
            .expect_success();
        assert_eq!(host.counters().rpcs, 1, "{raw:#x}: executed once");
        assert_eq!(host.open_channels(), 0, "{raw:#x}");
    }
}

#[test]
fn a_host_that_never_stops_saying_dorecv_costs_the_same_calls_per_request() {
    for host_kind in ["HB", "LB"] {
        let config = HostConfig::default().guestinfo("k", VALUE).endless_dorecv();
        let config = if host_kind == "LB" {
            config.no_hb()
        } else {
            config
        };
        let session = |gets: usize| {
            let run = config.clone().run(move || {
                let mut g = vmw_backdoor::probe_backdoor().unwrap();
                let mut chan = g.open_enhanced_chan().unwrap();
                for _ in 0..gets {
                    assert_eq!(chan.get_guestinfo(b"k").unwrap().as_deref(), Some(VALUE));
                }
            });
            let host = run.unwrap().expect_success();
            assert_eq!(host.open_channels(), 0, "{host_kind}");
            calls(&host)
        };
        let (one, fifty) = (session(1), session(50));
        // SENDSIZE, the request, RECVSIZE, the reply, RECVSTATUS: nothing drains the reply
        // the host keeps announcing.
        let per_get = if host_kind == "HB" { 5 } else { 3 + 5 + 2 };
        assert_eq!(fifty - one, 49 * per_get, "{host_kind}");
    }
}

#[test]
fn checkpoints_without_end_are_a_bounded_checkpoint_error() {
    for host_kind in ["HB", "LB"] {
        let steps = [Step::Open]
            .into_iter()
            .chain(exchange_steps(host_kind))
            .chain([Step::Close]);
        for step in steps {
            let mut config = HostConfig::default().guestinfo("k", VALUE);
            if host_kind == "LB" {
                config = config.no_hb();
            }
            for nth in 1..=1000 {
                config = config.fault(step, nth, Answer::Cpt);
            }
            let run = config
                .run(move || {
                    let mut g = vmw_backdoor::probe_backdoor().unwrap();
                    let e = match g.open_enhanced_chan() {
                        Err(e) => e,
                        Ok(mut chan) => match chan.get_guestinfo(b"k") {
                            Err(e) => e,
                            Ok(v) => {
                                assert_eq!(v.as_deref(), Some(VALUE));
                                // Only CLOSE is left to be cut.
                                assert!(chan.close().is_err(), "close under endless checkpoints");
                                return;
                            }
                        },
                    };
                    assert_eq!(e.kind(), ErrorKind::Checkpoint, "{e}");
                })
                .unwrap();
            let what = format!("{host_kind}, endless CPT at {step:?}");
            assert_eq!(run.exit, GuestExit::Exited(0), "{what}");
            let cpts = run.host.counters().cpts_injected;
            // Retried, but a bounded number of times (OPEN: with and without cookies).
            assert!((2..=16).contains(&cpts), "{what}: {cpts} checkpoints");
        }
    }
}
