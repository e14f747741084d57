//! Layer 1, storage: the narrow interface the lock algorithm runs on, and
//! its implementations.
//!
//! Uses only the base modules (`error`, `key`). The semantics of locks —
//! queues, waiting, fencing, leases, loss — live once, in the layers above
//! ([`queue`](crate::queue), [`lease`](crate::lease), [`hold`](crate::hold)). A backend only offers etcd-shaped primitives: leases, one contender key
//! per lease in a queue ordered by create revision, fenced deletes and delete
//! notifications. [`etcd::EtcdBackend`] maps them onto etcd; [`memory::MemoryBackend`]
//! implements them in process.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::Result;

/// Unary requests that take longer than this fail with a transient error, so a
/// blackholed connection cannot hang a lock call forever.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

mod batch;
mod changes;
mod errors;
pub(crate) mod etcd;
#[cfg(feature = "fault-injection")]
pub(crate) mod faulty;
pub(crate) mod memory;
mod terms;
mod version;
mod watch_groups;
mod watch_hub;

/// The most keys one [`Backend::aheads`] call answers for. etcd answers them
/// with one transaction of two ranges whatever their number, so this only
/// bounds the size of its answer.
pub(crate) const MAX_AHEADS: usize = 256;

/// A boxed, sendable future: backends are used as trait objects.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A granted lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Granted {
    pub(crate) id: i64,
    pub(crate) ttl: Duration,
}

/// Which keys of a queue a read considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// Every key under the queue's prefix.
    All,
    /// Exclusive entries only: `{queue}` followed by a lease id in lowercase
    /// hex — ours, `etcdctl lock`'s, Go's `concurrency.Mutex`'s — the keys in
    /// [`Keyspace::exclusive_range`](crate::key::Keyspace::exclusive_range).
    /// Shared entries (`{queue}r/...`) sort after them.
    Exclusive,
}

/// What a read of a queue returns, besides whether our key is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Read {
    pub(crate) scope: Scope,
    /// At most this many keys.
    pub(crate) limit: usize,
    /// With their values (else keys and revisions only).
    pub(crate) values: bool,
}

impl Read {
    /// The one key that decides a mutex's place: keys only, every kind.
    pub(crate) const FIRST: Read = Read {
        scope: Scope::All,
        limit: 1,
        values: false,
    };
}

/// One key of a queue as a read saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Keys are bytes: another client may have put one that is not UTF-8
    /// under the queue's prefix.
    pub(crate) key: Vec<u8>,
    pub(crate) rev: i64,
    /// Empty unless the read asked for values.
    pub(crate) value: Vec<u8>,
}

/// The outcome of putting a contender key into a queue.
#[derive(Debug, Clone)]
pub(crate) struct Enqueued {
    /// The key's create revision: its place in the queue and its fencing token.
    pub(crate) rev: i64,
    /// The oldest keys of the queue in the read's scope, oldest first (ours
    /// among them if it is that old), as of `header`.
    pub(crate) oldest: Vec<Seen>,
    /// The store revision the answer was read at.
    pub(crate) header: i64,
    /// The value of the key when it existed already (the enqueue did not
    /// create it): an earlier attempt of ours that applied, or a leftover.
    pub(crate) existing: Option<Vec<u8>>,
}

/// The keys ahead of a contender key, read with one linearizable read that
/// also confirms the key.
#[derive(Debug, Clone)]
pub(crate) struct Ahead {
    /// The key (with that create revision) no longer exists.
    pub(crate) gone: bool,
    /// The keys older than it in the read's scope, youngest first.
    pub(crate) keys: Vec<Seen>,
    /// The store revision the answer was read at; notifications for later
    /// changes start at `header + 1`.
    pub(crate) header: i64,
}

/// The read a waiter makes once what it waited for happened:
/// [`Backend::ahead`] of its `key` (created at `rev`) in `queue`.
#[derive(Debug, Clone)]
pub(crate) struct ReadAfter {
    pub(crate) queue: String,
    pub(crate) key: String,
    pub(crate) rev: i64,
    pub(crate) read: Read,
}

/// A wait that ended in a wake-up: when its event came, and the read made
/// after it, if the backend made it (see [`Backend::wait_then`]).
#[derive(Debug)]
pub(crate) struct Woken {
    pub(crate) at: std::time::Instant,
    pub(crate) read: Option<Ahead>,
}

impl Woken {
    /// A wake-up now, without a read.
    pub(crate) fn now(_: ()) -> Woken {
        let at = std::time::Instant::now();
        Woken { at, read: None }
    }
}

/// One key of a queue, for lock info and listings.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) key: Vec<u8>,
    pub(crate) create_rev: i64,
    pub(crate) lease: i64,
    pub(crate) value: Vec<u8>,
}

/// Every key under a prefix with its create revision, as of one revision.
#[derive(Debug, Clone, Default)]
pub(crate) struct Revisions {
    /// `(key, create revision)`, in key order.
    pub(crate) keys: Vec<(Vec<u8>, i64)>,
    /// The store revision the keys were read at.
    pub(crate) header: i64,
}

/// One change of a key under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) key: Vec<u8>,
    /// The revision of the change.
    pub(crate) rev: i64,
    /// The key's create revision (0 for a delete).
    pub(crate) create_rev: i64,
    /// Its new value; `None` for a delete.
    pub(crate) value: Option<Vec<u8>>,
}

/// What a watch of a prefix reports (see [`Backend::watch_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changes {
    /// These changes were made, in revision order, and every change under
    /// the prefix (of the kinds watched) up to revision `through` has now
    /// been reported.
    Changed { changes: Vec<Change>, through: i64 },
    /// The watch can no longer report every change since its start (the
    /// store compacted revisions it had yet to send) and has ended: re-read
    /// what it was meant to cover, then watch anew.
    Compacted,
}

/// The receiving end of a prefix watch. It ends (`None`) when the watch
/// breaks — changes may then have gone unreported since the last `through`
/// — and dropping it cancels the watch.
pub(crate) type ChangeWatch = tokio::sync::mpsc::Receiver<Result<Changes>>;

/// Every key under a prefix, oldest first, and the store revision read at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<Entry>,
    pub(crate) header: i64,
}

/// The storage primitives of the lock algorithm. Every call is linearizable.
pub(crate) trait Backend: Send + Sync + 'static {
    /// How long one request may take before it fails transiently: the bound of
    /// a single attempt (`try_lock`).
    fn request_timeout(&self) -> Duration {
        DEFAULT_REQUEST_TIMEOUT
    }

    /// Grants a lease of `ttl_secs` seconds (the backend may grant more).
    fn grant(&self, ttl_secs: i64) -> BoxFuture<'_, Result<Granted>>;

    /// Refreshes a lease once; the remaining TTL in seconds, 0 or less when the
    /// lease no longer exists.
    fn keep_alive(&self, lease: i64) -> BoxFuture<'_, Result<i64>>;

    /// Revokes a lease, deleting every key attached to it.
    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<()>>;

    /// The remaining TTL of a lease in seconds; 0 or less when it is gone.
    fn time_to_live(&self, lease: i64) -> BoxFuture<'_, Result<i64>>;

    /// Atomically creates `key` (attached to `lease`, holding `value`) unless
    /// it exists, and reads the oldest keys of `queue` as `read` says, and
    /// the value the key already had if it existed. Idempotent, so it may be
    /// retried.
    fn enqueue<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
        lease: i64,
        value: Vec<u8>,
        read: Read,
    ) -> BoxFuture<'a, Result<Enqueued>>;

    /// [`enqueue`](Backend::enqueue) of one key in each of several queues
    /// (`(queue, key)` pairs), all in one transaction, so that every key gets
    /// the same create revision: created all together, or none (if some
    /// exist, the answer reports each key as it is). Each queue's oldest key
    /// is read (`Read::FIRST`). Idempotent.
    fn enqueue_all<'a>(
        &'a self,
        entries: &'a [(String, String)],
        lease: i64,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<Enqueued>>>;

    /// The keys ahead of `key`, created at revision `rev`, in `queue`, as
    /// `read` says (youngest first), or that the key is gone.
    fn ahead<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
        rev: i64,
        read: Read,
    ) -> BoxFuture<'a, Result<Ahead>>;

    /// [`ahead`](Backend::ahead) for several keys of `queue` at once
    /// (`(key, create revision)` pairs, at most [`MAX_AHEADS`]), in
    /// linearizable reads made after the call (one, but for a rare fallback
    /// on etcd): answer `i` is what `ahead` of key `i` would have said at
    /// the answer's `header` revision (the same range, at that revision,
    /// and the key's create revision checked as `ahead`'s guard checks it).
    fn aheads<'a>(
        &'a self,
        queue: &'a str,
        keys: &'a [(String, i64)],
        read: Read,
    ) -> BoxFuture<'a, Result<Vec<Ahead>>>;

    /// Resolves once `key` may have been deleted at or after revision `from`.
    /// It can resolve spuriously (e.g. after a compaction); callers re-check
    /// with [`ahead`](Backend::ahead).
    fn wait_deleted<'a>(&'a self, key: &'a [u8], from: i64) -> BoxFuture<'a, Result<()>>;

    /// [`wait_deleted`](Backend::wait_deleted) (or, with `changes`,
    /// [`wait_changed`](Backend::wait_changed)), then perhaps the read `then`
    /// made for the waiter: a `read` in the answer is what its own `ahead`
    /// would say, from a linearizable read sent after the wake-up; `None`
    /// leaves that read to the caller. The etcd backend makes one read for
    /// every wait one watch event wakes (see `watch_groups`); by default,
    /// no read.
    fn wait_then<'a>(
        &'a self,
        key: &'a [u8],
        from: i64,
        changes: bool,
        then: ReadAfter,
    ) -> BoxFuture<'a, Result<Woken>> {
        let _ = then;
        Box::pin(async move {
            let woken = match changes {
                true => self.wait_changed(key, from).await,
                false => self.wait_deleted(key, from).await,
            };
            woken.map(Woken::now)
        })
    }

    /// Resolves once `key` may have been changed (put or deleted) at or after
    /// revision `from`; spurious wake-ups as for
    /// [`wait_deleted`](Backend::wait_deleted).
    fn wait_changed<'a>(&'a self, key: &'a [u8], from: i64) -> BoxFuture<'a, Result<()>>;

    /// Puts `value` into `key`, keeping it on `lease`, if its create revision
    /// is `rev`: the key keeps its place in its queue. Whether it did.
    fn update<'a>(
        &'a self,
        key: &'a str,
        rev: i64,
        lease: i64,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Deletes `key` if its create revision is `rev` (any revision when
    /// `None`); whether a key was deleted.
    fn delete<'a>(&'a self, key: &'a [u8], rev: Option<i64>) -> BoxFuture<'a, Result<bool>>;

    /// [`delete`](Backend::delete) of several keys (`(key, rev)` pairs, each
    /// fenced by its own create revision, or not when `None`), all in one
    /// transaction: whether each was deleted, in order. A key that is not
    /// there, or has another create revision, is left alone; the others are
    /// deleted all the same.
    fn delete_all<'a>(
        &'a self,
        keys: &'a [(String, Option<i64>)],
    ) -> BoxFuture<'a, Result<Vec<bool>>>;

    /// Every key under `prefix`, oldest first, with the revision read at.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>>;

    /// Every key under `prefix` with its create revision, without values, in
    /// one linearizable read.
    fn revisions<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Revisions>>;

    /// Watches the changes of keys under `prefix` made at revision `from` or
    /// later — deletes, and with `puts` puts too (with their values): every
    /// such change is reported, in revision order, until the watch ends.
    fn watch_prefix<'a>(
        &'a self,
        prefix: &'a str,
        from: i64,
        puts: bool,
    ) -> BoxFuture<'a, Result<ChangeWatch>>;
}

/// Checks shared by the backends' tests.
#[cfg(test)]
pub(crate) mod checks {
    use super::etcd::{EtcdBackend, DEFAULT_REQUEST_TIMEOUT};
    use super::{Ahead, Backend, Read};

    /// The etcd backend on a client of `etcd`, a test's own.
    pub(crate) async fn etcd_backend(etcd: &distlock_tests::Etcd) -> EtcdBackend {
        let client = etcd_client::Client::connect(etcd.endpoints(), None)
            .await
            .expect("connect to the test's etcd");
        EtcdBackend::new(client, DEFAULT_REQUEST_TIMEOUT)
    }

    /// `backend.aheads` of `asks` answers each key exactly as that key's
    /// own `ahead` does (nothing changes the queue meanwhile); its answers.
    pub(crate) async fn aheads_answer_as_each_alone(
        backend: &dyn Backend,
        queue: &str,
        asks: &[(String, i64)],
        read: Read,
    ) -> Vec<Ahead> {
        let shared = backend.aheads(queue, asks, read).await.unwrap();
        assert_eq!(shared.len(), asks.len());
        for ((key, rev), answer) in asks.iter().zip(&shared) {
            let own = backend.ahead(queue, key, *rev, read).await.unwrap();
            assert_eq!(
                (answer.gone, &answer.keys, answer.header),
                (own.gone, &own.keys, own.header),
                "{key} at {rev}, {read:?}"
            );
        }
        shared
    }
}
