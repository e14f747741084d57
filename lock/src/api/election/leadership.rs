//! [`Leadership`]: proof of leading an election.

use std::future::Future;

use crate::error::Result;
use crate::hold::{LockGuard, OwnerScope};
use crate::metrics::{Labels, Leading, Source};

/// Proof of leading an [`Election`](crate::Election). Resign with
/// [`resign`](Leadership::resign) to see errors; dropping it resigns in the
/// background, and the next candidate leads at once.
///
/// ```
/// # use distlock::{LockManager, LockOptions};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
/// let leading = e.campaign("10.0.0.7:8080").await?;
/// assert!(leading.is_held());
/// println!("leading with fencing token {}", leading.fencing_token());
/// leading.resign().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the leadership resigns it"]
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
    _leading: Leading,
}

impl Leadership {
    pub(super) fn new(guard: LockGuard) -> Self {
        let labels = Labels::new(Source::Election, None);
        Leadership {
            guard,
            _leading: Leading::start(labels),
        }
    }

    /// Proclaims a new value, still leading: the key keeps its place and
    /// token. Transient backend failures are retried for at most about one
    /// TTL; then `Backend`, still leading with the old value. `Expired` if
    /// leadership was lost, before or while proclaiming; `InvalidOptions`
    /// for an empty or oversized value.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("scheduler", LockOptions::default())?;
    /// let leading = e.campaign("10.0.0.7:8080").await?;
    /// leading.proclaim("10.0.0.7:9090").await?;
    /// assert_eq!(e.leader().await?.unwrap().value, b"10.0.0.7:9090");
    /// # Ok(()) }
    /// ```
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let value = super::checked_value(value.into())?;
        self.guard.hold_ref().rewrite(value, "proclaimed").await
    }

    /// The value this leader last proclaimed.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("s", LockOptions::default())?;
    /// assert_eq!(e.campaign("me").await?.value(), b"me");
    /// # Ok(()) }
    /// ```
    pub fn value(&self) -> Vec<u8> {
        self.guard.hold_ref().value()
    }

    /// The fencing token of this leadership: its key's create revision,
    /// strictly increasing from one leader to the next.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("s", LockOptions::default())?;
    /// assert!(e.campaign("me").await?.fencing_token() > 0);
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.guard.fencing_token()
    }

    /// Whether this candidate still leads: false once leadership is lost
    /// (its lease not renewed in time — decided on this process's clock,
    /// before etcd can let another candidate lead — or its key deleted).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("s", LockOptions::default())?;
    /// assert!(e.campaign("me").await?.is_held());
    /// # Ok(()) }
    /// ```
    pub fn is_held(&self) -> bool {
        self.guard.is_held()
    }

    /// Resolves when leadership is lost (or given up).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # async fn schedule_jobs() {}
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("s", LockOptions::default())?;
    /// let leading = e.campaign("me").await?;
    /// tokio::select! {
    ///     _ = leading.lost() => eprintln!("no longer the leader"),
    ///     _ = schedule_jobs() => {}
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.guard.lost()
    }

    /// An owner scope for this leadership (see
    /// [`LockGuard::scope`](crate::LockGuard::scope)): code run in it sees
    /// the leadership as [`current_lock`](crate::current_lock).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("s", LockOptions::default())?;
    /// let leading = e.campaign("me").await?;
    /// let token = leading.scope().run(async { distlock::current_fencing_token() }).await;
    /// assert_eq!(token, Some(leading.fencing_token()));
    /// # Ok(()) }
    /// ```
    pub fn scope(&self) -> OwnerScope {
        self.guard.scope()
    }

    /// Resigns: the key is deleted, and the next candidate leads at once.
    /// `Expired` if leadership had been lost.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let e = LockManager::in_memory().new_election("s", LockOptions::default())?;
    /// e.campaign("me").await?.resign().await?;
    /// assert!(e.leader().await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn resign(self) -> Result<()> {
        self.guard.unlock().await
    }
}
