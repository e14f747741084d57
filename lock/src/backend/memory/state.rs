//! The in-memory store: keys with their revisions and leases, the leases
//! with their expiries, and the log of changes prefix watches read.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Change, Read, Scope, Seen};
use crate::key::Keyspace;

pub(super) struct Stored {
    pub(super) create_rev: i64,
    /// The revision of the last put.
    pub(super) mod_rev: i64,
    pub(super) lease: i64,
    pub(super) value: Vec<u8>,
}

pub(super) struct Lease {
    pub(super) ttl: Duration,
    pub(super) expires: Instant,
}

/// How many changes the in-memory store remembers for prefix watches; a
/// watch from an older revision finds it compacted, as on etcd.
pub(super) const HISTORY: usize = 100_000;

#[derive(Default)]
pub(super) struct State {
    pub(super) revision: i64,
    pub(super) next_lease: i64,
    pub(super) keys: BTreeMap<String, Stored>,
    pub(super) leases: HashMap<i64, Lease>,
    /// The latest changes (puts and deletes), oldest first.
    pub(super) log: VecDeque<Change>,
    /// Changes before this revision are forgotten (compacted).
    pub(super) compacted: i64,
    /// How many changes `log` keeps.
    pub(super) history: usize,
    /// No lease expires before this (a lower bound: renewals only push
    /// expiries later).
    pub(super) next_expiry: Option<Instant>,
}

impl State {
    /// Deletes `key`, bumping the revision and remembering the delete.
    pub(super) fn remove(&mut self, key: &str) -> bool {
        self.remove_all(&[(key, None)])[0]
    }

    /// Deletes each key whose create revision is as given (any when
    /// `None`), all at one new revision (one transaction); which were.
    pub(super) fn remove_all(&mut self, keys: &[(&str, Option<i64>)]) -> Vec<bool> {
        let revision = self.revision + 1;
        let removed: Vec<bool> = keys
            .iter()
            .map(|(key, rev)| {
                let matches = self
                    .keys
                    .get(*key)
                    .is_some_and(|s| rev.is_none_or(|r| r == s.create_rev));
                if matches {
                    self.keys.remove(*key);
                    self.revision = revision;
                    self.remember(key, 0, None);
                }
                matches
            })
            .collect();
        removed
    }

    /// Remembers a change made at the current revision.
    pub(super) fn remember(&mut self, key: &str, create_rev: i64, value: Option<Vec<u8>>) {
        self.log.push_back(Change {
            key: key.as_bytes().to_vec(),
            rev: self.revision,
            create_rev,
            value,
        });
        while self.log.len() > self.history {
            if let Some(change) = self.log.pop_front() {
                self.compacted = change.rev + 1;
            }
        }
    }

    /// The changes under `prefix` at revision `from` or later (deletes, and
    /// with `puts` puts too); `None` when some of them are forgotten.
    pub(super) fn changes_since(&self, prefix: &str, from: i64, puts: bool) -> Option<Vec<Change>> {
        if from < self.compacted {
            return None;
        }
        let start = self.log.partition_point(|c| c.rev < from);
        Some(
            self.log
                .range(start..)
                .filter(|c| c.key.starts_with(prefix.as_bytes()) && (puts || c.value.is_none()))
                .cloned()
                .collect(),
        )
    }

    /// Revokes every lease past its expiry. Each lease also has a task that
    /// reaps it on time; this catches the leases whose task is gone (its
    /// runtime shut down), so a store that outlives a runtime still frees
    /// the locks of leases nobody renews. Whether it changed anything.
    pub(super) fn reap_due(&mut self, now: Instant) -> bool {
        if self.next_expiry.is_none_or(|at| at > now) {
            return false;
        }
        let due: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for lease in &due {
            self.revoke(*lease);
        }
        self.next_expiry = self.leases.values().map(|l| l.expires).min();
        !due.is_empty()
    }

    pub(super) fn revoke(&mut self, lease: i64) {
        if self.leases.remove(&lease).is_some() {
            let doomed: Vec<String> = self
                .keys
                .iter()
                .filter(|(_, v)| v.lease == lease)
                .map(|(k, _)| k.clone())
                .collect();
            for key in doomed {
                self.remove(&key);
            }
        }
    }

    /// The keys of `queue` in `read`'s scope: the oldest first, or (before
    /// revision `before`) the youngest first; at most `read.limit`.
    pub(super) fn read(&self, queue: &str, read: Read, before: Option<i64>) -> Vec<Seen> {
        let (start, end) = match read.scope {
            Scope::All => (queue.to_owned(), None),
            Scope::Exclusive => {
                let (start, end) = Keyspace::exclusive_range(queue);
                (start, Some(end))
            }
        };
        let mut found: Vec<(&String, &Stored)> = self
            .keys
            .range(start..)
            .take_while(|(k, _)| k.starts_with(queue) && end.as_ref().is_none_or(|e| *k < e))
            .filter(|(_, s)| before.is_none_or(|b| s.create_rev < b))
            .collect();
        found.sort_by_key(|(_, s)| s.create_rev);
        if before.is_some() {
            found.reverse();
        }
        found
            .into_iter()
            .take(read.limit)
            .map(|(k, s)| Seen {
                key: k.clone().into_bytes(),
                rev: s.create_rev,
                value: if read.values {
                    s.value.clone()
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    /// Creates `key` unless it exists (at the current revision, which the
    /// caller has bumped); its value before, if it existed.
    pub(super) fn create(&mut self, key: &str, lease: i64, value: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(existing) = self.keys.get(key) {
            return Some(existing.value.clone());
        }
        let rev = self.revision;
        self.remember(key, rev, Some(value.clone()));
        let stored = Stored {
            create_rev: rev,
            mod_rev: rev,
            lease,
            value,
        };
        self.keys.insert(key.to_owned(), stored);
        None
    }

    /// Keys under `prefix`, oldest first.
    pub(super) fn queue<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Stored)> + 'a {
        let mut found: Vec<_> = self
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .collect();
        found.sort_by_key(|(_, v)| v.create_rev);
        found.into_iter()
    }
}
