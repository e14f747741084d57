//! The waits of the shared watch stream (`watch_hub`), grouped: waits for
//! the same key (and event kinds) share one etcd watcher, so that one event
//! wakes them together — the K readers of a manager behind one writer.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::error::Result;

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
    /// The waits it serves, by wait id.
    pub(super) fired: Vec<(i64, oneshot::Sender<Result<()>>)>,
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
        fired: oneshot::Sender<Result<()>>,
    ) -> Option<i64> {
        let index = (key, puts);
        if let Some(group) = self
            .latest
            .get(&index)
            .and_then(|g| self.groups.get_mut(g))
            .filter(|g| g.from <= from)
        {
            group.fired.push((id, fired));
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
                fired: vec![(id, fired)],
                reauthenticated: false,
            },
        );
        Some(id)
    }

    /// Takes a watcher out, with every wait it serves.
    pub(super) fn take(&mut self, watch: i64) -> Option<Group> {
        let group = self.groups.remove(&watch)?;
        for (id, _) in &group.fired {
            self.member_of.remove(id);
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
        group.fired.retain(|(member, _)| *member != id);
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
    /// Tells every wait it serves.
    pub(super) fn fire(self, outcome: impl Fn() -> Result<()>) {
        for (_, fired) in self.fired {
            let _ = fired.send(outcome());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(
        waits: &mut Waits,
        id: i64,
        key: &str,
        from: i64,
    ) -> (Option<i64>, oneshot::Receiver<Result<()>>) {
        let (tx, rx) = oneshot::channel();
        (waits.add(id, key.as_bytes().to_vec(), from, false, tx), rx)
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
            (waits.add(5, b"k".to_vec(), 12, true, tx), rx)
        };
        assert_eq!(puts, Some(5), "other event kinds: its own");
        waits.take(1).expect("watcher 1").fire(|| Ok(()));
        assert!(matches!(a.try_recv(), Ok(Ok(()))));
        assert!(matches!(b.try_recv(), Ok(Ok(()))));
        assert!(c.try_recv().is_err(), "watcher 3 has not fired");
        assert!(waits.take(1).is_none(), "fired once");
        assert_eq!(waits.leave(2), None, "gone with its watcher");
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
}
