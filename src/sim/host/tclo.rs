//! TCLO: host-to-guest commands waiting for a guest that polls a TCLO channel, and the
//! guest's answers.

use std::collections::VecDeque;

/// Bytes of guest TCLO messages kept; later messages are counted but not kept.
const REPLY_BUDGET: usize = 16 << 20;

/// The host's command queue and the guest's recorded answers.
#[derive(Debug)]
pub(super) struct Tclo {
    queue: VecDeque<Vec<u8>>,
    pub(super) replies: Vec<Vec<u8>>,
    reply_bytes: usize,
}

impl Tclo {
    /// A queue holding the configured commands.
    pub(super) fn new(queue: VecDeque<Vec<u8>>) -> Self {
        Tclo {
            queue,
            replies: Vec::new(),
            reply_bytes: 0,
        }
    }

    /// The next command for the guest, if any.
    pub(super) fn next_command(&mut self) -> Option<Vec<u8>> {
        self.queue.pop_front()
    }

    /// Commands not yet delivered.
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Records a message the guest sent on a TCLO channel. Empty messages are the guest's
    /// "I am here, nothing to report" poll and are not kept.
    pub(super) fn guest_message(&mut self, message: Vec<u8>) {
        let cost = message.len().saturating_add(super::ENTRY_OVERHEAD);
        if message.is_empty() || self.reply_bytes.saturating_add(cost) > REPLY_BUDGET {
            return;
        }
        self.reply_bytes += cost;
        self.replies.push(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_in_order_and_empty_polls_not_recorded() {
        let mut t = Tclo::new(VecDeque::from(vec![b"reset".to_vec(), b"ping".to_vec()]));
        assert_eq!(t.queued(), 2);
        assert_eq!(t.next_command().as_deref(), Some(&b"reset"[..]));
        t.guest_message(Vec::new());
        t.guest_message(b"OK ATR toolbox".to_vec());
        assert_eq!(t.next_command().as_deref(), Some(&b"ping"[..]));
        assert_eq!(t.next_command(), None);
        assert_eq!(t.replies, vec![b"OK ATR toolbox".to_vec()]);
    }
}
