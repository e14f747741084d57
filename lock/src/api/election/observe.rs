//! Observing an election: one watch per election per manager, shared by every
//! observer ([`LeaderChanges`]).
//!
//! The observer task reads every candidate once (keys, create revisions,
//! values, and the revision read at), then applies the watch's events in
//! revision order — a put adds a candidate or changes its value, a delete
//! removes it — and after each revision's events derives the leader (the
//! lowest create revision). It publishes only when the leader or its value
//! changed, so observers see every change once and no change that did not
//! happen. A broken watch resumes after the last revision it reported; one
//! that fell behind a compaction reads every candidate again (and publishes
//! the leader then, if it changed: etcd no longer has what came between).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};
use tracing::debug;

use super::super::lock::Lock;
use super::Leader;
use crate::backend::{Backend, Change, Changes, Entry};
use crate::error::{ErrorCode, LockError, Result};

/// How many published changes an observer may fall behind before it is
/// told so and resumes at the current leader.
const BACKLOG: usize = 1024;

/// The pause before the task tries again after a failed read or watch.
const RETRY: Duration = Duration::from_millis(200);

/// What the task publishes.
#[derive(Debug, Clone)]
enum Observed {
    Leader(Option<Leader>),
    /// The watch or read failed (transient: the task goes on).
    Failed(ErrorCode, String),
}

/// A published item and its sequence number (increasing).
type Published = (u64, Observed);

/// One election's shared watch.
#[derive(Debug)]
struct Observer {
    tx: broadcast::Sender<Published>,
    /// The latest leader published, with its sequence number; `None` until
    /// the first read.
    current: Mutex<Option<(u64, Option<Leader>)>>,
    /// Cancelled when the last observer goes: the task ends.
    stop: CancellationToken,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Observer {
    fn current(&self) -> Option<(u64, Option<Leader>)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The shared watches of one manager's elections, by election queue.
#[derive(Default, Debug)]
pub(crate) struct Observers {
    by_queue: Mutex<HashMap<String, Weak<Observer>>>,
}

impl Observers {
    /// A stream of `election`'s leader changes, on its shared watch (started
    /// now if it has none).
    pub(crate) fn observe(&self, election: &Lock) -> LeaderChanges {
        let observer = {
            let mut by_queue = self.by_queue.lock().unwrap_or_else(|e| e.into_inner());
            by_queue.retain(|_, o| o.strong_count() > 0);
            match by_queue.get(&election.queue).and_then(Weak::upgrade) {
                Some(live) => live,
                None => {
                    let (tx, _) = broadcast::channel(BACKLOG);
                    let observer = Arc::new(Observer {
                        tx,
                        current: Mutex::new(None),
                        stop: CancellationToken::new(),
                    });
                    let task = Task {
                        observer: Arc::downgrade(&observer),
                        stop: observer.stop.clone(),
                        backend: Arc::clone(&election.shared.backend),
                        queue: election.queue.clone(),
                        seq: 0,
                        last: None,
                    };
                    tokio::spawn(task.run());
                    by_queue.insert(election.queue.clone(), Arc::downgrade(&observer));
                    observer
                }
            }
        };
        // Subscribe first, then read the current leader: a change published
        // in between comes twice, and the sequence numbers drop the repeat.
        let rx = observer.tx.subscribe();
        let first = observer.current();
        LeaderChanges {
            seen: 0,
            first,
            next: ReusableBoxFuture::new(recv(rx)),
            observer,
        }
    }
}

async fn recv(
    mut rx: broadcast::Receiver<Published>,
) -> (
    std::result::Result<Published, broadcast::error::RecvError>,
    broadcast::Receiver<Published>,
) {
    let item = rx.recv().await;
    (item, rx)
}

/// The leader changes of an election, from [`Election::observe`](crate::Election::observe):
/// the current leader first, then each change once, in order. Use
/// [`next`](LeaderChanges::next), or it as a `futures_core::Stream`.
///
/// ```
/// # use distlock::{LockManager, LockOptions};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let e = manager.new_election("scheduler", LockOptions::default())?;
/// let mut changes = e.observe();
/// assert_eq!(changes.next().await.unwrap()?, None);
/// let leading = manager.peer().new_election("scheduler", LockOptions::default())?.campaign("b").await?;
/// assert_eq!(changes.next().await.unwrap()?.unwrap().value, b"b");
/// leading.resign().await?;
/// assert_eq!(changes.next().await.unwrap()?, None);
/// # Ok(()) }
/// ```
pub struct LeaderChanges {
    observer: Arc<Observer>,
    /// The current leader at subscription, yielded first.
    first: Option<(u64, Option<Leader>)>,
    /// The sequence number of the last item yielded.
    seen: u64,
    next: ReusableBoxFuture<
        'static,
        (
            std::result::Result<Published, broadcast::error::RecvError>,
            broadcast::Receiver<Published>,
        ),
    >,
}

impl std::fmt::Debug for LeaderChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderChanges")
            .field("seen", &self.seen)
            .finish()
    }
}

impl LeaderChanges {
    /// The next change (the current leader first); `None` once the manager
    /// is gone.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("s", LockOptions::default())?;
    /// let mut changes = e.observe();
    /// while let Some(change) = changes.next().await {
    ///     match change? {
    ///         Some(leader) => println!("leader: {}", String::from_utf8_lossy(&leader.value)),
    ///         None => println!("no leader"),
    ///     }
    ///     # break;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Option<Result<Option<Leader>>> {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Option<Leader>>>> {
        if let Some((seq, leader)) = self.first.take() {
            self.seen = seq;
            return Poll::Ready(Some(Ok(leader)));
        }
        loop {
            let (item, rx) = std::task::ready!(self.next.poll(cx));
            self.next.set(recv(rx));
            match item {
                Ok((seq, _)) if seq <= self.seen => continue,
                Ok((seq, Observed::Leader(leader))) => {
                    self.seen = seq;
                    return Poll::Ready(Some(Ok(leader)));
                }
                Ok((seq, Observed::Failed(code, message))) => {
                    self.seen = seq;
                    return Poll::Ready(Some(Err(LockError::new(code, message))));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.first = self.observer.current();
                    return Poll::Ready(Some(Err(LockError::new(
                        ErrorCode::Backend,
                        format!(
                            "this observer fell {missed} changes behind; it resumes at the \
                             current leader"
                        ),
                    ))));
                }
                Err(broadcast::error::RecvError::Closed) => return Poll::Ready(None),
            }
        }
    }
}

impl futures_core::Stream for LeaderChanges {
    type Item = Result<Option<Leader>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_change(cx)
    }
}

/// The task behind one [`Observer`].
struct Task {
    observer: Weak<Observer>,
    stop: CancellationToken,
    backend: Arc<dyn Backend>,
    queue: String,
    seq: u64,
    /// The leader last published.
    last: Option<Option<Leader>>,
}

/// The candidates of an election: `(create revision, key)` → value.
type Candidates = BTreeMap<(i64, Vec<u8>), Vec<u8>>;

impl Task {
    async fn run(mut self) {
        let mut candidates = Candidates::new();
        // The revision to watch from; `None`: read every candidate again.
        let mut from: Option<i64> = None;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let start = match from {
                Some(start) => start,
                None => match self.backend.list(&self.queue).await {
                    Ok(listing) => {
                        candidates = listing.entries.into_iter().map(candidate).collect();
                        self.publish_leader(&candidates);
                        listing.header + 1
                    }
                    Err(err) => {
                        self.failed(&err);
                        self.pause().await;
                        continue;
                    }
                },
            };
            from = Some(start);
            let mut watch = match self.backend.watch_prefix(&self.queue, start, true).await {
                Ok(watch) => watch,
                Err(err) => {
                    self.failed(&err);
                    self.pause().await;
                    continue;
                }
            };
            loop {
                let report = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    report = watch.recv() => report,
                };
                match report {
                    Some(Ok(Changes::Changed { changes, through })) => {
                        self.apply(&mut candidates, changes);
                        from = Some(through + 1);
                    }
                    Some(Ok(Changes::Compacted)) => {
                        debug!(queue = %self.queue, "election watch compacted; reading again");
                        from = None;
                        break;
                    }
                    Some(Err(err)) => {
                        self.failed(&err);
                        self.pause().await;
                        break;
                    }
                    None => break, // broken: resume from `from`
                }
            }
        }
    }

    /// Applies changes in revision order, publishing the leader after each
    /// revision's changes.
    fn apply(&mut self, candidates: &mut Candidates, changes: Vec<Change>) {
        let mut changes = changes.into_iter().peekable();
        while let Some(change) = changes.next() {
            match change.value {
                Some(value) => {
                    candidates.insert((change.create_rev, change.key), value);
                }
                None => candidates.retain(|(_, key), _| *key != change.key),
            }
            if changes.peek().is_none_or(|next| next.rev != change.rev) {
                self.publish_leader(candidates);
            }
        }
    }

    fn publish_leader(&mut self, candidates: &Candidates) {
        let leader = candidates.iter().next().map(|((rev, _), value)| Leader {
            value: value.clone(),
            fencing_token: *rev as u64,
        });
        if self.last.as_ref() == Some(&leader) {
            return;
        }
        self.last = Some(leader.clone());
        let Some(observer) = self.observer.upgrade() else {
            return;
        };
        self.seq += 1;
        *observer.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((self.seq, leader.clone()));
        let _ = observer.tx.send((self.seq, Observed::Leader(leader)));
    }

    fn failed(&mut self, err: &LockError) {
        debug!(queue = %self.queue, %err, "election watch failed; retrying");
        let Some(observer) = self.observer.upgrade() else {
            return;
        };
        self.seq += 1;
        let item = Observed::Failed(
            err.code(),
            format!("observing the election: {}", err.message()),
        );
        let _ = observer.tx.send((self.seq, item));
    }

    async fn pause(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// A listed key as a candidate.
fn candidate(entry: Entry) -> ((i64, Vec<u8>), Vec<u8>) {
    ((entry.create_rev, entry.key), entry.value)
}
