//! Retrying backend calls that failed transiently.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::error::{ErrorCode, LockError, Result};
use crate::options::LockOptions;

/// The retry policy of one lock: `retry_interval` between attempts, at most
/// `max_retries` retries (0 = unlimited), and optionally a time after which
/// no retry starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    interval: Duration,
    max: u32,
    give_up_at: Option<Instant>,
}

impl Retry {
    pub(crate) fn new(opts: &LockOptions) -> Self {
        Retry {
            interval: opts.retry_interval,
            max: opts.max_retries,
            give_up_at: None,
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
            match op().await {
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
