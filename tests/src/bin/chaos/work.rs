//! What a critical section does, shared by lock workers and Tower servers: a
//! recorded read-modify-write of the key's counter through the fenced store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::history::{Event, Recorder};
use crate::store::{parse_counter, Access, Store};

/// A process's recorder, store and id counter.
#[derive(Clone)]
pub struct Ctx {
    /// Where events go.
    pub rec: Recorder,
    /// The fenced store.
    pub store: Store,
    /// Ignore fencing (`--broken`).
    pub broken: bool,
    /// This process's name (part of every write's opid).
    pub name: Arc<str>,
    ids: Arc<AtomicU64>,
}

/// Why a read-modify-write stopped before its write was accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The fence held a higher token.
    Fenced,
    /// The store did not answer (the access may or may not have happened).
    Unknown,
}

/// Records a call as cancelled (outcome unknown: the request may have been
/// sent) if its future is dropped before it completes.
struct Pending<'a> {
    rec: &'a Recorder,
    event: Option<Event>,
}

impl Pending<'_> {
    fn done(mut self) {
        self.event = None;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(mut e) = self.event.take() {
            e.phase = "fail".into();
            e.outcome = Some("unknown".into());
            e.detail = Some("cancelled: the lock was lost".into());
            self.rec.record(e);
        }
    }
}

impl Ctx {
    /// A context for process `name`.
    pub fn new(rec: Recorder, store: Store, broken: bool, name: &str) -> Ctx {
        Ctx {
            rec,
            store,
            broken,
            name: name.into(),
            ids: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A fresh id (calls and sections share the sequence).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Reads the counter of `key` and writes it back plus one, both through the
    /// fence with `token` (or without it when broken), recording each access.
    pub async fn increment(&self, sec: u64, key: &str, token: u64) -> Result<(), Stopped> {
        let id = self.next_id();
        let ev =
            |op: &str, phase: &str| Event::new(op, phase).id(id).sec(sec).key(key).token(token);
        self.rec.record(ev("read", "invoke"));
        let pending = Pending {
            rec: &self.rec,
            event: Some(ev("read", "invoke")),
        };
        let read = if self.broken {
            self.store.read_unfenced(key).await
        } else {
            self.store.read(key, token).await
        };
        pending.done();
        let seen = match read {
            Ok(Access::Accepted { rev, value }) => {
                let mut e = ev("read", "ok").outcome("accepted");
                e.rev = Some(rev);
                e.value = Some(value.clone());
                self.rec.record(e);
                value
            }
            Ok(Access::Rejected { fence }) => {
                self.rec.record(
                    ev("read", "fail")
                        .outcome("rejected")
                        .detail(format!("fence {fence}")),
                );
                return Err(Stopped::Fenced);
            }
            Err(err) => {
                self.rec.record(
                    ev("read", "fail")
                        .outcome("unknown")
                        .detail(err.to_string()),
                );
                return Err(Stopped::Unknown);
            }
        };
        let (count, base) = parse_counter(&seen).unwrap_or((0, "?"));
        let id = self.next_id();
        let opid = format!("{}.{id}", self.name);
        let value = format!("{} {opid}", count + 1);
        let ev = |phase: &str| {
            let mut e = Event::new("write", phase)
                .id(id)
                .sec(sec)
                .key(key)
                .token(token);
            e.value = Some(value.clone());
            e.base = Some(base.to_owned());
            e
        };
        self.rec.record(ev("invoke"));
        let pending = Pending {
            rec: &self.rec,
            event: Some(ev("invoke")),
        };
        let write = if self.broken {
            self.store.write_unfenced(key, &value).await
        } else {
            self.store.write(key, token, &value).await
        };
        pending.done();
        match write {
            Ok(Access::Accepted { rev, .. }) => {
                let mut e = ev("ok").outcome("accepted");
                e.rev = Some(rev);
                self.rec.record(e);
                Ok(())
            }
            Ok(Access::Rejected { fence }) => {
                self.rec.record(
                    ev("fail")
                        .outcome("rejected")
                        .detail(format!("fence {fence}")),
                );
                Err(Stopped::Fenced)
            }
            Err(err) => {
                self.rec
                    .record(ev("fail").outcome("unknown").detail(err.to_string()));
                Err(Stopped::Unknown)
            }
        }
    }
}
