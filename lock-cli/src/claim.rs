//! What `hold` and `elect` take before their command runs ([`Target`]), and
//! hold while it runs ([`Held`]): a lock, the read side of a read-write lock,
//! one permit of a semaphore, or the leadership of an election.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use distlock::{
    Election, ErrorCode, Leadership, Lock, LockGuard, LockManager, Permit, ReadGuard, RwLock,
    Semaphore,
};

use crate::exit::Failure;
use crate::show;

/// What is taken.
pub enum Target {
    /// `hold NAME`.
    Lock(Lock),
    /// `hold NAME --read`.
    Read(RwLock),
    /// `hold NAME --permits N`.
    Permit(Semaphore),
    /// `elect NAME`, campaigning with `value`.
    Leader { election: Election, value: Vec<u8> },
}

/// What is held while the command runs.
pub enum Held {
    Lock(LockGuard),
    Read(ReadGuard),
    Permit(Permit),
    Leader(Leadership),
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Target::Lock(lock) => lock.name(),
            Target::Read(rw) => rw.name(),
            Target::Permit(sem) => sem.name(),
            Target::Leader { election, .. } => election.name(),
        }
    }

    /// `DISTLOCK_KIND` for the command: `lock`, `read`, `permit` or `leader`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Lock(_) => "lock",
            Target::Read(_) => "read",
            Target::Permit(_) => "permit",
            Target::Leader { .. } => "leader",
        }
    }

    /// What is taken, for messages: ``lock `x` ``, ``read lock `x` ``,
    /// ``semaphore `x` ``, ``election `x` ``.
    pub fn what(&self) -> String {
        let name = self.name();
        match self {
            Target::Lock(_) => format!("lock `{name}`"),
            Target::Read(_) => format!("read lock `{name}`"),
            Target::Permit(_) => format!("semaphore `{name}`"),
            Target::Leader { .. } => format!("election `{name}`"),
        }
    }

    /// What a signal interrupts, for its message: `for the lock`, `to lead`.
    pub fn waiting_for(&self) -> &'static str {
        match self {
            Target::Leader { .. } => "to lead",
            _ => "for the lock",
        }
    }

    /// Why the command is stopped when [`Held::lost`] resolves.
    pub fn lost_why(&self) -> String {
        let name = self.name();
        match self {
            Target::Permit(_) => format!(
                "the permit of semaphore `{name}` was lost \
                 (lease not renewed in time, or force-unlocked)"
            ),
            Target::Leader { .. } => format!(
                "the leadership of election `{name}` was lost \
                 (lease not renewed in time, or its key was deleted)"
            ),
            other => format!(
                "{} was lost (lease not renewed in time, or force-unlocked)",
                other.what()
            ),
        }
    }

    /// Takes it: `None` when it stayed busy past `wait` (`0` tries once,
    /// `None` waits as long as it takes).
    pub async fn acquire(&self, wait: Option<Duration>) -> Result<Option<Held>, Failure> {
        let taken = match self {
            Target::Lock(lock) => match wait {
                None => lock.lock().await.map(Some),
                Some(Duration::ZERO) => lock.try_lock().await,
                Some(wait) => timed_out(lock.lock_timeout(wait).await),
            }
            .map(|g| g.map(Held::Lock)),
            Target::Read(rw) => match wait {
                None => rw.read().await.map(Some),
                Some(Duration::ZERO) => rw.try_read().await,
                Some(wait) => timed_out(rw.read_timeout(wait).await),
            }
            .map(|g| g.map(Held::Read)),
            Target::Permit(sem) => match wait {
                None => sem.acquire().await.map(Some),
                Some(Duration::ZERO) => sem.try_acquire().await,
                Some(wait) => timed_out(sem.acquire_timeout(wait).await),
            }
            .map(|p| p.map(Held::Permit)),
            Target::Leader { election, value } => match wait {
                None => election.campaign(value.clone()).await.map(Some),
                Some(Duration::ZERO) => election.try_campaign(value.clone()).await,
                Some(wait) => timed_out(election.campaign_timeout(value.clone(), wait).await),
            }
            .map(|l| l.map(Held::Leader)),
        };
        let verb = match self {
            Target::Leader { .. } => "cannot campaign in",
            _ => "cannot take",
        };
        taken.map_err(|e| Failure::lock(&format!("{verb} {}", self.what()), &e))
    }

    /// That it is busy, and who keeps it so when that can be read, for the
    /// exit-75 message: ``lock `x` is busy (held by ..., token N)``,
    /// ``election `x` is led by "v" (token N)``.
    pub async fn busy(&self, manager: &LockManager) -> String {
        let (what, why) = (self.what(), self.busy_because(manager).await);
        match self {
            Target::Leader { .. } if why.is_empty() => format!("{what} has a leader"),
            Target::Leader { .. } => format!("{what} is led by{why}"),
            _ => format!("{what} is busy{why}"),
        }
    }

    async fn busy_because(&self, manager: &LockManager) -> String {
        let name = self.name();
        match self {
            Target::Permit(sem) => {
                let Ok(Some(info)) = manager.semaphore_info(name).await else {
                    return String::new();
                };
                let holders: Vec<String> = info
                    .holders
                    .iter()
                    .map(|h| format!("{} token {}", show::owner(&h.owner), h.fencing_token))
                    .collect();
                let waiting = match info.waiters {
                    0 => String::new(),
                    n => format!("; {n} waiting"),
                };
                format!(
                    " ({} of {} permits held: {}{waiting})",
                    info.holders.len(),
                    sem.permits(),
                    holders.join(", ")
                )
            }
            Target::Leader { election, .. } => match election.leader().await {
                Ok(Some(leader)) => format!(
                    " {} (token {})",
                    show::value(&leader.value),
                    leader.fencing_token
                ),
                _ => String::new(),
            },
            Target::Lock(_) | Target::Read(_) => {
                let Ok(Some(info)) = manager.lock_info(name).await else {
                    return String::new();
                };
                let holder = format!("{}, token {}", show::owner(&info.owner), info.fencing_token);
                match (self, info.readers) {
                    (_, 0) => format!(" (held by {holder})"),
                    (Target::Read(_), readers) => format!(
                        " ({readers} reading, oldest {holder}; a writer waits ahead of new readers)"
                    ),
                    (_, readers) => format!(" (held by {readers} readers, oldest {holder})"),
                }
            }
        }
    }

    /// The variables the command gets: the name (`DISTLOCK_LOCK`, or
    /// `DISTLOCK_ELECTION` and `DISTLOCK_VALUE` for a leader), `DISTLOCK_KIND`
    /// and `DISTLOCK_FENCING_TOKEN`.
    pub fn env(&self, held: &Held) -> Vec<(&'static str, String)> {
        let mut env = match self {
            Target::Leader { election, value } => vec![
                ("DISTLOCK_ELECTION", election.name().to_owned()),
                (
                    "DISTLOCK_VALUE",
                    String::from_utf8_lossy(value).into_owned(),
                ),
            ],
            other => vec![("DISTLOCK_LOCK", other.name().to_owned())],
        };
        env.push(("DISTLOCK_KIND", self.kind().to_owned()));
        env.push(("DISTLOCK_FENCING_TOKEN", held.fencing_token().to_string()));
        env
    }
}

/// A bounded wait's timeout is a busy lock (`None`), not an error.
fn timed_out<G>(taken: distlock::Result<G>) -> distlock::Result<Option<G>> {
    match taken {
        Err(e) if e.code() == ErrorCode::Timeout => Ok(None),
        other => other.map(Some),
    }
}

impl Held {
    fn fencing_token(&self) -> u64 {
        match self {
            Held::Lock(g) => g.fencing_token(),
            Held::Read(g) => g.fencing_token(),
            Held::Permit(p) => p.fencing_token(),
            Held::Leader(l) => l.fencing_token(),
        }
    }

    /// Resolves when it is lost (or released).
    pub fn lost(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        match self {
            Held::Lock(g) => Box::pin(g.lost()),
            Held::Read(g) => Box::pin(g.lost()),
            Held::Permit(p) => Box::pin(p.lost()),
            Held::Leader(l) => Box::pin(l.lost()),
        }
    }

    /// Releases it (a leader resigns: the next candidate leads at once).
    pub async fn release(self) -> distlock::Result<()> {
        match self {
            Held::Lock(g) => g.unlock().await,
            Held::Read(g) => g.release().await,
            Held::Permit(p) => p.release().await,
            Held::Leader(l) => l.resign().await,
        }
    }
}
