//! The lock workers' work with the other primitives, next to their locks:
//! a semaphore's permits, read and write locks (some writers downgrade
//! mid-section), and multi-lock transfers between two accounts. Each section
//! is recorded as a lock's is (acquire, accesses, end, release), and keeps
//! the same discipline with the fenced store (see `store.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use distlock::{
    ErrorCode, Leadership, Lock, LockGuard, LockManager, LockOptions, MultiLock, MultiLockGuard,
    Permit, ReadGuard, RwLock, Semaphore, WriteGuard,
};

use crate::history::Event;
use crate::store::PermitOp;
use crate::work::{Ctx, Stopped};
use crate::worker::ChildArgs;
use crate::Rng;

/// The semaphore's name (its own key space: no lock has this name).
pub const SEMAPHORE: &str = "sem0";

/// How long a transfer's `lock()` may still wait once the run stops: the
/// sections in flight end (a section is at most TTL + 1 s), the transfers
/// queued behind them run short ones, and nothing else is waited for any
/// more. A transfer still waiting after that is stuck (a deadlock): the
/// completion rule finds its call over its wait.
pub fn drain(ttl: Duration) -> Duration {
    ttl + Duration::from_secs(3)
}

/// One task's handles on the primitives.
pub struct Handles {
    sem: Semaphore,
    /// `--broken`: the same semaphore with one permit too many.
    permits: u32,
    rw: Vec<(String, RwLock)>,
    /// Every ordered pair of distinct accounts, as given to `new_multi_lock`.
    transfers: Vec<([String; 2], MultiLock)>,
    /// `--broken`: a transfer takes only its first account, with this.
    first_only: Vec<Lock>,
    /// How many of `rw` are accounts (the last ones).
    accounts: usize,
}

impl Handles {
    /// Handles on `args`' semaphore, its keys and accounts (as read-write
    /// locks) and its accounts' pairs (as multi-locks).
    pub fn new(manager: &LockManager, args: &ChildArgs, options: &LockOptions) -> Handles {
        let permits = args.permits + u32::from(args.broken);
        let sem = manager
            .new_semaphore(SEMAPHORE, permits, options.clone())
            .expect("a valid semaphore");
        let rw = lock_names(args)
            .into_iter()
            .map(|n| {
                let l = manager.new_rw_lock(n.clone(), options.clone()).expect("rw");
                (n, l)
            })
            .collect();
        let accounts = accounts(args.accounts);
        let mut transfers = Vec::new();
        let mut first_only = Vec::new();
        for a in &accounts {
            for b in &accounts {
                if a != b {
                    let ml = manager
                        .new_multi_lock([a.clone(), b.clone()], options.clone())
                        .expect("a valid multi-lock");
                    transfers.push(([a.clone(), b.clone()], ml));
                    first_only.push(manager.new_lock(a.clone(), options.clone()).expect("lock"));
                }
            }
        }
        Handles {
            sem,
            permits: args.permits,
            rw,
            transfers,
            first_only,
            accounts: args.accounts,
        }
    }
}

/// The accounts' names.
pub fn accounts(n: usize) -> Vec<String> {
    (0..n).map(|a| format!("a{a}")).collect()
}

/// Every lock name of the run: the hot keys, then the accounts.
pub fn lock_names(args: &ChildArgs) -> Vec<String> {
    (0..args.keys)
        .map(|k| format!("k{k}"))
        .chain(accounts(args.accounts))
        .collect()
}

/// What a held primitive is.
pub enum Held {
    Permit(Permit),
    Read(ReadGuard),
    Write(WriteGuard),
    Multi(MultiLockGuard),
    /// `--broken` transfers: one account's lock only.
    Lock(LockGuard),
    /// An election's leadership (see `elect.rs`).
    Leader(Leadership),
}

impl Held {
    fn is_held(&self) -> bool {
        match self {
            Held::Permit(g) => g.is_held(),
            Held::Read(g) => g.is_held(),
            Held::Write(g) => g.is_held(),
            Held::Multi(g) => g.is_held(),
            Held::Lock(g) => g.is_held(),
            Held::Leader(g) => g.is_held(),
        }
    }

    fn lost(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        match self {
            Held::Permit(g) => Box::pin(g.lost()),
            Held::Read(g) => Box::pin(g.lost()),
            Held::Write(g) => Box::pin(g.lost()),
            Held::Multi(g) => Box::pin(g.lost()),
            Held::Lock(g) => Box::pin(g.lost()),
            Held::Leader(g) => Box::pin(g.lost()),
        }
    }

    async fn release(self) -> distlock::Result<()> {
        match self {
            Held::Permit(g) => g.release().await,
            Held::Read(g) => g.release().await,
            Held::Write(g) => g.release().await,
            Held::Multi(g) => g.release().await,
            Held::Lock(g) => g.unlock().await,
            Held::Leader(g) => g.resign().await,
        }
    }
}

/// How an acquisition is asked for.
#[derive(Clone, Copy, Debug)]
pub enum How {
    /// Wait as long as it takes (until the run stops).
    Wait,
    Timeout(Duration),
    Try,
    /// Wait, but drop the future after this long.
    Cancel(Duration),
}

impl How {
    /// Waits 35 %, timeouts 25 %, tries 15 %, cancelled waits 25 % (as the
    /// locks' mix), or for transfers 60 / 20 / 10 / 10: most transfers wait
    /// for as long as it takes, so a deadlock would stay one.
    pub fn pick(rng: &mut Rng, transfer: bool) -> How {
        let roll = rng.below(100);
        let (wait, timeout, try_) = if transfer { (60, 80, 90) } else { (35, 60, 75) };
        if roll < wait {
            How::Wait
        } else if roll < timeout {
            How::Timeout(Duration::from_millis(match rng.below(4) {
                0 => 0,
                _ => rng.below(2000),
            }))
        } else if roll < try_ {
            How::Try
        } else {
            How::Cancel(Duration::from_millis(20 + rng.below(400)))
        }
    }
}

/// An acquisition under way (see [`attempt`]).
pub type Attempt<'a> = Pin<Box<dyn Future<Output = distlock::Result<Option<Held>>> + Send + 'a>>;

/// Runs one acquisition as `how` asks; `None` if it was cancelled (by its
/// own deadline, or the run's end at `until`).
pub async fn acquire<'a>(
    how: How,
    until: std::time::Instant,
    start: impl FnOnce(How) -> Attempt<'a>,
) -> Option<distlock::Result<Option<Held>>> {
    match how {
        How::Wait => tokio::select! {
            r = start(how) => Some(r),
            _ = tokio::time::sleep_until(until.into()) => None,
        },
        How::Cancel(d) => tokio::time::timeout(d, start(how)).await.ok(),
        How::Timeout(_) | How::Try => Some(start(how).await),
    }
}

/// What a section works on.
#[derive(Clone, Debug)]
enum What {
    Permit {
        token: u64,
    },
    Read {
        key: String,
        token: u64,
    },
    Write {
        key: String,
        token: u64,
        downgrade: bool,
    },
    Transfer {
        names: Vec<(String, u64)>,
    },
}

impl What {
    /// `(name, token)` of each name the section holds.
    fn names(&self) -> Vec<(String, u64)> {
        match self {
            What::Permit { token } => vec![(SEMAPHORE.to_owned(), *token)],
            What::Read { key, token } | What::Write { key, token, .. } => {
                vec![(key.clone(), *token)]
            }
            What::Transfer { names } => names.clone(),
        }
    }

    fn primitive(&self) -> &'static str {
        match self {
            What::Permit { .. } => "sem",
            What::Read { .. } | What::Write { .. } => "rw",
            What::Transfer { .. } => "multi",
        }
    }
}

/// One round of a task: a read (60 %) or write lock of a random name (keys
/// and accounts), and a section.
pub async fn rw_round(ctx: &Ctx, args: &ChildArgs, h: &Handles, rng: &mut Rng) {
    // Half the time the first key or the first account, so that readers
    // meet (and share) often enough.
    let i = match rng.below(4) {
        0 => 0,
        1 => h.rw.len() - h.accounts,
        _ => rng.below(h.rw.len() as u64) as usize,
    };
    let (key, rw) = &h.rw[i];
    let write = rng.below(5) < 2;
    let how = How::pick(rng, false);
    let kind = match (write, how) {
        (false, How::Wait) => "rw.read",
        (false, How::Timeout(_)) => "rw.read_timeout",
        (false, How::Try) => "rw.try_read",
        (false, How::Cancel(_)) => "rw.read_cancel",
        (true, How::Wait) => "rw.write",
        (true, How::Timeout(_)) => "rw.write_timeout",
        (true, How::Try) => "rw.try_write",
        (true, How::Cancel(_)) => "rw.write_cancel",
    };
    // `--broken` writers take the read lock: they share with readers and
    // with each other, and say they wrote.
    let exclusive = write && !ctx.broken;
    let got = attempt(ctx, args, key, kind, how, false, None, |how| {
        Box::pin(async move {
            Ok(match (exclusive, how) {
                (true, How::Try) => rw.try_write().await?.map(Held::Write),
                (true, How::Timeout(d)) => Some(Held::Write(rw.write_timeout(d).await?)),
                (true, _) => Some(Held::Write(rw.write().await?)),
                (false, How::Try) => rw.try_read().await?.map(Held::Read),
                (false, How::Timeout(d)) => Some(Held::Read(rw.read_timeout(d).await?)),
                (false, _) => Some(Held::Read(rw.read().await?)),
            })
        })
    })
    .await;
    let Some((held, token, sec, _)) = got else {
        return;
    };
    let what = if write {
        What::Write {
            key: key.clone(),
            token,
            downgrade: exclusive && rng.below(100) < 40,
        }
    } else {
        What::Read {
            key: key.clone(),
            token,
        }
    };
    section(ctx, args, h, held, what, sec, rng).await;
}

/// One round of a task: a permit of the semaphore, and a section.
pub async fn semaphore_round(ctx: &Ctx, args: &ChildArgs, h: &Handles, rng: &mut Rng) {
    let how = How::pick(rng, false);
    let kind = match how {
        How::Wait => "sem.acquire",
        How::Timeout(_) => "sem.acquire_timeout",
        How::Try => "sem.try_acquire",
        How::Cancel(_) => "sem.cancel",
    };
    let sem = &h.sem;
    let got = attempt(ctx, args, SEMAPHORE, kind, how, false, None, |how| {
        Box::pin(async move {
            Ok(match how {
                How::Try => sem.try_acquire().await?.map(Held::Permit),
                How::Timeout(d) => Some(Held::Permit(sem.acquire_timeout(d).await?)),
                _ => Some(Held::Permit(sem.acquire().await?)),
            })
        })
    })
    .await;
    if let Some((held, token, sec, _)) = got {
        section(ctx, args, h, held, What::Permit { token }, sec, rng).await;
    }
}

/// One round of a task: a transfer between two accounts (in either order)
/// under a multi-lock of both, and a section.
pub async fn transfer_round(ctx: &Ctx, args: &ChildArgs, h: &Handles, rng: &mut Rng) {
    let i = rng.below(h.transfers.len() as u64) as usize;
    let (pair, ml) = &h.transfers[i];
    let first = &h.first_only[i];
    let how = How::pick(rng, true);
    let kind = match how {
        How::Wait => "multi.lock",
        How::Timeout(_) => "multi.lock_timeout",
        How::Try => "multi.try_lock",
        How::Cancel(_) => "multi.cancel",
    };
    let broken = ctx.broken;
    let label = pair.join("+");
    let got = attempt(ctx, args, &label, kind, how, true, None, |how| {
        Box::pin(async move {
            if broken {
                // Only the first account is locked.
                return Ok(match how {
                    How::Try => first.try_lock().await?.map(Held::Lock),
                    How::Timeout(d) => Some(Held::Lock(first.lock_timeout(d).await?)),
                    _ => Some(Held::Lock(first.lock().await?)),
                });
            }
            Ok(match how {
                How::Try => ml.try_lock().await?.map(Held::Multi),
                How::Timeout(d) => Some(Held::Multi(ml.lock_timeout(d).await?)),
                _ => Some(Held::Multi(ml.lock().await?)),
            })
        })
    })
    .await;
    if let Some((held, _, sec, tokens)) = got {
        let names = pair
            .iter()
            .map(|n| (n.clone(), tokens.get(n).copied().unwrap_or(0)))
            .collect();
        section(ctx, args, h, held, What::Transfer { names }, sec, rng).await;
    }
}

/// Asks for a hold as `how` says, recording the call (with `value` on its
/// invoke: a candidate's value); on success, the hold, its token (the
/// first name's), its section id and every name's token.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub async fn attempt<'a>(
    ctx: &Ctx,
    args: &ChildArgs,
    key: &str,
    kind: &str,
    how: How,
    transfer: bool,
    value: Option<&str>,
    start: impl FnOnce(How) -> Attempt<'a>,
) -> Option<(Held, u64, u64, std::collections::BTreeMap<String, u64>)> {
    let clock = ctx.rec.clock();
    let id = ctx.next_id();
    // A transfer's wait outlasts the run's end by the drain (see `drain`).
    let end = args.stop_at
        + if transfer {
            drain(args.ttl).as_micros() as u64
        } else {
            0
        };
    let limit = match how {
        How::Wait => Duration::from_micros(end.saturating_sub(clock.now())),
        How::Timeout(d) | How::Cancel(d) => d,
        How::Try => Duration::ZERO,
    };
    // A stuck transfer is given up 3.5 s after its wait: past the checker's
    // slack, so it shows.
    let until = clock.instant_at(end)
        + if transfer {
            Duration::from_millis(3500)
        } else {
            Duration::ZERO
        };
    let ev = |phase: &str| Event::new("acquire", phase).id(id).key(key).kind(kind);
    let mut invoke = ev("invoke").limit(limit);
    invoke.value = value.map(str::to_owned);
    ctx.rec.record(invoke);
    let result = acquire(how, until, start).await;
    match result {
        None => {
            ctx.rec.record(ev("fail").outcome("cancelled"));
            None
        }
        Some(Ok(None)) => {
            ctx.rec.record(ev("fail").outcome("busy"));
            None
        }
        Some(Err(e)) => {
            let outcome = if e.code() == ErrorCode::Timeout {
                "timeout"
            } else {
                "error"
            };
            ctx.rec.record(
                ev("fail")
                    .outcome(outcome)
                    .detail(format!("{:?}: {e}", e.code())),
            );
            if outcome == "error" {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        }
        Some(Ok(Some(held))) => {
            let sec = ctx.next_id();
            let tokens: std::collections::BTreeMap<String, u64> = match &held {
                Held::Multi(g) => g
                    .fencing_tokens()
                    .into_iter()
                    .map(|(n, t)| (n.to_owned(), t))
                    .collect(),
                // `--broken`: one lock's token, said for both accounts.
                Held::Lock(g) => key
                    .split('+')
                    .map(|n| (n.to_owned(), g.fencing_token()))
                    .collect(),
                _ => Default::default(),
            };
            let token = match &held {
                Held::Permit(g) => g.fencing_token(),
                Held::Read(g) => g.fencing_token(),
                Held::Write(g) => g.fencing_token(),
                Held::Leader(g) => g.fencing_token(),
                Held::Multi(_) | Held::Lock(_) => tokens.values().next().copied().unwrap_or(0),
            };
            let mut e = ev("ok").outcome("ok").token(token).sec(sec);
            if transfer {
                e.tokens = Some(tokens.clone());
            }
            if matches!(held, Held::Permit(_)) {
                e.permits = Some(args.permits);
            }
            ctx.rec.record(e);
            Some((held, token, sec, tokens))
        }
    }
}

/// How long a section lasts: short (5–50 ms, 77 %), long (0.3–1.5 s, 20 %)
/// or longer than the TTL (3 %: renewal); always long for `--broken`
/// workers (cut off mid-section, they still have accesses to make), always
/// short once the run has stopped (transfers that win in the drain).
pub fn length(ctx: &Ctx, args: &ChildArgs, rng: &mut Rng) -> Duration {
    let draining = ctx.rec.clock().now() >= args.stop_at;
    match rng.below(100) {
        _ if draining => Duration::from_millis(5 + rng.below(45)),
        _ if ctx.broken => Duration::from_millis(300 + rng.below(1200)),
        0..=2 => Duration::from_millis(args.ttl.as_millis() as u64 + 1000),
        3..=22 => Duration::from_millis(300 + rng.below(1200)),
        _ => Duration::from_millis(5 + rng.below(45)),
    }
}

/// How a section ended.
enum End {
    Done,
    Lost,
    /// The store refused a semaphore holder (it had been evicted).
    Fenced,
    /// A downgrade failed otherwise than by a loss: the guard is gone.
    DowngradeFailed,
}

/// A section on `held`: like a lock's (short, long or longer than the TTL;
/// a store access in the middle, a second one at the end of a long one),
/// with the primitive's own accesses; a writer may downgrade after its
/// first access and then only read; a semaphore holder leaves the store at
/// the end.
async fn section(
    ctx: &Ctx,
    args: &ChildArgs,
    h: &Handles,
    held: Held,
    what: What,
    sec: u64,
    rng: &mut Rng,
) {
    let length = length(ctx, args, rng);
    let long = length >= Duration::from_millis(300);
    let lost = held.lost();
    let slot = Mutex::new(Some(held));
    let holds = || {
        slot.lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(Held::is_held)
    };
    let names = what.names();
    let access = |what: &What, downgraded: bool| {
        let what = what.clone();
        async move {
            match what {
                What::Permit { token } => {
                    ctx.permit(sec, SEMAPHORE, token, PermitOp::Work, h.permits as usize)
                        .await
                }
                What::Read { key, token } => ctx.read_shared(sec, &key, token, "rw.read").await,
                What::Write { key, token, .. } if downgraded => {
                    ctx.read_shared(sec, &key, token, "rw.downgraded").await
                }
                What::Write { key, token, .. } => {
                    ctx.increment_as(sec, &key, token, Some("rw.write")).await
                }
                What::Transfer { names } => ctx.transfer(sec, &names).await,
            }
        }
    };
    let refused = |what: &What| match what {
        What::Permit { .. } => End::Fenced,
        _ => End::Lost,
    };
    let body = async {
        tokio::time::sleep(length / 2).await;
        if !ctx.broken && !holds() {
            return End::Lost;
        }
        let first = access(&what, false).await;
        if first == Err(Stopped::Fenced) && !ctx.broken {
            return refused(&what);
        }
        let mut downgraded = false;
        if let What::Write {
            key,
            token,
            downgrade: true,
        } = &what
        {
            if first != Err(Stopped::Unknown) {
                let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some(Held::Write(w)) = taken else {
                    return End::Lost;
                };
                let id = ctx.next_id();
                let ev = |phase: &str| {
                    Event::new("downgrade", phase)
                        .id(id)
                        .sec(sec)
                        .key(key)
                        .token(*token)
                };
                ctx.rec.record(ev("invoke").limit(args.ttl));
                match w.downgrade().await {
                    Ok(r) => {
                        ctx.rec
                            .record(ev("ok").outcome("ok").token(r.fencing_token()));
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Held::Read(r));
                        downgraded = true;
                    }
                    Err(e) => {
                        let expired = e.code() == ErrorCode::Expired;
                        ctx.rec.record(
                            ev("fail")
                                .outcome(&format!("{:?}", e.code()))
                                .detail(e.to_string()),
                        );
                        return if expired {
                            End::Lost
                        } else {
                            End::DowngradeFailed
                        };
                    }
                }
            }
        }
        tokio::time::sleep(length / 2).await;
        // A write whose outcome is unknown may still land: no further
        // access (see `worker::section`).
        let mut unknown = first == Err(Stopped::Unknown);
        if (long || downgraded) && !unknown {
            if !ctx.broken && !holds() {
                return End::Lost;
            }
            let second = access(&what, downgraded).await;
            if second == Err(Stopped::Fenced) && !ctx.broken {
                return refused(&what);
            }
            unknown = second == Err(Stopped::Unknown);
        }
        if let What::Permit { token } = &what {
            if !unknown && first.is_ok() {
                let _ = ctx
                    .permit(sec, SEMAPHORE, *token, PermitOp::Leave, h.permits as usize)
                    .await;
            }
        }
        End::Done
    };
    let end = if ctx.broken {
        body.await
    } else {
        tokio::select! {
            end = body => end,
            _ = lost => End::Lost,
        }
    };
    let how = match end {
        End::Done => "release",
        End::Lost => "lost",
        End::Fenced => "fenced",
        End::DowngradeFailed => "downgrade failed",
    };
    for (name, token) in &names {
        if let End::Lost = end {
            ctx.rec
                .record(Event::new("lost", "info").key(name).token(*token).sec(sec));
        }
        ctx.rec.record(
            Event::new("end", "info")
                .key(name)
                .token(*token)
                .sec(sec)
                .outcome(how),
        );
    }
    let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(held) = taken else {
        return; // a failed downgrade dropped it (released in the background)
    };
    let id = ctx.next_id();
    let key = names
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let ev = |phase: &str| {
        Event::new("release", phase)
            .id(id)
            .key(&key)
            .sec(sec)
            .kind(what.primitive())
    };
    ctx.rec.record(ev("invoke").limit(args.ttl));
    match held.release().await {
        Ok(()) => ctx.rec.record(ev("ok").outcome("ok")),
        Err(e) => ctx.rec.record(
            ev("fail")
                .outcome(&format!("{:?}", e.code()))
                .detail(e.to_string()),
        ),
    };
}
