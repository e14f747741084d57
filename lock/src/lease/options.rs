//! [`LockOptions`]: TTL, renewal and retry settings of a lock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, LockError, Result};

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
/// **The renew interval follows the TTL unless you set it.** The default
/// renew interval, 10 s, suits TTLs over 11 s; for a shorter TTL it could
/// not work (a renewal must land well before the lease runs out). So when
/// `renew_interval` is not set, it is 10 s if that is valid for the TTL,
/// else a third of the TTL — the macro's and the layer's default. "Not set"
/// means: with the builder, `renew_interval` still holds the default
/// (10 s) when [`ttl`](LockOptions::ttl) is called; with serde, the field is
/// absent. A `renew_interval` you set is never changed: an invalid one is
/// refused by [`validate`](LockOptions::validate). The rule never changes
/// options that validate without it; it only makes a short TTL work.
/// (A struct literal, `LockOptions { ttl, ..Default::default() }`, keeps the
/// 10 s it was given: with a TTL of 11 s or less, use the builder or set
/// `renew_interval` too.)
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
///
/// // A short TTL alone: the renew interval follows it.
/// let short = LockOptions::default().ttl(Duration::from_secs(5));
/// assert_eq!(short.renew_interval, Duration::from_secs(5) / 3);
/// assert!(short.validate().is_ok());
/// let short: LockOptions = serde_json::from_str(r#"{"ttl": "5s"}"#).unwrap();
/// assert!(short.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Unresolved")]
pub struct LockOptions {
    /// How long the lock survives without renewal (whole seconds, at least 1 s;
    /// a fraction is rounded up, since etcd leases count in seconds).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Renew the lock's lease in the background while it is held.
    pub auto_renew: bool,
    /// How often to renew when `auto_renew` is on; must be shorter than `ttl`.
    /// When not set, it follows the TTL (see above).
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
            renew_interval: DEFAULT_RENEW_INTERVAL,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            max_retries: 0,
            reentrant: true,
        }
    }
}

impl LockOptions {
    /// Sets the TTL. A `renew_interval` still at its default (10 s) follows
    /// it: it stays 10 s if that is valid for `ttl`, else becomes `ttl / 3`
    /// (see [`LockOptions`]); one set before is kept.
    ///
    /// ```
    /// # use distlock::LockOptions; use std::time::Duration;
    /// let opts = LockOptions::default().ttl(Duration::from_secs(5));
    /// assert_eq!(opts.ttl, Duration::from_secs(5));
    /// assert_eq!(opts.renew_interval, Duration::from_secs(5) / 3); // follows
    ///
    /// let long = LockOptions::default().ttl(Duration::from_secs(60));
    /// assert_eq!(long.renew_interval, Duration::from_secs(10)); // the default is valid
    ///
    /// let set = LockOptions::default().renew_interval(Duration::from_secs(1)).ttl(Duration::from_secs(5));
    /// assert_eq!(set.renew_interval, Duration::from_secs(1)); // yours is kept
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        if self.renew_interval == DEFAULT_RENEW_INTERVAL {
            self.renew_interval = renew_following(ttl);
        }
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
    /// let huge = LockOptions::default().retry_interval(Duration::MAX);
    /// assert_eq!(huge.validate().unwrap_err().code(), ErrorCode::InvalidOptions);
    /// ```
    pub fn validate(&self) -> Result<()> {
        let broken = check_durations(
            self.ttl,
            self.auto_renew,
            self.renew_interval,
            self.retry_interval,
        );
        match broken {
            Ok(()) => Ok(()),
            Err(rule) => {
                // A struct literal's untouched default: say how to let it follow.
                let hint = if self.renew_interval == DEFAULT_RENEW_INTERVAL
                    && renew_following(self.ttl) != DEFAULT_RENEW_INTERVAL
                {
                    "; renew_interval is the default 10s: set it, or build the options with \
                     `LockOptions::default().ttl(..)`, whose renew_interval follows the TTL"
                } else {
                    ""
                };
                Err(LockError::new(
                    ErrorCode::InvalidOptions,
                    format!(
                        "{rule} (ttl {:?}, auto_renew {}, renew_interval {:?}, retry_interval {:?}){hint}",
                        self.ttl, self.auto_renew, self.renew_interval, self.retry_interval
                    ),
                ))
            }
        }
    }

    /// The lease TTL in whole seconds (rounded up).
    pub(crate) fn ttl_secs(&self) -> i64 {
        lease_secs(self.ttl) as i64
    }
}

/// The seed's pause between retries of a transient backend failure.
pub(crate) const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// The seed's renew interval.
const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(10);

/// The renew interval of options that did not set one: the default if
/// auto-renewal is valid with it for `ttl`, else a third of `ttl` (valid for
/// every valid TTL: well inside the time a renewal has to land).
const fn renew_following(ttl: Duration) -> Duration {
    match check_durations(ttl, true, DEFAULT_RENEW_INTERVAL, DEFAULT_RETRY_INTERVAL) {
        Ok(()) => DEFAULT_RENEW_INTERVAL,
        Err(_) => Duration::from_nanos((ttl.as_nanos() / 3) as u64),
    }
}

/// [`LockOptions`] as they deserialize, before an absent `renew_interval`
/// follows the TTL.
#[derive(Deserialize)]
#[serde(default)]
struct Unresolved {
    #[serde(with = "humantime_serde")]
    ttl: Duration,
    auto_renew: bool,
    #[serde(with = "humantime_serde")]
    renew_interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    retry_interval: Duration,
    max_retries: u32,
    reentrant: bool,
}

impl Default for Unresolved {
    fn default() -> Self {
        let d = LockOptions::default();
        Unresolved {
            ttl: d.ttl,
            auto_renew: d.auto_renew,
            renew_interval: None,
            retry_interval: d.retry_interval,
            max_retries: d.max_retries,
            reentrant: d.reentrant,
        }
    }
}

impl From<Unresolved> for LockOptions {
    fn from(u: Unresolved) -> Self {
        LockOptions {
            ttl: u.ttl,
            auto_renew: u.auto_renew,
            renew_interval: u.renew_interval.unwrap_or(renew_following(u.ttl)),
            retry_interval: u.retry_interval,
            max_retries: u.max_retries,
            reentrant: u.reentrant,
        }
    }
}

/// The longest any duration of [`LockOptions`] (and of
/// [`EtcdConfig`](crate::EtcdConfig)) may be: one year. Longer ones are
/// refused with [`ErrorCode::InvalidOptions`]: a deadline that far cannot be
/// meant, and adding it to the clock could overflow.
///
/// ```
/// assert_eq!(distlock::MAX_DURATION.as_secs(), 365 * 24 * 3600);
/// ```
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long before the client-side expiry estimate a session is declared
/// lost: a tenth of the TTL, at most one second.
pub(crate) const fn safety_margin(ttl: Duration) -> Duration {
    let tenth = Duration::from_nanos((ttl.as_nanos() / 10) as u64);
    if tenth.as_nanos() < Duration::from_secs(1).as_nanos() {
        tenth
    } else {
        Duration::from_secs(1)
    }
}

/// A TTL in whole lease seconds, rounded up.
const fn lease_secs(ttl: Duration) -> u64 {
    ttl.as_secs() + (ttl.subsec_nanos() > 0) as u64
}

/// The rules every lock's durations must follow, in one place: what
/// [`LockOptions::validate`] checks at run time, and what
/// `#[distributed_lock]` checks at compile time (a `const` evaluation of this
/// same function), so a locked function that compiles never fails every call
/// with `InvalidOptions`. `Err` says which rule is broken. Not a public API.
#[doc(hidden)]
pub const fn check_durations(
    ttl: Duration,
    auto_renew: bool,
    renew_interval: Duration,
    retry_interval: Duration,
) -> std::result::Result<(), &'static str> {
    let max = MAX_DURATION.as_nanos();
    if ttl.as_nanos() < Duration::from_secs(1).as_nanos() {
        return Err("ttl must be at least 1s (etcd leases count in whole seconds)");
    }
    if ttl.as_nanos() > max || renew_interval.as_nanos() > max || retry_interval.as_nanos() > max {
        return Err("ttl, renew_interval and retry_interval must be at most a year");
    }
    if retry_interval.is_zero() {
        return Err("retry_interval must be positive");
    }
    if !auto_renew {
        return Ok(()); // the renew interval is not used
    }
    if renew_interval.is_zero() {
        return Err("renew_interval must be positive when auto_renew is on");
    }
    if renew_interval.as_nanos() >= ttl.as_nanos() {
        return Err("renew_interval must be shorter than ttl when auto_renew is on");
    }
    // The session is declared lost `margin` before the lease can expire; a
    // renewal sent `renew_interval` after the last one must land before that
    // with another `margin` to spare for its round trip.
    let lease = Duration::from_secs(lease_secs(ttl));
    let margin = safety_margin(lease);
    let latest = lease.saturating_sub(margin).saturating_sub(margin);
    if renew_interval.as_nanos() > latest.as_nanos() {
        return Err(
            "renew_interval leaves no time for a renewal to land before the lease is given up: \
             it must be at most ttl minus twice the safety margin (a tenth of ttl, at most 1s)",
        );
    }
    Ok(())
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
            LockOptions::default().retry_interval(Duration::MAX),
            LockOptions::default().ttl(MAX_DURATION + Duration::from_secs(1)),
            LockOptions::default()
                .auto_renew(false)
                .renew_interval(Duration::MAX),
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
    fn renew_interval_follows_a_short_ttl_when_not_set() {
        let secs = |s: f64| Duration::from_secs_f64(s);
        // Every TTL from 1 s to 40 s, alone, gives working options.
        for half_secs in 2..=80 {
            let ttl = secs(half_secs as f64 / 2.0);
            let opts = LockOptions::default().ttl(ttl);
            assert!(opts.validate().is_ok(), "{opts:?}");
            let literal = LockOptions {
                ttl,
                ..Default::default()
            };
            if literal.validate().is_ok() {
                // What validated before is unchanged.
                assert_eq!(opts, literal);
            } else {
                assert_eq!(opts.renew_interval, ttl / 3, "{ttl:?}");
                let err = literal.validate().unwrap_err().to_string();
                assert!(err.contains("follows the TTL"), "{err}");
            }
        }
        // The default 10 s works from a 12 s lease (11.5 s rounds up) on.
        let at = |t| LockOptions::default().ttl(secs(t)).renew_interval;
        assert_eq!(at(11.5), Duration::from_secs(10));
        assert_eq!(at(11.0), secs(11.0) / 3);
        // A renew interval that was set is kept, valid or not.
        let set = LockOptions::default()
            .renew_interval(Duration::from_millis(4500))
            .ttl(Duration::from_secs(5));
        assert_eq!(set.renew_interval, Duration::from_millis(4500));
        assert!(set.validate().is_err());
        let later = LockOptions::default()
            .ttl(Duration::from_secs(5))
            .renew_interval(Duration::from_secs(4));
        assert_eq!(later.renew_interval, Duration::from_secs(4));
        // Once it followed a TTL, it is no longer the default: kept.
        let twice = LockOptions::default()
            .ttl(Duration::from_secs(3))
            .ttl(Duration::from_secs(60));
        assert_eq!(twice.renew_interval, Duration::from_secs(1));
        assert!(twice.validate().is_ok());
    }

    #[test]
    fn serde_renew_interval_follows_only_when_absent() {
        let parse = |json: &str| serde_json::from_str::<LockOptions>(json).unwrap();
        let short = parse(r#"{"ttl": "5s"}"#);
        assert_eq!(short.renew_interval, Duration::from_secs(5) / 3);
        assert!(short.validate().is_ok());
        assert_eq!(short, LockOptions::default().ttl(Duration::from_secs(5)));
        let given = parse(r#"{"ttl": "5s", "renew_interval": "1s"}"#);
        assert_eq!(given.renew_interval, Duration::from_secs(1));
        // Written out, 10 s is a choice: refused for a 5 s TTL.
        let explicit = parse(r#"{"ttl": "5s", "renew_interval": "10s"}"#);
        assert_eq!(explicit.renew_interval, Duration::from_secs(10));
        assert!(explicit.validate().is_err());
        assert_eq!(parse("{}"), LockOptions::default());
        // What follows survives a round trip.
        let back: LockOptions =
            serde_json::from_str(&serde_json::to_string(&short).unwrap()).unwrap();
        assert_eq!(back, short);
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
