//! [`Candidacy`]: this server's standing candidacy in an election, and
//! [`Role`], what it makes of this server at the moment.

use std::fmt;
use std::sync::{Arc, Mutex};

use distlock::{Election, ErrorCode, Leader, Leadership, LockError, LockManager, LockOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::tasks::{self, State};
use crate::lock::Refusal;

/// What this server is in its election right now, as [`Candidacy::role`]
/// sees it.
///
/// New variants may be added, so matches need a `_` arm.
///
/// ```
/// use distlock::{LockManager, LockOptions};
/// use distlock_tower::{Candidacy, Role};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let candidacy = Candidacy::start(&manager, "writer", "10.0.0.7:8080", LockOptions::default())?;
/// match candidacy.wait_for(|role| !matches!(role, Role::NoLeader)).await {
///     Role::Leader { fencing_token } => println!("leading, token {fencing_token}"),
///     Role::Follower(leader) => println!("{} leads", String::from_utf8_lossy(&leader.value)),
///     _ => {}
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// This server leads, and its leadership is held on this process's
    /// clock: requests behind [`LeaderOnly`](crate::LeaderOnly) run here.
    Leader {
        /// The leadership's fencing token.
        fencing_token: u64,
    },
    /// Another server leads: the leader as this server last observed it
    /// (its proclaimed value, its fencing token).
    Follower(Leader),
    /// Nobody leads as far as this server knows: the leader resigned or was
    /// lost and the next has not taken over yet, this server's own
    /// leadership was lost on its clock while etcd still lists its key, or
    /// the first observation has not come in yet.
    NoLeader,
    /// The candidacy's manager was closed: this server takes no part any
    /// more.
    Closed,
}

/// This server's candidacy in an election, for the life of the process:
/// it campaigns in a background task with a value that names this server
/// (its address, say), campaigns again after a loss, and keeps the current
/// leader, observed through the election's shared watch
/// ([`Election::observe`](distlock::Election::observe)), at hand. Reading
/// its [`role`](Candidacy::role) is a local read, never an etcd round trip,
/// so [`LeaderOnly`](crate::LeaderOnly) can ask it on every request.
///
/// Clones share one candidacy. It campaigns until [`resign`](Candidacy::resign)
/// is called or the last clone is dropped (a router holding the layer keeps
/// it), and stops for good when its manager is closed. The leadership is
/// the core's [`Leadership`]: lost when its lease is not renewed in time
/// (decided on this process's clock, before etcd can let another candidate
/// lead) or its key is deleted; then the candidacy campaigns again, behind
/// the candidates already waiting.
///
/// Give every server its own value: a server that observes the leader with
/// its own value takes it for its own leadership (one it is winning, or
/// one that is lost on its clock but still listed in etcd), and answers as
/// if nobody led rather than send clients to itself.
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
/// use distlock_tower::{Candidacy, Role};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// // On etcd: LockManager::connect(EtcdConfig::new([...]), "/shop").await?, one per server.
/// let manager = LockManager::in_memory();
/// let options = LockOptions::default().ttl(Duration::from_secs(10)); // a dead leader is replaced within 10 s
/// let a = Candidacy::start(&manager, "writer", "http://10.0.0.7:8080", options.clone())?;
/// let b = Candidacy::start(&manager.peer(), "writer", "http://10.0.0.8:8080", options)?;
///
/// a.wait_for(|role| matches!(role, Role::Leader { .. })).await;
/// let seen_by_b = b.wait_for(|role| matches!(role, Role::Follower(_))).await;
/// assert!(matches!(seen_by_b, Role::Follower(leader) if leader.value == b"http://10.0.0.7:8080"));
///
/// a.resign().await?; // b takes over
/// b.wait_for(|role| matches!(role, Role::Leader { .. })).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Candidacy {
    inner: Arc<Inner>,
}

/// What every clone of a [`Candidacy`] shares; dropping it stops the tasks.
struct Inner {
    name: String,
    value: Vec<u8>,
    manager: LockManager,
    state: Arc<watch::Sender<State>>,
    /// Cancelled by `resign`: the campaign task stops (the observer goes on).
    resigned: CancellationToken,
    /// Cancelled when the last clone is dropped: both tasks stop.
    dropped: CancellationToken,
    /// The campaign task, until `resign` has waited for it; it returns the
    /// leadership it held when stopped.
    campaign: Mutex<Option<JoinHandle<Option<Arc<Leadership>>>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.dropped.cancel();
    }
}

/// What this server is, with the leadership itself when it leads.
pub(crate) enum Current {
    Leading(Arc<Leadership>),
    Following(Leader),
    NoLeader,
    Closed,
}

impl Candidacy {
    /// Starts campaigning in election `name` of `manager`'s namespace with
    /// `value`, the value this server proclaims while it leads (followers
    /// send it to clients, in `x-distlock-leader`), in a background task;
    /// and starts observing the election. `options` are the leadership's
    /// lock options: its TTL bounds how long a leader that dies leaves the
    /// election without a leader.
    ///
    /// Fails with [`ErrorCode::InvalidOptions`] for an empty value or one
    /// over [`MAX_VALUE_LEN`](distlock::MAX_VALUE_LEN) bytes, invalid options, or outside a Tokio
    /// runtime; [`ErrorCode::InvalidKey`] for an invalid election name;
    /// [`ErrorCode::Closed`] if the manager is closed. Backend failures are
    /// not errors here: the task retries them.
    ///
    /// ```
    /// use distlock::{ErrorCode, LockManager, LockOptions};
    /// use distlock_tower::Candidacy;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let candidacy = Candidacy::start(&manager, "writer", "10.0.0.7:8080", LockOptions::default())?;
    /// assert_eq!(candidacy.name(), "writer");
    ///
    /// let empty = Candidacy::start(&manager, "writer", "", LockOptions::default());
    /// assert_eq!(empty.unwrap_err().code(), ErrorCode::InvalidOptions);
    /// # Ok(()) }
    /// ```
    pub fn start(
        manager: &LockManager,
        name: impl Into<String>,
        value: impl Into<Vec<u8>>,
        options: LockOptions,
    ) -> Result<Candidacy, LockError> {
        let (name, value) = (name.into(), value.into());
        Election::check_value(&value)?;
        if let Err(e) = tokio::runtime::Handle::try_current() {
            return Err(LockError::with_source(
                ErrorCode::InvalidOptions,
                "Candidacy::start campaigns in a task: call it inside a Tokio runtime",
                e,
            ));
        }
        let election = Arc::new(manager.new_election(name.clone(), options)?);
        let state = Arc::new(watch::Sender::new(State::default()));
        let dropped = CancellationToken::new();
        let resigned = dropped.child_token();
        tokio::spawn(tasks::observe(
            election.observe(),
            Arc::clone(&state),
            dropped.clone(),
        ));
        let campaign = tokio::spawn(tasks::campaign(
            election,
            value.clone(),
            Arc::clone(&state),
            resigned.clone(),
        ));
        Ok(Candidacy {
            inner: Arc::new(Inner {
                name,
                value,
                manager: manager.clone(),
                state,
                resigned,
                dropped,
                campaign: Mutex::new(Some(campaign)),
            }),
        })
    }

    /// The election's name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # use distlock_tower::Candidacy;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let c = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// assert_eq!(c.name(), "writer");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The value this server campaigns with.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # use distlock_tower::Candidacy;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let c = Candidacy::start(&LockManager::in_memory(), "writer", "10.0.0.7:8080", LockOptions::default())?;
    /// assert_eq!(c.value(), b"10.0.0.7:8080");
    /// # Ok(()) }
    /// ```
    pub fn value(&self) -> &[u8] {
        &self.inner.value
    }

    /// The manager the candidacy campaigns through.
    pub(crate) fn manager(&self) -> &LockManager {
        &self.inner.manager
    }

    /// What this server is now: a local read (the leadership's loss
    /// deadline is checked on this process's clock, here).
    ///
    /// ```
    /// use distlock::{LockManager, LockOptions};
    /// use distlock_tower::{Candidacy, Role};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let c = Candidacy::start(&manager, "writer", "a", LockOptions::default())?;
    /// c.wait_for(|role| matches!(role, Role::Leader { .. })).await;
    /// assert!(matches!(c.role(), Role::Leader { .. }));
    /// manager.close().await;
    /// assert_eq!(c.role(), Role::Closed);
    /// # Ok(()) }
    /// ```
    pub fn role(&self) -> Role {
        role_of(&self.current())
    }

    /// Waits until `pred` holds for this server's [`role`](Candidacy::role)
    /// (at once if it holds now), and returns that role. The role is
    /// checked again at every change the background tasks make (a leader
    /// won, lost or observed).
    ///
    /// ```
    /// use distlock::{LockManager, LockOptions};
    /// use distlock_tower::{Candidacy, Role};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let c = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// let role = c.wait_for(|role| matches!(role, Role::Leader { .. })).await;
    /// # let _ = role;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(&self, mut pred: impl FnMut(&Role) -> bool) -> Role {
        // Subscribed before the first look: a change after it is not missed.
        let mut changes = self.inner.state.subscribe();
        loop {
            let role = self.role();
            if pred(&role) {
                return role;
            }
            if changes.changed().await.is_err() {
                // Unreachable while `self` holds the sender; never busy-loop.
                std::future::pending::<()>().await;
            }
        }
    }

    /// This server's leadership while it leads (held on this process's
    /// clock), to proclaim a new value, run background work under its
    /// [scope](Leadership::scope) or watch its [loss](Leadership::lost).
    ///
    /// A clone kept after the leadership is lost or resigned delays nothing
    /// but its own resignation: the candidacy stops serving as leader at
    /// once; the key is deleted when the last clone is dropped.
    ///
    /// ```
    /// use distlock::{LockManager, LockOptions};
    /// use distlock_tower::{Candidacy, Role};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let c = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// c.wait_for(|role| matches!(role, Role::Leader { .. })).await;
    /// let leading = c.leadership().expect("leads");
    /// leading.proclaim("a, v2").await?;
    /// # Ok(()) }
    /// ```
    pub fn leadership(&self) -> Option<Arc<Leadership>> {
        match self.current() {
            Current::Leading(leadership) => Some(leadership),
            _ => None,
        }
    }

    /// Withdraws this server from the election for good: it stops
    /// campaigning (a campaign under way is withdrawn) and stops answering
    /// as leader at once. The leadership, if it had one, is resigned as soon
    /// as the requests it serves have ended — they run to their end under
    /// it, so the next leader does not start before them — and at once if
    /// none is in flight (then this returns the resignation's error, if
    /// any). The server goes on observing the election: as a follower it
    /// sends clients to the next leader.
    ///
    /// ```
    /// use distlock::{LockManager, LockOptions};
    /// use distlock_tower::{Candidacy, Role};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let a = Candidacy::start(&manager, "writer", "a", LockOptions::default())?;
    /// a.wait_for(|role| matches!(role, Role::Leader { .. })).await;
    /// let b = Candidacy::start(&manager.peer(), "writer", "b", LockOptions::default())?;
    /// a.resign().await?;
    /// b.wait_for(|role| matches!(role, Role::Leader { .. })).await;
    /// let role = a.wait_for(|role| matches!(role, Role::Follower(_))).await;
    /// assert!(matches!(role, Role::Follower(leader) if leader.value == b"b"));
    /// # Ok(()) }
    /// ```
    pub async fn resign(&self) -> Result<(), LockError> {
        self.inner.resigned.cancel();
        let task = self
            .inner
            .campaign
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(task) = task else {
            return Ok(()); // resigned already
        };
        let leadership = match task.await {
            Ok(leadership) => leadership,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None, // its runtime is shutting down
        };
        match leadership.map(Arc::try_unwrap) {
            Some(Ok(leadership)) => leadership.resign().await,
            // Requests still run under it: resigned when the last one ends.
            Some(Err(_)) | None => Ok(()),
        }
    }

    /// What this server is now, with its leadership when it leads.
    pub(crate) fn current(&self) -> Current {
        if self.inner.manager.is_closed() {
            return Current::Closed;
        }
        let state = self.inner.state.borrow();
        // Resigned: no longer the leader, even before the campaign task has
        // stopped.
        let leading = state.leading.as_ref().filter(|l| l.is_held());
        if let Some(leadership) = leading.filter(|_| !self.inner.resigned.is_cancelled()) {
            return Current::Leading(Arc::clone(leadership));
        }
        match &state.observed {
            // A leader with this server's value is this server: a
            // leadership it is winning, or one lost on its clock that etcd
            // still lists. Neither is a leader to send clients to.
            Some(Some(leader)) if leader.value != self.inner.value => {
                Current::Following(leader.clone())
            }
            _ => Current::NoLeader,
        }
    }

    /// Admits a request as leader, or says why not.
    pub(crate) fn admit(&self) -> Result<Arc<Leadership>, Refusal> {
        use crate::RejectionKind;
        let name = &self.inner.name;
        match self.current() {
            Current::Leading(leadership) => Ok(leadership),
            Current::Following(leader) => Err(Refusal::not_leader(
                LockError::new(
                    ErrorCode::NotHeld,
                    format!(
                        "this server does not lead election `{name}`; its leader is `{}`",
                        String::from_utf8_lossy(&leader.value)
                    ),
                ),
                leader.value,
            )),
            Current::NoLeader => Err(Refusal::new(
                RejectionKind::NoLeader,
                LockError::new(
                    ErrorCode::NotHeld,
                    format!("election `{name}` has no leader this server knows of"),
                ),
            )),
            Current::Closed => Err(Refusal::new(
                RejectionKind::Unavailable,
                LockError::new(
                    ErrorCode::Closed,
                    format!("the manager of election `{name}`'s candidacy is closed"),
                ),
            )),
        }
    }
}

/// The public view of `current`.
fn role_of(current: &Current) -> Role {
    match current {
        Current::Leading(l) => Role::Leader {
            fencing_token: l.fencing_token(),
        },
        Current::Following(leader) => Role::Follower(leader.clone()),
        Current::NoLeader => Role::NoLeader,
        Current::Closed => Role::Closed,
    }
}

impl fmt::Debug for Candidacy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidacy")
            .field("name", &self.inner.name)
            .field("value", &String::from_utf8_lossy(&self.inner.value))
            .field("role", &self.role())
            .finish()
    }
}
