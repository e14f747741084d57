//! How holds are released: their keys deleted — a multi-lock's all in one
//! transaction, one lock's as the case of one key — and their local state
//! (registry entry, slot, cleaning marker) undone.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, Instrument};

use super::state::{free, Hold};
use crate::error::{ErrorCode, LockError, Result};
use crate::lease::Session;
use crate::queue::{log_removal, remove_keys, Removal};

impl Hold {
    /// Runs [`release_all`](Hold::release_all) of this hold alone on the
    /// runtime, for when nobody can await it.
    pub(super) fn release_in_background(self: Arc<Self>) {
        Hold::release_all_in_background(vec![self]);
    }

    /// Runs [`release_all`](Hold::release_all) on the runtime, for when
    /// nobody can await it.
    pub(super) fn release_all_in_background(holds: Vec<Arc<Self>>) {
        let Some(first) = holds.first() else {
            return;
        };
        let shared = Arc::clone(&first.shared);
        // From now on the keys are being deleted, not held: a try of ours
        // waits for that rather than count our key as contention — through
        // the slot, or counted per queue for a key no slot guards (a
        // reader's, a permit's).
        let cleaning: Vec<_> = holds
            .iter()
            .filter_map(
                |hold| match &*hold.slot.lock().unwrap_or_else(|e| e.into_inner()) {
                    Some(slot) => {
                        slot.cleaning();
                        None
                    }
                    None => Some(shared.local.cleaning(hold.queue())),
                },
            )
            .collect();
        shared.spawn_background(async move {
            for released in Hold::release_all(holds).await {
                if let Err(err) = released {
                    debug!(%err, "background release");
                }
            }
            drop(cleaning);
        });
    }

    /// Releases holds of one session (and one manager) whose last guards
    /// are gone — one lock's hold, or a multi-lock's — and frees their
    /// local slots. Their keys are deleted in one transaction, each fenced
    /// by its create revision if its local slot was freed by a loss,
    /// retrying until it applied or the session is lost (see
    /// [`remove_keys`]). Each hold's result, in order: `Expired` when its
    /// lock had been lost.
    pub(super) async fn release_all(holds: Vec<Arc<Self>>) -> Vec<Result<()>> {
        let Some(first) = holds.first() else {
            return Vec::new();
        };
        debug_assert!(holds
            .iter()
            .all(|h| Arc::ptr_eq(&h.session, &first.session)));
        let span = tracing::debug_span!(
            "distlock.release",
            name = %first.name,
            key = %first.key(),
            token = first.token,
            names = holds.len(),
            outcome = tracing::field::Empty,
        );
        for hold in &holds {
            let lost = hold.is_lost().then(|| hold.loss_cause());
            hold.metrics.release_started(lost, &hold.name, hold.token);
        }
        let released = release_inner(&holds).instrument(span.clone()).await;
        for (hold, released) in holds.iter().zip(&released) {
            hold.metrics.released(&span, released);
        }
        released
    }
}

async fn release_inner(holds: &[Arc<Hold>]) -> Vec<Result<()>> {
    let first = &holds[0];
    // The release keeps each name's local slot until its key is gone
    // (it stays in the hold, so a release whose future is dropped midway
    // still has it when it runs again in the background). A loss can no
    // longer free it, so while we have it no other key of this name and
    // lease can appear (see `cleanup`): the delete needs no fence. A loss
    // that freed it already may have let the next acquisition make the
    // key again: then only our revision is deleted.
    let keys: Vec<(String, Option<i64>)> = holds
        .iter()
        .map(|hold| {
            hold.holds.remove(hold);
            let slot = hold.slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slot.as_ref() {
                slot.cleaning();
            }
            let fence = slot.is_none().then_some(hold.token as i64);
            (hold.key().to_string(), fence)
        })
        .collect();
    let was_lost: Vec<bool> = holds.iter().map(|hold| hold.is_lost()).collect();
    let released = if first.shared.is_closed() {
        Err(LockError::closed()) // close() revoked the leases
    } else if first.dedicated {
        // The lease is this acquisition's alone: revoking it deletes the
        // keys. Should the revoke keep failing, the lease is no longer
        // renewed and the keys go at its TTL: reported, as for a delete.
        revoke_dedicated(&first.session, first.retry_interval)
            .await
            .map(|removal| vec![removal; holds.len()])
    } else {
        // Should this future be dropped while an unfenced delete is on its
        // way, that delete may still land after the slot is freed and the
        // name's next key made: the session is retired, so that key goes
        // under another lease (another key name).
        let unfenced = keys.iter().any(|(_, fence)| fence.is_none());
        let mut retire = RetireOnDrop(unfenced.then_some(&first.session));
        let removed = remove_keys(
            first.shared.backend.as_ref(),
            &first.session,
            &keys,
            first.retry_interval,
        )
        .await;
        retire.0 = None; // answered: nothing of ours is on its way
        let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
        log_removal(&names.join(", "), "release", &removed);
        removed
    };
    for hold in holds {
        if hold.unanswered {
            // A late enqueue attempt of ours may still create the key.
            hold.session.sweep_later(hold.key());
        }
        hold.lost.cancel(); // stops anyone still waiting on `lost()`
        free(&hold.slot);
        debug!(key = %hold.key(), token = hold.token, ?released, "released");
    }
    let (removals, mut error) = match released {
        Ok(removals) => (removals, None),
        Err(err) => (Vec::new(), Some(err)),
    };
    let failed = error.as_ref().map(|e| (e.code(), e.message().to_owned()));
    let outcome = |(i, (hold, was_lost)): (usize, (&Arc<Hold>, bool))| {
        if let Some((code, message)) = &failed {
            // The error goes to the first hold; each other gets its code
            // and message.
            return Err(error
                .take()
                .unwrap_or_else(|| LockError::new(*code, message.clone())));
        }
        match removals.get(i) {
            Some(Removal::Deleted) if !was_lost => Ok(()),
            _ => Err(LockError::new(
                ErrorCode::Expired,
                format!("lock `{}` had been lost before it was unlocked", hold.name),
            )),
        }
    };
    holds
        .iter()
        .zip(was_lost)
        .enumerate()
        .map(outcome)
        .collect()
}

/// Retires a session when dropped, unless disarmed (set to `None`): a delete
/// of ours that was cut off may still land.
struct RetireOnDrop<'a>(Option<&'a Arc<Session>>);

impl Drop for RetireOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.0 {
            session.retire("a release was dropped while its delete was on its way");
        }
    }
}

/// Revokes a hold's own lease, retrying transient failures as a delete is
/// retried (until the lease's deadline); `Backend` if it never succeeded.
async fn revoke_dedicated(session: &Arc<Session>, interval: Duration) -> Result<Removal> {
    let mut last = match session.close().await {
        Ok(()) => return Ok(Removal::Deleted),
        Err(err) => err,
    };
    while last.is_transient() && tokio::time::Instant::now() + interval < session.deadline() {
        tokio::time::sleep(interval).await;
        last = match session.close().await {
            Ok(()) => return Ok(Removal::Deleted),
            Err(err) => err,
        };
    }
    Err(LockError::with_source(
        ErrorCode::Backend,
        "could not revoke the lock's own lease; the lock frees when its TTL runs out",
        last,
    ))
}
