//! The fenced store: the resource the locks protect, kept in etcd outside the
//! lock namespace.
//!
//! Per lock name there are three etcd keys: `{root}/{key}/fence`, the highest
//! token of an exclusive holder (a lock, a write lock, a multi-lock) the store
//! has seen, zero-padded to 20 digits so that etcd's byte-wise value
//! comparison is numeric; `{root}/{key}/rfence`, the highest token of a
//! reader it has seen; and `{root}/{key}/counter`, `"{count} {opid}"`: the
//! counter and the id of the write that set it.
//!
//! An exclusive holder's read and write go through both fences in one
//! transaction:
//! `If(fence <= token && rfence <= token) Then(fence = token, <get or put counter>) Else(get fences)`.
//! A read raises the fence too, so a holder that read the counter can only be
//! overtaken by a newer holder that then makes every later write of the old one
//! fail — which is what makes a read-modify-write safe under fencing.
//! A reader's read ([`Store::read_shared`]) only has to be newer than every
//! exclusive holder seen: `If(fence <= token) Then(get counter, rfence =
//! max(rfence, token))`, so readers never fence each other out, but a newer
//! reader fences out an older writer and a newer writer an older reader. A
//! multi-lock's transfer ([`Store::transfer_read`] / [`Store::transfer_write`])
//! goes through the fences of both its names in one transaction.
//!
//! A semaphore's holders are up to N at once, and their tokens say nothing
//! about which of them was cut off, so its store ([`Store::permit_swap`]) keeps
//! the tokens of the holders inside (at most N) and a floor:
//! `{root}/{name}/fence` is `"{floor} {token} {token}..."`. A holder's first
//! access enters it (if there is room; else, if its token is above the
//! lowest inside, that one is evicted and the floor raised to it), its last
//! one leaves; an evicted token, or one at or below the floor, is refused for
//! good. So between a holder's first and last accepted access it was inside,
//! and the store never had more than N inside at once. Each access is a
//! compare-and-swap on that key (read, then write if unchanged).
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

    fn rfence_key(&self, key: &str) -> String {
        format!("{}/{key}/rfence", self.root)
    }

    /// Written by a reader's read that does not raise `rfence`: every
    /// accepted access writes, so each has a revision of its own.
    fn touch_key(&self, key: &str) -> String {
        format!("{}/{key}/touch", self.root)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}/{key}/counter", self.root)
    }

    /// Sets the counter to 0 and the fences to 0 (the driver, before the run).
    pub async fn init(&self, key: &str) -> Result<(), etcd_client::Error> {
        let mut c = self.client.clone();
        c.put(self.fence_key(key), pad(0), None).await?;
        c.put(self.rfence_key(key), pad(0), None).await?;
        c.put(self.counter_key(key), "0 init", None).await?;
        Ok(())
    }

    /// Sets a semaphore's counter to 0 and its store empty.
    pub async fn init_permits(&self, name: &str) -> Result<(), etcd_client::Error> {
        let mut c = self.client.clone();
        c.put(self.fence_key(name), "0", None).await?;
        c.put(self.counter_key(name), "0 init", None).await?;
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
        self.fenced_all(&[(key, token)], true, then).await
    }

    /// Reads the counter as a reader with `token`: refused if an exclusive
    /// holder with a higher token has been seen; raises `rfence` to `token`.
    pub async fn read_shared(&self, key: &str, token: u64) -> Result<Access, etcd_client::Error> {
        let rfence = self.rfence_key(key);
        let raise = Txn::new()
            .when([Compare::value(rfence.clone(), CompareOp::Less, pad(token))])
            .and_then([TxnOp::put(rfence, pad(token), None)])
            .or_else([TxnOp::put(self.touch_key(key), pad(token), None)]);
        let then = vec![TxnOp::get(self.counter_key(key), None), TxnOp::txn(raise)];
        self.fenced_all(&[(key, token)], false, then).await
    }

    /// Reads the counters of every `(key, token)` at once, through the fences
    /// of all of them (a multi-lock's transfer). The values in `names` order,
    /// joined by `\n`.
    pub async fn transfer_read(&self, names: &[(&str, u64)]) -> Result<Access, etcd_client::Error> {
        let mut then = Vec::new();
        for (key, token) in names {
            then.push(TxnOp::put(self.fence_key(key), pad(*token), None));
        }
        for (key, _) in names {
            then.push(TxnOp::get(self.counter_key(key), None));
        }
        self.fenced_all(names, true, then).await
    }

    /// Writes `values[i]` to the counter of `names[i]`, all at once, through
    /// the fences of all of them.
    pub async fn transfer_write(
        &self,
        names: &[(&str, u64)],
        values: &[String],
    ) -> Result<Access, etcd_client::Error> {
        let mut then = Vec::new();
        for ((key, token), value) in names.iter().zip(values) {
            then.push(TxnOp::put(self.fence_key(key), pad(*token), None));
            then.push(TxnOp::put(self.counter_key(key), value.as_str(), None));
        }
        self.fenced_all(names, true, then).await
    }

    /// Runs `then` if every `(key, token)` passes its fence: `fence <= token`,
    /// and for an `exclusive` access also `rfence <= token`. Accepted: the
    /// revision and the values the gets read (joined by `\n`); rejected: the
    /// highest fence in the way.
    async fn fenced_all(
        &self,
        names: &[(&str, u64)],
        exclusive: bool,
        then: Vec<TxnOp>,
    ) -> Result<Access, etcd_client::Error> {
        let mut when = Vec::new();
        let mut or_else = Vec::new();
        for (key, token) in names {
            // fence < token + 1, i.e. fence <= token
            let below = pad(token.saturating_add(1));
            when.push(Compare::value(
                self.fence_key(key),
                CompareOp::Less,
                below.clone(),
            ));
            or_else.push(TxnOp::get(self.fence_key(key), None));
            if exclusive {
                when.push(Compare::value(self.rfence_key(key), CompareOp::Less, below));
                or_else.push(TxnOp::get(self.rfence_key(key), None));
            }
        }
        let txn = Txn::new().when(when).and_then(then).or_else(or_else);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let got: Vec<String> = resp
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(g) => Some(
                    g.kvs()
                        .first()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                        .unwrap_or_default(),
                ),
                _ => None,
            })
            .collect();
        if resp.succeeded() {
            Ok(Access::Accepted {
                rev,
                value: got.join("\n"),
            })
        } else {
            let fence = got
                .iter()
                .map(|v| v.parse().unwrap_or(u64::MAX))
                .max()
                .unwrap_or(u64::MAX);
            Ok(Access::Rejected { fence })
        }
    }

    /// A semaphore's store as it is now: its state, that key's mod revision,
    /// and the counter's value.
    pub async fn permit_snapshot(
        &self,
        name: &str,
    ) -> Result<(PermitState, i64, String), etcd_client::Error> {
        let txn = Txn::new().and_then([
            TxnOp::get(self.fence_key(name), None),
            TxnOp::get(self.counter_key(name), None),
        ]);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await?;
        let mut gets = resp.op_responses().into_iter().filter_map(|op| match op {
            TxnOpResponse::Get(g) => Some(
                g.kvs()
                    .first()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(kv.value()).into_owned(),
                            kv.mod_revision(),
                        )
                    })
                    .unwrap_or_default(),
            ),
            _ => None,
        });
        let (state, mod_rev) = gets.next().unwrap_or_default();
        let (counter, _) = gets.next().unwrap_or_default();
        Ok((PermitState::parse(&state), mod_rev, counter))
    }

    /// Puts a semaphore's new `state` (and the counter's new value, if any)
    /// if its state key is still at `mod_rev`: `Ok(None)` if it changed.
    pub async fn permit_swap(
        &self,
        name: &str,
        mod_rev: i64,
        state: &PermitState,
        counter: Option<&str>,
    ) -> Result<Option<i64>, etcd_client::Error> {
        let mut then = vec![TxnOp::put(self.fence_key(name), state.to_string(), None)];
        if let Some(value) = counter {
            then.push(TxnOp::put(self.counter_key(name), value, None));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.fence_key(name),
                CompareOp::Equal,
                mod_rev,
            )])
            .and_then(then);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(resp.succeeded().then_some(rev))
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

/// A semaphore's store: the tokens of the holders inside (at most N), and the
/// floor at or below which every token is refused (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermitState {
    /// The highest token ever evicted.
    pub floor: u64,
    /// The tokens inside, ascending.
    pub inside: Vec<u64>,
}

/// What a holder does with a semaphore's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitOp {
    /// Enter if not inside yet (evicting the lowest token if full), and work.
    Work,
    /// Leave: the section's last access.
    Leave,
}

impl PermitState {
    /// Parses `"{floor} {token}..."` (empty or garbled: empty).
    pub fn parse(value: &str) -> PermitState {
        let mut nums = value
            .split_whitespace()
            .filter_map(|n| n.parse::<u64>().ok());
        let floor = nums.next().unwrap_or(0);
        let mut inside: Vec<u64> = nums.collect();
        inside.sort_unstable();
        PermitState { floor, inside }
    }

    /// The state after `op` by `token` with `permits` places, or `None` if
    /// the store refuses it.
    pub fn after(&self, token: u64, op: PermitOp, permits: usize) -> Option<PermitState> {
        let mut next = self.clone();
        if let Some(i) = self.inside.iter().position(|&t| t == token) {
            if op == PermitOp::Leave {
                next.inside.remove(i);
            }
            return Some(next);
        }
        if op == PermitOp::Leave || token <= self.floor {
            return None;
        }
        if next.inside.len() >= permits.max(1) {
            let lowest = next.inside[0];
            if token < lowest {
                return None;
            }
            next.floor = next.floor.max(lowest);
            next.inside.remove(0);
        }
        next.inside.push(token);
        next.inside.sort_unstable();
        Some(next)
    }
}

impl std::fmt::Display for PermitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.floor)?;
        for t in &self.inside {
            write!(f, " {t}")?;
        }
        Ok(())
    }
}

/// Splits a counter value `"{count} {opid}"`.
pub fn parse_counter(value: &str) -> Option<(u64, &str)> {
    let (count, opid) = value.split_once(' ')?;
    Some((count.parse().ok()?, opid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(floor: u64, inside: &[u64]) -> PermitState {
        PermitState {
            floor,
            inside: inside.to_vec(),
        }
    }

    #[test]
    fn a_semaphores_store_keeps_at_most_n_inside_and_never_readmits_an_evicted_token() {
        let s = PermitState::parse("");
        let s = s.after(10, PermitOp::Work, 2).unwrap();
        let s = s.after(20, PermitOp::Work, 2).unwrap();
        assert_eq!(s, state(0, &[10, 20]));
        // Inside already: fine, again and again.
        assert_eq!(s.after(10, PermitOp::Work, 2), Some(s.clone()));
        // Full: a lower token is refused, a higher one evicts the lowest.
        assert_eq!(s.after(5, PermitOp::Work, 2), None);
        let s = s.after(30, PermitOp::Work, 2).unwrap();
        assert_eq!(s, state(10, &[20, 30]));
        // The evicted token is refused for good, even with room.
        let s = s.after(20, PermitOp::Leave, 2).unwrap();
        assert_eq!(s, state(10, &[30]));
        assert_eq!(s.after(10, PermitOp::Work, 2), None);
        assert_eq!(s.after(10, PermitOp::Leave, 2), None);
        // A token above the floor enters a free place.
        let s = s.after(15, PermitOp::Work, 2).unwrap();
        assert_eq!(s, state(10, &[15, 30]));
        // Round trip through the key's value.
        assert_eq!(PermitState::parse(&s.to_string()), s);
    }
}
