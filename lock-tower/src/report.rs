//! Logging of rejections and losses without flooding the logs in an outage.
//!
//! Every rejection is logged at `debug` level with its key and error. The
//! ones an operator must see are also logged at a higher level, at most once
//! per window per layer:
//!
//! - the backend failing, locks lost, `max_hold` reached and requests shed
//!   at `warn` level, at most once per [`WARN_WINDOW`];
//! - configuration faults ([`RejectionKind::Misconfigured`]: etcd denies the
//!   credentials access, options that cannot work) at `error` level, at most
//!   once per [`ERROR_WINDOW`], on a limiter of their own so that an outage's
//!   warnings never hide them.
//!
//! The first event in a window is logged as it happens; later ones are
//! counted, and the count, with the last key and error of each kind, is
//! logged as one summary when the next message is due or when a request
//! takes its lock again (the fault is over).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use crate::RejectionKind;

/// At most one `warn!` per window (plus a summary when requests recover).
pub(crate) const WARN_WINDOW: Duration = Duration::from_secs(10);

/// At most one `error!` per window for configuration faults: they last until
/// an operator acts, so one line a minute keeps them in view without a line
/// per request.
pub(crate) const ERROR_WINDOW: Duration = Duration::from_secs(60);

/// The layer's logging of rejections.
pub(crate) struct Reporter {
    warn: Limiter,
    error: Limiter,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter {
            warn: Limiter::new(Level::Warn, WARN_WINDOW),
            error: Limiter::new(Level::Error, ERROR_WINDOW),
        }
    }
}

/// The level a [`Limiter`] writes at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Warn,
    Error,
}

/// Events of one level: at most one line per window; the rest counted.
pub(crate) struct Limiter {
    level: Level,
    window: Duration,
    /// How many events `state.suppressed` holds (read on every success, so it
    /// is an atomic outside the lock).
    pending: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the last line was written.
    last_logged: Option<Instant>,
    /// Per kind: how many, and the last key and error.
    suppressed: BTreeMap<Kind, Suppressed>,
}

/// `RejectionKind` is `#[non_exhaustive]` and not `Ord`: its name orders it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Kind(&'static str);

struct Suppressed {
    count: u64,
    last_key: String,
    last_error: String,
}

/// What [`Limiter::event`] decided to write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Logged {
    /// Nothing (counted for the next summary).
    None,
    /// This event, and before it the summary of `suppressed` earlier ones.
    Now { suppressed: u64 },
}

impl Reporter {
    /// Logs a rejection (or a loss while a response streamed): `debug!`
    /// always; `warn!` or `error!` for kinds an operator must see,
    /// rate-limited.
    pub(crate) fn rejected(&self, kind: RejectionKind, key: &str, error: &dyn fmt::Display) {
        debug!(%key, %error, ?kind, "request rejected");
        if let Some(limiter) = self.limiter(kind) {
            let _ = limiter.event(Instant::now(), kind, key, error);
        }
    }

    /// Logs that a lock ended (lost, or `max_hold`) while its response streamed.
    pub(crate) fn stream_ended(&self, kind: RejectionKind, key: &str, error: &dyn fmt::Display) {
        debug!(%key, %error, ?kind, "lock ended while the response streamed; ending the body");
        let _ = self.warn.event(Instant::now(), kind, key, error);
    }

    /// Logs that a request finished although its lock ended in its last poll:
    /// the response is sent, as the work is done.
    pub(crate) fn completed_anyway(&self, kind: RejectionKind, key: &str) {
        debug!(%key, ?kind, "the lock ended as the request completed; its response is sent");
        let error = "the lock ended as the request completed; the response was sent";
        let _ = self.warn.event(Instant::now(), kind, key, &error);
    }

    /// A request took its lock: if messages were held back, write them now.
    pub(crate) fn recovered(&self) {
        self.warn.recovered();
        self.error.recovered();
    }

    /// Where `kind` is logged above `debug`: configuration faults at
    /// `error`; the backend failing, losses, shed requests and an election
    /// without a leader at `warn`; a busy or bad key, or a follower sending
    /// a client to its leader (the layers working as configured), nowhere.
    fn limiter(&self, kind: RejectionKind) -> Option<&Limiter> {
        match kind {
            RejectionKind::Misconfigured => Some(&self.error),
            RejectionKind::Timeout
            | RejectionKind::InvalidKey
            | RejectionKind::MissingKey
            | RejectionKind::NotLeader => None,
            _ => Some(&self.warn),
        }
    }
}

impl Limiter {
    fn new(level: Level, window: Duration) -> Self {
        Limiter {
            level,
            window,
            pending: AtomicU64::new(0),
            state: Mutex::default(),
        }
    }

    /// If events were held back, write their summary now.
    fn recovered(&self) {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.flush(&mut state);
        if n > 0 {
            state.last_logged = Some(Instant::now());
        }
    }

    /// Counts an event at `now`; writes it (after a summary of the held-back
    /// ones) if nothing was written in the last window.
    pub(crate) fn event(
        &self,
        now: Instant,
        kind: RejectionKind,
        key: &str,
        error: &dyn fmt::Display,
    ) -> Logged {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= self.window);
        if due {
            let suppressed = self.flush(&mut state);
            state.last_logged = Some(now);
            match self.level {
                Level::Warn => warn!(%key, %error, ?kind, "request rejected"),
                Level::Error => error!(%key, %error, ?kind, "request rejected"),
            }
            return Logged::Now { suppressed };
        }
        let entry = state
            .suppressed
            .entry(Kind(kind.name()))
            .or_insert_with(|| Suppressed {
                count: 0,
                last_key: String::new(),
                last_error: String::new(),
            });
        entry.count += 1;
        key.clone_into(&mut entry.last_key);
        entry.last_error = error.to_string();
        self.pending.fetch_add(1, Ordering::Relaxed);
        Logged::None
    }

    /// Writes one summary line per kind held back; returns how many events
    /// they stood for.
    fn flush(&self, state: &mut State) -> u64 {
        let mut total = 0;
        for (kind, s) in std::mem::take(&mut state.suppressed) {
            total += s.count;
            let (kind, count, window) = (kind.0, s.count, self.window);
            let (last_key, last_error) = (&s.last_key, &s.last_error);
            match self.level {
                Level::Warn => warn!(
                    kind,
                    count,
                    %last_key,
                    %last_error,
                    "{count} more request(s) rejected in the last {window:?} (logged at debug level)",
                ),
                Level::Error => error!(
                    kind,
                    count,
                    %last_key,
                    %last_error,
                    "{count} more request(s) rejected in the last {window:?} (logged at debug level)",
                ),
            }
        }
        self.pending.store(0, Ordering::Relaxed);
        total
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field(
                "pending_warnings",
                &self.warn.pending.load(Ordering::Relaxed),
            )
            .field(
                "pending_errors",
                &self.error.pending.load(Ordering::Relaxed),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_window_and_the_rest_summarized() {
        let reporter = Reporter::default().warn;
        let t0 = Instant::now();
        let err = "etcd down";
        assert_eq!(
            reporter.event(t0, RejectionKind::Unavailable, "k0", &err),
            Logged::Now { suppressed: 0 }
        );
        for i in 1..100 {
            let at = t0 + Duration::from_millis(i * 50);
            let kind = if i % 2 == 0 {
                RejectionKind::Unavailable
            } else {
                RejectionKind::Lost
            };
            assert_eq!(
                reporter.event(at, kind, &format!("k{i}"), &err),
                Logged::None,
                "{i}"
            );
        }
        // The next one after the window carries the 99 held back.
        assert_eq!(
            reporter.event(t0 + WARN_WINDOW, RejectionKind::Unavailable, "k", &err),
            Logged::Now { suppressed: 99 }
        );
        let state = reporter.state.lock().unwrap();
        assert!(state.suppressed.is_empty());
        assert_eq!(reporter.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_recovery_writes_what_was_held_back() {
        let reporter = Reporter::default().warn;
        let t0 = Instant::now();
        reporter.event(t0, RejectionKind::QueueFull, "a", &"full");
        reporter.event(t0, RejectionKind::QueueFull, "b", &"full");
        {
            let state = reporter.state.lock().unwrap();
            let s = &state.suppressed[&Kind("QueueFull")];
            assert_eq!((s.count, s.last_key.as_str()), (1, "b"));
        }
        assert_eq!(reporter.pending.load(Ordering::Relaxed), 1);
        reporter.recovered();
        assert_eq!(reporter.pending.load(Ordering::Relaxed), 0);
        assert!(reporter.state.lock().unwrap().suppressed.is_empty());
    }

    /// Configuration faults go to the error limiter (its own window), busy
    /// keys to neither.
    #[test]
    fn misconfigurations_are_errors_with_a_window_of_their_own() {
        let reporter = Reporter::default();
        assert_eq!(
            reporter
                .limiter(RejectionKind::Misconfigured)
                .unwrap()
                .level,
            Level::Error
        );
        assert_eq!(
            reporter.limiter(RejectionKind::Unavailable).unwrap().level,
            Level::Warn
        );
        assert!(reporter.limiter(RejectionKind::Timeout).is_none());
        let t0 = Instant::now();
        let err = "permission denied";
        // An outage's warning does not use up the error's window.
        let _ = reporter
            .warn
            .event(t0, RejectionKind::Unavailable, "k", &"down");
        let errors = &reporter.error;
        assert_eq!(
            errors.event(t0, RejectionKind::Misconfigured, "k", &err),
            Logged::Now { suppressed: 0 }
        );
        let later = t0 + WARN_WINDOW;
        assert_eq!(
            errors.event(later, RejectionKind::Misconfigured, "k", &err),
            Logged::None
        );
        assert_eq!(
            errors.event(t0 + ERROR_WINDOW, RejectionKind::Misconfigured, "k", &err),
            Logged::Now { suppressed: 1 }
        );
    }
}
