//! One shape for every primitive, so that one test body serves them all: a
//! [`Prim`] names a primitive (a semaphore's permit, a read or a write lock,
//! a multi-lock, an election campaign), its [`Handle`] acquires it and its
//! [`Held`] is the guard, with what every guard has in common.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use distlock::{
    Election, Leadership, LockManager, LockOptions, MultiLock, MultiLockGuard, Permit, ReadGuard,
    Result, RwLock, Semaphore, WriteGuard,
};

/// A primitive, as the tests drive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    /// A permit of a semaphore of one permit (so that a rival waits).
    Permit,
    /// A read lock (its rival is a writer).
    Read,
    /// A write lock.
    Write,
    /// A multi-lock of two names, `{name}.a` and `{name}.b`.
    Multi,
    /// Leading an election.
    Leader,
}

impl Prim {
    /// Every primitive, in the order [`for_each_prim`] reports them.
    pub const ALL: [Prim; 5] = [
        Prim::Permit,
        Prim::Read,
        Prim::Write,
        Prim::Multi,
        Prim::Leader,
    ];

    /// A name for this primitive's part of a test: `{base}-{prim}`, so that
    /// primitives run at once never share a queue.
    pub fn name(self, base: &str) -> String {
        format!("{base}-{self:?}").to_lowercase()
    }

    /// How many keys one acquisition puts: one per name.
    pub fn keys_per_entry(self) -> usize {
        match self {
            Prim::Multi => 2,
            _ => 1,
        }
    }

    /// A handle on this primitive's `name` through `manager`.
    pub fn handle(self, manager: &LockManager, name: &str, opts: LockOptions) -> Handle {
        let made = match self {
            Prim::Permit => manager.new_semaphore(name, 1, opts).map(Handle::Permit),
            Prim::Read => manager.new_rw_lock(name, opts).map(Handle::Read),
            Prim::Write => manager.new_rw_lock(name, opts).map(Handle::Write),
            Prim::Multi => manager
                .new_multi_lock(Self::multi_names(name), opts)
                .map(Handle::Multi),
            Prim::Leader => manager.new_election(name, opts).map(Handle::Leader),
        };
        made.unwrap_or_else(|e| panic!("{self:?} {name}: {e}"))
    }

    /// What waits for a holder of this primitive: a writer for a reader,
    /// the same primitive otherwise.
    pub fn rival(self) -> Prim {
        match self {
            Prim::Read => Prim::Write,
            other => other,
        }
    }

    /// A multi-lock's names for `name`.
    pub fn multi_names(name: &str) -> [String; 2] {
        [format!("{name}.a"), format!("{name}.b")]
    }

    /// The lock-queue names whose head this primitive's holder is (for
    /// `force_unlock_token`): none for a semaphore's permit and a candidate,
    /// whose keys are in key spaces of their own.
    pub fn lock_names(self, name: &str) -> Vec<String> {
        match self {
            Prim::Read | Prim::Write => vec![name.to_owned()],
            Prim::Multi => Self::multi_names(name).to_vec(),
            Prim::Permit | Prim::Leader => Vec::new(),
        }
    }

    /// The prefixes of the queues this primitive's keys for `name` go
    /// into, in namespace `ns`.
    pub fn queue_prefixes(self, ns: &str, name: &str) -> Vec<String> {
        let keys = distlock::layout::Keyspace::new(ns);
        match self {
            Prim::Permit => vec![keys.semaphore(name)],
            Prim::Leader => vec![keys.election(name)],
            Prim::Read | Prim::Write => vec![keys.queue(name)],
            Prim::Multi => Self::multi_names(name)
                .iter()
                .map(|n| keys.queue(n))
                .collect(),
        }
    }

    /// How many keys (holders and waiters) `observer` sees in this
    /// primitive's queues of `name` through the API, which is all a peer in
    /// memory can see; `None` for an election, whose candidates the API
    /// does not list (see [`leads`](Self::leads)).
    pub async fn entries(self, observer: &LockManager, name: &str) -> Option<usize> {
        let lock = |n: String| async move {
            let info = observer.lock_info(&n).await.unwrap();
            info.map_or(0, |i| i.readers.max(1) + i.waiters)
        };
        Some(match self {
            Prim::Permit => observer
                .semaphore_info(name)
                .await
                .unwrap()
                .map_or(0, |i| i.holders.len() + i.waiters),
            Prim::Read | Prim::Write => lock(name.to_owned()).await,
            Prim::Multi => {
                let [a, b] = Self::multi_names(name);
                lock(a).await + lock(b).await
            }
            Prim::Leader => return None,
        })
    }

    /// Whether any candidate is in election `name`, as `observer` sees it.
    pub async fn leads(observer: &LockManager, name: &str) -> bool {
        let election = observer.new_election(name, LockOptions::default()).unwrap();
        election.leader().await.unwrap().is_some()
    }
}

/// A handle on a primitive.
#[derive(Debug)]
pub enum Handle {
    Permit(Semaphore),
    Read(RwLock),
    Write(RwLock),
    Multi(MultiLock),
    Leader(Election),
}

/// What a candidate proclaims.
const CANDIDATE: &str = "candidate";

impl Handle {
    /// Waits as long as it takes.
    pub async fn acquire(&self) -> Result<Held> {
        Ok(match self {
            Handle::Permit(s) => Held::Permit(s.acquire().await?),
            Handle::Read(rw) => Held::Read(rw.read().await?),
            Handle::Write(rw) => Held::Write(rw.write().await?),
            Handle::Multi(ml) => Held::Multi(ml.lock().await?),
            Handle::Leader(e) => Held::Leader(e.campaign(CANDIDATE).await?),
        })
    }

    /// Tries once: `None` when busy.
    pub async fn try_acquire(&self) -> Result<Option<Held>> {
        Ok(match self {
            Handle::Permit(s) => s.try_acquire().await?.map(Held::Permit),
            Handle::Read(rw) => rw.try_read().await?.map(Held::Read),
            Handle::Write(rw) => rw.try_write().await?.map(Held::Write),
            Handle::Multi(ml) => ml.try_lock().await?.map(Held::Multi),
            Handle::Leader(e) => e.try_campaign(CANDIDATE).await?.map(Held::Leader),
        })
    }

    /// Waits at most `wait`.
    pub async fn acquire_timeout(&self, wait: Duration) -> Result<Held> {
        Ok(match self {
            Handle::Permit(s) => Held::Permit(s.acquire_timeout(wait).await?),
            Handle::Read(rw) => Held::Read(rw.read_timeout(wait).await?),
            Handle::Write(rw) => Held::Write(rw.write_timeout(wait).await?),
            Handle::Multi(ml) => Held::Multi(ml.lock_timeout(wait).await?),
            Handle::Leader(e) => Held::Leader(e.campaign_timeout(CANDIDATE, wait).await?),
        })
    }
}

/// A held primitive.
#[derive(Debug)]
pub enum Held {
    Permit(Permit),
    Read(ReadGuard),
    Write(WriteGuard),
    Multi(MultiLockGuard),
    Leader(Leadership),
}

impl Held {
    /// Its fencing token (a multi-lock's keys share one).
    pub fn token(&self) -> u64 {
        match self {
            Held::Permit(p) => p.fencing_token(),
            Held::Read(r) => r.fencing_token(),
            Held::Write(w) => w.fencing_token(),
            Held::Multi(m) => *m.fencing_tokens().values().next().unwrap(),
            Held::Leader(l) => l.fencing_token(),
        }
    }

    /// Whether it is still held (a multi-lock: every name).
    pub fn is_held(&self) -> bool {
        match self {
            Held::Permit(p) => p.is_held(),
            Held::Read(r) => r.is_held(),
            Held::Write(w) => w.is_held(),
            Held::Multi(m) => m.is_held(),
            Held::Leader(l) => l.is_held(),
        }
    }

    /// Resolves when it is lost (or released).
    pub fn lost(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        match self {
            Held::Permit(p) => Box::pin(p.lost()),
            Held::Read(r) => Box::pin(r.lost()),
            Held::Write(w) => Box::pin(w.lost()),
            Held::Multi(m) => Box::pin(m.lost()),
            Held::Leader(l) => Box::pin(l.lost()),
        }
    }

    /// Whether [`lost`](Self::lost) is ready at its first poll (no waiting
    /// for a task to run: what the caller's clock says now).
    pub fn lost_now(&self) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        self.lost().as_mut().poll(&mut cx).is_ready()
    }

    /// Releases (resigns) it.
    pub async fn release(self) -> Result<()> {
        match self {
            Held::Permit(p) => p.release().await,
            Held::Read(r) => r.release().await,
            Held::Write(w) => w.release().await,
            Held::Multi(m) => m.release().await,
            Held::Leader(l) => l.resign().await,
        }
    }
}

/// Runs `each(prim)` for every primitive at once (each on names of its
/// own), so that a suite of slow failure paths takes the time of one; their
/// outputs in [`Prim::ALL`]'s order. A panic in any of them fails the caller.
pub async fn for_each_prim<'a, F, Fut, T>(each: F) -> Vec<T>
where
    F: Fn(Prim) -> Fut,
    Fut: Future<Output = T> + 'a,
{
    let mut runs: Vec<Pin<Box<Fut>>> = Prim::ALL.into_iter().map(|p| Box::pin(each(p))).collect();
    let mut outputs: Vec<Option<T>> = runs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (run, output) in runs.iter_mut().zip(&mut outputs) {
            if output.is_none() {
                match run.as_mut().poll(cx) {
                    std::task::Poll::Ready(done) => *output = Some(done),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        match pending {
            true => std::task::Poll::Pending,
            false => std::task::Poll::Ready(()),
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}
