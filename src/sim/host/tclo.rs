//! TCLO: the VMX's side of the conversation with the guest's tools agent.
//!
//! The host plays a script: each entry is delivered on a TCLO channel's RECVSIZE once the
//! guest has sent a message since the last delivery (the empty send after OPEN, then the
//! reply to each command), so each command goes out when the previous reply came back. An
//! entry may instead close the channel under the guest. Every exchange (command and
//! reply) is kept, and every guest message counts as a poll for the "tools running" state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes of guest TCLO messages kept; later messages are counted but not kept.
const REPLY_BUDGET: usize = 16 << 20;

/// How long a VMX waits for a poll before it calls the tools not running.
pub(super) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(20);

/// The TCLO script `vmw-sim` plays when given none: what a VMX sends a tools agent that just
/// appeared.
pub const DEFAULT_TCLO_SCRIPT: [&str; 3] = ["reset", "ping", "Capabilities_Register"];

/// One entry of the host's TCLO script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// A command for the guest.
    Command(Vec<u8>),
    /// Close the guest's TCLO channel instead of delivering anything (the host drops the
    /// channel, as a VMX does across some checkpoints); the guest must reopen it.
    Close,
    /// Deliver nothing for this long (host time) after the previous reply: the guest polls
    /// an idle host.
    Wait(Duration),
}

/// Where the host's traffic stood at some moment: RPCI requests executed, backdoor calls.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stamp {
    pub(super) rpcs: usize,
    pub(super) calls: u64,
}

/// What a RECVSIZE on an armed TCLO channel does.
pub(super) enum Next {
    /// Deliver this command.
    Command(Vec<u8>),
    /// Close the channel.
    Close,
}

/// One command the host sent, and the guest's answer (`None` until it came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcloExchange {
    /// The command as delivered.
    pub command: Vec<u8>,
    /// The guest's next message on that channel: its reply.
    pub reply: Option<Vec<u8>>,
    /// RPCI requests the host had executed when the command was delivered: the guest's
    /// side messages for this command are [`Host::rpci_requests`](super::Host::rpci_requests)
    /// from this index up to `rpcs_before_reply`.
    pub rpcs_before_command: usize,
    /// RPCI requests the host had executed when the reply came (equal to
    /// `rpcs_before_command` while no reply has come).
    pub rpcs_before_reply: usize,
    /// Backdoor calls the host had seen when the command was delivered.
    pub calls_before_command: u64,
    /// Backdoor calls the host had seen when the reply came (the call that completed it
    /// included; equal to `calls_before_command` while no reply has come).
    pub calls_before_reply: u64,
}

/// The host's monotonic clock for the heartbeat: real time, or time a test moves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mono {
    start: Instant,
    manual: Option<Duration>,
}

impl Mono {
    pub(super) fn new(manual: bool) -> Self {
        Mono {
            start: Instant::now(),
            manual: manual.then_some(Duration::ZERO),
        }
    }

    pub(super) fn now(&self) -> Duration {
        self.manual.unwrap_or_else(|| self.start.elapsed())
    }

    /// Moves a manual clock on (a real one ignores it).
    pub(super) fn advance(&mut self, by: Duration) {
        if let Some(t) = self.manual.as_mut() {
            *t = t.saturating_add(by);
        }
    }
}

/// The host's script and what the guest made of it.
#[derive(Debug)]
pub(super) struct Tclo {
    queue: VecDeque<Entry>,
    pub(super) replies: Vec<Vec<u8>>,
    pub(super) exchanges: Vec<TcloExchange>,
    /// While a [`Entry::Wait`] is at the front: when it ends.
    wait_until: Option<Duration>,
    kept_bytes: usize,
    pub(super) clock: Mono,
    heartbeat: Duration,
    /// Guest messages on TCLO channels (polls, replies included).
    pub(super) polls: u64,
    last_poll: Option<Duration>,
    /// Gaps between polls longer than the heartbeat (each one a "tools not running").
    pub(super) lapses: u64,
    /// Whether each exchange is written to stderr as it happens.
    pub(super) trace: bool,
}

impl Tclo {
    /// A host playing `queue`, with this heartbeat timeout and clock.
    pub(super) fn new(queue: VecDeque<Entry>, heartbeat: Duration, clock: Mono) -> Self {
        Tclo {
            queue,
            replies: Vec::new(),
            exchanges: Vec::new(),
            wait_until: None,
            kept_bytes: 0,
            clock,
            heartbeat,
            polls: 0,
            last_poll: None,
            lapses: 0,
            trace: false,
        }
    }

    /// What to do for the next armed RECVSIZE, if the script has anything left.
    pub(super) fn next(&mut self, at: Stamp) -> Option<Next> {
        while let Some(Entry::Wait(d)) = self.queue.front() {
            let now = self.clock.now();
            let until = *self.wait_until.get_or_insert(now.saturating_add(*d));
            if now < until {
                return None;
            }
            self.wait_until = None;
            self.queue.pop_front();
        }
        match self.queue.pop_front()? {
            Entry::Command(command) => {
                if self.keep(command.len()) {
                    self.exchanges.push(TcloExchange {
                        command: command.clone(),
                        reply: None,
                        rpcs_before_command: at.rpcs,
                        rpcs_before_reply: at.rpcs,
                        calls_before_command: at.calls,
                        calls_before_reply: at.calls,
                    });
                }
                Some(Next::Command(command))
            }
            Entry::Close => Some(Next::Close),
            Entry::Wait(_) => None, // taken care of above
        }
    }

    /// Script entries not yet played.
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Charges `len` bytes against the memory budget; false when spent.
    fn keep(&mut self, len: usize) -> bool {
        let cost = len.saturating_add(super::ENTRY_OVERHEAD);
        if self.kept_bytes.saturating_add(cost) > REPLY_BUDGET {
            return false;
        }
        self.kept_bytes += cost;
        true
    }

    /// Records a message the guest sent on a TCLO channel: a poll, and, when `answering`
    /// (a command was delivered on that channel since its last message), the reply.
    /// Empty messages are the guest's "I am here" and are not kept as replies.
    pub(super) fn guest_message(&mut self, message: Vec<u8>, answering: bool, at: Stamp) {
        let now = self.clock.now();
        if self
            .last_poll
            .is_some_and(|last| now.saturating_sub(last) > self.heartbeat)
        {
            self.lapses += 1;
        }
        self.last_poll = Some(now);
        self.polls += 1;
        if answering {
            if self.trace {
                let pending = self.exchanges.last().filter(|x| x.reply.is_none());
                let command = pending.map_or(&b"(over the log budget)"[..], |x| &x.command);
                super::logs::trace("tclo", command, &message);
            }
            if let Some(x) = self.exchanges.last_mut().filter(|x| x.reply.is_none()) {
                if self.kept_bytes.saturating_add(message.len()) <= REPLY_BUDGET {
                    self.kept_bytes += message.len();
                    x.reply = Some(message.clone());
                    x.rpcs_before_reply = at.rpcs;
                    x.calls_before_reply = at.calls;
                }
            }
        }
        if message.is_empty() || !self.keep(message.len()) {
            return;
        }
        self.replies.push(message);
    }

    /// Whether a tools agent polled within the heartbeat timeout.
    pub(super) fn running(&self) -> bool {
        self.last_poll
            .is_some_and(|last| self.clock.now().saturating_sub(last) <= self.heartbeat)
    }

    /// Time since the last poll, if there was one.
    pub(super) fn since_last_poll(&self) -> Option<Duration> {
        self.last_poll
            .map(|last| self.clock.now().saturating_sub(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(entries: &[&[u8]]) -> VecDeque<Entry> {
        entries.iter().map(|e| Entry::Command(e.to_vec())).collect()
    }

    #[test]
    fn queue_in_order_and_empty_polls_not_recorded() {
        let mut t = Tclo::new(
            script(&[b"reset", b"ping"]),
            DEFAULT_HEARTBEAT,
            Mono::new(true),
        );
        assert_eq!(t.queued(), 2);
        t.guest_message(Vec::new(), false, Stamp::default());
        assert!(matches!(t.next(Stamp::default()), Some(Next::Command(c)) if c == b"reset"));
        t.guest_message(b"OK ATR toolbox".to_vec(), true, Stamp::default());
        assert!(matches!(t.next(Stamp::default()), Some(Next::Command(c)) if c == b"ping"));
        assert!(t.next(Stamp::default()).is_none());
        assert_eq!(t.replies, vec![b"OK ATR toolbox".to_vec()]);
        assert_eq!(t.exchanges.len(), 2);
        assert_eq!(
            t.exchanges[0].reply.as_deref(),
            Some(&b"OK ATR toolbox"[..])
        );
        assert_eq!(t.exchanges[1].reply, None);
        assert_eq!(t.polls, 2);
    }

    #[test]
    fn a_wait_holds_the_next_command_back() {
        let mut queue = script(&[b"ping"]);
        queue.push_front(Entry::Wait(Duration::from_secs(2)));
        let mut t = Tclo::new(queue, DEFAULT_HEARTBEAT, Mono::new(true));
        assert!(t.next(Stamp::default()).is_none());
        t.clock.advance(Duration::from_millis(1999));
        assert!(t.next(Stamp::default()).is_none());
        t.clock.advance(Duration::from_millis(1));
        assert!(matches!(t.next(Stamp::default()), Some(Next::Command(c)) if c == b"ping"));
    }

    #[test]
    fn heartbeat_lapses_and_running() {
        let mut t = Tclo::new(VecDeque::new(), DEFAULT_HEARTBEAT, Mono::new(true));
        assert!(!t.running(), "no poll yet");
        t.guest_message(Vec::new(), false, Stamp::default());
        assert!(t.running());
        t.clock.advance(Duration::from_secs(20));
        assert!(t.running(), "20 s is still within the timeout");
        t.clock.advance(Duration::from_millis(1));
        assert!(!t.running());
        t.guest_message(Vec::new(), false, Stamp::default());
        assert!(t.running());
        assert_eq!(t.lapses, 1);
        let mut real = Mono::new(false);
        real.advance(Duration::from_secs(100));
        assert!(
            real.now() < Duration::from_secs(100),
            "a real clock is not moved"
        );
    }
}
