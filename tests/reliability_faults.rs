//! The fault matrix, through the real instructions under the simulator: every operation ×
//! every message step it makes × checkpoint or failure status × high- or low-bandwidth host.
//!
//! For each case a fresh host arms one fault at the first occurrence of the step inside the
//! operation; the guest then checks that the operation succeeded (a checkpoint is retried,
//! and so are some failures: see [`expected`]) or returned the typed error, and that the
//! next operation works. The host then checks that the fault fired, that nothing ran twice,
//! and that no channel is left open.
//!
//! Which steps an operation makes is measured, not assumed: two fault-free calibration runs
//! (up to the operation, and through it) count each step on the host, and a step belongs to
//! the operation when the second count is higher. The test asserts how many cases that
//! gives, so a matrix that silently shrinks fails.

#![cfg(all(feature = "sim", target_os = "linux", target_arch = "x86_64"))]

use vmw_backdoor::proto::{cmd, msg};
use vmw_backdoor::sim::{Answer, GuestExit, Host, HostConfig, Step};
use vmw_backdoor::{BackdoorGuard, EnhancedChan, ErrorKind};

/// What the guest does under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `EnhancedChan::open`.
    Open,
    /// `get_guestinfo` of a key that is set.
    Get,
    /// `set_guestinfo`.
    Set,
    /// `log`.
    Log,
    /// `rpc(b"machine.id.get")`.
    Rpc,
    /// `EnhancedChan::close`.
    Close,
    /// Dropping the channel (which closes it).
    Drop,
}

/// The channel an exchange (get, set, log, rpc) starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Open and in step with the host.
    Ready,
    /// The previous exchange failed, so the library closed the channel and this exchange
    /// starts by reopening it: the only way OPEN is a step of an exchange.
    AfterFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scenario {
    op: Op,
    start: Start,
}

const SCENARIOS: [Scenario; 11] = [
    Scenario::new(Op::Open, Start::Ready),
    Scenario::new(Op::Get, Start::Ready),
    Scenario::new(Op::Set, Start::Ready),
    Scenario::new(Op::Log, Start::Ready),
    Scenario::new(Op::Rpc, Start::Ready),
    Scenario::new(Op::Get, Start::AfterFailure),
    Scenario::new(Op::Set, Start::AfterFailure),
    Scenario::new(Op::Log, Start::AfterFailure),
    Scenario::new(Op::Rpc, Start::AfterFailure),
    Scenario::new(Op::Close, Start::Ready),
    Scenario::new(Op::Drop, Start::Ready),
];

impl Scenario {
    const fn new(op: Op, start: Start) -> Self {
        Scenario { op, start }
    }

    /// One-shot faults the prelude needs: a failed exchange, for [`Start::AfterFailure`].
    fn setup_faults(self) -> u64 {
        u64::from(self.start == Start::AfterFailure)
    }
}

/// How far the guest goes: calibration runs stop right after the prelude or the operation
/// (exiting without dropping anything, so no CLOSE is counted); the real run goes on to the
/// next operation and drops everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Prelude,
    ThroughOp,
    All,
}

/// How the operation under test must end: `Ok`, or an error of this kind (`None` for
/// `close`, whose error is the channel handed back).
type Outcome = Result<(), Option<ErrorKind>>;

/// The two kinds of host, and the message steps each one has (payload steps differ).
const HOSTS: [(&str, [Step; 7]); 2] = [
    (
        "HB",
        [
            Step::Open,
            Step::SendSize,
            Step::HbOut,
            Step::RecvSize,
            Step::HbIn,
            Step::RecvStatus,
            Step::Close,
        ],
    ),
    (
        "LB",
        [
            Step::Open,
            Step::SendSize,
            Step::SendPayload,
            Step::RecvSize,
            Step::RecvPayload,
            Step::RecvStatus,
            Step::Close,
        ],
    ),
];

fn host_config(host: &str, s: Scenario) -> HostConfig {
    let config = HostConfig::default().guestinfo("k", "v").machine_id("vm-1");
    let config = if host == "LB" { config.no_hb() } else { config };
    match s.start {
        // The prelude's exchange fails at its acknowledgement; the library then closes the
        // channel, and the operation under test reopens it.
        Start::AfterFailure => config.fault(Step::RecvStatus, 1, Answer::Fail),
        Start::Ready => config,
    }
}

/// What the library promises for `answer` at `step` inside `op`.
fn expected(op: Op, step: Step, answer: &Answer) -> Outcome {
    match (answer, step) {
        // A checkpoint restarts the phase it cut; one checkpoint never shows.
        (Answer::Cpt, _) => Ok(()),
        // A refused cookie OPEN is retried without cookies (hosts before cookies refuse the
        // flag), and that plain OPEN succeeds.
        (_, Step::Open) => Ok(()),
        // A refused SENDSIZE is what a channel the host dropped answers: nothing was
        // delivered, so the library reopens and sends once more.
        (_, Step::SendSize) => Ok(()),
        // A failed CLOSE hands the channel back (dropping cannot report it).
        (_, Step::Close) if op == Op::Close => Err(None),
        (_, Step::Close) => Ok(()),
        // Any other failed step leaves the exchange in an unknown state: an error, and the
        // channel is closed to be reopened by the next exchange.
        _ => Err(Some(ErrorKind::Protocol)),
    }
}

/// A failure at a send step means the request never ran; everywhere else it ran exactly once.
fn request_ran(step: Step, answer: &Answer) -> bool {
    !(*answer == Answer::Fail && matches!(step, Step::SendPayload | Step::HbOut))
}

fn check<T>(what: &str, got: Result<T, Option<ErrorKind>>, want: Outcome) -> Option<T> {
    match (got, want) {
        (Ok(v), Ok(())) => Some(v),
        (Err(kind), Err(want)) => {
            assert_eq!(kind, want, "{what}: wrong error");
            None
        }
        (Ok(_), Err(want)) => panic!("{what}: succeeded, expected the error {want:?}"),
        (Err(kind), Ok(())) => panic!("{what}: failed with {kind:?}, expected success"),
    }
}

fn kind<T>(r: Result<T, vmw_backdoor::VmwError>) -> Result<T, Option<ErrorKind>> {
    r.map_err(|e| Some(e.kind()))
}

/// Ends a calibration run now, without running destructors (a drop would CLOSE).
fn stop_here() -> ! {
    std::process::exit(0)
}

/// The next operation, which must work whatever happened before: a get on `chan`.
fn next_get(chan: &mut EnhancedChan<'_>) {
    let v = chan.get_guestinfo(b"k").expect("the next operation");
    assert_eq!(v.as_deref(), Some(&b"v"[..]), "the next operation's reply");
}

fn open(g: &mut BackdoorGuard) -> EnhancedChan<'_> {
    EnhancedChan::open(g).expect("open")
}

/// The guest: prelude, the operation under test, the next operation; `want` is what the
/// operation must give.
fn guest(s: Scenario, stage: Stage, want: Outcome) {
    let mut g = vmw_backdoor::probe_backdoor().expect("probe");
    if s.op == Op::Open {
        if stage == Stage::Prelude {
            stop_here();
        }
        let chan = check("open", kind(EnhancedChan::open(&mut g)), want);
        if stage == Stage::ThroughOp {
            stop_here();
        }
        // No single fault makes OPEN fail (see `expected`), so the channel is there.
        next_get(&mut chan.expect("open"));
        return;
    }

    let mut chan = open(&mut g);
    match (s.op, s.start) {
        (_, Start::AfterFailure) => {
            let e = chan
                .get_guestinfo(b"k")
                .expect_err("the prelude's exchange fails");
            assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        }
        (Op::Close | Op::Drop, Start::Ready) => next_get(&mut chan),
        _ => {}
    }
    if stage == Stage::Prelude {
        stop_here();
    }
    match s.op {
        Op::Get => {
            let v = check("get", kind(chan.get_guestinfo(b"k")), want);
            if let Some(v) = v {
                assert_eq!(v.as_deref(), Some(&b"v"[..]), "get's reply");
            }
        }
        Op::Set => {
            check("set", kind(chan.set_guestinfo(b"k2", b"w")), want);
        }
        Op::Log => {
            check("log", kind(chan.log("one line")), want);
        }
        Op::Rpc => {
            if let Some(v) = check("rpc", kind(chan.rpc(b"machine.id.get")), want) {
                assert_eq!(v, b"vm-1", "rpc's reply");
            }
        }
        Op::Close => {
            // The handed-back channel is closed as far as the guest is concerned.
            check("close", chan.close().map_err(|_| None), want);
            if stage == Stage::ThroughOp {
                stop_here();
            }
            next_get(&mut open(&mut g));
            return;
        }
        Op::Drop => {
            drop(chan);
            if stage == Stage::ThroughOp {
                stop_here();
            }
            next_get(&mut open(&mut g));
            return;
        }
        Op::Open => unreachable!("handled above"),
    }
    if stage == Stage::ThroughOp {
        stop_here();
    }
    next_get(&mut chan);
}

/// How many times the host saw `step`.
fn occurrences(host: &Host, step: Step) -> u64 {
    let c = host.counters();
    let sub = match step {
        Step::HbOut => return c.hb_out_calls,
        Step::HbIn => return c.hb_in_calls,
        Step::Open => msg::OPEN,
        Step::SendSize => msg::SENDSIZE,
        Step::SendPayload => msg::SENDPAYLOAD,
        Step::RecvSize => msg::RECVSIZE,
        Step::RecvPayload => msg::RECVPAYLOAD,
        Step::RecvStatus => msg::RECVSTATUS,
        Step::Close => msg::CLOSE,
    };
    c.lb_calls_for(cmd::MESSAGE, sub)
}

fn run(config: HostConfig, what: &str, guest: impl FnOnce()) -> Host {
    let run = config.run(guest).expect("start the guest");
    assert_eq!(run.exit, GuestExit::Exited(0), "{what}");
    run.host
}

#[test]
fn every_operation_survives_a_checkpoint_or_failure_at_each_of_its_steps() {
    let mut cases = 0;
    for (host_kind, steps) in HOSTS {
        for s in SCENARIOS {
            let name = format!("{host_kind}, {:?} on a {:?} channel", s.op, s.start);
            let before = run(host_config(host_kind, s), &name, move || {
                guest(s, Stage::Prelude, Ok(()))
            });
            let through = run(host_config(host_kind, s), &name, move || {
                guest(s, Stage::ThroughOp, Ok(()))
            });
            let rpcs_before = before.counters().rpcs;
            let op_rpcs = through.counters().rpcs - rpcs_before;
            for step in steps {
                let nth = occurrences(&before, step) + 1;
                if occurrences(&through, step) < nth {
                    continue; // the operation makes no such step
                }
                for answer in [Answer::Cpt, Answer::Fail] {
                    cases += 1;
                    let what = format!("{name}: {answer:?} at {step:?} #{nth}");
                    let want = expected(s.op, step, &answer);
                    let config = host_config(host_kind, s).fault(step, nth, answer.clone());
                    let host = run(config, &what, move || guest(s, Stage::All, want));
                    let c = host.counters();
                    assert_eq!(
                        c.faults_injected,
                        s.setup_faults() + 1,
                        "{what}: the fault fired"
                    );
                    // The next operation is one get; the operation itself ran at most once.
                    let ran = u64::from(request_ran(step, &answer));
                    assert_eq!(
                        c.rpcs,
                        rpcs_before + op_rpcs * ran + 1,
                        "{what}: requests executed"
                    );
                    if s.op == Op::Log {
                        assert_eq!(host.vmx_log().len() as u64, ran, "{what}: log lines");
                    }
                    if s.op == Op::Set && ran == 1 {
                        assert_eq!(
                            host.guestinfo()
                                .get(&b"guestinfo.k2"[..])
                                .map(Vec::as_slice),
                            Some(&b"w"[..]),
                            "{what}"
                        );
                    }
                    // A CLOSE the host answered with a failure is not sent again: the guest
                    // cannot tell "failed" from "already gone", and a second CLOSE could hit
                    // an id the host has since given to another process. So the host keeps
                    // the one channel it refused to close; every other channel is closed.
                    let refused_close = step == Step::Close && answer == Answer::Fail;
                    assert_eq!(
                        host.open_channels(),
                        usize::from(refused_close),
                        "{what}: channels left open"
                    );
                }
            }
        }
    }
    println!("fault matrix: {cases} cases");
    // Per host kind and answer: open 1 (OPEN); get, set, log, rpc on a ready channel 5 each
    // (SENDSIZE, send payload, RECVSIZE, receive payload, RECVSTATUS); the same after a
    // failure 6 each (OPEN too); close 1 and drop 1 (CLOSE).
    assert_eq!(cases, 2 * 2 * (1 + 4 * 5 + 4 * 6 + 1 + 1));
}
