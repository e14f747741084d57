//! Position reads shared by the readers of one manager that wait in one
//! queue: K readers woken by one writer's release cost three reads per
//! manager (two of their own, then one shared), not K.
//!
//! A read of a lane (a queue, read the same way) goes out at once while
//! fewer than [`OWN_READS`] are in flight; a reader that asks when that many
//! are in flight waits for one to land, and every such reader is then
//! answered by one [`Backend::aheads`] read (at most [`MAX_AHEADS`] readers
//! each).
//!
//! **Why each reader's answer is the one its own read would give.** A reader
//! asks once it was woken (or enqueued); a shared read is sent only after it
//! took its readers out of the lane, hence after each of them asked, so it is
//! as recent as a read of the reader's own would be: linearizable reads
//! taken after the event that woke it. And `aheads` answers each key with the
//! very range [`Backend::ahead`] would read for it, at the read's one
//! revision, the key's create revision checked as `ahead`'s guard checks it:
//! a key deleted (or made anew) behind its reader's back is `gone` for that
//! reader alone, and a writer enqueued between two readers is ahead of the
//! later one only. Failures: a failed shared read fails for each of its
//! readers (the same code and transience), and each retries as it would its
//! own read; a reader that went away is left out of the next read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// Reads of the lane in flight.
    flying: usize,
    /// Readers that asked while a read was in flight.
    waiting: Vec<Ask>,
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
            if state.flying >= OWN_READS {
                let (answer, answered) = oneshot::channel();
                let key = key.to_owned();
                state.waiting.push(Ask { key, rev, answer });
                Some(answered)
            } else {
                state.flying += 1;
                None
            }
        };
        if let Some(answered) = answer {
            return answered.await.unwrap_or_else(|_| Err(unanswered()));
        }
        let _flight = Flight {
            backend: Arc::clone(&self.backend),
            lanes: Arc::clone(&self.lanes),
            lane,
        };
        // Nobody else asked: our own read, as without sharing.
        self.backend.ahead(queue, key, rev, read).await
    }
}

/// A read of a lane in flight. When it lands (or is dropped mid-way), the
/// readers that asked meanwhile get a read of their own, shared.
struct Flight {
    backend: Arc<dyn Backend>,
    lanes: Lanes,
    lane: LaneKey,
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
            let mut waiting = std::mem::take(&mut state.waiting);
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
            };
            if let Some(runtime) = &runtime {
                runtime.spawn(flight.answer(asks));
            }
        }
    }
}

impl Flight {
    /// One read answering every one of `asks`.
    async fn answer(self, asks: Vec<Ask>) {
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

fn lock(lanes: &Lanes) -> MutexGuard<'_, HashMap<LaneKey, Lane>> {
    lanes.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Scope;
    use crate::key::Keyspace;

    /// A queue of writers and readers, two of them deleted since, and a key
    /// asked about with a revision it does not have: for every read a
    /// contender makes, the one shared read answers each key as that key's
    /// own read does.
    #[tokio::test]
    async fn a_shared_read_answers_each_key_as_its_own_read() {
        let backend = MemoryBackend::new();
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
            let shared = backend.aheads(queue, &asks, read).await.unwrap();
            assert_eq!(shared.len(), asks.len());
            for ((key, rev), answer) in asks.iter().zip(&shared) {
                let own = backend.ahead(queue, key, *rev, read).await.unwrap();
                assert_eq!(
                    (answer.gone, &answer.keys, answer.header),
                    (own.gone, &own.keys, own.header),
                    "{key} at {rev}, {read:?}"
                );
            }
            let gone = shared.iter().filter(|a| a.gone).count();
            assert_eq!(gone, 3, "two deleted keys and one wrong revision");
        }
    }
}
