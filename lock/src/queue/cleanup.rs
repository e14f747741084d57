//! Who deletes our keys, and how persistently.
//!
//! # The key invariant
//!
//! A manager has at most **one key per (lock name, lease)**: the local slot
//! of a name ([`shared`](crate::shared)) admits one contender at a time, and a
//! contender's key is `{queue}{lease hex}`. Whoever created a key — the
//! contender while it waits, then the hold while it holds, then the release
//! or cleanup task — owns deleting it, and keeps the name's local slot,
//! until one of these is true:
//!
//! - the key is confirmed gone (deleted by us, or by someone else: then the
//!   lock had been lost);
//! - its session is lost: the lease is no longer renewed (and is revoked when
//!   etcd can be reached), so the key goes with it within one TTL;
//! - the manager is closed (every lease revoked).
//!
//! So whoever has the slot knows that the key `{queue}{lease hex}`, if it
//! exists, is the one it made: a release that still has the slot deletes it
//! without a fence (a plain delete, cheaper for etcd than a transaction). A
//! lost hold's slot was freed at the loss, and the next acquisition of the
//! name may have made the key again: its release deletes only its own
//! create revision. An unfenced delete that got no answer may still land
//! after the slot is freed (a stale retry, etcd issue 22082), so it retires
//! its session: the next key of that name goes under another lease, hence
//! another name.
//!
//! When a key may exist that nobody can delete — a request whose answer was
//! lost may still apply, or deletes kept failing for a whole TTL — the key's
//! session is **retired**: no new key goes under it, and its lease is revoked
//! once its last hold is released, taking such a key with it. A key of ours
//! found later in a queue we hold the slot of is a leftover: it is deleted,
//! never adopted as a new hold (its create revision would repeat an old
//! fencing token).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::backend::Backend;
use crate::error::{ErrorCode, LockError, Result};
use crate::lease::Session;

/// How a persistent delete ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// We deleted the key — or an earlier attempt whose answer was lost did.
    Deleted,
    /// The key was gone before we deleted it (force-unlocked, expired), or its
    /// session was lost, which takes the key with it.
    Gone,
}

/// Deletes `key` (fenced by create revision `rev`, or whatever its revision
/// when `None`): [`remove_keys`] of one key.
pub(crate) async fn remove_key(
    backend: &dyn Backend,
    session: &Arc<Session>,
    key: &str,
    rev: Option<i64>,
    interval: Duration,
) -> Result<Removal> {
    let keys = [(key.to_owned(), rev)];
    let removed = remove_keys(backend, session, &keys, interval).await?;
    Ok(removed[0])
}

/// Deletes `keys` of one session (each fenced by its create revision, or
/// whatever its revision when `None`) in one transaction, retrying transient
/// failures every `interval` until it applied or the session is lost (which
/// includes the manager closing): how each ended, in order. A delete that
/// cannot succeed within one TTL, or is refused for good, retires the
/// session so the keys go with its lease, and reports the error.
pub(crate) async fn remove_keys(
    backend: &dyn Backend,
    session: &Arc<Session>,
    keys: &[(String, Option<i64>)],
    interval: Duration,
) -> Result<Vec<Removal>> {
    let give_up_at = Instant::now() + session.ttl();
    let lost = session.lost();
    let gone = || Ok(vec![Removal::Gone; keys.len()]);
    let unfenced = keys.iter().any(|(_, rev)| rev.is_none());
    let mut unanswered = false;
    loop {
        let attempt = tokio::select! {
            biased;
            _ = lost.cancelled() => return gone(),
            deleted = backend.delete_all(keys) => deleted,
        };
        let err = match attempt {
            Ok(deleted) => {
                // Not there: our earlier attempt (all or none of the keys)
                // may have applied unheard.
                let removal = |d| match d || unanswered {
                    true => Removal::Deleted,
                    false => Removal::Gone,
                };
                return Ok(deleted.into_iter().map(removal).collect());
            }
            Err(err) if err.is_transient() => {
                if unfenced {
                    // It may still apply, after we are done and the next
                    // acquisition made the key again: that one must not be
                    // on this lease (etcd issue 22082's stale retry).
                    session.retire("an unfenced delete of its key got no answer");
                }
                err
            }
            Err(err) => {
                session.retire("a delete of its key was refused");
                return Err(err);
            }
        };
        unanswered = true;
        if Instant::now() + interval >= give_up_at {
            session.retire("a delete of its key kept failing");
            let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
            return Err(LockError::with_source(
                ErrorCode::Backend,
                format!(
                    "could not delete `{}` within the lease TTL; it goes with its lease, \
                     which is revoked once the session's other locks are released",
                    names.join("`, `")
                ),
                err,
            ));
        }
        debug!(?keys, %err, "delete failed; retrying");
        tokio::select! {
            _ = lost.cancelled() => return gone(),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Logs the end of a background removal.
pub(crate) fn log_removal<T: std::fmt::Debug>(key: &str, what: &str, removal: &Result<T>) {
    match removal {
        Ok(removal) => debug!(%key, ?removal, "{what}: key removed"),
        Err(err) => warn!(%key, %err, "{what}: key not removed"),
    }
}
