//! When to inject faults: one-shot faults aimed at the k-th occurrence of a step, and the
//! periodic checkpoint of [`super::HostConfig::cpt_every`].

use super::config::{Answer, Fault, Step};

/// The fault schedule and the occurrence counts it is keyed on.
#[derive(Debug)]
pub(super) struct Faults {
    /// Armed faults that have not fired yet.
    armed: Vec<Fault>,
    /// How many times each step has occurred, indexed by [`Step::index`].
    seen: [u64; 9],
    /// Period of the checkpoint on payload steps; 0 = never.
    cpt_every: u64,
    /// Payload steps seen on valid channels, for the period.
    payload_steps: u64,
}

impl Faults {
    /// A schedule with these one-shot faults and this checkpoint period.
    pub(super) fn new(armed: Vec<Fault>, cpt_every: u64) -> Self {
        Faults {
            armed,
            seen: [0; 9],
            cpt_every,
            payload_steps: 0,
        }
    }

    /// Counts one occurrence of `step` and returns the one-shot answer aimed at it, if any
    /// (the first armed one; it is disarmed).
    pub(super) fn occurrence(&mut self, step: Step) -> Option<Answer> {
        let seen = self.seen.get_mut(step.index())?;
        *seen = seen.saturating_add(1);
        let nth = *seen;
        let pos = self
            .armed
            .iter()
            .position(|f| f.step == step && f.nth == nth)?;
        Some(self.armed.remove(pos).answer)
    }

    /// Counts one payload step on a valid channel; true when the period says this one gets
    /// a checkpoint. `immune` (the operation was already cut once) skips the checkpoint but
    /// still counts the step.
    pub(super) fn periodic_cpt(&mut self, immune: bool) -> bool {
        if self.cpt_every == 0 {
            return false;
        }
        self.payload_steps = self.payload_steps.saturating_add(1);
        !immune && self.payload_steps % self.cpt_every == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_fires_once_at_its_occurrence() {
        let mut f = Faults::new(
            vec![Fault {
                step: Step::RecvStatus,
                nth: 2,
                answer: Answer::Cpt,
            }],
            0,
        );
        assert_eq!(f.occurrence(Step::RecvStatus), None);
        assert_eq!(f.occurrence(Step::Open), None);
        assert_eq!(f.occurrence(Step::RecvStatus), Some(Answer::Cpt));
        assert_eq!(f.occurrence(Step::RecvStatus), None);
    }

    #[test]
    fn period_counts_immune_steps_but_skips_them() {
        let mut f = Faults::new(Vec::new(), 3);
        let hits: Vec<bool> = (0..7).map(|i| f.periodic_cpt(i == 5)).collect();
        assert_eq!(hits, [false, false, true, false, false, false, false]);
        let mut off = Faults::new(Vec::new(), 0);
        assert!((0..10).all(|_| !off.periodic_cpt(false)));
    }
}
