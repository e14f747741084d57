//! The pieces of etcd transactions the etcd backend builds and reads: a
//! read of a queue's keys, the keys a response saw, what an enqueue claims.

use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnResponse};

use crate::backend::batch::Claim;
use crate::backend::{Read, Scope, Seen};
use crate::key::Keyspace;

pub(super) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

/// The `i`-th response of a transaction, which must be a range.
pub(super) fn range_kvs(resp: &TxnResponse, i: usize) -> Vec<KeyValue> {
    match resp.op_responses().into_iter().nth(i) {
        Some(TxnOpResponse::Get(mut get)) => get.take_kvs(),
        _ => Vec::new(),
    }
}

/// A read of `queue`'s keys in `read`'s scope, oldest first or (before
/// revision `before`) youngest first.
pub(super) fn queue_read(queue: &str, read: Read, before: Option<i64>) -> TxnOp {
    let mut options = GetOptions::new();
    let start = match read.scope {
        Scope::All => {
            options = options.with_prefix();
            queue.to_owned()
        }
        Scope::Exclusive => {
            let (start, end) = Keyspace::exclusive_range(queue);
            options = options.with_range(end);
            start
        }
    };
    options = match before {
        Some(rev) => options
            .with_max_create_revision(rev - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend),
        None => options.with_sort(SortTarget::Create, SortOrder::Ascend),
    };
    options = options.with_limit(read.limit as i64);
    if !read.values {
        options = options.with_keys_only();
    }
    TxnOp::get(start, Some(options))
}

/// What an enqueue of `key` in `queue` may create, for batching: a reader's
/// entry (`{queue}r/..`, see `Keyspace::reader`) may tie with other
/// readers; any other must not tie.
pub(super) fn claim(queue: &str, key: &str) -> Claim {
    let queue_bytes = queue.as_bytes().to_vec();
    if Keyspace::is_reader(queue, key) {
        Claim::Shared(queue_bytes)
    } else {
        Claim::Sole(queue_bytes)
    }
}

/// The keys a range response of a transaction holds.
pub(super) fn seen(resp: &TxnResponse, i: usize) -> Vec<Seen> {
    range_kvs(resp, i).iter().map(seen_kv).collect()
}

pub(super) fn seen_kv(kv: &KeyValue) -> Seen {
    Seen {
        key: kv.key().to_vec(),
        rev: kv.create_revision(),
        value: kv.value().to_vec(),
    }
}
