//! A locked function's settings ([`Spec`]), built by the generated code and
//! checked at compile time with the runtime's rules.

use std::time::Duration;

use crate::lease::{LockOptions, DEFAULT_RETRY_INTERVAL};

/// How long a [`#[distributed_lock]`](crate::distributed_lock) call waits
/// for a busy lock unless told otherwise (`wait = "..."`), and what
/// `distlock_tower::LockLayer` waits by default: 10 seconds, then
/// [`ErrorCode::Timeout`](crate::ErrorCode::Timeout). Waiting without limit must be asked for
/// (`wait = "forever"`, or [`Lock::lock`](crate::Lock::lock)).
///
/// ```
/// assert_eq!(distlock::DEFAULT_WAIT, std::time::Duration::from_secs(10));
/// ```
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// What to do when the lock is lost while the body runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnLost {
    Cancel,
    Continue,
}

/// What a call takes of its one key (a `keys = [..]` call takes a lock of
/// each name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// The lock of that name.
    Lock,
    /// A permit of the semaphore of that name, of this many permits.
    Permit(u32),
    /// The read side of the read-write lock of that name.
    Read,
    /// Its write side.
    Write,
}

/// A locked function's settings, built by the generated code from the
/// attribute's (already checked) arguments.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub(super) function: &'static str,
    pub(super) take: Take,
    pub(super) ttl: Duration,
    pub(super) auto_renew: bool,
    pub(super) renew_interval: Duration,
    /// `None`: without limit.
    pub(super) wait: Option<Duration>,
    pub(super) retry_interval: Option<Duration>,
    pub(super) max_retries: Option<u32>,
    pub(super) on_lost: OnLost,
    pub(super) skip_if_busy: bool,
    pub(super) hold_at_least: Option<Duration>,
    pub(super) hold_at_most: Option<Duration>,
}

impl Spec {
    /// Settings of `function` with lease `ttl`, renewed every `ttl / 3`,
    /// waiting at most [`DEFAULT_WAIT`], cancelled when lost.
    pub const fn new(function: &'static str, ttl: Duration) -> Self {
        Spec {
            function,
            take: Take::Lock,
            ttl,
            auto_renew: true,
            renew_interval: Duration::from_nanos((ttl.as_nanos() / 3) as u64),
            wait: Some(DEFAULT_WAIT),
            retry_interval: None,
            max_retries: None,
            on_lost: OnLost::Cancel,
            skip_if_busy: false,
            hold_at_least: None,
            hold_at_most: None,
        }
    }

    /// Takes a permit of the key's semaphore of `permits` permits instead
    /// of its lock (`permits = n`). A count outside 1 to
    /// [`MAX_PERMITS`](crate::MAX_PERMITS) fails [`checked`](Spec::checked),
    /// or each call with `InvalidOptions` when it is known only at run time.
    pub const fn permits(mut self, permits: u32) -> Self {
        self.take = Take::Permit(permits);
        self
    }

    /// Takes the read side of the key's read-write lock (`read`).
    pub const fn read(mut self) -> Self {
        self.take = Take::Read;
        self
    }

    /// Takes the write side of the key's read-write lock (`write`).
    pub const fn write(mut self) -> Self {
        self.take = Take::Write;
        self
    }

    /// Renews the lease every `every`.
    pub const fn renew_every(mut self, every: Duration) -> Self {
        self.auto_renew = true;
        self.renew_interval = every;
        self
    }

    /// No background renewal: the lock expires `ttl` after it was taken.
    pub const fn no_auto_renew(mut self) -> Self {
        self.auto_renew = false;
        self
    }

    /// Waits at most `wait` for the lock; zero tries once.
    pub const fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Waits for the lock without limit.
    pub const fn wait_forever(mut self) -> Self {
        self.wait = None;
        self
    }

    /// Tries once; a busy lock skips the body.
    pub const fn skip_if_busy(mut self) -> Self {
        self.skip_if_busy = true;
        self
    }

    /// Keeps the lock at least `at_least` after the call started.
    pub const fn hold_at_least(mut self, at_least: Duration) -> Self {
        self.hold_at_least = Some(at_least);
        self
    }

    /// Cancels the body `at_most` after the call started.
    pub const fn hold_at_most(mut self, at_most: Duration) -> Self {
        self.hold_at_most = Some(at_most);
        self
    }

    /// The pause between retries of transient backend failures.
    pub const fn retry_interval(mut self, pause: Duration) -> Self {
        self.retry_interval = Some(pause);
        self
    }

    /// How many retries a transient backend failure gets (0 = unlimited).
    pub const fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Lets the body run on when the lock is lost.
    pub const fn continue_when_lost(mut self) -> Self {
        self.on_lost = OnLost::Continue;
        self
    }

    /// The same settings, checked against the rules that
    /// [`LockOptions::validate`] applies at run time
    /// ([`check_durations`](crate::lease::check_durations)). The macro
    /// evaluates this in a `const`, so settings the runtime would refuse
    /// are a compile error.
    pub const fn checked(self) -> Self {
        let retry = match self.retry_interval {
            Some(pause) => pause,
            None => DEFAULT_RETRY_INTERVAL,
        };
        if let Err(rule) =
            crate::lease::check_durations(self.ttl, self.auto_renew, self.renew_interval, retry)
        {
            panic!("{}", rule);
        }
        if let Take::Permit(permits) = self.take {
            if permits == 0 || permits > crate::api::MAX_PERMITS {
                panic!("`permits`: a semaphore has 1 to `distlock::MAX_PERMITS` permits");
            }
        }
        if over_a_year(self.wait)
            || over_a_year(self.hold_at_least)
            || over_a_year(self.hold_at_most)
        {
            panic!("wait, hold_at_least and hold_at_most must be at most a year (or `wait = \"forever\"`)");
        }
        self
    }

    pub(super) fn options(&self) -> LockOptions {
        let mut opts = LockOptions::default()
            .ttl(self.ttl)
            .auto_renew(self.auto_renew)
            .renew_interval(self.renew_interval);
        if let Some(pause) = self.retry_interval {
            opts = opts.retry_interval(pause);
        }
        if let Some(retries) = self.max_retries {
            opts = opts.max_retries(retries);
        }
        opts
    }
}

/// Whether an optional setting is longer than [`MAX_DURATION`](crate::MAX_DURATION).
const fn over_a_year(setting: Option<Duration>) -> bool {
    match setting {
        Some(d) => d.as_nanos() > crate::lease::MAX_DURATION.as_nanos(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_builds_valid_options() {
        let spec = Spec::new("f", Duration::from_secs(5))
            .retry_interval(Duration::from_millis(20))
            .max_retries(3);
        let opts = spec.options();
        assert_eq!(opts.ttl, Duration::from_secs(5));
        assert!(opts.renew_interval < opts.ttl);
        assert_eq!(opts.retry_interval, Duration::from_millis(20));
        assert_eq!(opts.max_retries, 3);
        assert!(opts.validate().is_ok());
        assert!(
            !Spec::new("f", Duration::from_secs(1))
                .no_auto_renew()
                .options()
                .auto_renew
        );
    }
}
