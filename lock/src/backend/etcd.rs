//! The etcd backend: each primitive is one etcd request.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, TxnResponse,
};
use tonic::Code;

use super::batch::Batcher;
use super::watch_hub::WatchHub;
use super::{Backend, BoxFuture, Enqueued, Entry, Granted, Position, Positioned};
use crate::error::{ErrorCode, LockError, Result};

pub(crate) use super::DEFAULT_REQUEST_TIMEOUT;

/// [`Backend`] on an etcd cluster.
pub(crate) struct EtcdBackend {
    client: Client,
    request_timeout: Duration,
    watches: WatchHub,
    /// Enqueues and deletes, coalesced into one transaction per round trip.
    writes: Batcher,
}

impl EtcdBackend {
    pub(crate) fn new(client: Client, request_timeout: Duration) -> Self {
        EtcdBackend {
            watches: WatchHub::new(client.clone()),
            writes: Batcher::new(client.clone(), request_timeout),
            client,
            request_timeout,
        }
    }

    /// Runs one unary request with the request timeout, mapping its error.
    async fn call<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(result) => result.map_err(|e| map_error(what, e)),
            Err(elapsed) => Err(LockError::backend(
                format!(
                    "etcd {what} got no answer within {:?}",
                    self.request_timeout
                ),
                elapsed,
                true,
            )),
        }
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        self.call(what, self.client.clone().txn(txn)).await
    }
}

/// Maps an etcd error: a lease the server does not know is `Expired`; a
/// backend error is transient when it may go away by itself (no leader, no
/// connection).
pub(crate) fn map_error(what: &str, err: etcd_client::Error) -> LockError {
    use etcd_client::Error as E;
    if is_not_found(&err) {
        return LockError::with_source(
            ErrorCode::Expired,
            format!("etcd {what}: lease not found"),
            err,
        );
    }
    let transient = match &err {
        E::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Aborted
                | Code::Cancelled
                | Code::ResourceExhausted
        ),
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        _ => false,
    };
    LockError::backend(format!("etcd {what} failed"), err, transient)
}

fn is_not_found(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(s) if s.code() == Code::NotFound)
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

/// The `i`-th response of a transaction, which must be a range.
fn range_kvs(resp: &TxnResponse, i: usize) -> Vec<KeyValue> {
    match resp.op_responses().into_iter().nth(i) {
        Some(TxnOpResponse::Get(mut get)) => get.take_kvs(),
        _ => Vec::new(),
    }
}

fn key_string(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

/// The oldest key under `queue`.
fn oldest(queue: &str) -> TxnOp {
    TxnOp::get(
        queue,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1),
        ),
    )
}

impl Backend for EtcdBackend {
    fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn grant(&self, ttl_secs: i64) -> BoxFuture<'_, Result<Granted>> {
        Box::pin(async move {
            let resp = self
                .call(
                    "lease grant",
                    self.client.clone().lease_grant(ttl_secs, None),
                )
                .await?;
            Ok(Granted {
                id: resp.id(),
                ttl: Duration::from_secs(resp.ttl().max(0) as u64),
            })
        })
    }

    fn keep_alive(&self, lease: i64) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            self.call("lease keep-alive", async move {
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(resp) => Ok(resp.ttl()),
                    None => Err(etcd_client::Error::LeaseKeepAliveError(
                        "keep-alive stream closed without an answer".into(),
                    )),
                }
            })
            .await
        })
    }

    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let revoked = tokio::time::timeout(self.request_timeout, client.lease_revoke(lease));
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
            let resp = self
                .call(
                    "lease time-to-live",
                    self.client.clone().lease_time_to_live(lease, None),
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
    ) -> BoxFuture<'a, Result<Enqueued>> {
        Box::pin(async move {
            // Put our key unless it exists (a retry), and read the queue's head
            // in the same transaction.
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
                    oldest(queue),
                ])
                .or_else([TxnOp::get(key, None), oldest(queue)]);
            let (resp, header) = self.writes.txn("enqueue", queue, txn).await?;
            let (rev, existing) = if resp.succeeded() {
                (header, None)
            } else {
                match range_kvs(&resp, 0).first() {
                    Some(kv) => (kv.create_revision(), Some(kv.value().to_vec())),
                    None => (header, None),
                }
            };
            let head = range_kvs(&resp, 1)
                .first()
                .is_some_and(|kv| kv.create_revision() == rev);
            Ok(Enqueued {
                rev,
                head,
                header,
                existing,
            })
        })
    }

    fn position<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
        rev: i64,
    ) -> BoxFuture<'a, Result<Positioned>> {
        Box::pin(async move {
            // Confirms our key (same create revision) and finds the youngest
            // older key in one linearizable read.
            let predecessor = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(rev - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1)
                .with_keys_only();
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, rev)])
                .and_then([TxnOp::get(queue, Some(predecessor))]);
            let resp = self.txn("queue read", txn).await?;
            let header = header_revision(resp.header());
            let position = if !resp.succeeded() {
                Position::Gone
            } else {
                match range_kvs(&resp, 0).first() {
                    None => Position::Head,
                    Some(kv) => Position::Behind {
                        predecessor: key_string(kv),
                    },
                }
            };
            Ok(Positioned { position, header })
        })
    }

    fn wait_deleted<'a>(&'a self, key: &'a str, from: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.watches.wait_deleted(key, from))
    }

    fn delete<'a>(&'a self, key: &'a str, rev: Option<i64>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let fence = match rev {
                Some(rev) => Compare::create_revision(key, CompareOp::Equal, rev),
                None => Compare::create_revision(key, CompareOp::Greater, 0),
            };
            let txn = Txn::new()
                .when([fence])
                .and_then([TxnOp::delete(key, None)]);
            // The key's queue: `{queue}{lease hex}`.
            let queue = key.rfind('/').map_or(key, |i| &key[..=i]);
            Ok(self.writes.txn("delete", queue, txn).await?.0.succeeded())
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>>> {
        Box::pin(async move {
            let options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend);
            let resp = self
                .call("range", self.client.clone().get(prefix, Some(options)))
                .await?;
            Ok(resp
                .kvs()
                .iter()
                .map(|kv| Entry {
                    key: key_string(kv),
                    create_rev: kv.create_revision(),
                    lease: kv.lease(),
                    value: kv.value().to_vec(),
                })
                .collect())
        })
    }
}
