//! What a waiting contender waits on: the key ahead of it gone, any of the
//! keys ahead deleted, and the touch that wakes the waiter behind a permit
//! that was just promoted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::debug;

use crate::backend::{Backend, Read};
use crate::error::Result;
use crate::lease::Retry;

/// Resolves once `key` (created at `rev`) is confirmed gone, watching from
/// revision `from` — or, when `None`, from just after a first read that
/// confirms the key (a watch from the past would land in etcd's costly
/// "unsynced" group). Transient failures are retried without limit; the
/// caller bounds the wait (a session that is lost, a guard that is released).
pub(super) async fn watch_gone(
    backend: Arc<dyn Backend>,
    queue: String,
    key: String,
    rev: i64,
    mut from: Option<i64>,
    retry: Retry,
) -> Result<()> {
    loop {
        if let Some(start) = from {
            match backend.wait_deleted(key.as_bytes(), start).await {
                Ok(()) => {}
                Err(err) if err.is_transient() => tokio::time::sleep(retry.interval()).await,
                Err(err) => return Err(err),
            }
        }
        match backend.ahead(&queue, &key, rev, Read::FIRST).await {
            Ok(ahead) if ahead.gone => return Ok(()),
            Ok(ahead) => from = Some(ahead.header + 1),
            Err(err) if err.is_transient() => tokio::time::sleep(retry.interval()).await,
            Err(err) => return Err(err),
        }
    }
}

/// Resolves once any of `keys` may have been deleted at or after revision
/// `from` (or the first wait fails).
pub(super) async fn any_deleted(
    backend: Arc<dyn Backend>,
    keys: Vec<(Vec<u8>, i64)>,
    from: i64,
) -> Result<()> {
    let mut waits: Vec<Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>> = keys
        .iter()
        .map(|(key, _)| backend.wait_deleted(key, from))
        .collect();
    std::future::poll_fn(|cx| {
        for wait in waits.iter_mut() {
            if let std::task::Poll::Ready(done) = wait.as_mut().poll(cx) {
                return std::task::Poll::Ready(done);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// A permit that waited holds now: touch its key (created at `rev`), so the
/// waiter just behind it (which watches it for changes) wakes and becomes
/// the first waiter. Best effort: should the touch fail, that waiter wakes
/// when this key goes.
pub(super) async fn promoted(
    backend: &Arc<dyn Backend>,
    key: &str,
    rev: i64,
    lease: i64,
    value: Vec<u8>,
) {
    if let Err(err) = backend.update(key, rev, lease, value).await {
        debug!(%key, %err, "permit promotion not announced");
    }
}
