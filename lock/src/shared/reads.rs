//! Position reads shared by the readers of one manager that wait in one
//! queue and read at one time: K readers enqueued together, or woken by one
//! writer's release (one event on the watcher they share, see
//! `backend::watch_groups`) on a backend that does not read at the wake-up
//! (in memory, behind the fault layer) or whose read there failed, cost
//! one read per manager, not K. (On etcd, the readers woken by one event
//! are answered by the one read the watch stream makes for them as the
//! event arrives: [`Backend::wait_then`].)
//!
//! A reader that asks while fewer than [`OWN_READS`] reads of its lane (a
//! queue, read the same way) are in flight starts a read: it first lets the
//! tasks woken with it run (it goes to the back of the run queue once), and
//! the readers that ask meanwhile join its read, which then runs in a task
//! of its own (the readers that joined are answered even if the one that
//! gathered them goes away). A reader that asks when that many are in
//! flight waits for one to land, and every such reader is then answered by
//! one read. A read for several readers is one [`Backend::aheads`] (at most
//! [`MAX_AHEADS`] readers each).
//!
//! **Why each reader's answer is the one its own read would give.** A reader
//! asks once it was woken (or enqueued); a shared read is sent only after it
//! took its readers out of the lane, hence after each of them asked, so it is
//! as recent as a read of the reader's own would be: linearizable reads
//! taken after the event that woke it. And `aheads` answers each key with the
//! very range [`Backend::ahead`] would read for it, at the answer's
//! revision, the key's create revision checked as `ahead`'s guard checks it:
//! a key deleted (or made anew) behind its reader's back is `gone` for that
//! reader alone, and a writer enqueued between two readers is ahead of the
//! later one only. Failures: a failed shared read fails for each of its
//! readers (the same code and transience), and each retries as it would its
//! own read; a reader that went away is left out of the next read.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::backend::{Ahead, Backend, Read, MAX_AHEADS};
use crate::error::{LockError, Result};

/// How many reads of a lane may be in flight before a reader waits to share
/// the next: with two readers of a queue per manager, both read at once as
/// they would alone (waiting for the first read would put a second one
/// after it); with more, the rest share one read.
const OWN_READS: usize = 2;

/// A lane: one queue, read one way.
type LaneKey = (String, Read);

/// A reader waiting for the next read of its lane: its key, the key's create
/// revision, and where its answer goes.
struct Ask {
    key: String,
    rev: i64,
    answer: oneshot::Sender<Result<Ahead>>,
}

#[derive(Default)]
struct Lane {
    /// Reads of the lane in flight (a read being gathered included).
    flying: usize,
    /// A reader is gathering the readers woken with it for its read: those
    /// that ask now join it.
    gathering: bool,
    /// Readers that asked while a read was gathered or in flight.
    waiting: Vec<Ask>,
    /// How many of `waiting` joined the read being gathered (the first ones).
    joined: usize,
}

type Lanes = Arc<Mutex<HashMap<LaneKey, Lane>>>;

/// The shared position reads of one manager.
pub(crate) struct SharedReads {
    backend: Arc<dyn Backend>,
    lanes: Lanes,
}

impl SharedReads {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        SharedReads {
            backend,
            lanes: Lanes::default(),
        }
    }

    /// What [`Backend::ahead`] says of `key` (created at `rev`) in `queue`,
    /// from a read of its own or one shared with the other readers of the
    /// lane that ask while reads are in flight (see the module's comment).
    pub(crate) async fn ahead(
        &self,
        queue: &str,
        key: &str,
        rev: i64,
        read: Read,
    ) -> Result<Ahead> {
        let lane = (queue.to_owned(), read);
        let answer = {
            let mut lanes = lock(&self.lanes);
            let state = lanes.entry(lane.clone()).or_default();
            if state.gathering || state.flying >= OWN_READS {
                let (answer, answered) = oneshot::channel();
                let key = key.to_owned();
                state.waiting.push(Ask { key, rev, answer });
                if state.gathering {
                    state.joined += 1;
                }
                Some(answered)
            } else {
                state.flying += 1;
                state.gathering = true;
                state.joined = 0;
                None
            }
        };
        if let Some(answered) = answer {
            return answered.await.unwrap_or_else(|_| Err(unanswered()));
        }
        // Dropped while gathering, the flight serves those that joined.
        let flight = Flight {
            backend: Arc::clone(&self.backend),
            lanes: Arc::clone(&self.lanes),
            lane,
            gathering: AtomicBool::new(true),
        };
        // The readers woken with us run now, and ask.
        Requeue(false).await;
        let joined = flight.gathered();
        if joined.is_empty() {
            // Nobody else asked: our own read, as without sharing.
            return self.backend.ahead(queue, key, rev, read).await;
        }
        let mut asks = joined;
        let (answer, answered) = oneshot::channel();
        let own = Ask {
            key: key.to_owned(),
            rev,
            answer,
        };
        asks.push(own);
        // In a task of its own: should this reader go away meanwhile (its
        // acquisition dropped), the readers that joined still get answers.
        match Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(flight.answer(asks))),
            Err(_) => flight.answer(asks).await,
        }
        answered.await.unwrap_or_else(|_| Err(unanswered()))
    }
}

/// A read of a lane in flight. When it lands (or is dropped mid-way), the
/// readers that asked meanwhile get a read of their own, shared.
struct Flight {
    backend: Arc<dyn Backend>,
    lanes: Lanes,
    lane: LaneKey,
    /// Its reader is still gathering the readers woken with it.
    gathering: AtomicBool,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let runtime = Handle::try_current().ok();
        let mut batches = Vec::new();
        {
            let mut lanes = lock(&self.lanes);
            let Some(state) = lanes.get_mut(&self.lane) else {
                return;
            };
            state.flying -= 1;
            let mut waiting = if self.gathering.load(Ordering::Relaxed) {
                // Dropped while gathering: it serves those that joined.
                state.gathering = false;
                state.joined = 0;
                std::mem::take(&mut state.waiting)
            } else {
                // Another reader's gathering keeps those that joined it.
                let joined = if state.gathering { state.joined } else { 0 };
                state.waiting.split_off(joined.min(state.waiting.len()))
            };
            waiting.retain(|ask| !ask.answer.is_closed());
            // Without a runtime to read on, the asks are dropped, which fails
            // them transiently: their readers retry with reads of their own.
            if runtime.is_some() {
                while !waiting.is_empty() {
                    let rest = waiting.split_off(waiting.len().min(MAX_AHEADS));
                    batches.push(std::mem::replace(&mut waiting, rest));
                }
            }
            state.flying += batches.len();
            if state.flying == 0 {
                lanes.remove(&self.lane);
            }
        }
        // Spawned with the lanes unlocked: a runtime shutting down drops a
        // new task at once, and with it a `Flight`.
        for asks in batches {
            let flight = Flight {
                backend: Arc::clone(&self.backend),
                lanes: Arc::clone(&self.lanes),
                lane: self.lane.clone(),
                gathering: AtomicBool::new(false),
            };
            if let Some(runtime) = &runtime {
                runtime.spawn(flight.answer(asks));
            }
        }
    }
}

impl Flight {
    /// Ends the gathering: the readers that joined this read.
    fn gathered(&self) -> Vec<Ask> {
        let mut lanes = lock(&self.lanes);
        let Some(state) = lanes.get_mut(&self.lane) else {
            return Vec::new();
        };
        self.gathering.store(false, Ordering::Relaxed);
        state.gathering = false;
        let joined = std::mem::take(&mut state.joined).min(state.waiting.len());
        let mut asks: Vec<Ask> = state.waiting.drain(..joined).collect();
        asks.retain(|ask| !ask.answer.is_closed());
        asks
    }

    /// Reads answering every one of `asks` (at most [`MAX_AHEADS`] readers
    /// each, one after another), then the flight lands.
    async fn answer(self, mut asks: Vec<Ask>) {
        while !asks.is_empty() {
            let rest = asks.split_off(asks.len().min(MAX_AHEADS));
            self.read_for(std::mem::replace(&mut asks, rest)).await;
        }
    }

    /// One read answering every one of `asks`.
    async fn read_for(&self, asks: Vec<Ask>) {
        let keys: Vec<(String, i64)> = asks.iter().map(|a| (a.key.clone(), a.rev)).collect();
        let (queue, read) = (&self.lane.0, self.lane.1);
        match self.backend.aheads(queue, &keys, read).await {
            Ok(answers) if answers.len() == asks.len() => {
                for (ask, ahead) in asks.into_iter().zip(answers) {
                    let _ = ask.answer.send(Ok(ahead));
                }
            }
            Ok(_) => {
                let err = LockError::backend(
                    "a shared queue read answered for the wrong number of keys",
                    std::io::Error::other("short answer"),
                    true,
                );
                fail(asks, &err);
            }
            Err(err) => fail(asks, &err),
        }
    }
}

fn fail(asks: Vec<Ask>, err: &LockError) {
    for ask in asks {
        let _ = ask.answer.send(Err(err.duplicate("queue read")));
    }
}

fn unanswered() -> LockError {
    LockError::backend(
        "a shared queue read was dropped before it answered",
        std::io::Error::other("no answer"),
        true,
    )
}

/// Goes to the back of the run queue once: behind the readers woken with
/// this one, which were queued before it ran. `yield_now` would wait longer
/// on a busy multi-thread runtime: it defers the task until its worker next
/// polls the I/O driver, up to some 60 polls of unrelated tasks later
/// (measured: 1.6 ms with 64 readers in 8 managers, against 0.2 ms).
struct Requeue(bool);

impl Future for Requeue {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn lock(lanes: &Lanes) -> MutexGuard<'_, HashMap<LaneKey, Lane>> {
    lanes.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::checks::{aheads_answer_as_each_alone, etcd_backend};
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Scope;
    use crate::key::Keyspace;

    /// A queue of writers and readers, two of them deleted since, and a key
    /// asked about with a revision it does not have: for every read a
    /// contender makes, the one shared read answers each key as that key's
    /// own read does.
    #[tokio::test]
    async fn a_shared_read_answers_each_key_as_its_own_read() {
        shared_read_answers_each_key_as_its_own_read(&MemoryBackend::new()).await;
    }

    /// The same on etcd, whose `aheads` cuts each answer out of two ranges.
    #[tokio::test]
    async fn a_shared_read_answers_each_key_as_its_own_read_on_etcd() {
        let etcd = distlock_tests::Etcd::start().await;
        let backend = etcd_backend(&etcd).await;
        shared_read_answers_each_key_as_its_own_read(&backend).await;
    }

    async fn shared_read_answers_each_key_as_its_own_read(backend: &dyn Backend) {
        let lease = backend.grant(60).await.unwrap().id;
        let queue = "/ns/locks/doc/";
        let mut asks = Vec::new();
        for i in 0..12 {
            let key = match i % 3 {
                0 => Keyspace::contender(queue, lease + i),
                _ => Keyspace::reader(queue, lease, i as u64),
            };
            let enqueued = backend.enqueue(queue, &key, lease, Vec::new(), Read::FIRST);
            let rev = enqueued.await.unwrap().rev;
            asks.push((key, rev));
        }
        for gone in [4, 6] {
            let (key, rev) = &asks[gone];
            assert!(backend.delete(key.as_bytes(), Some(*rev)).await.unwrap());
        }
        asks.push((asks[2].0.clone(), asks[2].1 + 100));
        let reads = [
            Read::FIRST,
            Read {
                scope: Scope::Exclusive,
                limit: 2,
                values: true,
            },
            Read {
                scope: Scope::All,
                limit: 3,
                values: true,
            },
        ];
        for read in reads {
            let shared = aheads_answer_as_each_alone(backend, queue, &asks, read).await;
            let gone = shared.iter().filter(|a| a.gone).count();
            assert_eq!(gone, 3, "two deleted keys and one wrong revision");
        }
    }
}

/// On the fault layer's read counts (feature `fault-injection`, which the
/// workspace's test run turns on).
#[cfg(all(test, feature = "fault-injection"))]
mod gathering {
    use super::*;
    use crate::backend::faulty::{Fault, Faults, FaultyBackend, Op};
    use crate::backend::memory::MemoryBackend;
    use crate::error::ErrorCode;
    use crate::key::Keyspace;
    use std::time::Duration;

    const QUEUE: &str = "/ns/locks/doc/";

    /// A writer, then four readers, in memory behind a fault layer: the
    /// shared reads and the readers' keys with their revisions.
    async fn readers_behind_a_writer(faults: &Faults) -> (Arc<SharedReads>, Vec<(String, i64)>) {
        let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let lease = memory.grant(60).await.unwrap().id;
        let writer = Keyspace::contender(QUEUE, lease);
        let enqueue = |key: String| {
            let memory = Arc::clone(&memory);
            async move {
                let rev = memory.enqueue(QUEUE, &key, lease, Vec::new(), Read::FIRST);
                (key.clone(), rev.await.unwrap().rev)
            }
        };
        enqueue(writer).await;
        let mut readers = Vec::new();
        for n in 0..4 {
            readers.push(enqueue(Keyspace::reader(QUEUE, lease, n)).await);
        }
        let faulty = FaultyBackend::new(Arc::clone(&memory), faults.clone());
        (Arc::new(SharedReads::new(Arc::new(faulty))), readers)
    }

    /// Each reader asks at once, on this (one-thread) runtime: the first
    /// gathers, the others join it while it lets them run.
    async fn ask_together(
        reads: &Arc<SharedReads>,
        readers: &[(String, i64)],
    ) -> Vec<Result<Ahead>> {
        let tasks: Vec<_> = readers
            .iter()
            .cloned()
            .map(|(key, rev)| {
                let reads = Arc::clone(reads);
                tokio::spawn(async move { reads.ahead(QUEUE, &key, rev, Read::FIRST).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn readers_that_ask_together_share_one_read_each_answered_as_alone() {
        let faults = Faults::new();
        let (reads, readers) = readers_behind_a_writer(&faults).await;
        let answers = ask_together(&reads, &readers).await;
        assert_eq!(faults.calls(Op::Position), 1, "one read for the four");
        for ((key, rev), answer) in readers.iter().zip(answers) {
            let own = reads.backend.ahead(QUEUE, key, *rev, Read::FIRST).await;
            let (answer, own) = (answer.unwrap(), own.unwrap());
            assert_eq!((answer.gone, &answer.keys), (own.gone, &own.keys), "{key}");
            assert!(
                !answer.gone && !answer.keys.is_empty(),
                "the writer is ahead"
            );
        }
        // Alone, a reader reads on its own: no read to share, none waited for.
        let (key, rev) = &readers[0];
        let before = faults.calls(Op::Position);
        reads.ahead(QUEUE, key, *rev, Read::FIRST).await.unwrap();
        assert_eq!(faults.calls(Op::Position), before + 1);
        assert!(lock(&reads.lanes).is_empty(), "nothing left in flight");
    }

    #[tokio::test]
    async fn readers_that_joined_are_answered_when_the_gatherer_goes_away() {
        let faults = Faults::new();
        let (reads, readers) = readers_behind_a_writer(&faults).await;
        faults.inject(Op::Position, Fault::Delay(Duration::from_millis(200)), 1);
        let mut tasks: Vec<_> = readers
            .iter()
            .cloned()
            .map(|(key, rev)| {
                let reads = Arc::clone(&reads);
                tokio::spawn(async move { reads.ahead(QUEUE, &key, rev, Read::FIRST).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await; // gathered; the read in flight
        tasks.remove(0).abort(); // the first to ask gathered the others
        for task in tasks {
            let answer = task.await.unwrap().expect("answered");
            assert!(!answer.gone && !answer.keys.is_empty());
        }
        assert_eq!(faults.calls(Op::Position), 1, "one read, not retried");
    }

    #[tokio::test]
    async fn a_refused_shared_read_fails_each_reader_it_answers_for() {
        let faults = Faults::new();
        let (reads, readers) = readers_behind_a_writer(&faults).await;
        faults.inject(Op::Position, Fault::Refuse, 1);
        let answers = ask_together(&reads, &readers).await;
        assert_eq!(faults.calls(Op::Position), 1);
        for answer in answers {
            let err = answer.expect_err("refused");
            assert_eq!(err.code(), ErrorCode::Backend);
            assert!(!err.is_transient(), "{err}");
        }
        faults.inject(Op::Position, Fault::Fail, 1);
        for answer in ask_together(&reads, &readers).await {
            assert!(answer.expect_err("failed").is_transient());
        }
    }
}
