//! The in-memory backend: etcd's data model in one process — revisions,
//! leases with TTLs, keys attached to leases — so the same lock algorithm
//! runs without etcd.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{
    Ahead, Backend, BoxFuture, ChangeWatch, Changes, Enqueued, Entry, Granted, Listing, Read,
    Revisions,
};
use crate::error::{ErrorCode, LockError, Result};

// The store: keys, leases, revisions and the change log.
mod state;

use state::{Lease, State, HISTORY};

struct Inner {
    state: Mutex<State>,
    /// Publishes the revision after every change.
    changes: watch::Sender<i64>,
}

impl Inner {
    /// The store, with the leases past their expiry reaped.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.reap_due(Instant::now()) {
            self.changes.send_replace(state.revision);
        }
        state
    }

    /// Applies a change and tells the watchers.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (out, revision) = {
            let mut state = self.state();
            let out = f(&mut state);
            (out, state.revision)
        };
        self.changes.send_replace(revision);
        out
    }
}

/// [`Backend`] in process memory.
pub(crate) struct MemoryBackend {
    inner: Arc<Inner>,
}

impl MemoryBackend {
    pub(crate) fn new() -> Self {
        Self::with_history(HISTORY)
    }

    /// A store that remembers only the last `history` changes.
    pub(crate) fn with_history(history: usize) -> Self {
        let state = State {
            revision: 1,
            next_lease: 0x694d_0000,
            history,
            ..State::default()
        };
        MemoryBackend {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                changes: watch::channel(1).0,
            }),
        }
    }
}

/// Expires a lease when its time comes, unless it was refreshed meanwhile.
async fn reap(inner: Weak<Inner>, lease: i64, mut expires: Instant) {
    loop {
        tokio::time::sleep_until(expires).await;
        let Some(inner) = inner.upgrade() else { return };
        let next = inner.change(|state| match state.leases.get(&lease) {
            Some(l) if l.expires > Instant::now() => Some(l.expires),
            Some(_) => {
                state.revoke(lease);
                None
            }
            None => None,
        });
        match next {
            Some(later) => expires = later,
            None => return,
        }
    }
}

impl Backend for MemoryBackend {
    fn grant(&self, ttl_secs: i64) -> BoxFuture<'_, Result<Granted>> {
        Box::pin(async move {
            let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
            let expires = Instant::now() + ttl;
            let id = self.inner.change(|state| {
                state.next_lease += 1;
                let id = state.next_lease;
                state.leases.insert(id, Lease { ttl, expires });
                state.next_expiry = Some(state.next_expiry.map_or(expires, |at| at.min(expires)));
                id
            });
            tokio::spawn(reap(Arc::downgrade(&self.inner), id, expires));
            Ok(Granted { id, ttl })
        })
    }

    fn keep_alive(&self, lease: i64) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move {
            let mut state = self.inner.state();
            Ok(match state.leases.get_mut(&lease) {
                Some(l) if l.expires > Instant::now() => {
                    l.expires = Instant::now() + l.ttl;
                    l.ttl.as_secs() as i64
                }
                _ => 0,
            })
        })
    }

    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.inner.change(|state| state.revoke(lease));
            Ok(())
        })
    }

    fn time_to_live(&self, lease: i64) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move {
            let state = self.inner.state();
            Ok(state.leases.get(&lease).map_or(0, |l| {
                l.expires
                    .saturating_duration_since(Instant::now())
                    .as_secs() as i64
            }))
        })
    }

    fn enqueue<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
        lease: i64,
        value: Vec<u8>,
        read: Read,
    ) -> BoxFuture<'a, Result<Enqueued>> {
        Box::pin(async move {
            self.inner.change(|state| {
                if !state.leases.contains_key(&lease) {
                    // As etcd refuses a put on an unknown lease.
                    return Err(LockError::new(ErrorCode::Expired, "lease not found"));
                }
                if !state.keys.contains_key(key) {
                    state.revision += 1;
                }
                let existing = state.create(key, lease, value);
                Ok(Enqueued {
                    rev: state.keys.get(key).map_or(0, |s| s.create_rev),
                    oldest: state.read(queue, read, None),
                    header: state.revision,
                    existing,
                })
            })
        })
    }

    fn enqueue_all<'a>(
        &'a self,
        entries: &'a [(String, String)],
        lease: i64,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<Enqueued>>> {
        Box::pin(async move {
            self.inner.change(|state| {
                if !state.leases.contains_key(&lease) {
                    return Err(LockError::new(ErrorCode::Expired, "lease not found"));
                }
                let absent = entries.iter().all(|(_, k)| !state.keys.contains_key(k));
                if absent {
                    // One transaction: one revision for every key.
                    state.revision += 1;
                    for (_, key) in entries {
                        state.create(key, lease, value.clone());
                    }
                }
                let answer = entries.iter().map(|(queue, key)| Enqueued {
                    rev: state.keys.get(key).map_or(0, |s| s.create_rev),
                    oldest: state.read(queue, Read::FIRST, None),
                    header: state.revision,
                    existing: (!absent)
                        .then(|| state.keys.get(key).map(|s| s.value.clone()))
                        .flatten(),
                });
                Ok(answer.collect())
            })
        })
    }

    fn ahead<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
        rev: i64,
        read: Read,
    ) -> BoxFuture<'a, Result<Ahead>> {
        Box::pin(async move {
            let state = self.inner.state();
            let here = state.keys.get(key).is_some_and(|s| s.create_rev == rev);
            Ok(Ahead {
                gone: !here,
                keys: if here {
                    state.read(queue, read, Some(rev))
                } else {
                    Vec::new()
                },
                header: state.revision,
            })
        })
    }

    fn aheads<'a>(
        &'a self,
        queue: &'a str,
        keys: &'a [(String, i64)],
        read: Read,
    ) -> BoxFuture<'a, Result<Vec<Ahead>>> {
        Box::pin(async move {
            let state = self.inner.state();
            let answer = |(key, rev): &(String, i64)| {
                let here = state.keys.get(key).is_some_and(|s| s.create_rev == *rev);
                Ahead {
                    gone: !here,
                    keys: match here {
                        true => state.read(queue, read, Some(*rev)),
                        false => Vec::new(),
                    },
                    header: state.revision,
                }
            };
            Ok(keys.iter().map(answer).collect())
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        rev: i64,
        lease: i64,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.inner.change(|state| {
                let next = state.revision + 1;
                match state.keys.get_mut(key) {
                    Some(s) if s.create_rev == rev => {
                        s.mod_rev = next;
                        s.lease = lease;
                        s.value = value.clone();
                        state.revision = next;
                        state.remember(key, rev, Some(value));
                        true
                    }
                    _ => false,
                }
            }))
        })
    }

    fn wait_changed<'a>(&'a self, key: &'a [u8], from: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Ok(key) = std::str::from_utf8(key) else {
                return Ok(());
            };
            let mut changes = self.inner.changes.subscribe();
            loop {
                {
                    let state = self.inner.state();
                    match state.keys.get(key) {
                        None => return Ok(()),
                        Some(s) if s.mod_rev >= from => return Ok(()), // put (or made) since
                        Some(_) => {}
                    }
                }
                if changes.changed().await.is_err() {
                    return Ok(());
                }
            }
        })
    }

    fn wait_deleted<'a>(&'a self, key: &'a [u8], from: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Every key here is UTF-8: another one does not exist.
            let Ok(key) = std::str::from_utf8(key) else {
                return Ok(());
            };
            let mut changes = self.inner.changes.subscribe();
            loop {
                {
                    let state = self.inner.state();
                    match state.keys.get(key) {
                        None => return Ok(()),
                        Some(s) if s.create_rev >= from => return Ok(()), // re-created since
                        Some(_) => {}
                    }
                }
                if changes.changed().await.is_err() {
                    return Ok(());
                }
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8], rev: Option<i64>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let Ok(key) = std::str::from_utf8(key) else {
                return Ok(false);
            };
            Ok(self.inner.change(|state| state.remove_all(&[(key, rev)]))[0])
        })
    }

    fn delete_all<'a>(
        &'a self,
        keys: &'a [(String, Option<i64>)],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            let keys: Vec<(&str, Option<i64>)> =
                keys.iter().map(|(k, rev)| (k.as_str(), *rev)).collect();
            Ok(self.inner.change(|state| state.remove_all(&keys)))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>> {
        Box::pin(async move {
            let state = self.inner.state();
            let entries = state
                .queue(prefix)
                .map(|(k, s)| Entry {
                    key: k.clone().into_bytes(),
                    create_rev: s.create_rev,
                    lease: s.lease,
                    value: s.value.clone(),
                })
                .collect();
            Ok(Listing {
                entries,
                header: state.revision,
            })
        })
    }

    fn revisions<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Revisions>> {
        Box::pin(async move {
            let state = self.inner.state();
            Ok(Revisions {
                keys: state
                    .keys
                    .range(prefix.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, s)| (k.clone().into_bytes(), s.create_rev))
                    .collect(),
                header: state.revision,
            })
        })
    }

    fn watch_prefix<'a>(
        &'a self,
        prefix: &'a str,
        from: i64,
        puts: bool,
    ) -> BoxFuture<'a, Result<ChangeWatch>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(16);
            let (inner, prefix) = (Arc::downgrade(&self.inner), prefix.to_owned());
            let mut changes = self.inner.changes.subscribe();
            tokio::spawn(async move {
                let mut from = from;
                loop {
                    let report = {
                        let Some(inner) = inner.upgrade() else { return };
                        let state = inner.state();
                        let report = match state.changes_since(&prefix, from, puts) {
                            None => Changes::Compacted,
                            Some(changes) => Changes::Changed {
                                changes,
                                through: state.revision,
                            },
                        };
                        from = state.revision + 1;
                        report
                    };
                    let done = report == Changes::Compacted;
                    let empty =
                        matches!(&report, Changes::Changed { changes, .. } if changes.is_empty());
                    if !empty && tx.send(Ok(report)).await.is_err() {
                        return;
                    }
                    if done {
                        return;
                    }
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
            });
            Ok(rx)
        })
    }
}
