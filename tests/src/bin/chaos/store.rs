//! The fenced store: the resource the locks protect, kept in etcd outside the
//! lock namespace.
//!
//! Per key there are two etcd keys: `{root}/{key}/fence`, the highest fencing
//! token the store has seen, zero-padded to 20 digits so that etcd's byte-wise
//! value comparison is numeric; and `{root}/{key}/counter`, `"{count} {opid}"`:
//! the counter and the id of the write that set it.
//!
//! Both a read and a write go through the fence in one transaction:
//! `If(fence <= token) Then(fence = token, <get or put counter>) Else(get fence)`.
//! A read raises the fence too, so a holder that read the counter can only be
//! overtaken by a newer holder that then makes every later write of the old one
//! fail — which is what makes a read-modify-write safe under fencing.
//!
//! `--broken` workers use [`Store::read_unfenced`] / [`Store::write_unfenced`]:
//! a plain get and put, as a client that ignores its token would.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp, TxnOpResponse};

/// What the store said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Done at `rev`; for a read, the counter's value.
    Accepted { rev: i64, value: String },
    /// The fence holds a higher token.
    Rejected { fence: u64 },
}

/// A client of the fenced store.
#[derive(Clone)]
pub struct Store {
    client: Client,
    root: String,
}

/// `token` as the fence's value.
pub fn pad(token: u64) -> String {
    format!("{token:020}")
}

impl Store {
    /// Connects to `endpoints` with short timeouts (a stalled call fails as
    /// unknown instead of hanging).
    pub async fn connect(endpoints: &[String], root: &str) -> Result<Store, etcd_client::Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(1))
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Store {
            client,
            root: root.to_owned(),
        })
    }

    fn fence_key(&self, key: &str) -> String {
        format!("{}/{key}/fence", self.root)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}/{key}/counter", self.root)
    }

    /// Sets the counter to 0 and the fence to 0 (the driver, before the run).
    pub async fn init(&self, key: &str) -> Result<(), etcd_client::Error> {
        let mut c = self.client.clone();
        c.put(self.fence_key(key), pad(0), None).await?;
        c.put(self.counter_key(key), "0 init", None).await?;
        Ok(())
    }

    /// The counter's value, unfenced (the driver, after the run).
    pub async fn peek(&self, key: &str) -> Result<String, etcd_client::Error> {
        let mut c = self.client.clone();
        let resp = c.get(self.counter_key(key), None).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .unwrap_or_default())
    }

    /// Reads the counter through the fence with `token`.
    pub async fn read(&self, key: &str, token: u64) -> Result<Access, etcd_client::Error> {
        let then = vec![
            TxnOp::put(self.fence_key(key), pad(token), None),
            TxnOp::get(self.counter_key(key), None),
        ];
        self.fenced(key, token, then).await
    }

    /// Writes `value` to the counter through the fence with `token`.
    pub async fn write(
        &self,
        key: &str,
        token: u64,
        value: &str,
    ) -> Result<Access, etcd_client::Error> {
        let then = vec![
            TxnOp::put(self.fence_key(key), pad(token), None),
            TxnOp::put(self.counter_key(key), value, None),
        ];
        self.fenced(key, token, then).await
    }

    async fn fenced(
        &self,
        key: &str,
        token: u64,
        then: Vec<TxnOp>,
    ) -> Result<Access, etcd_client::Error> {
        let fence = self.fence_key(key);
        // fence < token + 1, i.e. fence <= token
        let txn = Txn::new()
            .when([Compare::value(
                fence.clone(),
                CompareOp::Less,
                pad(token.saturating_add(1)),
            )])
            .and_then(then)
            .or_else([TxnOp::get(fence, None)]);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let got = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        });
        if resp.succeeded() {
            Ok(Access::Accepted {
                rev,
                value: got.unwrap_or_default(),
            })
        } else {
            let fence = got.and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
            Ok(Access::Rejected { fence })
        }
    }

    /// A plain get of the counter (no fence): what a broken client does.
    pub async fn read_unfenced(&self, key: &str) -> Result<Access, etcd_client::Error> {
        let mut c = self.client.clone();
        let resp = c.get(self.counter_key(key), None).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let value = resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .unwrap_or_default();
        Ok(Access::Accepted { rev, value })
    }

    /// A plain put of the counter (no fence): what a broken client does.
    pub async fn write_unfenced(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Access, etcd_client::Error> {
        let mut c = self.client.clone();
        let resp = c.put(self.counter_key(key), value, None).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(Access::Accepted {
            rev,
            value: String::new(),
        })
    }
}

/// Splits a counter value `"{count} {opid}"`.
pub fn parse_counter(value: &str) -> Option<(u64, &str)> {
    let (count, opid) = value.split_once(' ')?;
    Some((count.parse().ok()?, opid))
}
