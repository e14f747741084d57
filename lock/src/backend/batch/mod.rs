//! Group commit: a manager's concurrent writes (enqueue transactions and
//! deletes) go to etcd as one transaction per round trip.
//!
//! Each write keeps its own compare: the batch is an unconditional outer
//! transaction whose operations are the members' transactions, nested (etcd
//! ≥ 3.3), and their plain deletes. etcd applies it as one Raft proposal, so
//! every key it creates shares one create revision. That is why a batch
//! never holds two creations that must not tie ([`Claim`]): two contenders of
//! one lock created in one batch would tie for the same place and the same
//! fencing token — except two readers, which share both anyway. A creation
//! whose queue is taken waits for the next batch. Writes that only change or
//! delete existing keys tie with nothing and join any batch: they were
//! concurrent with the batch's other writes, so any order etcd applies them
//! in is one they could have had alone. While [`MAX_IN_FLIGHT`] batches are
//! on their way, new writes queue up and form the next, larger batch: under
//! light load each write goes alone, straight from its caller, as it would
//! without batching.
//!
//! If etcd refuses a batch as a whole (a member names a lease that is gone,
//! touches a key its user may not, or the batch is too large), each member is
//! sent on its own, so that only the member at fault sees the error — except
//! a batch with more operations than the server's `--max-txn-ops` allows
//! (set below its default): that one is sent in halves, and the batcher's
//! later batches are no larger than the half.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Code;

mod choose;

use choose::take_batch;
pub(crate) use choose::Claim;

use super::errors::map_error;
use super::terms::Terms;
use crate::error::{LockError, Result};

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// The most compares or operations in one member's transaction: the
/// enqueue's put and range read (a fenced delete has one of each).
const MAX_MEMBER_OPS: usize = 2;

/// At most this many members in one batch (fewer once a server refused a
/// batch as too large). etcd counts a nested
/// transaction's operations against its parent's: it refuses the batch
/// ("too many operations in txn request") unless the batch's members plus
/// the largest member's compares or operations fit in `--max-txn-ops`. A
/// refused batch is sent member by member, so a batch of 128 enqueues
/// would cost 128 proposals instead of one.
const MAX_BATCH: usize = MAX_TXN_OPS - MAX_MEMBER_OPS;

/// At most this many batches on their way at once. One: etcd applies
/// proposals one after another, and its CPU, not the round trip, bounds
/// throughput under load, so the fewer and larger the batches the better.
/// Measured with the scale bench (4 managers, 64 tasks, distinct keys, one
/// etcd on 2 shared cores): 1.25-1.4x etcd's lock RPC with 4 in flight,
/// ~1.5x with 2, ~2x with 1; one manager alone stays at 2.2-2.5x.
const MAX_IN_FLIGHT: usize = 1;

/// One write.
pub(crate) enum Write {
    /// A transaction (its own compares).
    Txn(Txn),
    /// A plain delete of one key: etcd applies it faster than a transaction.
    Delete(Vec<u8>),
}

/// What a write did.
pub(crate) enum Applied {
    /// The transaction's response.
    Txn(TxnResponse),
    /// How many keys the delete removed.
    Deleted(i64),
}

/// A write's answer, with the store revision after it.
pub(crate) type Answer = Result<(Applied, i64)>;

impl Write {
    fn op(&self) -> TxnOp {
        match self {
            Write::Txn(txn) => TxnOp::txn(txn.clone()),
            Write::Delete(key) => TxnOp::delete(key.as_slice(), None),
        }
    }
}

struct Member {
    what: &'static str,
    /// What it may create: [`Claim::queue`], worked out once.
    queue: Option<(u64, bool)>,
    write: Write,
    reply: oneshot::Sender<Answer>,
}

impl Member {
    fn new(what: &'static str, claim: Claim, write: Write, reply: oneshot::Sender<Answer>) -> Self {
        Member {
            what,
            queue: claim.queue(),
            write,
            reply,
        }
    }
}

/// Coalesces one etcd client's write transactions.
pub(crate) struct Batcher {
    /// The batching task's inbox, started on first use and again on the
    /// current runtime when the runtime that ran it has shut down.
    task: Mutex<Option<Inbox>>,
    /// Room on the wire: one permit per batch (or lone write) in flight.
    slots: Arc<Semaphore>,
    /// The most members in one batch (see [`Batching::limit`]).
    limit: Arc<AtomicUsize>,
    client: KvClient,
    request_timeout: Duration,
    terms: Arc<Terms>,
}

/// The live batching task: where writes go, and how many wait there.
#[derive(Clone)]
struct Inbox {
    queue: mpsc::UnboundedSender<Member>,
    /// Writes queued for a batch and not yet sent.
    queued: Arc<AtomicUsize>,
}

impl Batcher {
    pub(crate) fn new(client: &Client, request_timeout: Duration, terms: Arc<Terms>) -> Self {
        Batcher {
            task: Mutex::new(None),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            limit: Arc::new(AtomicUsize::new(MAX_BATCH)),
            client: client.kv_client(),
            request_timeout,
            terms,
        }
    }

    /// The live batching task's inbox, starting the task (on the current
    /// runtime) if there is none: a task whose runtime shut down is gone,
    /// and its queue closed.
    fn inbox(&self) -> Inbox {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = task.as_ref().filter(|t| !t.queue.is_closed()) {
            return live.clone();
        }
        let (queue, incoming) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let batching = Batching {
            client: self.client.clone(),
            request_timeout: self.request_timeout,
            limit: Arc::clone(&self.limit),
            queued: Arc::clone(&queued),
            slots: Arc::clone(&self.slots),
            terms: Arc::clone(&self.terms),
        };
        tokio::spawn(batching.run(incoming));
        let inbox = Inbox { queue, queued };
        *task = Some(inbox.clone());
        inbox
    }

    /// Runs `txn`, a write that may create what `claim` says, in a batch:
    /// its response and the store revision after it.
    pub(crate) async fn txn(
        &self,
        what: &'static str,
        claim: Claim,
        txn: Txn,
    ) -> Result<(TxnResponse, i64)> {
        match self.write(what, claim, Write::Txn(txn)).await? {
            (Applied::Txn(resp), revision) => Ok((resp, revision)),
            (Applied::Deleted(_), _) => Err(malformed(what)),
        }
    }

    /// Deletes `key`, in a batch: how many keys it removed (0 or 1).
    pub(crate) async fn delete(&self, what: &'static str, key: &[u8]) -> Result<i64> {
        match self
            .write(what, Claim::None, Write::Delete(key.to_vec()))
            .await?
        {
            (Applied::Deleted(deleted), _) => Ok(deleted),
            (Applied::Txn(_), _) => Err(malformed(what)),
        }
    }

    /// Runs `write`, which may create what `claim` says, in a batch, and
    /// returns what it did and the store revision after it; errors as
    /// [`map_error`] maps them.
    async fn write(&self, what: &'static str, claim: Claim, write: Write) -> Answer {
        let inbox = self.inbox();
        // Nothing waiting and room on the wire: no batch to wait for.
        if inbox.queued.load(Ordering::SeqCst) == 0 {
            if let Ok(_slot) = self.slots.try_acquire() {
                return alone(
                    self.client.clone(),
                    self.request_timeout,
                    &self.terms,
                    what,
                    write,
                )
                .await;
            }
        }
        inbox.queued.fetch_add(1, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        let member = Member::new(what, claim, write, reply);
        if inbox.queue.send(member).is_err() {
            inbox.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// An answer of the wrong kind (a bug, in etcd or here).
fn malformed(what: &str) -> LockError {
    LockError::backend(
        format!("etcd {what}: malformed answer"),
        std::io::Error::other("an answer of the wrong kind"),
        false,
    )
}

fn gone() -> LockError {
    LockError::backend(
        "etcd write batcher stopped",
        std::io::Error::other("batcher gone"),
        true,
    )
}

/// The batching task's share of the batcher.
struct Batching {
    client: KvClient,
    request_timeout: Duration,
    /// The most members in one batch: [`MAX_BATCH`], or less after a
    /// refusal for too many operations.
    limit: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
    slots: Arc<Semaphore>,
    terms: Arc<Terms>,
}

impl Batching {
    async fn run(self, mut incoming: mpsc::UnboundedReceiver<Member>) {
        let mut pending: VecDeque<Box<Member>> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match incoming.recv().await {
                    Some(member) => pending.push_back(Box::new(member)),
                    None => return,
                }
            }
            // Wait for room on the wire; writes arriving meanwhile join this batch.
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                return;
            };
            while let Ok(member) = incoming.try_recv() {
                pending.push_back(Box::new(member));
            }
            let batch = take_batch(&mut pending, self.limit.load(Ordering::SeqCst));
            self.queued.fetch_sub(batch.len(), Ordering::SeqCst);
            let (client, timeout) = (self.client.clone(), self.request_timeout);
            let (terms, limit) = (Arc::clone(&self.terms), Arc::clone(&self.limit));
            tokio::spawn(async move {
                send(client, timeout, &terms, &limit, batch).await;
                drop(slot);
            });
        }
    }
}

/// Sends `batch` as one transaction (a lone member on its own) and answers
/// each member. A batch refused as too large goes in halves, and `limit`
/// drops to the half for later batches.
async fn send(
    client: KvClient,
    request_timeout: Duration,
    terms: &Arc<Terms>,
    limit: &AtomicUsize,
    mut batch: Vec<Member>,
) {
    if batch.len() == 1 {
        let member = batch.pop().expect("one member");
        let answer = alone(client, request_timeout, terms, member.what, member.write).await;
        let _ = member.reply.send(answer);
        return;
    }
    let outer = Txn::new().and_then(batch.iter().map(|m| m.write.op()).collect::<Vec<_>>());
    let sent = tokio::time::timeout(request_timeout, client.clone().txn(outer)).await;
    match sent {
        Ok(Ok(resp)) => {
            terms.observe(resp.header());
            let revision = resp.header().map_or(0, |h| h.revision());
            let mut inner = resp.op_responses().into_iter();
            for member in batch {
                let answer = match (&member.write, inner.next()) {
                    (Write::Txn(_), Some(TxnOpResponse::Txn(r))) => Ok((Applied::Txn(r), revision)),
                    (Write::Delete(_), Some(TxnOpResponse::Delete(r))) => {
                        Ok((Applied::Deleted(r.deleted()), revision))
                    }
                    _ => Err(malformed(member.what)),
                };
                let _ = member.reply.send(answer);
            }
        }
        // More operations than this server's --max-txn-ops: no member is at
        // fault. Halves, one after the other (no two creations of a batch
        // tie, and its other writes were concurrent: their order does not
        // matter).
        Ok(Err(etcd_client::Error::GRpcStatus(status))) if too_many_ops(&status) => {
            let half = batch.len().div_ceil(2);
            limit.fetch_min(half, Ordering::SeqCst);
            let rest = batch.split_off(half);
            for part in [batch, rest] {
                let client = client.clone();
                Box::pin(send(client, request_timeout, terms, limit, part)).await;
            }
        }
        // Refused as a whole because of one member: send each on its own.
        Ok(Err(etcd_client::Error::GRpcStatus(status)))
            if matches!(
                status.code(),
                Code::NotFound | Code::InvalidArgument | Code::PermissionDenied
            ) =>
        {
            let mut each = tokio::task::JoinSet::new();
            for member in batch {
                let (client, terms) = (client.clone(), Arc::clone(terms));
                each.spawn(async move {
                    let answer =
                        alone(client, request_timeout, &terms, member.what, member.write).await;
                    let _ = member.reply.send(answer);
                });
            }
            while each.join_next().await.is_some() {}
        }
        Ok(Err(err)) => {
            let err = map_error("batched write", err);
            for member in batch {
                let _ = member.reply.send(Err(err.duplicate(member.what)));
            }
        }
        Err(_elapsed) => {
            for member in batch {
                let _ = member.reply.send(Err(LockError::backend(
                    format!(
                        "etcd {} got no answer within {request_timeout:?}",
                        member.what
                    ),
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                    true,
                )));
            }
        }
    }
}

/// Whether etcd refused a transaction for having more operations than its
/// `--max-txn-ops` (nested transactions' operations count against their
/// parent's).
fn too_many_ops(status: &tonic::Status) -> bool {
    status.code() == Code::InvalidArgument && status.message().contains("too many operations")
}

/// One write on its own.
async fn alone(
    mut client: KvClient,
    request_timeout: Duration,
    terms: &Terms,
    what: &str,
    write: Write,
) -> Answer {
    let request = async move {
        match write {
            Write::Txn(txn) => {
                let resp = client.txn(txn).await?;
                Ok((resp.header().cloned(), Applied::Txn(resp)))
            }
            Write::Delete(key) => {
                let resp = client.delete(key, None).await?;
                Ok((resp.header().cloned(), Applied::Deleted(resp.deleted())))
            }
        }
    };
    match tokio::time::timeout(request_timeout, request).await {
        Ok(Ok((header, applied))) => {
            terms.observe(header.as_ref());
            Ok((applied, header.map_or(0, |h| h.revision())))
        }
        Ok(Err(err)) => Err(map_error(what, err)),
        Err(elapsed) => Err(LockError::backend(
            format!("etcd {what} got no answer within {request_timeout:?}"),
            elapsed,
            true,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// `n` enqueue-shaped transactions (a compare, a put and a range each)
    /// on distinct queues under `ns`, and their answers.
    fn enqueues(ns: &str, n: usize) -> (Vec<Member>, Vec<oneshot::Receiver<Answer>>) {
        use etcd_client::{Compare, CompareOp, GetOptions, PutOptions};
        (0..n)
            .map(|i| {
                let queue = format!("{ns}/locks/{i}/");
                let key = format!("{queue}1");
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([
                        TxnOp::put(key.as_str(), "v", Some(PutOptions::new())),
                        TxnOp::get(queue.as_str(), Some(GetOptions::new().with_prefix())),
                    ]);
                let (reply, answer) = oneshot::channel();
                let write = Write::Txn(txn);
                let what = "test";
                (
                    Member::new(what, Claim::Sole(queue.into_bytes()), write, reply),
                    answer,
                )
            })
            .unzip()
    }

    /// Sends `batch` to `etcd`; the distinct revisions its members were
    /// applied at (one per transaction), and the batch limit after it.
    async fn send_enqueues(etcd: &distlock_tests::Etcd, n: usize) -> (HashSet<i64>, usize) {
        let client = Client::connect(etcd.endpoints(), None).await.unwrap();
        let (batch, answers) = enqueues(&etcd.namespace(), n);
        let limit = AtomicUsize::new(MAX_BATCH);
        let timeout = Duration::from_secs(5);
        let terms = Arc::new(Terms::new(timeout));
        send(client.kv_client(), timeout, &terms, &limit, batch).await;
        let mut revisions = HashSet::new();
        for answer in answers {
            match answer.await.unwrap() {
                Ok((Applied::Txn(resp), revision)) if resp.succeeded() => {
                    revisions.insert(revision);
                }
                Ok(_) => panic!("an enqueue of the batch did not apply"),
                Err(err) => panic!("an enqueue of the batch failed: {err}"),
            }
        }
        (revisions, limit.load(Ordering::SeqCst))
    }

    /// A full batch of enqueues is accepted by etcd (default settings) as
    /// one transaction: every member answers at one revision (one proposal).
    #[tokio::test]
    async fn etcd_accepts_a_full_batch_as_one_transaction() {
        let etcd = distlock_tests::Etcd::start().await;
        let (revisions, limit) = send_enqueues(&etcd, MAX_BATCH).await;
        assert_eq!(revisions.len(), 1, "sent as one transaction");
        assert_eq!(limit, MAX_BATCH);
    }

    /// A server with a lower `--max-txn-ops` refuses a full batch: it goes
    /// in halves (not one by one), and later batches are smaller.
    #[tokio::test]
    async fn a_batch_too_large_for_the_server_goes_in_halves() {
        let settings = distlock_tests::EtcdSettings::default()
            .arg("--max-txn-ops")
            .arg("16");
        let etcd = distlock_tests::Etcd::start_with(settings).await;
        let (revisions, limit) = send_enqueues(&etcd, MAX_BATCH).await;
        // 126 -> 63 -> 32 -> 16 -> 8 members, which fit with their 2 ops.
        assert_eq!(limit, 8);
        assert_eq!(revisions.len(), MAX_BATCH.div_ceil(8), "batches of 8");
    }
}
