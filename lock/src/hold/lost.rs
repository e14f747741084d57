//! [`Lost`]: whether a hold was lost (or released), and the token that
//! `lost()` waits on, made only when someone waits.
//!
//! Most holds are never waited on. A cancellation token per hold would cost
//! each one an allocation and a place among its session token's children
//! (about 100 bytes per held lock, see docs/benchmarks.md); a flag costs one
//! byte, and the token is made, as a child of the session's, on first use.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

/// A hold's loss: cancelled when the hold is lost or released, and — as a
/// child of its session's token — when the session is lost.
#[derive(Default)]
pub(super) struct Lost {
    cancelled: AtomicBool,
    /// Made by the first [`token`](Lost::token) call.
    token: OnceLock<CancellationToken>,
}

impl Lost {
    /// Marks the hold lost (or released): its token, made already or later,
    /// is cancelled.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        // Paired with the fence in `token`: either this call sees the token
        // made there, or that call sees the flag set here.
        fence(Ordering::SeqCst);
        if let Some(token) = self.token.get() {
            token.cancel();
        }
    }

    /// Whether the hold was lost or released, or `session` (its session's
    /// token) was cancelled.
    pub(super) fn is_cancelled(&self, session: &CancellationToken) -> bool {
        self.cancelled.load(Ordering::SeqCst) || session.is_cancelled()
    }

    /// The token that is cancelled with this hold or with `session`, its
    /// session's token (always the same one).
    pub(super) fn token(&self, session: &CancellationToken) -> CancellationToken {
        let token = self.token.get_or_init(|| session.child_token());
        fence(Ordering::SeqCst);
        if self.cancelled.load(Ordering::SeqCst) {
            token.cancel();
        }
        token.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_made_before_or_after_the_loss_is_cancelled() {
        let session = CancellationToken::new();
        let early = Lost::default();
        let before = early.token(&session);
        assert!(!before.is_cancelled() && !early.is_cancelled(&session));
        early.cancel();
        assert!(before.is_cancelled() && early.is_cancelled(&session));

        let late = Lost::default();
        late.cancel();
        assert!(late.token(&session).is_cancelled());
    }

    #[test]
    fn the_session_s_loss_is_the_hold_s() {
        let session = CancellationToken::new();
        let (early, late) = (Lost::default(), Lost::default());
        let before = early.token(&session);
        session.cancel();
        assert!(before.is_cancelled());
        assert!(early.is_cancelled(&session) && late.is_cancelled(&session));
        assert!(late.token(&session).is_cancelled());
    }

    #[test]
    fn a_loss_racing_the_first_wait_is_never_missed() {
        for _ in 0..1_000 {
            let session = CancellationToken::new();
            let lost = std::sync::Arc::new(Lost::default());
            let loser = std::sync::Arc::clone(&lost);
            let cancel = std::thread::spawn(move || loser.cancel());
            let token = lost.token(&session);
            cancel.join().unwrap();
            assert!(token.is_cancelled());
        }
    }
}
