//! What a critical section does, shared by lock workers and Tower servers: a
//! recorded read-modify-write of the key's counter through the fenced store
//! (a lock, a Tower handler, a write lock); a reader's read; a multi-lock's
//! transfer over two counters at once; a semaphore holder's increment and
//! leave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::history::{Event, Recorder};
use crate::store::{parse_counter, Access, PermitOp, Store};

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
pub struct Pending<'a> {
    rec: &'a Recorder,
    event: Option<Event>,
}

impl<'a> Pending<'a> {
    /// Records `invoke` now, and its end as cancelled should the call be
    /// dropped before [`done`](Self::done).
    pub fn invoked(rec: &'a Recorder, invoke: Event) -> Self {
        rec.record(invoke.clone());
        Pending {
            rec,
            event: Some(invoke),
        }
    }

    /// The call completed (its end is recorded by the caller).
    pub fn done(mut self) {
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
        self.increment_as(sec, key, token, None).await
    }

    /// [`increment`](Ctx::increment), its events of `kind` (a write lock's: `rw.write`).
    pub async fn increment_as(
        &self,
        sec: u64,
        key: &str,
        token: u64,
        kind: Option<&str>,
    ) -> Result<(), Stopped> {
        let id = self.next_id();
        let ev = |op: &str, phase: &str| {
            let e = Event::new(op, phase).id(id).sec(sec).key(key).token(token);
            match kind {
                Some(k) => e.kind(k),
                None => e,
            }
        };
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
            if let Some(k) = kind {
                e = e.kind(k);
            }
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

    /// A reader's read of `key`'s counter (`kind`: `rw.read`, or
    /// `rw.downgraded` for a write lock downgraded to a read lock).
    pub async fn read_shared(
        &self,
        sec: u64,
        key: &str,
        token: u64,
        kind: &str,
    ) -> Result<(), Stopped> {
        let id = self.next_id();
        let ev = |phase: &str| {
            Event::new("read", phase)
                .id(id)
                .sec(sec)
                .key(key)
                .token(token)
                .kind(kind)
        };
        self.rec.record(ev("invoke"));
        let pending = Pending {
            rec: &self.rec,
            event: Some(ev("invoke")),
        };
        let read = if self.broken {
            self.store.read_unfenced(key).await
        } else {
            self.store.read_shared(key, token).await
        };
        pending.done();
        self.record_access(read.map_err(|e| e.to_string()), ev)
    }

    /// Records how a store access ended; `Ok` if it was accepted.
    fn record_access(
        &self,
        access: Result<Access, String>,
        ev: impl Fn(&str) -> Event,
    ) -> Result<(), Stopped> {
        match access {
            Ok(Access::Accepted { rev, value }) => {
                let mut e = ev("ok").outcome("accepted");
                e.rev = Some(rev);
                if e.value.is_none() && e.op == "read" {
                    e.value = Some(value);
                }
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
                self.rec.record(ev("fail").outcome("unknown").detail(err));
                Err(Stopped::Unknown)
            }
        }
    }

    /// A multi-lock's transfer: reads the counters of every `(name, token)`
    /// in one transaction through all their fences, then writes each back
    /// plus one in another. Each name's access is recorded as its own event
    /// (kind `multi`), all of one transaction at one revision.
    pub async fn transfer(&self, sec: u64, names: &[(String, u64)]) -> Result<(), Stopped> {
        let fenced: Vec<(&str, u64)> = names.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let read_ids: Vec<u64> = names.iter().map(|_| self.next_id()).collect();
        let read_ev = |i: usize, phase: &str| {
            Event::new("read", phase)
                .id(read_ids[i])
                .sec(sec)
                .key(&names[i].0)
                .token(names[i].1)
                .kind("multi")
        };
        let invokes: Vec<Event> = (0..names.len()).map(|i| read_ev(i, "invoke")).collect();
        for e in &invokes {
            self.rec.record(e.clone());
        }
        let pending: Vec<Pending> = invokes
            .into_iter()
            .map(|e| Pending {
                rec: &self.rec,
                event: Some(e),
            })
            .collect();
        let read = if self.broken {
            let mut values = Vec::new();
            let mut rev = 0;
            let mut failed = None;
            for (name, _) in names {
                match self.store.read_unfenced(name).await {
                    Ok(Access::Accepted { rev: r, value }) => {
                        rev = r;
                        values.push(value);
                    }
                    Ok(other) => failed = Some(Ok(other)),
                    Err(e) => failed = Some(Err(e)),
                }
            }
            failed.unwrap_or(Ok(Access::Accepted {
                rev,
                value: values.join("\n"),
            }))
        } else {
            self.store.transfer_read(&fenced).await
        };
        pending.into_iter().for_each(Pending::done);
        let seen: Vec<String> = match &read {
            Ok(Access::Accepted { value, .. }) => value.split('\n').map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let mut outcome = Ok(());
        for i in 0..names.len() {
            let access = match &read {
                Ok(Access::Accepted { rev, .. }) => Ok(Access::Accepted {
                    rev: *rev,
                    value: seen.get(i).cloned().unwrap_or_default(),
                }),
                Ok(Access::Rejected { fence }) => Ok(Access::Rejected { fence: *fence }),
                Err(e) => Err(e.to_string()),
            };
            outcome = self.record_access(access, |phase| read_ev(i, phase));
        }
        outcome?;
        // Each account's counter plus one, built on what the read saw.
        let write_ids: Vec<u64> = names.iter().map(|_| self.next_id()).collect();
        let mut values = Vec::new();
        let mut bases = Vec::new();
        for (i, id) in write_ids.iter().enumerate() {
            let seen = seen.get(i).map(String::as_str).unwrap_or("");
            let (count, base) = parse_counter(seen).unwrap_or((0, "?"));
            values.push(format!("{} {}.{id}", count + 1, self.name));
            bases.push(base.to_owned());
        }
        let write_ev = |i: usize, phase: &str| {
            let mut e = Event::new("write", phase)
                .id(write_ids[i])
                .sec(sec)
                .key(&names[i].0)
                .token(names[i].1)
                .kind("multi");
            e.value = Some(values[i].clone());
            e.base = Some(bases[i].clone());
            e
        };
        let invokes: Vec<Event> = (0..names.len()).map(|i| write_ev(i, "invoke")).collect();
        for e in &invokes {
            self.rec.record(e.clone());
        }
        let pending: Vec<Pending> = invokes
            .into_iter()
            .map(|e| Pending {
                rec: &self.rec,
                event: Some(e),
            })
            .collect();
        let write = if self.broken {
            let mut last = Ok(Access::Accepted {
                rev: 0,
                value: String::new(),
            });
            for ((name, _), value) in names.iter().zip(&values) {
                last = self.store.write_unfenced(name, value).await;
                if last.is_err() {
                    break;
                }
            }
            last
        } else {
            self.store.transfer_write(&fenced, &values).await
        };
        pending.into_iter().for_each(Pending::done);
        let mut outcome = Ok(());
        for i in 0..names.len() {
            let access = match &write {
                Ok(a) => Ok(a.clone()),
                Err(e) => Err(e.to_string()),
            };
            outcome = self.record_access(access, |phase| write_ev(i, phase));
        }
        outcome
    }

    /// A semaphore holder's access to its store (see [`PermitState`]):
    /// `Work` enters it (if not inside yet) and increments the counter,
    /// `Leave` leaves it. A compare-and-swap: a snapshot read (recorded as
    /// `read`/`permit`, outcome `seen`: it is not fenced), then a write that
    /// applies only if the store did not change meanwhile, retried on a
    /// conflict for up to a second.
    ///
    /// [`PermitState`]: crate::store::PermitState
    pub async fn permit(
        &self,
        sec: u64,
        name: &str,
        token: u64,
        op: PermitOp,
        permits: usize,
    ) -> Result<(), Stopped> {
        if self.broken && op == PermitOp::Leave {
            return Ok(()); // a broken holder keeps no places
        }
        let started = std::time::Instant::now();
        let (op_name, kind) = match op {
            PermitOp::Work => ("write", "permit"),
            PermitOp::Leave => ("leave", "permit"),
        };
        loop {
            let id = self.next_id();
            let ev = |op: &str, phase: &str| {
                Event::new(op, phase)
                    .id(id)
                    .sec(sec)
                    .key(name)
                    .token(token)
                    .kind(kind)
            };
            self.rec.record(ev("read", "invoke"));
            let pending = Pending {
                rec: &self.rec,
                event: Some(ev("read", "invoke")),
            };
            let snapshot = self.store.permit_snapshot(name).await;
            pending.done();
            let (state, mod_rev, counter) = match snapshot {
                Ok(s) => {
                    let mut e = ev("read", "ok").outcome("seen");
                    e.value = Some(s.2.clone());
                    e.detail = Some(s.0.to_string());
                    self.rec.record(e);
                    s
                }
                Err(err) => {
                    self.rec.record(
                        ev("read", "fail")
                            .outcome("unknown")
                            .detail(err.to_string()),
                    );
                    // Nothing was written: but the section stops as after
                    // any unanswered access.
                    return Err(Stopped::Unknown);
                }
            };
            let (count, base) = parse_counter(&counter).unwrap_or((0, "?"));
            let id = self.next_id();
            let value = format!("{} {}.{id}", count + 1, self.name);
            let ev = |phase: &str| {
                let mut e = Event::new(op_name, phase)
                    .id(id)
                    .sec(sec)
                    .key(name)
                    .token(token)
                    .kind(kind);
                if op == PermitOp::Work {
                    e.value = Some(value.clone());
                    e.base = Some(base.to_owned());
                }
                e
            };
            let next = if self.broken {
                // Ignores the store's places: a plain put.
                Some(state.clone())
            } else {
                state.after(token, op, permits)
            };
            let Some(next) = next else {
                self.rec.record(ev("invoke"));
                self.rec.record(
                    ev("fail")
                        .outcome("rejected")
                        .detail(format!("store {state}")),
                );
                return Err(Stopped::Fenced);
            };
            self.rec.record(ev("invoke"));
            let pending = Pending {
                rec: &self.rec,
                event: Some(ev("invoke")),
            };
            let counter = (op == PermitOp::Work).then_some(value.as_str());
            let swapped = if self.broken {
                match counter {
                    Some(v) => self.store.write_unfenced(name, v).await.map(|a| match a {
                        Access::Accepted { rev, .. } => Some(rev),
                        Access::Rejected { .. } => None,
                    }),
                    None => Ok(None),
                }
            } else {
                self.store.permit_swap(name, mod_rev, &next, counter).await
            };
            pending.done();
            match swapped {
                Ok(Some(rev)) => {
                    let mut e = ev("ok").outcome("accepted");
                    e.rev = Some(rev);
                    self.rec.record(e);
                    return Ok(());
                }
                Ok(None) => {
                    self.rec.record(ev("fail").outcome("conflict"));
                    if started.elapsed() > std::time::Duration::from_secs(1) {
                        return Err(Stopped::Fenced);
                    }
                }
                Err(err) => {
                    self.rec
                        .record(ev("fail").outcome("unknown").detail(err.to_string()));
                    return Err(Stopped::Unknown);
                }
            }
        }
    }
}

/// How a section ended: its work done, or its hold lost first.
pub(crate) enum End {
    Done,
    Lost,
}

/// Records a section's end (and, before it, the loss that ended it).
pub(crate) fn record_end(ctx: &Ctx, key: &str, token: u64, sec: u64, end: &End) {
    if let End::Lost = end {
        ctx.rec
            .record(Event::new("lost", "info").key(key).token(token).sec(sec));
    }
    let how = match end {
        End::Done => "release",
        End::Lost => "lost",
    };
    ctx.rec.record(
        Event::new("end", "info")
            .key(key)
            .token(token)
            .sec(sec)
            .outcome(how),
    );
}
