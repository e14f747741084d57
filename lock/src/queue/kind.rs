//! The kinds of entry in a queue, and what each waits for.
//!
//! One queue per name holds entries of three kinds, ordered by create
//! revision (FIFO everywhere, so no kind starves another queued before it):
//!
//! - **exclusive** (a mutex, a write lock; etcdctl's and Go's mutex keys too):
//!   holds when no key of any kind is older; waits for the youngest older key;
//! - **shared** (a read lock): holds when no exclusive entry is older (a write
//!   lock downgraded in place counts as shared); waits for the youngest older
//!   exclusive entry, and wakes when it is deleted *or changed* (a downgrade);
//! - **permit** (a semaphore of `n`, in its own key space): holds when fewer
//!   than `n` keys are older. The first waiter (exactly `n` older keys, all
//!   holders) waits for any of them to go; a later waiter waits for the one
//!   key just ahead of it to go or to *change*: a waiter that becomes a
//!   holder touches its key (see [`Contender`](super::Contender)), so each
//!   release wakes one waiter, and each promotion the next one.

use crate::backend::{Read, Scope, Seen};
use crate::error::{ErrorCode, LockError, Result};

use super::metadata::Metadata;

/// The kind of a queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Exclusive,
    Shared,
    /// A semaphore's permit, of this many.
    Permit(u32),
}

/// Where an entry stands, from the keys ahead of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// It holds.
    Holds,
    /// It waits for `key` (created at `rev`) to be deleted, or with
    /// `changes` to be changed in any way.
    Behind {
        key: Vec<u8>,
        rev: i64,
        changes: bool,
    },
    /// It waits for any of these keys to be deleted (a semaphore's first
    /// waiter, behind all of its holders).
    BehindAll(Vec<(Vec<u8>, i64)>),
}

impl Kind {
    /// What the enqueue transaction reads of the queue (its oldest keys).
    pub(crate) fn enqueue_read(self) -> Read {
        match self {
            Kind::Exclusive => Read::FIRST,
            // A downgraded holder ahead is skipped: two, to see past it.
            Kind::Shared => Read {
                scope: Scope::Exclusive,
                limit: 2,
                values: true,
            },
            Kind::Permit(n) => Read {
                scope: Scope::All,
                limit: n as usize,
                values: true,
            },
        }
    }

    /// What a position read reads of the keys ahead (youngest first).
    pub(crate) fn ahead_read(self) -> Read {
        match self {
            Kind::Permit(n) => Read {
                scope: Scope::All,
                limit: n as usize + 1,
                values: true,
            },
            other => other.enqueue_read(),
        }
    }

    /// Whether an entry created at `rev` holds at once, from the oldest keys
    /// its enqueue read (`false` when that read cannot tell: the entry then
    /// reads the keys ahead of it).
    pub(crate) fn holds_at_enqueue(self, oldest: &[Seen], rev: i64) -> Result<bool> {
        match self {
            Kind::Exclusive => Ok(oldest.first().is_some_and(|k| k.rev == rev)),
            Kind::Shared => Ok(oldest.iter().all(|k| k.rev >= rev || is_shared(k))),
            Kind::Permit(n) => {
                agree(n, oldest)?;
                Ok(oldest.iter().any(|k| k.rev == rev))
            }
        }
    }

    /// Where an entry stands, from the keys ahead of it (youngest first, as
    /// [`ahead_read`](Kind::ahead_read) reads them).
    pub(crate) fn standing(self, ahead: &[Seen]) -> Result<Standing> {
        match self {
            Kind::Exclusive => Ok(match ahead.first() {
                None => Standing::Holds,
                Some(k) => Standing::Behind {
                    key: k.key.clone(),
                    rev: k.rev,
                    changes: false,
                },
            }),
            Kind::Shared => Ok(match ahead.iter().find(|k| !is_shared(k)) {
                None => Standing::Holds,
                Some(k) => Standing::Behind {
                    key: k.key.clone(),
                    rev: k.rev,
                    changes: true,
                },
            }),
            Kind::Permit(n) => {
                agree(n, ahead)?;
                let n = n as usize;
                Ok(match ahead.len() {
                    count if count < n => Standing::Holds,
                    count if count == n => {
                        Standing::BehindAll(ahead.iter().map(|k| (k.key.clone(), k.rev)).collect())
                    }
                    _ => Standing::Behind {
                        key: ahead[0].key.clone(),
                        rev: ahead[0].rev,
                        changes: true,
                    },
                })
            }
        }
    }
}

/// Whether an exclusive entry is shared now (a downgraded write lock).
fn is_shared(key: &Seen) -> bool {
    !key.value.is_empty() && Metadata::decode(&key.value).shared
}

/// Every permit entry among `keys` counts `n` permits too; `InvalidOptions`
/// naming both values if one does not.
fn agree(n: u32, keys: &[Seen]) -> Result<()> {
    let other = keys
        .iter()
        .filter_map(|k| Metadata::decode(&k.value).permits)
        .find(|&p| p != n);
    match other {
        None => Ok(()),
        Some(p) => Err(LockError::new(
            ErrorCode::InvalidOptions,
            format!(
                "this semaphore is used with {p} permits elsewhere and {n} here: every \
                 process must give one name the same number of permits"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, rev: i64, meta: Option<Metadata>) -> Seen {
        Seen {
            key: name.as_bytes().to_vec(),
            rev,
            value: meta.map(|m| m.encode()).unwrap_or_default(),
        }
    }

    fn permit(n: u32) -> Option<Metadata> {
        Some(Metadata {
            permits: Some(n),
            ..Metadata::new("o")
        })
    }

    fn downgraded() -> Option<Metadata> {
        Some(Metadata {
            shared: true,
            ..Metadata::new("o")
        })
    }

    #[test]
    fn an_exclusive_entry_waits_for_the_youngest_key_ahead() {
        let k = Kind::Exclusive;
        assert_eq!(k.standing(&[]).unwrap(), Standing::Holds);
        let behind = k.standing(&[key("r", 9, None), key("w", 5, None)]).unwrap();
        assert_eq!(
            behind,
            Standing::Behind {
                key: b"r".to_vec(),
                rev: 9,
                changes: false
            }
        );
        assert!(k.holds_at_enqueue(&[key("me", 7, None)], 7).unwrap());
        assert!(!k.holds_at_enqueue(&[key("w", 5, None)], 7).unwrap());
    }

    #[test]
    fn a_reader_waits_only_for_an_exclusive_entry_that_is_not_downgraded() {
        let k = Kind::Shared;
        assert_eq!(k.standing(&[]).unwrap(), Standing::Holds);
        assert_eq!(
            k.standing(&[key("w", 5, downgraded())]).unwrap(),
            Standing::Holds
        );
        let behind = k
            .standing(&[key("w2", 8, None), key("w", 5, downgraded())])
            .unwrap();
        assert_eq!(
            behind,
            Standing::Behind {
                key: b"w2".to_vec(),
                rev: 8,
                changes: true
            }
        );
        assert!(k.holds_at_enqueue(&[], 7).unwrap());
        assert!(k.holds_at_enqueue(&[key("w", 5, downgraded())], 7).unwrap());
        assert!(!k.holds_at_enqueue(&[key("w", 5, None)], 7).unwrap());
    }

    #[test]
    fn a_permit_holds_with_fewer_than_n_ahead_and_waits_as_first_or_later() {
        let k = Kind::Permit(2);
        let ahead = |n: usize| -> Vec<Seen> {
            (0..n)
                .map(|i| key(&format!("p{i}"), 10 - i as i64, permit(2)))
                .collect()
        };
        assert_eq!(k.standing(&ahead(0)).unwrap(), Standing::Holds);
        assert_eq!(k.standing(&ahead(1)).unwrap(), Standing::Holds);
        assert_eq!(
            k.standing(&ahead(2)).unwrap(),
            Standing::BehindAll(vec![(b"p0".to_vec(), 10), (b"p1".to_vec(), 9)])
        );
        assert_eq!(
            k.standing(&ahead(3)).unwrap(),
            Standing::Behind {
                key: b"p0".to_vec(),
                rev: 10,
                changes: true
            }
        );
    }

    #[test]
    fn processes_that_disagree_on_permits_are_refused() {
        let err = Kind::Permit(3)
            .standing(&[key("p", 4, permit(5))])
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidOptions);
        assert!(
            err.message().contains('5') && err.message().contains('3'),
            "{err}"
        );
        let err = Kind::Permit(3)
            .holds_at_enqueue(&[key("p", 4, permit(5))], 6)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidOptions);
    }
}
