//! A multi-lock's entries: one exclusive key in each name's queue, all made
//! by one transaction, so that they share one create revision. Every queue
//! then orders two multi-locks the same way, and two that take the same
//! names in opposite orders cannot deadlock. Each contender then settles on
//! its own (holds, or waits its turn in its queue).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::warn;

use super::contender::Contender;
use crate::backend::{Backend, Enqueued};
use crate::error::{ErrorCode, LockError, Result};
use crate::lease::Retry;

/// How many rounds of leftover keys of ours one acquisition deletes before it
/// gives up (as for one key).
const MAX_LEFTOVERS: usize = 3;

/// Enqueues every contender (all under one lease, with one value) in one
/// transaction, deleting leftover keys of ours in their queues first if the
/// transaction finds some. `None` when the lease is gone (nothing written).
pub(crate) async fn enqueue_all(
    backend: &Arc<dyn Backend>,
    contenders: &mut [Contender],
    retry: &Retry,
) -> Result<Option<Vec<Enqueued>>> {
    let Some(first) = contenders.first() else {
        return Ok(Some(Vec::new()));
    };
    let (lease, value) = (first.lease(), first.value().to_vec());
    let entries: Vec<(String, String)> = contenders
        .iter()
        .map(|c| (c.queue().to_owned(), c.key().to_owned()))
        .collect();
    let unanswered = AtomicBool::new(false);
    for _ in 0..=MAX_LEFTOVERS {
        for c in contenders.iter_mut() {
            c.sent_elsewhere(unanswered.load(Ordering::SeqCst));
        }
        let answers = retry
            .run("enqueue", || {
                let attempt = backend.enqueue_all(&entries, lease, value.clone());
                let unanswered = &unanswered;
                async move {
                    let outcome = attempt.await;
                    if outcome.as_ref().is_err_and(LockError::is_transient) {
                        // It may have applied, or still apply later.
                        unanswered.store(true, Ordering::SeqCst);
                    }
                    outcome
                }
            })
            .await;
        let answers = match answers {
            Ok(answers) => answers,
            // etcd refused the whole transaction: nothing to clean up.
            Err(err) if err.code() == ErrorCode::Expired => {
                for c in contenders.iter_mut() {
                    c.answered_elsewhere(None);
                }
                return Ok(None);
            }
            Err(err) => {
                for c in contenders.iter_mut() {
                    c.sent_elsewhere(unanswered.load(Ordering::SeqCst));
                }
                return Err(err);
            }
        };
        let mut leftovers = false;
        for (c, answer) in contenders.iter_mut().zip(&answers) {
            let ours = answer.existing.as_ref().is_none_or(|v| *v == value);
            match (answer.rev, ours) {
                (0, _) => c.answered_elsewhere(None),
                (rev, true) => c.answered_elsewhere(Some(rev)),
                (rev, false) => {
                    // A key of ours that outlived its acquisition: never
                    // adopted (its token would repeat); deleted, fenced.
                    warn!(key = %c.key(), rev, "deleting a leftover key of ours");
                    let key = c.key().as_bytes();
                    retry
                        .run("leftover delete", || backend.delete(key, Some(rev)))
                        .await?;
                    c.answered_elsewhere(None);
                    leftovers = true;
                }
            }
        }
        if unanswered.load(Ordering::SeqCst) {
            for c in contenders.iter_mut() {
                c.unanswered();
            }
        }
        let made = answers
            .iter()
            .all(|a| a.rev != 0 && a.rev == answers[0].rev);
        if !leftovers && made {
            return Ok(Some(answers));
        }
    }
    Err(LockError::new(
        ErrorCode::Backend,
        "keys of this multi-lock keep reappearing",
    ))
}
