//! Retrying backend calls that failed transiently, and remembering how the
//! backend answered (so that a wait that ends during an outage says so).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::options::LockOptions;
use crate::error::{ErrorCode, LockError, Result};

/// How many times a one-shot call with no lock options of its own (the
/// first requests of `LockManager::connect`, an inspection read such as
/// `lock_info`) is tried in all when it fails transiently, and the pause
/// between tries (see [`one_shot`]).
pub(crate) const ONE_SHOT_ATTEMPTS: u32 = 3;
pub(crate) const ONE_SHOT_PAUSE: Duration = Duration::from_millis(100);

/// Runs a one-shot call, trying it again on a transient failure (a
/// connection reset, a request that got no answer), [`ONE_SHOT_ATTEMPTS`]
/// times in all, [`ONE_SHOT_PAUSE`] apart; a permanent failure, or the last
/// transient one, is returned as it came. Lock calls retry by their
/// options instead ([`Retry`]).
pub(crate) async fn one_shot<T, Fut>(what: &str, mut call: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(err) if err.is_transient() && attempt < ONE_SHOT_ATTEMPTS => {
                debug!(%err, attempt, what, "failed transiently; trying again");
                attempt += 1;
                tokio::time::sleep(ONE_SHOT_PAUSE).await;
            }
            outcome => return outcome,
        }
    }
}

/// How long a backend that has not answered a first call at all counts as
/// merely slow rather than failing (see [`Health::verdict`]).
pub(crate) const SILENT: Duration = Duration::from_millis(250);

/// What the backend last said to a caller: nothing yet, an answer, or an
/// error. Each acquisition keeps one, and so does its manager (every
/// acquisition and keep-alive reports to both), so that a wait that times out
/// can tell a busy lock from an unreachable backend (DESIGN §7: an outage is
/// not contention).
#[derive(Debug, Default)]
pub(crate) struct Health {
    state: Mutex<Heard>,
    parent: Option<Arc<Health>>,
}

#[derive(Debug, Default)]
enum Heard {
    /// No backend call was made.
    #[default]
    Nothing,
    /// Calls were made since this moment, none answered yet.
    Asked(Instant),
    /// The last call that ended was answered.
    Answered,
    /// The last call that ended failed with this error.
    Failed(LockError),
}

impl Health {
    /// A record of its own that also reports to `parent` (the manager's).
    pub(crate) fn child(parent: &Arc<Health>) -> Arc<Health> {
        Arc::new(Health {
            state: Mutex::default(),
            parent: Some(Arc::clone(parent)),
        })
    }

    fn set(&self, update: impl Fn(&mut Heard)) {
        update(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(parent) = &self.parent {
            parent.set(update);
        }
    }

    /// A backend call starts.
    pub(crate) fn asked(&self) {
        self.set(|heard| {
            if matches!(heard, Heard::Nothing) {
                *heard = Heard::Asked(Instant::now());
            }
        });
    }

    /// A backend call ended with `outcome`.
    pub(crate) fn heard<T>(&self, outcome: &Result<T>) {
        self.set(|heard| {
            *heard = match outcome {
                Ok(_) => Heard::Answered,
                Err(err) => Heard::Failed(err.duplicate("the last backend call")),
            }
        });
    }

    /// The error for a wait of `waited` for `what` (``lock `order:42` ``,
    /// ``semaphore `crawl` ``, ...) that ran out: `Timeout` when the
    /// backend was answering (the lock was busy), `Backend` with the last
    /// backend error as its source when it was failing, or had not answered
    /// for [`SILENT`] or half the wait, whichever is longer (a healthy
    /// backend that is merely slower than a very short wait is not an
    /// outage). A wait that made no backend call of its own (it queued behind
    /// another acquisition of this process) goes by its manager's record.
    pub(crate) fn verdict(&self, what: &str, waited: Duration) -> LockError {
        let busy = || {
            LockError::new(
                ErrorCode::Timeout,
                format!("{what} not acquired within {waited:?}"),
            )
        };
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            Heard::Nothing => match &self.parent {
                Some(parent) => parent.verdict(what, waited),
                None => busy(),
            },
            Heard::Answered => busy(),
            Heard::Asked(since) if since.elapsed() < SILENT.max(waited / 2) => busy(),
            Heard::Asked(since) => LockError::new(
                ErrorCode::Backend,
                format!(
                    "{what} not acquired within {waited:?}: the backend has not \
                     answered for {:?}",
                    since.elapsed()
                ),
            ),
            Heard::Failed(err) => LockError::with_source(
                ErrorCode::Backend,
                format!("{what} not acquired within {waited:?}: the backend was failing"),
                err.duplicate("the last backend call"),
            ),
        }
    }
}

/// The retry policy of one lock: `retry_interval` between attempts, at most
/// `max_retries` retries (0 = unlimited), and optionally a time after which
/// no retry starts. Every attempt's outcome goes to its [`Health`], if any.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    interval: Duration,
    max: u32,
    give_up_at: Option<Instant>,
    health: Option<Arc<Health>>,
}

impl Retry {
    pub(crate) fn new(opts: &LockOptions) -> Self {
        Retry {
            interval: opts.retry_interval,
            max: opts.max_retries,
            give_up_at: None,
            health: None,
        }
    }

    /// The same policy, reporting every attempt to `health`.
    pub(crate) fn reporting(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Reports a backend call made outside [`run`](Self::run) (a watch).
    pub(crate) fn heard<T>(&self, outcome: &Result<T>) {
        if let Some(health) = &self.health {
            health.heard(outcome);
        }
    }

    /// The pause between attempts.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// The same policy, but starting no retry after `within` from now.
    pub(crate) fn within(mut self, within: Duration) -> Self {
        self.give_up_at = Some(Instant::now() + within);
        self
    }

    /// Runs `op` until it succeeds, fails for good, or the policy is spent.
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retries = 0u32;
        loop {
            if let Some(health) = &self.health {
                health.asked();
            }
            let outcome = op().await;
            self.heard(&outcome);
            match outcome {
                Err(err) if err.is_transient() => {
                    retries += 1;
                    let spent = self.max != 0 && retries > self.max;
                    let late = self
                        .give_up_at
                        .is_some_and(|t| Instant::now() + self.interval > t);
                    if spent || late {
                        return Err(LockError::with_source(
                            ErrorCode::Backend,
                            format!("{what} still failing after {} retries", retries - 1),
                            err,
                        ));
                    }
                    debug!(what, retries, %err, "transient backend failure; retrying");
                    tokio::time::sleep(self.interval).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> LockError {
        LockError::backend("down", std::io::Error::other("x"), true)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let retry = Retry::new(&LockOptions::default().max_retries(3));
        let err = retry
            .run("op", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(transient())
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Backend);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_first_success_or_permanent_error() {
        let calls = AtomicU32::new(0);
        let retry = Retry::new(&LockOptions::default());
        let ok = retry
            .run("op", || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(transient()),
                    n => Ok(n),
                }
            })
            .await
            .unwrap();
        assert_eq!(ok, 2);
        let permanent = retry
            .run("op", || async {
                Err::<(), _>(LockError::new(ErrorCode::Expired, "gone"))
            })
            .await
            .unwrap_err();
        assert_eq!(permanent.code(), ErrorCode::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn health_tells_a_busy_lock_from_an_outage() {
        let manager = Arc::new(Health::default());
        let wait = Duration::from_secs(1);
        // Queued locally, nothing heard by anyone: busy.
        let queued = Health::child(&manager);
        assert_eq!(queued.verdict("lock `n`", wait).code(), ErrorCode::Timeout);
        // Asked and not answered yet within a very short wait: merely slow.
        let retry = Retry::new(&LockOptions::default()).reporting(Health::child(&manager));
        let short = Duration::from_millis(5);
        let never = retry.run("op", std::future::pending::<Result<()>>);
        assert!(tokio::time::timeout(short, never).await.is_err());
        assert_eq!(
            retry
                .health
                .as_ref()
                .unwrap()
                .verdict("lock `n`", short)
                .code(),
            ErrorCode::Timeout
        );
        // Asked and never answered for half a longer wait: an outage.
        let silent = retry.clone().within(Duration::from_millis(250));
        let never = silent.run("op", std::future::pending::<Result<()>>);
        assert!(tokio::time::timeout(wait, never).await.is_err());
        assert_eq!(
            retry
                .health
                .as_ref()
                .unwrap()
                .verdict("lock `n`", wait)
                .code(),
            ErrorCode::Backend
        );
        // The last call failed: an outage, with the failure as the source.
        let failing = silent
            .run("op", || async { Err::<(), _>(transient()) })
            .await;
        assert!(failing.is_err());
        let err = retry.health.as_ref().unwrap().verdict("lock `n`", wait);
        assert_eq!(err.code(), ErrorCode::Backend);
        assert!(std::error::Error::source(&err).is_some());
        // The manager heard the failure too: a wait queued behind says so.
        assert_eq!(queued.verdict("lock `n`", wait).code(), ErrorCode::Backend);
        // The last call answered: busy.
        retry.run("op", || async { Ok(()) }).await.unwrap();
        assert_eq!(
            retry
                .health
                .as_ref()
                .unwrap()
                .verdict("lock `n`", wait)
                .code(),
            ErrorCode::Timeout
        );
        assert_eq!(queued.verdict("lock `n`", wait).code(), ErrorCode::Timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_its_time() {
        let retry = Retry::new(&LockOptions::default()).within(Duration::from_secs(1));
        let start = Instant::now();
        let err = retry
            .run("op", || async { Err::<(), _>(transient()) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Backend);
        assert!(start.elapsed() <= Duration::from_secs(1));
    }
}
