//! An etcd watch of the changes under a prefix, for
//! [`Backend::watch_prefix`](super::Backend::watch_prefix): one watch on a
//! stream of its own, filtered on the server to deletes only (`NoPut`)
//! unless puts are asked for too.
//!
//! Opening waits for etcd to accept the watch. A watch refused for want of
//! permission is retried once after re-authenticating (an expired auth token
//! looks the same); refused again, it fails with `PermissionDenied`. A watch
//! from a compacted revision opens as a watch that reports
//! [`Changes::Compacted`] at once.
//!
//! Once open, a task forwards the events and ends the watch (its receiver
//! sees the end) when the stream breaks or goes silent: like the shared watch
//! stream ([`watch_hub`](super::watch_hub)), a stream silent for a request
//! timeout is asked for a progress notification, and one that does not
//! answer within another request timeout counts as broken.
//!
//! A progress notification is *not* taken to say how far the watch has
//! reported, on any etcd version: before the fix of etcd-io/etcd#15220
//! (etcd 3.4.24 / 3.5.8; the suites run 3.4.23 and 3.5.1) its revision can
//! run ahead of events an unsynced watcher has yet to send, and resuming
//! after it would skip them. A watch that resumes after a break starts after
//! the last event it reported; if etcd compacted that revision meanwhile,
//! its user re-reads (the holds registry re-confirms its holds, an election
//! re-reads its candidates).

use std::time::Duration;

use etcd_client::{Client, EventType, WatchFilterType, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::errors::map_error;
use super::{Change, ChangeWatch, Changes};
use crate::error::{ErrorCode, LockError, Result};

/// Opens a watch of the deletes (and with `puts`, the puts) under `prefix`
/// from revision `from`.
pub(crate) async fn watch(
    client: &Client,
    request_timeout: Duration,
    prefix: &str,
    from: i64,
    puts: bool,
) -> Result<ChangeWatch> {
    let mut reauthenticated = false;
    loop {
        let (stream, first) = open(client, request_timeout, prefix, from, puts).await?;
        let (tx, rx) = mpsc::channel(16);
        if first.canceled() && first.compact_revision() > 0 {
            debug!(
                prefix,
                from,
                compacted = first.compact_revision(),
                "deletion watch from a compacted revision"
            );
            let _ = tx.try_send(Ok(Changes::Compacted));
            return Ok(rx);
        }
        if first.canceled() && refused(&first) && !reauthenticated {
            debug!(
                prefix,
                reason = first.cancel_reason(),
                "deletion watch refused; re-authenticating"
            );
            reauthenticated = true;
            bounded(request_timeout, "authenticate", client.refresh_token()).await?;
            continue;
        }
        if first.canceled() {
            let code = if refused(&first) {
                ErrorCode::PermissionDenied
            } else {
                ErrorCode::Backend
            };
            return Err(LockError::new(
                code,
                format!("etcd refused to watch {prefix}: {}", first.cancel_reason()),
            ));
        }
        tokio::spawn(forward(stream, tx, request_timeout));
        return Ok(rx);
    }
}

/// Opens the stream and waits for etcd's answer to the watch.
async fn open(
    client: &Client,
    request_timeout: Duration,
    prefix: &str,
    from: i64,
    puts: bool,
) -> Result<(WatchStream, WatchResponse)> {
    let mut options = WatchOptions::new().with_prefix().with_start_revision(from);
    if !puts {
        options = options.with_filters([WatchFilterType::NoPut]);
    }
    let mut client = client.clone();
    let mut stream = bounded(
        request_timeout,
        "watch",
        client.watch(prefix, Some(options)),
    )
    .await?;
    match bounded(request_timeout, "watch", stream.message()).await? {
        Some(first) => Ok((stream, first)),
        None => Err(broken()),
    }
}

/// Runs one request, bounded by the request timeout.
async fn bounded<T>(
    timeout: Duration,
    what: &str,
    request: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(answer) => answer.map_err(|e| map_error(what, e)),
        Err(elapsed) => Err(LockError::backend(
            format!("etcd {what} got no answer within {timeout:?}"),
            elapsed,
            true,
        )),
    }
}

fn broken() -> LockError {
    LockError::backend(
        "etcd deletion watch broke",
        std::io::Error::other("watch stream closed"),
        true,
    )
}

/// Whether etcd cancelled a watch for want of permission, which is also what
/// an expired auth token looks like.
fn refused(resp: &WatchResponse) -> bool {
    let reason = resp.cancel_reason();
    resp.canceled() && (reason.contains("permission denied") || reason.contains("auth"))
}

/// Forwards the deletes of an open watch until it breaks, goes silent, or
/// its receiver is dropped (which drops, hence cancels, the stream).
async fn forward(
    mut stream: WatchStream,
    tx: mpsc::Sender<Result<Changes>>,
    request_timeout: Duration,
) {
    let mut last_heard = Instant::now();
    let mut progress_due: Option<Instant> = None;
    loop {
        let check_at = progress_due.unwrap_or(last_heard + request_timeout);
        let report = tokio::select! {
            _ = tx.closed() => return,
            message = stream.message() => match message {
                Ok(Some(resp)) => {
                    last_heard = Instant::now();
                    progress_due = None;
                    if resp.canceled() && resp.compact_revision() <= 0 {
                        // Cancelled for another reason than a compaction:
                        // the watch ends as broken, and resumes.
                        return debug!(reason = resp.cancel_reason(), "deletion watch cancelled by etcd");
                    }
                    match report(&resp) {
                        Some(report) => report,
                        None => continue,
                    }
                }
                Ok(None) => return debug!("deletion watch stream ended"),
                Err(err) => return debug!(%err, "deletion watch stream failed"),
            },
            _ = tokio::time::sleep_until(check_at) => {
                if progress_due.is_some() {
                    return debug!("deletion watch silent after a progress request; dropping it");
                }
                if bounded(request_timeout, "watch progress", stream.request_progress()).await.is_err() {
                    return;
                }
                progress_due = Some(Instant::now() + request_timeout);
                continue;
            }
        };
        let done = report == Changes::Compacted;
        if tx.send(Ok(report)).await.is_err() || done {
            return;
        }
    }
}

/// What one response of an open watch reports, if anything.
fn report(resp: &WatchResponse) -> Option<Changes> {
    if resp.canceled() {
        // Fell behind a compaction: what it missed must be re-read.
        debug!(
            compacted = resp.compact_revision(),
            "deletion watch compacted"
        );
        return Some(Changes::Compacted);
    }
    if resp.created() {
        return None;
    }
    let changes: Vec<Change> = resp
        .events()
        .iter()
        .filter_map(|e| {
            let kv = e.kv()?;
            let deleted = e.event_type() == EventType::Delete;
            Some(Change {
                key: kv.key().to_vec(),
                rev: kv.mod_revision(),
                create_rev: if deleted { 0 } else { kv.create_revision() },
                value: (!deleted).then(|| kv.value().to_vec()),
            })
        })
        .collect();
    // Events come in revision order, and etcd sends all of one revision's
    // events together: every delete up to the last event's revision has been
    // reported. An answer without events is a progress notification; it
    // says nothing here (see `forward`), so the watch resumes only after
    // deletes it actually reported.
    let through = resp
        .events()
        .iter()
        .filter_map(|e| e.kv())
        .next_back()
        .map(|kv| kv.mod_revision())?;
    Some(Changes::Changed { changes, through })
}
