//! A guard's backdoor access: the I/O privilege it holds, and whether a knock with that
//! access was answered.
//!
//! On VMware the backdoor answers ring-3 code without any privilege; privilege matters where
//! ring-3 backdoor access is restricted, and makes an outside-VMware knock read all ones
//! instead of faulting. Linux keeps I/O permission per thread (inherited by children), which
//! is why [`BackdoorGuard`](super::BackdoorGuard) is not `Send`.

use std::cell::Cell;

use super::platform::{self, Privilege};
use crate::VmwError;

thread_local! {
    /// This thread's privileged guards and the privilege they share. Privilege is taken by
    /// the first and given back by the last, so dropping one guard cannot pull the privilege
    /// from under another (whose next access would then fault where ring 3 is restricted).
    static HELD: Cell<(u32, Privilege)> = const { Cell::new((0, Privilege::None)) };
}

/// Whether a privileged guard of this thread holds I/O privilege now.
fn thread_holds() -> bool {
    HELD.try_with(|h| h.get().0 > 0).unwrap_or(false)
}

/// What a knock with this access found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    /// No knock answered yet.
    No,
    /// The backdoor answered this access.
    Yes,
    /// An unprivileged access was answered while another guard of the thread held I/O
    /// privilege: the answer holds only as long as that privilege does.
    WhileThreadPrivileged,
}

/// One guard's access. Gives its privilege back when dropped.
#[derive(Debug)]
pub(crate) struct Access {
    privilege: Privilege,
    answered: Answered,
}

impl Access {
    /// Ring 3, no privilege.
    pub(crate) fn unprivileged() -> Access {
        Access {
            privilege: Privilege::None,
            answered: Answered::No,
        }
    }

    /// Takes I/O privilege for this thread (`ioperm` on the four backdoor ports, else
    /// `iopl(3)`), or joins the privilege another guard of this thread already holds.
    pub(crate) fn privileged() -> Result<Access, VmwError> {
        let (holders, held) = HELD.with(Cell::get);
        let privilege = if holders > 0 {
            HELD.with(|h| h.set((holders.saturating_add(1), held)));
            held
        } else {
            let taken = platform::raise_io_privilege()?;
            HELD.with(|h| h.set((1, taken)));
            taken
        };
        Ok(Access {
            privilege,
            answered: Answered::No,
        })
    }

    pub(crate) fn is_privileged(&self) -> bool {
        self.privilege != Privilege::None
    }

    /// Whether a knock with the access held now was answered. An answer given on another
    /// guard's privilege is forgotten once that privilege is gone (on a host that restricts
    /// ring 3 the next access would fault), so the guard knocks again, contained.
    pub(crate) fn is_answered(&mut self) -> bool {
        if self.answered == Answered::WhileThreadPrivileged && !thread_holds() {
            self.answered = Answered::No;
        }
        self.answered != Answered::No
    }

    /// Forgets an answer: the next use knocks again (the transport changed).
    pub(crate) fn forget_answer(&mut self) {
        self.answered = Answered::No;
    }

    /// A knock with this access was answered.
    pub(crate) fn record_answer(&mut self) {
        self.answered = if !self.is_privileged() && thread_holds() {
            Answered::WhileThreadPrivileged
        } else {
            Answered::Yes
        };
    }

    /// Gives the privilege back (the last holder on the thread gives back the privilege
    /// itself); afterwards this access is unprivileged. On failure it still holds it.
    pub(crate) fn release(&mut self) -> Result<(), VmwError> {
        let p = self.privilege;
        if p == Privilege::None {
            return Ok(());
        }
        // During thread teardown the record may be gone; then release for real.
        let holders = HELD.try_with(|h| h.get().0).unwrap_or(1);
        if holders > 1 {
            let _ = HELD.try_with(|h| h.set((holders - 1, p)));
        } else {
            platform::release_io_privilege(p)?;
            let _ = HELD.try_with(|h| h.set((0, Privilege::None)));
        }
        self.privilege = Privilege::None;
        self.answered = Answered::No;
        Ok(())
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            log::warn!("dropping the backdoor guard: {e}");
        }
    }
}
