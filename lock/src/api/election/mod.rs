//! [`Election`]: one leader among candidates, on etcd's own layout.
//!
//! Candidates put `{ns}/elections/{name}/{lease hex}` holding exactly their
//! proclaimed value (what etcdctl and Go's `concurrency.Election` read); the
//! lowest create revision leads, and its create revision is the fencing
//! token. A campaign is an exclusive entry in that queue: FIFO, no herd,
//! bounded like a lock wait; loss is decided on the client's clock, as for
//! locks. `observe` shares one watch per election per manager
//! ([`observe`](self::observe)).

mod leadership;
mod observe;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::lock::Lock;
use crate::error::{ErrorCode, LockError, Result};
use crate::queue::Mode;

pub use leadership::Leadership;
pub use observe::LeaderChanges;
pub(crate) use observe::Observers;

/// The longest proclaimed value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// The leader of an election as observers see it.
///
/// ```
/// # use distlock::{LockManager, LockOptions};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let election = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
/// let leading = election.campaign("10.0.0.7:8080").await?;
/// let leader = election.leader().await?.expect("someone leads");
/// assert_eq!(leader.value, b"10.0.0.7:8080");
/// assert_eq!(leader.fencing_token, leading.fencing_token());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The value the leader proclaimed, as stored in its key.
    pub value: Vec<u8>,
    /// Its fencing token: its key's create revision, strictly increasing from
    /// one leader to the next.
    pub fencing_token: u64,
}

/// One election: candidates campaign, the oldest leads, everyone can see who.
/// Made by [`LockManager::new_election`](crate::LockManager::new_election).
///
/// Interoperates with etcd's own elections: `etcdctl elect -l
/// {ns}/elections/{name}` shows distlock's leader, and
/// [`observe`](Election::observe) sees an `etcdctl elect` (or Go) leader.
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let a = manager.new_election("scheduler", LockOptions::default())?;
/// let b = manager.peer().new_election("scheduler", LockOptions::default())?;
///
/// let leading = a.campaign("replica-a").await?;
/// assert!(b.try_campaign("replica-b").await?.is_none()); // a leads
/// leading.proclaim("replica-a, v2").await?;
/// assert_eq!(b.leader().await?.unwrap().value, b"replica-a, v2");
/// leading.resign().await?;                               // the next candidate leads at once
/// let next = b.try_campaign("replica-b").await?.expect("nobody leads");
/// # drop(next); Ok(()) }
/// ```
#[derive(Debug)]
pub struct Election {
    lock: Lock,
    observers: Arc<Observers>,
}

impl Election {
    pub(crate) fn new(lock: Lock, observers: Arc<Observers>) -> Self {
        Election { lock, observers }
    }

    /// The election's name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
    /// assert_eq!(e.name(), "scheduler");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        self.lock.name()
    }

    /// Campaigns with `value` and waits until this candidate leads (cancel
    /// by dropping the future: the candidacy goes with it). Fails with
    /// `InvalidOptions` for an empty or oversized value, `AlreadyHeld` when
    /// this task already campaigns in this election through this manager,
    /// `Expired` when its key vanished while it waited — or when its lease
    /// went while a request of it was unanswered, as its key may have led
    /// meanwhile, seen with that key's token (a leadership is only ever the
    /// one observers saw).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
    /// let leading = e.campaign("10.0.0.7:8080").await?;
    /// assert!(leading.is_held());
    /// # Ok(()) }
    /// ```
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        let value = checked_value(value.into())?;
        let leading = self
            .lock
            .attempt_with(Mode::Wait, None, Some(value))
            .await?;
        leading
            .map(Leadership::new)
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "campaign ended without leading"))
    }

    /// Campaigns once: leads now, or `None` when another candidate leads or
    /// waits (this candidacy is then withdrawn).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
    /// assert!(e.try_campaign("me").await?.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn try_campaign(&self, value: impl Into<Vec<u8>>) -> Result<Option<Leadership>> {
        let value = checked_value(value.into())?;
        let leading = self.lock.attempt_with(Mode::Try, None, Some(value)).await?;
        Ok(leading.map(Leadership::new))
    }

    /// Campaigns, waiting at most `wait`; then fails with
    /// [`ErrorCode::Timeout`] (`Backend` during an outage).
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let leading = manager.new_election("s", LockOptions::default())?.campaign("a").await?;
    /// let other = manager.peer().new_election("s", LockOptions::default())?;
    /// let err = other.campaign_timeout("b", Duration::from_millis(50)).await.unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::Timeout);
    /// # drop(leading); Ok(()) }
    /// ```
    pub async fn campaign_timeout(
        &self,
        value: impl Into<Vec<u8>>,
        wait: Duration,
    ) -> Result<Leadership> {
        let value = checked_value(value.into())?;
        if wait.is_zero() {
            return self.try_campaign(value).await?.ok_or_else(|| {
                LockError::new(
                    ErrorCode::Timeout,
                    format!("`{}` has a leader", self.name()),
                )
            });
        }
        let leading = self
            .lock
            .attempt_with(Mode::Wait, Some(wait), Some(value))
            .await?;
        leading
            .map(Leadership::new)
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "campaign ended without leading"))
    }

    /// The current leader (one read), or `None` when nobody campaigns.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
    /// assert!(e.leader().await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn leader(&self) -> Result<Option<Leader>> {
        self.lock.shared.ensure_open()?;
        let listing = self.lock.shared.backend.list(&self.lock.queue).await?;
        Ok(listing.entries.first().map(|e| Leader {
            value: e.value.clone(),
            fencing_token: e.create_rev as u64,
        }))
    }

    /// Every change of leader: the current leader first (`None`: nobody
    /// leads), then each change — a new leader, a new value, no leader — in
    /// order, once each. One watch per election per manager serves every
    /// observer; it resumes after breaks, and after a compaction reports the
    /// leader then (changes etcd no longer has are gone). A `Backend` error
    /// item says the watch failed for a while; the stream goes on.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
    /// let mut changes = e.observe();
    /// assert_eq!(changes.next().await.unwrap()?, None); // nobody leads yet
    /// let leading = e.campaign("me").await?;
    /// let now = changes.next().await.unwrap()?.unwrap();
    /// assert_eq!(now.fencing_token, leading.fencing_token());
    /// # Ok(()) }
    /// ```
    pub fn observe(&self) -> LeaderChanges {
        self.observers.observe(&self.lock)
    }

    /// Campaigns with `value`, then runs `work` as the leader: `work` is
    /// cancelled at its next await if leadership is lost (the call then
    /// returns `Expired`), and the candidate resigns when `work` ends.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
    /// let ran = e
    ///     .run_while_leader("me", |leading| async move { leading.fencing_token() })
    ///     .await?;
    /// assert!(ran > 0);
    /// assert!(e.leader().await?.is_none()); // resigned
    /// # Ok(()) }
    /// ```
    pub async fn run_while_leader<F, Fut, T>(&self, value: impl Into<Vec<u8>>, work: F) -> Result<T>
    where
        F: FnOnce(Arc<Leadership>) -> Fut,
        Fut: Future<Output = T>,
    {
        let leading = Arc::new(self.campaign(value).await?);
        let lost = leading.lost();
        let outcome = tokio::select! {
            biased;
            done = work(Arc::clone(&leading)) => Some(done),
            _ = lost => None,
        };
        let resigned = match Arc::try_unwrap(leading) {
            Ok(leading) => leading.resign().await,
            // `work` kept a clone (a spawned task): it resigns when dropped.
            Err(_) => Ok(()),
        };
        match outcome {
            Some(done) => resigned.map(|()| done),
            None => Err(LockError::new(
                ErrorCode::Expired,
                format!(
                    "leadership of `{}` was lost; the work was cancelled",
                    self.name()
                ),
            )),
        }
    }
}

/// A proclaimed value: 1 byte to [`MAX_VALUE_LEN`].
fn checked_value(value: Vec<u8>) -> Result<Vec<u8>> {
    Election::check_value(&value)?;
    Ok(value)
}

impl Election {
    /// Checks a value a candidate could campaign or proclaim with: 1 byte
    /// to [`MAX_VALUE_LEN`], else `InvalidOptions` — the check
    /// [`campaign`](Election::campaign) and [`proclaim`](Leadership::proclaim)
    /// make, for code that takes a value now and campaigns later.
    ///
    /// ```
    /// use distlock::{Election, ErrorCode, MAX_VALUE_LEN};
    /// assert!(Election::check_value(b"10.0.0.7:8080").is_ok());
    /// assert_eq!(Election::check_value(b"").unwrap_err().code(), ErrorCode::InvalidOptions);
    /// assert!(Election::check_value(&vec![b'x'; MAX_VALUE_LEN + 1]).is_err());
    /// ```
    pub fn check_value(value: &[u8]) -> Result<()> {
        if value.is_empty() || value.len() > MAX_VALUE_LEN {
            return Err(LockError::new(
                ErrorCode::InvalidOptions,
                format!(
                    "a candidate's value is 1 to {MAX_VALUE_LEN} bytes, not {}",
                    value.len()
                ),
            ));
        }
        Ok(())
    }
}
