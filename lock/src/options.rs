//! [`LockOptions`]: TTL, renewal and retry settings of a lock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, LockError, Result};
use crate::session::safety_margin;

/// How a lock behaves: how long it lives, whether and how often it is renewed,
/// and how backend failures are retried.
///
/// The defaults are the seed specification's: TTL 30 s, auto-renew on, renew
/// every 10 s, retry every 100 ms, unlimited retries.
///
/// `retry_interval` and `max_retries` govern retries after *transient backend
/// errors* (a lost connection, a cluster without a leader). Waiting for a busy
/// lock never polls: a waiter watches its predecessor in the queue.
///
/// Options deserialize from human durations:
///
/// ```
/// use distlock::LockOptions;
/// use std::time::Duration;
///
/// let opts = LockOptions::default().ttl(Duration::from_secs(10)).renew_interval(Duration::from_secs(3));
/// assert!(opts.validate().is_ok());
///
/// let from_json: LockOptions = serde_json::from_str(r#"{"ttl": "45s", "auto_renew": false}"#).unwrap();
/// assert_eq!(from_json.ttl, Duration::from_secs(45));
/// assert_eq!(from_json.renew_interval, Duration::from_secs(10)); // default kept
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockOptions {
    /// How long the lock survives without renewal (whole seconds, at least 1 s;
    /// a fraction is rounded up, since etcd leases count in seconds).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Renew the lock's lease in the background while it is held.
    pub auto_renew: bool,
    /// How often to renew when `auto_renew` is on; must be shorter than `ttl`.
    #[serde(with = "humantime_serde")]
    pub renew_interval: Duration,
    /// Pause between retries of a backend call that failed transiently.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// How many times a transiently failing backend call is retried; 0 means
    /// without limit.
    pub max_retries: u32,
    /// Whether the same [`Lock`](crate::Lock) may be locked again while it holds
    /// (each lock needs its own unlock). When off, a second attempt fails with
    /// [`ErrorCode::AlreadyHeld`].
    pub reentrant: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: Duration::from_secs(30),
            auto_renew: true,
            renew_interval: Duration::from_secs(10),
            retry_interval: Duration::from_millis(100),
            max_retries: 0,
            reentrant: true,
        }
    }
}

impl LockOptions {
    /// Sets the TTL.
    ///
    /// ```
    /// # use distlock::LockOptions; use std::time::Duration;
    /// let opts = LockOptions::default().ttl(Duration::from_secs(5)).renew_interval(Duration::from_secs(1));
    /// assert_eq!(opts.ttl, Duration::from_secs(5));
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Turns background renewal on or off. Without it the lock expires `ttl`
    /// after it was acquired unless [`LockGuard::renew`](crate::LockGuard::renew) is called.
    ///
    /// ```
    /// # use distlock::LockOptions;
    /// assert!(!LockOptions::default().auto_renew(false).auto_renew);
    /// ```
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = on;
        self
    }

    /// Sets the renewal interval.
    ///
    /// ```
    /// # use distlock::LockOptions; use std::time::Duration;
    /// let opts = LockOptions::default().renew_interval(Duration::from_secs(5));
    /// assert_eq!(opts.renew_interval, Duration::from_secs(5));
    /// ```
    pub fn renew_interval(mut self, every: Duration) -> Self {
        self.renew_interval = every;
        self
    }

    /// Sets the pause between retries of transient backend failures.
    ///
    /// ```
    /// # use distlock::LockOptions; use std::time::Duration;
    /// let opts = LockOptions::default().retry_interval(Duration::from_millis(250));
    /// assert_eq!(opts.retry_interval, Duration::from_millis(250));
    /// ```
    pub fn retry_interval(mut self, pause: Duration) -> Self {
        self.retry_interval = pause;
        self
    }

    /// Sets how many retries a transient backend failure gets (0 = unlimited).
    ///
    /// ```
    /// # use distlock::LockOptions;
    /// assert_eq!(LockOptions::default().max_retries(3).max_retries, 3);
    /// ```
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Allows or forbids reentrant locking of the same [`Lock`](crate::Lock).
    ///
    /// ```
    /// # use distlock::LockOptions;
    /// assert!(!LockOptions::default().reentrant(false).reentrant);
    /// ```
    pub fn reentrant(mut self, on: bool) -> Self {
        self.reentrant = on;
        self
    }

    /// Checks the options, as [`LockManager::new_lock`](crate::LockManager::new_lock) does.
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockOptions}; use std::time::Duration;
    /// let bad = LockOptions::default().ttl(Duration::from_millis(500));
    /// assert_eq!(bad.validate().unwrap_err().code(), ErrorCode::InvalidOptions);
    /// ```
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(LockError::new(ErrorCode::InvalidOptions, msg));
        if self.ttl < Duration::from_secs(1) {
            return invalid(format!("ttl must be at least 1s, got {:?}", self.ttl));
        }
        if self.ttl > Duration::from_secs(i64::MAX as u64 / 2) {
            return invalid(format!("ttl {:?} is too long", self.ttl));
        }
        if self.auto_renew && self.renew_interval.is_zero() {
            return invalid("renew_interval must be positive when auto_renew is on".into());
        }
        if self.auto_renew && self.renew_interval >= self.ttl {
            return invalid(format!(
                "renew_interval ({:?}) must be shorter than ttl ({:?}) when auto_renew is on",
                self.renew_interval, self.ttl
            ));
        }
        // The session is declared lost `margin` before the lease can expire;
        // a renewal sent `renew_interval` after the last one must land before
        // that with another `margin` to spare for its round trip.
        let lease = Duration::from_secs(self.ttl_secs() as u64);
        let margin = safety_margin(lease);
        let latest = lease.saturating_sub(margin * 2);
        if self.auto_renew && self.renew_interval > latest {
            return invalid(format!(
                "renew_interval ({:?}) leaves no time for a renewal to land before a {:?} lease \
                 is given up; use at most {latest:?} (ttl minus twice {margin:?})",
                self.renew_interval, self.ttl
            ));
        }
        if self.retry_interval.is_zero() {
            return invalid("retry_interval must be positive".into());
        }
        Ok(())
    }

    /// The lease TTL in whole seconds (rounded up).
    pub(crate) fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        secs as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds() {
        let o = LockOptions::default();
        assert_eq!(o.ttl, Duration::from_secs(30));
        assert!(o.auto_renew);
        assert_eq!(o.renew_interval, Duration::from_secs(10));
        assert_eq!(o.retry_interval, Duration::from_millis(100));
        assert_eq!(o.max_retries, 0);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn rejects_inconsistent_options() {
        let bad = [
            LockOptions::default().ttl(Duration::from_millis(999)),
            LockOptions::default().renew_interval(Duration::from_secs(30)),
            LockOptions::default().renew_interval(Duration::from_secs(31)),
            LockOptions::default().renew_interval(Duration::ZERO),
            LockOptions::default().retry_interval(Duration::ZERO),
            LockOptions::default().ttl(Duration::MAX),
            // Renewal would land after the session is given up (issue #8.5).
            LockOptions::default()
                .ttl(Duration::from_secs(10))
                .renew_interval(Duration::from_millis(9500)),
            LockOptions::default()
                .ttl(Duration::from_secs(10))
                .renew_interval(Duration::from_millis(8001)),
            LockOptions::default()
                .ttl(Duration::from_secs(1))
                .renew_interval(Duration::from_millis(900)),
        ];
        for opts in bad {
            assert_eq!(
                opts.validate().unwrap_err().code(),
                ErrorCode::InvalidOptions,
                "{opts:?}"
            );
        }
        for ok in [
            LockOptions::default()
                .ttl(Duration::from_secs(10))
                .renew_interval(Duration::from_secs(8)),
            LockOptions::default()
                .ttl(Duration::from_secs(1))
                .renew_interval(Duration::from_millis(333)),
        ] {
            assert!(ok.validate().is_ok(), "{ok:?}");
        }
        // Without auto-renew the renew interval is irrelevant.
        let ok = LockOptions::default()
            .auto_renew(false)
            .renew_interval(Duration::from_secs(60));
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(
            LockOptions::default()
                .ttl(Duration::from_millis(1500))
                .ttl_secs(),
            2
        );
        assert_eq!(
            LockOptions::default()
                .ttl(Duration::from_secs(2))
                .ttl_secs(),
            2
        );
    }

    #[test]
    fn serde_round_trip_with_human_durations() {
        let o = LockOptions::default().ttl(Duration::from_secs(45));
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains("\"45s\""), "{json}");
        let back: LockOptions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, o);
    }
}
