//! [`Backend::aheads`](crate::backend::Backend::aheads) on etcd: many keys
//! of one queue answered by one read-only transaction.
//!
//! **Gathered:** two ranges, however many keys ask — the span of the asking
//! keys (keys only: each one's create revision), and the queue's keys in
//! the read's scope created before the youngest asking key, youngest first.
//! Each key's answer is then cut from the second range: the `read.limit`
//! youngest keys older than it, which is what its own
//! [`ahead`](crate::backend::Backend::ahead) range returns. etcd reads a
//! range with a create-revision bound whole before it sorts and cuts it, so
//! K ranges of one queue cost it K times the work of one: with 8 readers per
//! manager in 8 managers, one release cost etcd 128 ranges instead of 16.
//!
//! **Per key**, when a gathered range came back cut short where an answer
//! needs it (many keys between the asking ones): each key's guard and range,
//! as plain reads, [`PER_KEY_MAX`] keys to a transaction.

use etcd_client::{GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::requests::Requests;
use super::txn::{header_revision, queue_read, seen_kv};
use crate::backend::{Ahead, Read, Seen};
use crate::error::Result;

impl Requests {
    /// [`Backend::aheads`](crate::backend::Backend::aheads): gathered, or
    /// per key when the gathered ranges came back cut short.
    pub(super) async fn aheads(
        &self,
        queue: &str,
        keys: &[(String, i64)],
        read: Read,
    ) -> Result<Vec<Ahead>> {
        if keys.len() > 1 {
            let ops = gathered(queue, keys, read);
            let resp = self.txn("queue read", Txn::new().and_then(ops)).await?;
            if let Some(answers) = gathered_answers(resp, keys, read) {
                return Ok(answers);
            }
        }
        let mut answers = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(PER_KEY_MAX) {
            let ops = per_key(queue, chunk, read);
            let resp = self.txn("queue read", Txn::new().and_then(ops)).await?;
            answers.extend(per_key_answers(resp, chunk));
        }
        Ok(answers)
    }
}

/// The most keys one per-key transaction reads for: two operations each,
/// well inside etcd's default limit of 128 per transaction
/// (`--max-txn-ops`).
const PER_KEY_MAX: usize = 32;

/// How many keys the span of the asking keys may hold per asking key
/// before the gathered read gives way to the per-key one.
const SPAN_PER_KEY: usize = 4;

/// The gathered read's two ranges for `keys` (at least one).
fn gathered(queue: &str, keys: &[(String, i64)], read: Read) -> Vec<TxnOp> {
    let first = keys.iter().map(|(key, _)| key.as_str()).min().unwrap_or("");
    let last = keys.iter().map(|(key, _)| key.as_str()).max().unwrap_or("");
    let mut end = last.as_bytes().to_vec();
    end.push(0); // just past `last`
    let span = GetOptions::new()
        .with_range(end)
        .with_keys_only()
        .with_limit((keys.len() * SPAN_PER_KEY) as i64);
    let youngest = keys.iter().map(|(_, rev)| *rev).max().unwrap_or(0);
    let older = Read {
        limit: read.limit * keys.len(),
        ..read
    };
    vec![
        TxnOp::get(first, Some(span)),
        queue_read(queue, older, Some(youngest)),
    ]
}

/// Each key's answer from the [`gathered`] read's response, or `None` when a
/// range was cut short where an answer needs it.
fn gathered_answers(resp: TxnResponse, keys: &[(String, i64)], read: Read) -> Option<Vec<Ahead>> {
    let header = header_revision(resp.header());
    let mut ranges = resp.op_responses().into_iter().map(|op| match op {
        TxnOpResponse::Get(mut get) => (get.more(), get.take_kvs()),
        _ => (true, Vec::new()),
    });
    let (span_more, span) = ranges.next()?;
    let (older_more, older) = ranges.next()?;
    let span: Vec<(Vec<u8>, i64)> = span
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.create_revision()))
        .collect();
    let older: Vec<Seen> = older.iter().map(seen_kv).collect();
    let cut = Cut {
        span: &span,
        span_more,
        older: &older,
        older_more,
        limit: read.limit,
        header,
    };
    keys.iter()
        .map(|(key, rev)| cut.answer(key, *rev))
        .collect()
}

/// The gathered read's ranges, for cutting each key's answer out of them.
struct Cut<'a> {
    /// The span of the asking keys, in key order: (key, create revision).
    span: &'a [(Vec<u8>, i64)],
    span_more: bool,
    /// The queue's keys older than the youngest asking key, youngest first.
    older: &'a [Seen],
    older_more: bool,
    limit: usize,
    header: i64,
}

impl Cut<'_> {
    fn answer(&self, key: &str, rev: i64) -> Option<Ahead> {
        let found = self
            .span
            .binary_search_by(|(k, _)| k.as_slice().cmp(key.as_bytes()));
        let here = match found {
            Ok(i) => self.span[i].1 == rev,
            // Past the last key the range returned: it may have been cut.
            Err(i) if i == self.span.len() && self.span_more => return None,
            Err(_) => false,
        };
        if !here {
            return Some(Ahead {
                gone: true,
                keys: Vec::new(),
                header: self.header,
            });
        }
        let keys: Vec<Seen> = self
            .older
            .iter()
            .filter(|seen| seen.rev < rev)
            .take(self.limit)
            .cloned()
            .collect();
        // Cut short: the range ends with the oldest keys, which this
        // answer would have needed.
        if keys.len() < self.limit && self.older_more {
            return None;
        }
        Some(Ahead {
            gone: false,
            keys,
            header: self.header,
        })
    }
}

/// Per key, its own `ahead`'s two parts as plain reads (a guard holds for a
/// whole transaction): the key's create revision, and the same range.
fn per_key(queue: &str, keys: &[(String, i64)], read: Read) -> Vec<TxnOp> {
    keys.iter()
        .flat_map(|(key, rev)| {
            let own = TxnOp::get(key.as_str(), Some(GetOptions::new().with_keys_only()));
            [own, queue_read(queue, read, Some(*rev))]
        })
        .collect()
}

/// Each key's answer from the [`per_key`] read's response.
fn per_key_answers(resp: TxnResponse, keys: &[(String, i64)]) -> Vec<Ahead> {
    let header = header_revision(resp.header());
    let mut ranges = resp.op_responses().into_iter().map(|op| match op {
        TxnOpResponse::Get(mut get) => get.take_kvs(),
        _ => Vec::new(),
    });
    let mut answers = Vec::with_capacity(keys.len());
    for (_, rev) in keys {
        let own: Vec<KeyValue> = ranges.next().unwrap_or_default();
        let ahead = ranges.next().unwrap_or_default();
        let gone = own.first().is_none_or(|kv| kv.create_revision() != *rev);
        let keys = match gone {
            true => Vec::new(),
            false => ahead.iter().map(seen_kv).collect(),
        };
        answers.push(Ahead { gone, keys, header });
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::checks::{aheads_answer_as_each_alone, etcd_backend};
    use crate::backend::{Backend, Scope};
    use crate::key::Keyspace;
    use distlock_tests::Etcd;

    const QUEUE: &str = "/ns/locks/doc/";
    const READERS: Read = Read {
        scope: Scope::Exclusive,
        limit: 2,
        values: true,
    };

    fn seen(rev: i64) -> Seen {
        Seen {
            key: format!("{QUEUE}{rev:x}").into_bytes(),
            rev,
            value: Vec::new(),
        }
    }

    /// Ranges that came back whole, and the keys sought within them: each
    /// answer is cut out, the `limit` youngest keys older than the asking one.
    #[test]
    fn answers_are_cut_from_whole_ranges() {
        let span = vec![(b"a".to_vec(), 10), (b"c".to_vec(), 20)];
        let older = vec![seen(15), seen(9), seen(5), seen(2)];
        let cut = Cut {
            span: &span,
            span_more: false,
            older: &older,
            older_more: false,
            limit: 2,
            header: 30,
        };
        let revs = |a: &Ahead| a.keys.iter().map(|s| s.rev).collect::<Vec<_>>();
        let a = cut.answer("a", 10).unwrap();
        assert_eq!((a.gone, revs(&a), a.header), (false, vec![9, 5], 30));
        let c = cut.answer("c", 20).unwrap();
        assert_eq!((c.gone, revs(&c)), (false, vec![15, 9]));
        // A revision the key does not have, a key the span lacks.
        assert!(cut.answer("c", 21).unwrap().gone);
        assert!(cut.answer("b", 12).unwrap().gone);
        assert!(cut.answer("d", 25).unwrap().gone);
        // Fewer keys than the limit, and the range whole: all of them.
        let few = Cut {
            older: &older[3..],
            ..cut
        };
        assert_eq!(revs(&few.answer("a", 10).unwrap()), vec![2]);
    }

    /// A range cut short where an answer needs it gives no answer (the
    /// per-key read answers instead); where it does not, the answer stands.
    #[test]
    fn a_range_cut_short_where_an_answer_needs_it_gives_none() {
        let span = vec![(b"a".to_vec(), 10), (b"c".to_vec(), 20)];
        let older = vec![seen(15), seen(9)];
        let cut = Cut {
            span: &span,
            span_more: true,
            older: &older,
            older_more: true,
            limit: 2,
            header: 30,
        };
        // Past the last key of a cut span: unknown.
        assert!(cut.answer("d", 25).is_none());
        // Within the span: known, even though the span was cut.
        assert!(cut.answer("b", 12).unwrap().gone);
        // Two keys older than 20 in the range: its answer is whole.
        assert!(!cut.answer("c", 20).unwrap().gone);
        // Older than 10 the range holds one key, and it was cut: unknown.
        assert!(cut.answer("a", 10).is_none());
    }

    /// etcd answers each key as its own `ahead` does, whether the gathered
    /// read answers or, its ranges cut short, the per-key one: many keys of
    /// another lease between the asking readers (the span), and many
    /// writers between them (the older keys).
    #[tokio::test]
    async fn gathered_and_per_key_reads_answer_as_each_key_alone() {
        let etcd = Etcd::start().await;
        let backend = etcd_backend(&etcd).await;
        let lease = backend.grant(60).await.unwrap().id;
        let enqueue = |key: String| {
            let backend = &backend;
            async move {
                let enqueued = backend.enqueue(QUEUE, &key, lease, Vec::new(), Read::FIRST);
                let rev = enqueued.await.unwrap().rev;
                (key, rev)
            }
        };
        let mut n = 0;
        let mut reader = || {
            n += 1;
            Keyspace::reader(QUEUE, lease, n)
        };
        let first = enqueue(Keyspace::contender(QUEUE, lease)).await;
        let early = enqueue(reader()).await;
        // Ten writers (other leases' keys) after the early reader.
        let mut writers = Vec::new();
        for i in 1..=10 {
            writers.push(enqueue(Keyspace::contender(QUEUE, lease + i)).await);
        }
        let mut readers = Vec::new();
        for _ in 0..12 {
            readers.push(enqueue(reader()).await);
        }
        let asks_of = |asks: &[&(String, i64)]| -> Vec<(String, i64)> {
            asks.iter().map(|a| (*a).clone()).collect()
        };
        let cases = [
            // Together: whole ranges.
            asks_of(&readers.iter().collect::<Vec<_>>()),
            // The early reader needs keys older than ten writers, and only
            // four older keys fit in the range for two asks.
            asks_of(&[&early, &readers[0]]),
            // Two readers with ten of the same lease's keys between them.
            asks_of(&[&readers[0], &readers[11]]),
            // A key gone, one with a wrong revision, the first writer.
            asks_of(&[&first, &writers[3], &(readers[5].0.clone(), 1), &readers[6]]),
        ];
        let (gone, rev) = &readers[6];
        assert!(backend.delete(gone.as_bytes(), Some(*rev)).await.unwrap());
        for asks in cases {
            for read in [READERS, Read::FIRST] {
                aheads_answer_as_each_alone(&backend, QUEUE, &asks, read).await;
            }
        }
    }
}
