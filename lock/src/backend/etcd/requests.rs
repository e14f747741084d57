//! Unary requests to etcd, as the etcd backend sends them: bounded by the
//! request timeout, errors mapped to [`LockError`], and the leader's term
//! observed from each answer's header. Cloned into the tasks that read for
//! others (the watch stream's reads after an event: see `watch_groups`).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Txn, TxnResponse};

use super::super::terms::Terms;
use super::map_error;
use crate::error::{LockError, Result};

#[derive(Clone)]
pub(super) struct Requests {
    pub(super) client: Client,
    pub(super) request_timeout: Duration,
    pub(super) terms: Arc<Terms>,
}

impl Requests {
    /// Runs one unary request with the request timeout, mapping its error.
    pub(super) async fn call<T>(
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

    /// One transaction, its header's term observed.
    pub(super) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        let resp = self.call(what, self.client.clone().txn(txn)).await?;
        self.terms.observe(resp.header());
        Ok(resp)
    }
}
