//! The etcd backend: each primitive is one etcd request.

use std::sync::Arc;
use std::time::Duration;

use super::batch::{Batcher, Claim};
pub(crate) use super::errors::map_error;
use super::errors::{is_lease_gone, is_not_found};
use super::terms::Terms;
use super::watch_groups::ReadAheads;
use super::watch_hub::WatchHub;
use super::{
    Ahead, Backend, BoxFuture, ChangeWatch, Enqueued, Entry, Granted, Listing, Read, ReadAfter,
    Revisions, Woken,
};
use crate::error::{LockError, Result};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};

// The pieces of transactions it builds and reads.
mod aheads;
mod requests;
mod txn;

use requests::Requests;

use txn::{claim, header_revision, queue_read, range_kvs, seen};

pub(crate) use super::version::check_server_version;
pub(crate) use super::DEFAULT_REQUEST_TIMEOUT;

/// Tells whether the tokio runtime that was current when it was made still
/// runs: a task there holds it alive, and is dropped when that runtime shuts
/// down (or when this is dropped).
struct RuntimeAlive {
    alive: std::sync::Weak<()>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RuntimeAlive {
    fn here() -> Self {
        let alive = Arc::new(());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let weak = Arc::downgrade(&alive);
        tokio::spawn(async move {
            let _alive = alive;
            let _ = stopped.await;
        });
        RuntimeAlive {
            alive: weak,
            _stop: stop,
        }
    }

    fn is_alive(&self) -> bool {
        self.alive.strong_count() > 0
    }
}

/// [`Backend`] on an etcd cluster.
pub(crate) struct EtcdBackend {
    /// Alive while the runtime the client was made on runs: the client's
    /// connection (tonic's channel) is driven by a task there, and dies
    /// with it.
    runtime: RuntimeAlive,
    /// Unary requests, bounded and observed.
    requests: Requests,
    watches: WatchHub,
    /// Enqueues and deletes, coalesced into one transaction per round trip.
    writes: Batcher,
}

impl EtcdBackend {
    pub(crate) fn new(client: Client, request_timeout: Duration) -> Self {
        let terms = Arc::new(Terms::new(request_timeout));
        let requests = Requests {
            client: client.clone(),
            request_timeout,
            terms: Arc::clone(&terms),
        };
        let reads = requests.clone();
        let read: ReadAheads = Arc::new(move |queue, keys, read| {
            let reads = reads.clone();
            Box::pin(async move { reads.aheads(&queue, &keys, read).await })
        });
        EtcdBackend {
            runtime: RuntimeAlive::here(),
            watches: WatchHub::new(client.clone(), request_timeout, read),
            writes: Batcher::new(&client, request_timeout, terms),
            requests,
        }
    }

    /// Fails for good once the runtime the client was made on has shut
    /// down: its connection is gone, and retrying cannot bring it back.
    fn usable(&self) -> Result<()> {
        if self.runtime.is_alive() {
            return Ok(());
        }
        Err(LockError::backend_for_good(
            "the etcd client's connection ran on a tokio runtime that has shut down; make the \
             lock manager (and its etcd client) on a runtime that outlives it",
        ))
    }
}

impl Backend for EtcdBackend {
    fn request_timeout(&self) -> Duration {
        self.requests.request_timeout
    }

    fn grant(&self, ttl_secs: i64) -> BoxFuture<'_, Result<Granted>> {
        Box::pin(async move {
            self.usable()?;
            let resp = self
                .requests
                .call(
                    "lease grant",
                    self.requests.client.clone().lease_grant(ttl_secs, None),
                )
                .await?;
            self.requests.terms.observe(resp.header());
            Ok(Granted {
                id: resp.id(),
                ttl: Duration::from_secs(resp.ttl().max(0) as u64),
            })
        })
    }

    fn keep_alive(&self, lease: i64) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move {
            self.usable()?;
            let mut client = self.requests.client.clone();
            let terms = &self.requests.terms;
            // Every way etcd says "this lease is gone" becomes a TTL of 0, as
            // the `Backend` contract asks: etcd-client reports a first answer
            // with TTL 0 as an error ("lease not found"), a later answer
            // carries TTL 0, and lease RPCs answer `NotFound`.
            let answer = tokio::time::timeout(self.requests.request_timeout, async move {
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(resp) if terms.is_stale(resp.header()) => {
                        Err(etcd_client::Error::LeaseKeepAliveError(format!(
                            "answered in raft term {}, older than one already seen: \
                             a stale leader's renewal does not count",
                            resp.header().map_or(0, |h| h.raft_term())
                        )))
                    }
                    Some(resp) => {
                        terms.observe_renewal(resp.header());
                        Ok(resp.ttl())
                    }
                    None => Err(etcd_client::Error::LeaseKeepAliveError(
                        "keep-alive stream closed without an answer".into(),
                    )),
                }
            });
            match answer.await {
                Ok(Ok(ttl)) => Ok(ttl),
                Ok(Err(e)) if is_lease_gone(&e) => Ok(0),
                Ok(Err(e)) => Err(map_error("lease keep-alive", e)),
                Err(elapsed) => Err(LockError::backend(
                    format!(
                        "etcd lease keep-alive got no answer within {:?}",
                        self.requests.request_timeout
                    ),
                    elapsed,
                    true,
                )),
            }
        })
    }

    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.usable()?;
            let mut client = self.requests.client.clone();
            let revoked =
                tokio::time::timeout(self.requests.request_timeout, client.lease_revoke(lease));
            match revoked.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) if is_not_found(&e) => Ok(()),
                Ok(Err(e)) => Err(map_error("lease revoke", e)),
                Err(elapsed) => Err(LockError::backend(
                    "etcd lease revoke timed out",
                    elapsed,
                    true,
                )),
            }
        })
    }

    fn time_to_live(&self, lease: i64) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move {
            self.usable()?;
            let resp = self
                .requests
                .call(
                    "lease time-to-live",
                    self.requests.client.clone().lease_time_to_live(lease, None),
                )
                .await?;
            Ok(resp.ttl())
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
            self.usable()?;
            // Put our key unless it exists (a retry), and read the queue's head
            // in the same transaction. Kept small: past 250 bytes, HTTP/2
            // sends the request in one more frame, a cost that showed in the
            // uncontended cycle's latency.
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
                    queue_read(queue, read, None),
                ]);
            let (resp, header) = self.writes.txn("enqueue", claim(queue, key), txn).await?;
            if resp.succeeded() {
                return Ok(Enqueued {
                    rev: header,
                    oldest: seen(&resp, 1),
                    header,
                    existing: None,
                });
            }
            // The key exists: an earlier attempt of ours that applied
            // unheard, or a leftover. One more read finds it and the head.
            let txn = Txn::new().and_then([TxnOp::get(key, None), queue_read(queue, read, None)]);
            let resp = self.requests.txn("queue read", txn).await?;
            let header = header_revision(resp.header());
            let Some(kv) = range_kvs(&resp, 0).into_iter().next() else {
                // Deleted meanwhile (force-unlocked, or its lease expired).
                return Err(LockError::backend(
                    format!("etcd enqueue of `{key}`: the key vanished while it was read"),
                    std::io::Error::other("a key found by the compare was gone"),
                    true,
                ));
            };
            Ok(Enqueued {
                rev: kv.create_revision(),
                oldest: seen(&resp, 1),
                header,
                existing: Some(kv.value().to_vec()),
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
            self.usable()?;
            let put = PutOptions::new().with_lease(lease);
            let absent = entries
                .iter()
                .map(|(_, key)| Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
            let puts = entries
                .iter()
                .map(|(_, key)| TxnOp::put(key.as_str(), value.clone(), Some(put.clone())));
            let heads = entries
                .iter()
                .map(|(queue, _)| queue_read(queue, Read::FIRST, None));
            // Not batched: its size grows with the names, and it is one
            // write already.
            let txn = Txn::new()
                .when(absent.collect::<Vec<_>>())
                .and_then(puts.chain(heads).collect::<Vec<_>>());
            let resp = self.requests.txn("enqueue", txn).await?;
            let header = header_revision(resp.header());
            let n = entries.len();
            if resp.succeeded() {
                let answer = (0..n).map(|i| Enqueued {
                    rev: header,
                    oldest: seen(&resp, n + i),
                    header,
                    existing: None,
                });
                return Ok(answer.collect());
            }
            // Some key exists: read each, and each queue's head.
            let keys = entries
                .iter()
                .map(|(_, key)| TxnOp::get(key.as_str(), None));
            let heads = entries
                .iter()
                .map(|(queue, _)| queue_read(queue, Read::FIRST, None));
            let txn = Txn::new().and_then(keys.chain(heads).collect::<Vec<_>>());
            let resp = self.requests.txn("queue read", txn).await?;
            let header = header_revision(resp.header());
            let answer = (0..n).map(|i| {
                let kv = range_kvs(&resp, i).into_iter().next();
                Enqueued {
                    // 0: the key is not there.
                    rev: kv.as_ref().map_or(0, |kv| kv.create_revision()),
                    oldest: seen(&resp, n + i),
                    header,
                    existing: kv.map(|kv| kv.value().to_vec()),
                }
            });
            Ok(answer.collect())
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
            self.usable()?;
            // Confirms our key (same create revision) and reads the keys ahead
            // of it in one linearizable read.
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, rev)])
                .and_then([queue_read(queue, read, Some(rev))]);
            let resp = self.requests.txn("queue read", txn).await?;
            Ok(Ahead {
                gone: !resp.succeeded(),
                keys: if resp.succeeded() {
                    seen(&resp, 0)
                } else {
                    Vec::new()
                },
                header: header_revision(resp.header()),
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
            self.usable()?;
            self.requests.aheads(queue, keys, read).await
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
            self.usable()?;
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, rev)])
                .and_then([TxnOp::put(
                    key,
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            Ok(self
                .writes
                .txn("update", Claim::None, txn)
                .await?
                .0
                .succeeded())
        })
    }

    fn wait_changed<'a>(&'a self, key: &'a [u8], from: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.usable()?;
            self.watches.wait(key, from, true).await
        })
    }

    fn wait_deleted<'a>(&'a self, key: &'a [u8], from: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.usable()?;
            self.watches.wait(key, from, false).await
        })
    }

    fn wait_then<'a>(
        &'a self,
        key: &'a [u8],
        from: i64,
        changes: bool,
        then: ReadAfter,
    ) -> BoxFuture<'a, Result<Woken>> {
        Box::pin(async move {
            self.usable()?;
            self.watches.wait_then(key, from, changes, Some(then)).await
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8], rev: Option<i64>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.usable()?;
            let Some(rev) = rev else {
                // Any revision: a plain delete, which etcd applies faster
                // than a transaction.
                return Ok(self.writes.delete("delete", key).await? > 0);
            };
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, rev)])
                .and_then([TxnOp::delete(key, None)]);
            Ok(self
                .writes
                .txn("delete", Claim::None, txn)
                .await?
                .0
                .succeeded())
        })
    }

    fn delete_all<'a>(
        &'a self,
        keys: &'a [(String, Option<i64>)],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            if let [(key, rev)] = keys {
                return Ok(vec![self.delete(key.as_bytes(), *rev).await?]);
            }
            self.usable()?;
            // Each key's delete as `delete` makes it, nested (etcd >= 3.3) in
            // one transaction; not batched, as `enqueue_all`.
            let ops = keys.iter().map(|(key, rev)| match rev {
                None => TxnOp::delete(key.as_str(), None),
                Some(rev) => TxnOp::txn(
                    Txn::new()
                        .when([Compare::create_revision(
                            key.as_str(),
                            CompareOp::Equal,
                            *rev,
                        )])
                        .and_then([TxnOp::delete(key.as_str(), None)]),
                ),
            });
            let resp = self
                .requests
                .txn("delete", Txn::new().and_then(ops.collect::<Vec<_>>()))
                .await?;
            let deleted = resp.op_responses().into_iter().map(|op| match op {
                TxnOpResponse::Delete(d) => Ok(d.deleted() > 0),
                TxnOpResponse::Txn(t) => Ok(t.succeeded()),
                _ => Err(LockError::backend_for_good("etcd delete: malformed answer")),
            });
            deleted.collect()
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>> {
        Box::pin(async move {
            self.usable()?;
            let options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend);
            let resp = self
                .requests
                .call(
                    "range",
                    self.requests.client.clone().get(prefix, Some(options)),
                )
                .await?;
            self.requests.terms.observe(resp.header());
            let entries = resp
                .kvs()
                .iter()
                .map(|kv| Entry {
                    key: kv.key().to_vec(),
                    create_rev: kv.create_revision(),
                    lease: kv.lease(),
                    value: kv.value().to_vec(),
                })
                .collect();
            Ok(Listing {
                entries,
                header: header_revision(resp.header()),
            })
        })
    }

    fn revisions<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Revisions>> {
        Box::pin(async move {
            self.usable()?;
            let options = GetOptions::new().with_prefix().with_keys_only();
            let resp = self
                .requests
                .call(
                    "range",
                    self.requests.client.clone().get(prefix, Some(options)),
                )
                .await?;
            self.requests.terms.observe(resp.header());
            Ok(Revisions {
                keys: resp
                    .kvs()
                    .iter()
                    .map(|kv| (kv.key().to_vec(), kv.create_revision()))
                    .collect(),
                header: header_revision(resp.header()),
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
            self.usable()?;
            super::changes::watch(
                &self.requests.client,
                self.requests.request_timeout,
                prefix,
                from,
                puts,
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distlock_tests::Etcd;

    async fn backend(etcd: &Etcd) -> (EtcdBackend, Client) {
        let client = Client::connect(etcd.endpoints(), None).await.unwrap();
        (
            EtcdBackend::new(client.clone(), DEFAULT_REQUEST_TIMEOUT),
            client,
        )
    }

    /// The `Backend::keep_alive` contract: a lease that is gone answers a
    /// TTL of 0 or less, whichever way etcd says so, never an error.
    #[tokio::test]
    async fn keep_alive_answers_zero_for_a_lease_that_is_gone() {
        let etcd = Etcd::start().await;
        let (backend, mut client) = backend(&etcd).await;
        let granted = backend.grant(30).await.unwrap();
        assert!(backend.keep_alive(granted.id).await.unwrap() > 0);

        client.lease_revoke(granted.id).await.unwrap();
        let ttl = backend.keep_alive(granted.id).await;
        assert!(matches!(ttl, Ok(ttl) if ttl <= 0), "revoked lease: {ttl:?}");
        let ttl = backend.keep_alive(0x7fff_0000_dead_beef).await;
        assert!(matches!(ttl, Ok(ttl) if ttl <= 0), "unknown lease: {ttl:?}");
        assert!(backend.time_to_live(granted.id).await.unwrap() <= 0);
        // Revoking it again is not an error either.
        backend.revoke(granted.id).await.unwrap();
    }
}
