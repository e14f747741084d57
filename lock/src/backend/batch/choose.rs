//! Which pending writes form the next batch: the oldest ones, without two
//! creations in one lock queue that could tie (one create revision would be
//! two places, and two fencing tokens alike).

use std::collections::{HashMap, VecDeque};

use super::Member;

/// What a write may create in a lock queue, which decides the batches it
/// may join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// It only changes or deletes existing keys: it ties with nothing.
    None,
    /// It may create a reader's (shared) entry of this queue: it may tie
    /// with other readers, not with an exclusive or a permit's entry.
    Shared(Vec<u8>),
    /// It may create an entry of this queue that must not tie with any
    /// other (exclusive, a permit's): the only creation in the queue.
    Sole(Vec<u8>),
}

impl Claim {
    /// The queue a creation claims, as [`take_batch`] tells queues apart (a
    /// hash of its name: two queues that share one are taken for one, which
    /// only keeps their creations out of one batch), and whether it must be
    /// the queue's only creation.
    pub(super) fn queue(&self) -> Option<(u64, bool)> {
        let (queue, sole) = match self {
            Claim::None => return None,
            Claim::Shared(queue) => (queue, false),
            Claim::Sole(queue) => (queue, true),
        };
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(queue, &mut hasher);
        Some((std::hash::Hasher::finish(&hasher), sole))
    }
}

/// The oldest pending writes, `max` at most, without two creations in one
/// queue that could tie (see [`Claim`]); the others stay pending, in order.
///
/// Under load one queue may have hundreds of creations pending (a busy
/// semaphore's enqueues, one per batch), and this runs before every batch is
/// sent: the members are first judged by reference, a run of one queue's
/// members by one comparison, and only those before the last one taken are
/// moved (they are boxed: a pointer each). A queue is told by its hash,
/// worked out once per member.
pub(super) fn take_batch(pending: &mut VecDeque<Box<Member>>, max: usize) -> Vec<Member> {
    let taken = {
        let mut taken = Vec::new();
        // Each queue a creation of the batch claimed: whether only readers
        // did. A queue's entry never changes once made, so the last one
        // looked up answers for a run of members of its queue.
        let mut queues: HashMap<u64, bool> = HashMap::new();
        let mut last: Option<(u64, bool)> = None;
        for (i, member) in pending.iter().enumerate() {
            if taken.len() == max {
                break;
            }
            let Some((queue, sole)) = member.queue else {
                taken.push(i); // it creates nothing: it ties with nothing
                continue;
            };
            let readers_only = match last {
                Some((seen, readers_only)) if seen == queue => Some(readers_only),
                _ => queues.get(&queue).copied(),
            };
            let fits = match readers_only {
                // Claimed already: only a reader joins readers.
                Some(readers_only) => !sole && readers_only,
                None => {
                    queues.insert(queue, !sole);
                    true
                }
            };
            last = Some((queue, readers_only.unwrap_or(!sole)));
            if fits {
                taken.push(i);
            }
        }
        taken
    };
    let Some(&end) = taken.last() else {
        return Vec::new();
    };
    let mut batch = Vec::with_capacity(taken.len());
    let mut skipped = Vec::with_capacity(end + 1 - taken.len());
    let mut next = taken.into_iter().peekable();
    for (i, member) in pending.drain(..=end).enumerate() {
        if next.next_if_eq(&i).is_some() {
            batch.push(*member);
        } else {
            skipped.push(member);
        }
    }
    for member in skipped.into_iter().rev() {
        pending.push_front(member);
    }
    batch
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::backend::batch::{Write, MAX_BATCH};
    use etcd_client::Txn;

    fn claimed(claim: Claim) -> Box<Member> {
        let reply = oneshot::channel().0;
        Box::new(Member::new("test", claim, Write::Txn(Txn::new()), reply))
    }

    fn member(queue: &str) -> Box<Member> {
        claimed(Claim::Sole(queue.as_bytes().to_vec()))
    }

    /// Each member as `queue` (a sole creation of queue `a`, `b` or `c`),
    /// `queue:r` (a reader's), or `-` (no creation).
    fn shown<'a>(ms: impl IntoIterator<Item = &'a Member>) -> Vec<String> {
        let name = |id: u64| {
            ["a", "b", "c"]
                .into_iter()
                .find(|q| Claim::Sole(q.as_bytes().to_vec()).queue() == Some((id, true)))
                .expect("a test queue")
        };
        ms.into_iter()
            .map(|m| match m.queue {
                None => "-".to_owned(),
                Some((id, false)) => format!("{}:r", name(id)),
                Some((id, true)) => name(id).to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_batch_takes_one_sole_creation_per_queue_in_order() {
        let mut pending: VecDeque<Box<Member>> = ["a", "b", "a", "c", "b", "a"]
            .into_iter()
            .map(member)
            .collect();
        let first = take_batch(&mut pending, MAX_BATCH);
        assert_eq!(shown(&first), ["a", "b", "c"]);
        let second = take_batch(&mut pending, MAX_BATCH);
        assert_eq!(shown(&second), ["a", "b"]);
        let third = take_batch(&mut pending, MAX_BATCH);
        assert_eq!(shown(&third), ["a"]);
        assert!(pending.is_empty());
    }

    /// Readers' creations tie only with each other, and writes that create
    /// nothing tie with nothing: they join the first batch.
    #[test]
    fn readers_share_a_batch_and_plain_writes_join_any() {
        let q = |name: &str| name.as_bytes().to_vec();
        let mut pending: VecDeque<Box<Member>> = [
            Claim::Shared(q("a")),
            Claim::Sole(q("a")),
            Claim::None,
            Claim::Shared(q("a")),
            Claim::Sole(q("b")),
            Claim::Shared(q("b")),
            Claim::None,
        ]
        .into_iter()
        .map(claimed)
        .collect();
        let first = take_batch(&mut pending, MAX_BATCH);
        assert_eq!(shown(&first), ["a:r", "-", "a:r", "b", "-"]);
        let second = take_batch(&mut pending, MAX_BATCH);
        assert_eq!(shown(&second), ["a", "b:r"]);
        assert!(pending.is_empty());
    }

    /// The batch a plain reading of the rule takes: each member in order
    /// joins if the batch has room and its claim allows (the indices taken).
    fn batch_by_the_rule(claims: &[Claim], max: usize) -> Vec<usize> {
        let mut queues: HashMap<Vec<u8>, bool> = HashMap::new();
        let mut taken = Vec::new();
        for (i, claim) in claims.iter().enumerate() {
            let fits = taken.len() < max
                && match claim {
                    Claim::None => true,
                    Claim::Shared(q) => *queues.entry(q.clone()).or_insert(true),
                    Claim::Sole(q) => {
                        !queues.contains_key(q) && queues.insert(q.clone(), false).is_none()
                    }
                };
            if fits {
                taken.push(i);
            }
        }
        taken
    }

    /// Mixed runs of creations in few queues, readers and plain writes, with
    /// small and large limits: every batch is the one the rule takes, and
    /// what stays keeps its order.
    #[test]
    fn batches_follow_the_rule_in_order() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let len = 1 + next(60) as usize;
            let claims: Vec<Claim> = (0..len)
                .map(|_| {
                    let queue = format!("q{}", next(3)).into_bytes();
                    match next(4) {
                        0 => Claim::None,
                        1 => Claim::Shared(queue),
                        _ => Claim::Sole(queue),
                    }
                })
                .collect();
            let max = [1, 2, 5, MAX_BATCH][next(4) as usize];
            let mut pending: VecDeque<Box<Member>> = claims
                .iter()
                .enumerate()
                .map(|(i, claim)| numbered(claim.clone(), i))
                .collect();
            // The original places of the members still pending.
            let mut left: Vec<usize> = (0..len).collect();
            while !pending.is_empty() {
                let still: Vec<Claim> = left.iter().map(|&i| claims[i].clone()).collect();
                let want: Vec<usize> = batch_by_the_rule(&still, max)
                    .into_iter()
                    .map(|j| left[j])
                    .collect();
                let batch = take_batch(&mut pending, max);
                assert!(!want.is_empty(), "the rule takes at least the oldest write");
                assert_eq!(places(&batch), want, "{claims:?} max {max}");
                left.retain(|i| !want.contains(i));
                assert_eq!(
                    places(pending.iter().map(|m| &**m)),
                    left,
                    "what stays keeps its order"
                );
            }
        }
    }

    /// A member with `claim` that knows its place `i` in a test's order.
    fn numbered(claim: Claim, i: usize) -> Box<Member> {
        let mut member = claimed(claim);
        member.write = Write::Delete(i.to_string().into_bytes());
        member
    }

    /// The places of [`numbered`] members.
    fn places<'a>(ms: impl IntoIterator<Item = &'a Member>) -> Vec<usize> {
        ms.into_iter()
            .map(|m| match &m.write {
                Write::Delete(key) => String::from_utf8_lossy(key).parse().unwrap(),
                Write::Txn(_) => unreachable!("numbered members only"),
            })
            .collect()
    }

    #[test]
    fn a_batch_is_bounded() {
        let mut pending: VecDeque<Box<Member>> =
            (0..MAX_BATCH + 5).map(|i| member(&i.to_string())).collect();
        assert_eq!(take_batch(&mut pending, MAX_BATCH).len(), MAX_BATCH);
        assert_eq!(pending.len(), 5);
    }
}
