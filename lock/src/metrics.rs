//! Metrics, recorded through the [`metrics`](https://docs.rs/metrics) facade:
//! the application installs the exporter (Prometheus, StatsD, ...); without
//! one, recording costs next to nothing. Every metric name, label and
//! recording rule of distlock lives in this module.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `distlock_acquisitions_total` | counter | `source`, `result` | finished `lock` / `try_lock` / `lock_timeout` calls; `result` = `acquired`, `busy` (a try found it taken), `timeout`, `error`, `cancelled` (the call's future was dropped) |
//! | `distlock_releases_total` | counter | `source`, `result` | holds released (the last guard went); `result` = `released`, `lost` (it had been lost before), `error` |
//! | `distlock_losses_total` | counter | `source`, `cause` | holds lost while held; `cause` = `lease_lost` (also a lock without auto-renew that ran out its TTL), `deleted` (its key was deleted, e.g. force-unlock), `closed` (the manager closed), `watch_failed` (its key could no longer be watched) |
//! | `distlock_renew_failures_total` | counter | — | lease keep-alives that failed (each one; the session may still recover) |
//! | `distlock_wait_seconds` | histogram | `source`, `result` | from the call to its outcome, per acquisition call |
//! | `distlock_hold_seconds` | histogram | `source`, `end` | from acquisition to release (`end` = `released`) or loss (`end` = `lost`) |
//! | `distlock_handoff_seconds` | histogram | `source` | for a caller that had to wait: from its wake-up (the watch event saying the key ahead of it is gone, or, in-process, the name's local slot handed over) to the confirmed win |
//! | `distlock_held_locks` | gauge | `source` | holds (keys) held now; a reentrant hold counts once |
//! | `distlock_waiters` | gauge | `source` | `lock` / `lock_timeout` calls of this process waiting now |
//! | `distlock_sessions` | gauge | — | live sessions (leases kept by this process) |
//!
//! `source` is `lock` (the [`Lock`](crate::Lock) API), `macro`
//! (`#[distributed_lock]`) or `layer` (distlock-tower). Labels stay bounded:
//! lock names are not a label unless a manager opts in with
//! [`LockManager::with_metric_names`](crate::LockManager::with_metric_names),
//! which adds `name` to every metric that has a `source` — only for lock
//! names of low cardinality.
//!
//! ```
//! // At startup, install any `metrics` exporter, e.g. metrics-exporter-prometheus:
//! // PrometheusBuilder::new().install_recorder()?;
//! assert_eq!(distlock::metrics::ACQUISITIONS, "distlock_acquisitions_total");
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, gauge, histogram, Label};

use crate::error::{ErrorCode, LockError, Result};

/// Counter: finished acquisition calls, by `source` and `result`.
///
/// ```
/// assert_eq!(distlock::metrics::ACQUISITIONS, "distlock_acquisitions_total");
/// ```
pub const ACQUISITIONS: &str = "distlock_acquisitions_total";
/// Counter: released holds, by `source` and `result`.
///
/// ```
/// assert_eq!(distlock::metrics::RELEASES, "distlock_releases_total");
/// ```
pub const RELEASES: &str = "distlock_releases_total";
/// Counter: holds lost while held, by `source` and `cause`.
///
/// ```
/// assert_eq!(distlock::metrics::LOSSES, "distlock_losses_total");
/// ```
pub const LOSSES: &str = "distlock_losses_total";
/// Counter: failed lease keep-alives.
///
/// ```
/// assert_eq!(distlock::metrics::RENEW_FAILURES, "distlock_renew_failures_total");
/// ```
pub const RENEW_FAILURES: &str = "distlock_renew_failures_total";
/// Histogram (seconds): from an acquisition call to its outcome, by `source` and `result`.
///
/// ```
/// assert_eq!(distlock::metrics::WAIT_SECONDS, "distlock_wait_seconds");
/// ```
pub const WAIT_SECONDS: &str = "distlock_wait_seconds";
/// Histogram (seconds): from acquisition to release or loss, by `source` and `end`.
///
/// ```
/// assert_eq!(distlock::metrics::HOLD_SECONDS, "distlock_hold_seconds");
/// ```
pub const HOLD_SECONDS: &str = "distlock_hold_seconds";
/// Histogram (seconds): from a waiter's wake-up to its confirmed win, by `source`.
///
/// ```
/// assert_eq!(distlock::metrics::HANDOFF_SECONDS, "distlock_handoff_seconds");
/// ```
pub const HANDOFF_SECONDS: &str = "distlock_handoff_seconds";
/// Gauge: holds held now, by `source`.
///
/// ```
/// assert_eq!(distlock::metrics::HELD_LOCKS, "distlock_held_locks");
/// ```
pub const HELD_LOCKS: &str = "distlock_held_locks";
/// Gauge: acquisition calls waiting now, by `source`.
///
/// ```
/// assert_eq!(distlock::metrics::WAITERS, "distlock_waiters");
/// ```
pub const WAITERS: &str = "distlock_waiters";
/// Gauge: live sessions (leases this process keeps).
///
/// ```
/// assert_eq!(distlock::metrics::SESSIONS, "distlock_sessions");
/// ```
pub const SESSIONS: &str = "distlock_sessions";

/// Which API an acquisition came through: the `source` label. Set by the
/// macro and the layer on the [`Lock`](crate::Lock) they make; not a public API.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// [`Lock`](crate::Lock) used directly.
    Lock,
    /// `#[distributed_lock]`.
    Macro,
    /// distlock-tower's `LockLayer`.
    Layer,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Lock => "lock",
            Source::Macro => "macro",
            Source::Layer => "layer",
        }
    }
}

/// The labels of one lock: its source, and its name when the manager opted in.
#[derive(Clone, Debug)]
pub(crate) struct Labels {
    source: Source,
    name: Option<Arc<str>>,
}

impl Labels {
    pub(crate) fn new(source: Source, name: Option<&str>) -> Self {
        Labels {
            source,
            name: name.map(Arc::from),
        }
    }

    pub(crate) fn source(&self) -> &'static str {
        self.source.as_str()
    }

    fn with(&self, extra: Option<(&'static str, &'static str)>) -> Vec<Label> {
        let mut labels = vec![Label::new("source", self.source.as_str())];
        if let Some(name) = &self.name {
            labels.push(Label::new("name", name.to_string()));
        }
        if let Some((k, v)) = extra {
            labels.push(Label::new(k, v));
        }
        labels
    }
}

/// One acquisition call: counts a waiter while it waits (`wait`), and records
/// its result and wait time once, at [`finish`](Attempt::finish) — or as
/// `cancelled` if the call's future is dropped first.
pub(crate) struct Attempt {
    labels: Labels,
    started: Instant,
    waiting: bool,
    finished: bool,
}

impl Attempt {
    pub(crate) fn start(labels: Labels, wait: bool) -> Self {
        if wait {
            gauge!(WAITERS, labels.with(None)).increment(1.0);
        }
        Attempt {
            labels,
            started: Instant::now(),
            waiting: wait,
            finished: false,
        }
    }

    /// Records the call's result (the fencing token it acquired, `None`
    /// for a busy try), and its outcome and token on `span`.
    pub(crate) fn finish(mut self, span: &tracing::Span, result: Result<Option<u64>, &LockError>) {
        let outcome = match result {
            Ok(Some(token)) => {
                span.record("token", token);
                "acquired"
            }
            Ok(None) => "busy",
            Err(e) if e.code() == ErrorCode::Timeout => "timeout",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        self.record(outcome);
    }

    fn record(&mut self, result: &'static str) {
        self.finished = true;
        let labels = self.labels.with(Some(("result", result)));
        counter!(ACQUISITIONS, labels.clone()).increment(1);
        histogram!(WAIT_SECONDS, labels).record(self.started.elapsed().as_secs_f64());
        if std::mem::take(&mut self.waiting) {
            gauge!(WAITERS, self.labels.with(None)).decrement(1.0);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.record("cancelled");
        }
    }
}

/// Records a hand-off: a caller that was woken up (at `woke`) now holds.
pub(crate) fn handoff(labels: &Labels, woke: Option<Instant>) {
    if let Some(woke) = woke {
        histogram!(HANDOFF_SECONDS, labels.with(None)).record(woke.elapsed().as_secs_f64());
    }
}

/// Why a hold was lost: the `cause` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LossCause {
    LeaseLost,
    Deleted,
    Closed,
    WatchFailed,
}

impl LossCause {
    fn as_str(self) -> &'static str {
        match self {
            LossCause::LeaseLost => "lease_lost",
            LossCause::Deleted => "deleted",
            LossCause::Closed => "closed",
            LossCause::WatchFailed => "watch_failed",
        }
    }
}

/// One hold (a key we hold): counted in the held gauge from its start until
/// it ends — released, lost, or dropped — exactly once, whichever comes first.
/// Part of its hold, which passes the lock's name and token where needed.
pub(crate) struct Held {
    labels: Labels,
    since: Instant,
    ended: AtomicBool,
}

impl Held {
    pub(crate) fn start(labels: Labels) -> Self {
        gauge!(HELD_LOCKS, labels.with(None)).increment(1.0);
        Held {
            labels,
            since: Instant::now(),
            ended: AtomicBool::new(false),
        }
    }

    /// Ends the hold once: the gauge goes down, the hold time is recorded.
    fn end(&self, end: &'static str) -> bool {
        if self.ended.swap(true, Ordering::SeqCst) {
            return false;
        }
        gauge!(HELD_LOCKS, self.labels.with(None)).decrement(1.0);
        histogram!(HOLD_SECONDS, self.labels.with(Some(("end", end))))
            .record(self.since.elapsed().as_secs_f64());
        true
    }

    /// The hold was lost while held: counted once, with a `distlock.lost` span.
    pub(crate) fn lost(&self, cause: LossCause, name: &str, token: u64) {
        if !self.end("lost") {
            return; // already released, or its loss already reported
        }
        let span = tracing::info_span!(
            "distlock.lost",
            name = %name,
            token = token,
            source = self.labels.source(),
            outcome = cause.as_str()
        );
        let _entered = span.enter();
        counter!(LOSSES, self.labels.with(Some(("cause", cause.as_str())))).increment(1);
        tracing::info!("lock lost");
    }

    /// The hold's last guard went: the hold ends here (as lost, if it had
    /// been lost unnoticed), before its key is deleted.
    pub(crate) fn release_started(&self, lost: Option<LossCause>, name: &str, token: u64) {
        match lost {
            Some(cause) => self.lost(cause, name, token),
            None => {
                self.end("released");
            }
        }
    }

    /// The hold's release ended with this result.
    pub(crate) fn released(&self, span: &tracing::Span, result: &Result<()>) {
        let outcome = match result {
            Ok(()) => "released",
            Err(e) if e.code() == ErrorCode::Expired => "lost",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        counter!(RELEASES, self.labels.with(Some(("result", outcome)))).increment(1);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.end("released");
    }
}

/// One live session, counted in the sessions gauge until dropped (its keeper
/// task ends when the session is lost or closed, or the runtime shuts down).
pub(crate) struct LiveSession(());

impl LiveSession {
    pub(crate) fn start() -> Self {
        gauge!(SESSIONS).increment(1.0);
        LiveSession(())
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        gauge!(SESSIONS).decrement(1.0);
    }
}

/// Records a keep-alive's outcome on its span, counting failures.
pub(crate) fn renewed(span: &tracing::Span, result: &std::result::Result<(), LockError>) {
    match result {
        Ok(()) => span.record("outcome", "renewed"),
        Err(e) => {
            counter!(RENEW_FAILURES).increment(1);
            span.record("outcome", e.code().to_string().as_str())
        }
    };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use crate::{LockManager, LockOptions};

    /// Totals per (name, label pairs) from one snapshot (which resets the
    /// recorder: take it once, at the end).
    fn totals(recorder: &DebuggingRecorder) -> Vec<(String, Vec<String>, f64)> {
        let mut out = Vec::new();
        for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
            let labels = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(xs) => xs.len() as f64,
            };
            out.push((key.key().name().to_owned(), labels, value));
        }
        out
    }

    fn get(totals: &[(String, Vec<String>, f64)], name: &str, want: &[&str]) -> f64 {
        totals
            .iter()
            .filter(|(n, l, _)| n == name && want.iter().all(|w| l.iter().any(|x| x == w)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// In memory: a reentrant hold counts once; a local waiter records a
    /// hand-off when the slot passes to it; a cancelled waiter is counted as
    /// such; every gauge ends at 0.
    #[test]
    fn reentry_local_handoff_and_cancellation() {
        let recorder = DebuggingRecorder::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let manager = LockManager::in_memory();
                let a = manager.new_lock("n", LockOptions::default()).unwrap();
                let first = a.lock().await.unwrap();
                let again = a.lock().await.unwrap(); // reentrant: same hold

                // Another task is another owner: it waits.
                let b = std::sync::Arc::new(manager.new_lock("n", LockOptions::default()).unwrap());
                let other = std::sync::Arc::clone(&b);
                let cancelled = tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_millis(50), other.lock())
                        .await
                        .is_err()
                });
                assert!(cancelled.await.unwrap(), "the lock is held");
                let waiter = tokio::spawn(async move { b.lock().await.unwrap().unlock().await });
                tokio::time::sleep(Duration::from_millis(50)).await;
                again.unlock().await.unwrap();
                first.unlock().await.unwrap();
                waiter.await.unwrap().unwrap();
                manager.close().await;
                tokio::time::sleep(Duration::from_millis(50)).await; // keepers end
            })
        });
        let t = totals(&recorder);
        assert_eq!(get(&t, super::ACQUISITIONS, &["result=acquired"]), 3.0);
        assert_eq!(get(&t, super::ACQUISITIONS, &["result=cancelled"]), 1.0);
        assert_eq!(get(&t, super::RELEASES, &["result=released"]), 2.0);
        assert_eq!(get(&t, super::HANDOFF_SECONDS, &["source=lock"]), 1.0);
        assert_eq!(get(&t, super::HOLD_SECONDS, &["end=released"]), 2.0);
        assert_eq!(get(&t, super::HELD_LOCKS, &[]), 0.0);
        assert_eq!(get(&t, super::WAITERS, &[]), 0.0);
        assert_eq!(get(&t, super::SESSIONS, &[]), 0.0);
    }
}
