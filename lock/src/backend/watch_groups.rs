//! The waits of the shared watch stream (`watch_hub`), grouped: waits for
//! the same key (and event kinds) share one etcd watcher, so that one event
//! wakes them together — the K readers of a manager behind one writer — and
//! one read answers the position reads they make on waking.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Ahead, BoxFuture, Read, ReadAfter, Woken, MAX_AHEADS};
use crate::error::Result;

/// [`Backend::aheads`](super::Backend::aheads), owning what it needs.
pub(super) type ReadAheads = Arc<
    dyn Fn(String, Vec<(String, i64)>, Read) -> BoxFuture<'static, Result<Vec<Ahead>>>
        + Send
        + Sync,
>;

/// Where a wait's outcome goes: woken (with its read, when it asked for
/// one and the read answered), or failed.
pub(super) type Fired = oneshot::Sender<Result<Woken>>;

/// One wait a watcher serves.
pub(super) struct Wait {
    id: i64,
    fired: Fired,
    /// The read to make for it once the watcher fires.
    then: Option<ReadAfter>,
}

/// A watcher registered on the stream, and the waits it serves: the first
/// one's (whose id it has on etcd), and each later wait for the same key and
/// event kinds from this revision or a later one. Such a wait is served
/// because every event it waits for comes on this watcher too; an event
/// between this watcher's start and its own wakes it early, which a wait
/// allows (its caller re-checks: see `WatchHub::wait`).
pub(super) struct Group {
    pub(super) key: Vec<u8>,
    pub(super) from: i64,
    pub(super) puts: bool,
    /// The waits it serves.
    pub(super) fired: Vec<Wait>,
    /// Refused once already, and re-registered on a stream opened right after
    /// re-authenticating: a second refusal is for good.
    pub(super) reauthenticated: bool,
}

/// The stream task's waits: the watchers by id, which watcher serves each
/// wait, and each key's latest watcher (the one a new wait may join).
#[derive(Default)]
pub(super) struct Waits {
    pub(super) groups: HashMap<i64, Group>,
    member_of: HashMap<i64, i64>,
    latest: HashMap<(Vec<u8>, bool), i64>,
}

impl Waits {
    /// Adds a wait: the watcher it joined (`None`), or the new watcher to
    /// register on etcd (its id is the wait's).
    pub(super) fn add(
        &mut self,
        id: i64,
        key: Vec<u8>,
        from: i64,
        puts: bool,
        fired: Fired,
        then: Option<ReadAfter>,
    ) -> Option<i64> {
        let index = (key, puts);
        let wait = Wait { id, fired, then };
        if let Some(group) = self
            .latest
            .get(&index)
            .and_then(|g| self.groups.get_mut(g))
            .filter(|g| g.from <= from)
        {
            group.fired.push(wait);
            self.member_of.insert(id, self.latest[&index]);
            return None;
        }
        let (key, puts) = index;
        self.latest.insert((key.clone(), puts), id);
        self.member_of.insert(id, id);
        self.groups.insert(
            id,
            Group {
                key,
                from,
                puts,
                fired: vec![wait],
                reauthenticated: false,
            },
        );
        Some(id)
    }

    /// Takes a watcher out, with every wait it serves.
    pub(super) fn take(&mut self, watch: i64) -> Option<Group> {
        let group = self.groups.remove(&watch)?;
        for wait in &group.fired {
            self.member_of.remove(&wait.id);
        }
        let index = (group.key.clone(), group.puts);
        if self.latest.get(&index) == Some(&watch) {
            self.latest.remove(&index);
        }
        Some(group)
    }

    /// A wait whose waiter went away: the watcher to cancel on etcd if it
    /// served no other wait.
    pub(super) fn leave(&mut self, id: i64) -> Option<i64> {
        let watch = self.member_of.remove(&id)?;
        let group = self.groups.get_mut(&watch)?;
        group.fired.retain(|wait| wait.id != id);
        if !group.fired.is_empty() {
            return None;
        }
        self.take(watch);
        Some(watch)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl Group {
    /// Tells every wait it serves that the watch failed.
    pub(super) fn fail(self, err: impl Fn() -> crate::error::LockError) {
        for wait in self.fired {
            let _ = wait.fired.send(Err(err()));
        }
    }

    /// Wakes every wait it serves (an event, or etcd cancelling the watch).
    /// The waits that asked for a read get it first: one
    /// [`aheads`](super::Backend::aheads) per queue and read, in a task of
    /// its own, sent now, hence after the event — as recent as the read each
    /// waiter would make on waking, and answering each key as that read
    /// would. A read that fails wakes its waits without an answer: each then
    /// reads on its own, and retries as it would.
    pub(super) fn wake(self, read: &ReadAheads) {
        let at = std::time::Instant::now();
        let woken = move |read| Ok(Woken { at, read });
        let mut lanes: HashMap<(String, Read), Vec<(ReadAfter, Fired)>> = HashMap::new();
        for wait in self.fired {
            match wait.then {
                Some(then) if !wait.fired.is_closed() => lanes
                    .entry((then.queue.clone(), then.read))
                    .or_default()
                    .push((then, wait.fired)),
                _ => drop(wait.fired.send(woken(None))),
            }
        }
        for ((queue, lane_read), mut asks) in lanes {
            let read = Arc::clone(read);
            tokio::spawn(async move {
                while !asks.is_empty() {
                    let rest = asks.split_off(asks.len().min(MAX_AHEADS));
                    let batch = std::mem::replace(&mut asks, rest);
                    let keys = batch.iter().map(|(t, _)| (t.key.clone(), t.rev)).collect();
                    match read(queue.clone(), keys, lane_read).await {
                        Ok(answers) if answers.len() == batch.len() => {
                            for ((_, fired), ahead) in batch.into_iter().zip(answers) {
                                let _ = fired.send(woken(Some(ahead)));
                            }
                        }
                        _ => {
                            for (_, fired) in batch {
                                let _ = fired.send(woken(None));
                            }
                        }
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Scope;
    use std::sync::Mutex;

    type Told = oneshot::Receiver<Result<Woken>>;
    /// The reads asked for: each one's queue and keys.
    type Asked = Arc<Mutex<Vec<(String, Vec<String>)>>>;

    fn wait(waits: &mut Waits, id: i64, key: &str, from: i64) -> (Option<i64>, Told) {
        let (tx, rx) = oneshot::channel();
        (
            waits.add(id, key.as_bytes().to_vec(), from, false, tx, None),
            rx,
        )
    }

    /// A wait for "w" from revision 10 that asks for the read of `key`
    /// (created at `rev`) in `queue`.
    fn asking(waits: &mut Waits, id: i64, queue: &str, key: &str, rev: i64) -> Told {
        let (tx, rx) = oneshot::channel();
        let read = Read::FIRST;
        let (queue, key) = (queue.to_owned(), key.to_owned());
        let then = Some(ReadAfter {
            queue,
            key,
            rev,
            read,
        });
        waits.add(id, b"w".to_vec(), 10, false, tx, then);
        rx
    }

    /// A read that records what it was asked, and answers each key with
    /// its create revision as the header (or fails, with `fail`).
    fn recording(fail: bool) -> (ReadAheads, Asked) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        let read: ReadAheads = Arc::new(move |queue, keys: Vec<(String, i64)>, _| {
            let names = keys.iter().map(|(k, _)| k.clone()).collect();
            log.lock().unwrap().push((queue, names));
            Box::pin(async move {
                if fail {
                    return Err(crate::error::LockError::new(
                        crate::error::ErrorCode::Backend,
                        "injected",
                    ));
                }
                let answer = |(_, rev)| Ahead {
                    gone: false,
                    keys: Vec::new(),
                    header: rev,
                };
                Ok(keys.into_iter().map(answer).collect())
            })
        });
        (read, asked)
    }

    #[test]
    fn later_waits_for_a_key_join_its_watcher_and_fire_with_it() {
        let mut waits = Waits::default();
        let (first, mut a) = wait(&mut waits, 1, "k", 10);
        assert_eq!(first, Some(1), "the first wait is a watcher of its own");
        let (joined, mut b) = wait(&mut waits, 2, "k", 12);
        assert_eq!(joined, None, "a wait from a later revision joins it");
        let (earlier, mut c) = wait(&mut waits, 3, "k", 9);
        assert_eq!(
            earlier,
            Some(3),
            "an earlier start would miss events: its own"
        );
        let (other, _d) = wait(&mut waits, 4, "other", 12);
        assert_eq!(other, Some(4));
        let (puts, _e) = {
            let (tx, rx) = oneshot::channel();
            (waits.add(5, b"k".to_vec(), 12, true, tx, None), rx)
        };
        assert_eq!(puts, Some(5), "other event kinds: its own");
        let (read, asked) = recording(false);
        waits.take(1).expect("watcher 1").wake(&read);
        assert!(matches!(a.try_recv(), Ok(Ok(Woken { read: None, .. }))));
        assert!(matches!(b.try_recv(), Ok(Ok(Woken { read: None, .. }))));
        assert!(c.try_recv().is_err(), "watcher 3 has not fired");
        assert!(waits.take(1).is_none(), "fired once");
        assert_eq!(waits.leave(2), None, "gone with its watcher");
        assert!(asked.lock().unwrap().is_empty(), "no wait asked for a read");
    }

    #[test]
    fn a_watcher_is_cancelled_when_its_last_wait_leaves() {
        let mut waits = Waits::default();
        let _ = wait(&mut waits, 1, "k", 10);
        let (_, mut b) = wait(&mut waits, 2, "k", 11);
        assert_eq!(waits.leave(1), None, "wait 2 still needs watcher 1");
        let (joined, _c) = wait(&mut waits, 3, "k", 11);
        assert_eq!(joined, None, "watcher 1 still serves the key");
        assert_eq!(waits.leave(3), None);
        assert_eq!(waits.leave(2), Some(1), "its last wait left: cancel it");
        assert!(waits.is_empty());
        assert!(b.try_recv().is_err(), "a wait that left is not told");
        let (fresh, _d) = wait(&mut waits, 4, "k", 11);
        assert_eq!(fresh, Some(4), "no watcher left to join");
    }

    /// One event, five waits: three ask for reads of queue `a`, one of
    /// queue `b`, one for none, and one asked and went away. One read per
    /// queue, for the waits still there, each told its own key's answer.
    #[tokio::test]
    async fn a_fired_watcher_reads_once_per_queue_for_the_waits_that_asked() {
        let mut waits = Waits::default();
        let mut told = [
            asking(&mut waits, 1, "a", "a/1", 101),
            asking(&mut waits, 2, "a", "a/2", 102),
            asking(&mut waits, 3, "b", "b/3", 103),
            asking(&mut waits, 4, "a", "a/4", 104),
        ];
        drop(asking(&mut waits, 5, "a", "a/5", 105)); // its waiter went away
        let (_, mut plain) = wait(&mut waits, 6, "w", 10);
        let (read, asked) = recording(false);
        waits.take(1).expect("one watcher for all").wake(&read);
        let woken = plain.try_recv().expect("told at once").unwrap();
        assert!(woken.read.is_none(), "it asked for no read");
        for (rx, rev) in told.iter_mut().zip([101, 102, 103, 104]) {
            let woken = rx.await.unwrap().unwrap();
            let ahead = woken.read.expect("its read");
            assert_eq!(ahead.header, rev, "its own key's answer");
        }
        let mut asked = asked.lock().unwrap().clone();
        asked.sort();
        let keys = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect();
        let want = vec![
            ("a".to_owned(), keys(&["a/1", "a/2", "a/4"])),
            ("b".to_owned(), keys(&["b/3"])),
        ];
        assert_eq!(asked, want, "one read per queue, none for the wait gone");
    }

    /// A read that fails still wakes its waits, without an answer: each
    /// reads on its own.
    #[tokio::test]
    async fn a_failed_read_wakes_its_waits_without_an_answer() {
        let mut waits = Waits::default();
        let told = [
            asking(&mut waits, 1, "a", "a/1", 101),
            asking(&mut waits, 2, "a", "a/2", 102),
        ];
        let (read, asked) = recording(true);
        waits.take(1).expect("watcher").wake(&read);
        for rx in told {
            let woken = rx.await.unwrap().expect("woken, not failed");
            assert!(woken.read.is_none());
        }
        assert_eq!(asked.lock().unwrap().len(), 1, "one read, not retried");
    }

    /// On etcd: waits of three readers and a plain wait on one writer's key,
    /// one of the readers' keys deleted before the writer's. The writer's
    /// delete wakes all four; one read (counted by etcd) answers the three
    /// readers, each as its own `ahead` does after the wake-up.
    #[tokio::test]
    async fn on_etcd_one_read_made_after_the_event_answers_each_reader_as_alone() {
        use crate::backend::checks::etcd_backend;
        use crate::backend::Backend;
        use crate::key::Keyspace;

        let etcd = distlock_tests::Etcd::start().await;
        let backend = Arc::new(etcd_backend(&etcd).await);
        let queue = "/ns/locks/doc/";
        let lease = backend.grant(60).await.unwrap().id;
        let read = Read {
            scope: Scope::Exclusive,
            limit: 2,
            values: true,
        };
        let writer = Keyspace::contender(queue, lease);
        let mut keys = Vec::new();
        let mut from = 0;
        for key in [writer.clone()]
            .into_iter()
            .chain((1..=3).map(|n| Keyspace::reader(queue, lease, n)))
        {
            let enqueued = backend.enqueue(queue, &key, lease, Vec::new(), read);
            let enqueued = enqueued.await.unwrap();
            from = enqueued.header + 1;
            keys.push((key, enqueued.rev));
        }
        let (gone_key, gone_rev) = keys[2].clone();
        assert!(backend
            .delete(gone_key.as_bytes(), Some(gone_rev))
            .await
            .unwrap());
        let waits: Vec<_> = keys[1..]
            .iter()
            .cloned()
            .map(|(key, rev)| {
                let (backend, writer, queue) = (Arc::clone(&backend), writer.clone(), queue);
                let then = ReadAfter {
                    queue: queue.to_owned(),
                    key,
                    rev,
                    read,
                };
                tokio::spawn(
                    async move { backend.wait_then(writer.as_bytes(), from, true, then).await },
                )
            })
            .collect();
        let plain = {
            let (backend, writer) = (Arc::clone(&backend), writer.clone());
            tokio::spawn(async move { backend.wait_deleted(writer.as_bytes(), from).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await; // all watching
        let txns = || etcd.metric("grpc_server_handled_total", &["grpc_method=\"Txn\""]);
        let (r1, r1_rev) = (&keys[1].0, keys[1].1);
        let last = backend.ahead(queue, r1, r1_rev, read).await.unwrap().header;
        let before = txns().await;
        assert!(backend
            .delete(writer.as_bytes(), Some(keys[0].1))
            .await
            .unwrap());
        let mut answers = Vec::new();
        for wait in waits {
            let woken = wait.await.unwrap().expect("woken");
            answers.push(woken.read.expect("answered by the read after the event"));
        }
        plain.await.unwrap().expect("the plain wait is woken too");
        assert_eq!(
            txns().await - before,
            2.0,
            "the delete, and one read for the three"
        );
        for ((key, rev), answer) in keys[1..].iter().zip(&answers) {
            let own = backend.ahead(queue, key, *rev, read).await.unwrap();
            assert_eq!((answer.gone, &answer.keys), (own.gone, &own.keys), "{key}");
            assert!(answer.header > last, "read after the writer's delete");
        }
        let gone: Vec<bool> = answers.iter().map(|a| a.gone).collect();
        assert_eq!(
            gone,
            [false, true, false],
            "the deleted reader's key alone is gone"
        );
    }
}
