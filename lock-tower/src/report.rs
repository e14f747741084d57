//! Logging of rejections and losses without flooding the logs in an outage.
//!
//! Every rejection is logged at `debug` level with its key and error. The
//! ones an operator must see (the backend failing, locks lost, requests shed)
//! are also logged at `warn` level, but at most once per [`WINDOW`] per
//! layer: the first one in a window is logged as it happens; later ones are
//! counted, and the count, with the last key and error of each kind, is
//! logged as one summary when the next warning is due or when a request
//! takes its lock again (the outage is over).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::RejectionKind;

/// At most one `warn!` per window (plus a summary when requests recover).
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Rejections counted but not yet logged at `warn` level.
#[derive(Default)]
pub(crate) struct Reporter {
    /// How many events `state.suppressed` holds (read on every success, so it
    /// is an atomic outside the lock).
    pending: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the last `warn!` was written.
    last_warn: Option<Instant>,
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

/// What [`Reporter::event`] decided to write at `warn` level.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Warn {
    /// Nothing (counted for the next summary).
    None,
    /// This event, and before it the summary of `suppressed` earlier ones.
    Now { suppressed: u64 },
}

impl Reporter {
    /// Logs a rejection (or a loss while a response streamed): `debug!`
    /// always; `warn!` for kinds an operator must see, rate-limited.
    pub(crate) fn rejected(&self, kind: RejectionKind, key: &str, error: &dyn fmt::Display) {
        debug!(%key, %error, ?kind, "request rejected");
        if !needs_warning(kind) {
            return;
        }
        let _ = self.event(Instant::now(), kind, key, error);
    }

    /// Logs that a lock ended (lost, or `max_hold`) while its response streamed.
    pub(crate) fn stream_ended(&self, kind: RejectionKind, key: &str, error: &dyn fmt::Display) {
        debug!(%key, %error, ?kind, "lock ended while the response streamed; ending the body");
        let _ = self.event(Instant::now(), kind, key, error);
    }

    /// Logs that a request finished although its lock ended in its last poll:
    /// the response is sent, as the work is done.
    pub(crate) fn completed_anyway(&self, kind: RejectionKind, key: &str) {
        debug!(%key, ?kind, "the lock ended as the request completed; its response is sent");
        let error = "the lock ended as the request completed; the response was sent";
        let _ = self.event(Instant::now(), kind, key, &error);
    }

    /// A request took its lock: if warnings were held back, write them now.
    pub(crate) fn recovered(&self) {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.flush(&mut state);
        if n > 0 {
            state.last_warn = Some(Instant::now());
        }
    }

    /// Counts an event at `now`; writes it (after a summary of the held-back
    /// ones) if no warning was written in the last [`WINDOW`].
    pub(crate) fn event(
        &self,
        now: Instant,
        kind: RejectionKind,
        key: &str,
        error: &dyn fmt::Display,
    ) -> Warn {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .last_warn
            .is_none_or(|at| now.saturating_duration_since(at) >= WINDOW);
        if due {
            let suppressed = self.flush(&mut state);
            state.last_warn = Some(now);
            warn!(%key, %error, ?kind, "request rejected");
            return Warn::Now { suppressed };
        }
        let entry = state
            .suppressed
            .entry(Kind(kind_name(kind)))
            .or_insert_with(|| Suppressed {
                count: 0,
                last_key: String::new(),
                last_error: String::new(),
            });
        entry.count += 1;
        key.clone_into(&mut entry.last_key);
        entry.last_error = error.to_string();
        self.pending.fetch_add(1, Ordering::Relaxed);
        Warn::None
    }

    /// Writes one summary line per kind held back; returns how many events
    /// they stood for.
    fn flush(&self, state: &mut State) -> u64 {
        let mut total = 0;
        for (kind, s) in std::mem::take(&mut state.suppressed) {
            total += s.count;
            warn!(
                kind = kind.0,
                count = s.count,
                last_key = %s.last_key,
                last_error = %s.last_error,
                "{} more request(s) rejected in the last {:?} (logged at debug level)",
                s.count,
                WINDOW,
            );
        }
        self.pending.store(0, Ordering::Relaxed);
        total
    }
}

/// Kinds an operator must see; the others (a busy key, a bad key) are the
/// layer working as configured, logged at `debug` only.
fn needs_warning(kind: RejectionKind) -> bool {
    !matches!(
        kind,
        RejectionKind::Timeout | RejectionKind::InvalidKey | RejectionKind::MissingKey
    )
}

fn kind_name(kind: RejectionKind) -> &'static str {
    match kind {
        RejectionKind::Timeout => "Timeout",
        RejectionKind::InvalidKey => "InvalidKey",
        RejectionKind::Unavailable => "Unavailable",
        RejectionKind::Lost => "Lost",
        RejectionKind::MaxHold => "MaxHold",
        RejectionKind::QueueFull => "QueueFull",
        RejectionKind::MissingKey => "MissingKey",
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_window_and_the_rest_summarized() {
        let reporter = Reporter::default();
        let t0 = Instant::now();
        let err = "etcd down";
        assert_eq!(
            reporter.event(t0, RejectionKind::Unavailable, "k0", &err),
            Warn::Now { suppressed: 0 }
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
                Warn::None,
                "{i}"
            );
        }
        // The next one after the window carries the 99 held back.
        assert_eq!(
            reporter.event(t0 + WINDOW, RejectionKind::Unavailable, "k", &err),
            Warn::Now { suppressed: 99 }
        );
        let state = reporter.state.lock().unwrap();
        assert!(state.suppressed.is_empty());
        assert_eq!(reporter.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_recovery_writes_what_was_held_back() {
        let reporter = Reporter::default();
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
}
