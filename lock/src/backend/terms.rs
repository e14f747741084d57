//! Telling a stale leader's answers from the cluster's: the Raft terms seen.
//!
//! A leader that was paused (SIGSTOP, a VM freeze) and resumes still believes
//! it leads until it hears of the election held meanwhile, and answers a lease
//! keep-alive from its own, stale lessor: the client would count a renewal
//! that the real leader never saw, while the real leader expires the lease.
//! An answer from a term older than one already seen is such an answer, and
//! a keep-alive carrying it does not count (found by the chaos run).
//!
//! The highest term seen must not stay forever, though: etcd restored from a
//! snapshot is a cluster whose terms start low again, and every keep-alive
//! would then be judged stale and every lock lost at its deadline. Only
//! *authoritative* answers — a committed write, a linearizable read, which a
//! stale leader cannot give — move the record down:
//! - an answer from another cluster id starts the record afresh;
//! - an authoritative answer from a lower term received more than a request
//!   timeout after the highest term was first seen was produced after it (a
//!   request is dropped unanswered after a request timeout), so the cluster's
//!   term went back (a restore that kept the cluster id): the record follows.
//!
//! A late authoritative answer from before an election (sent before the new
//! term was seen, received within a request timeout) changes nothing.

use std::sync::Mutex;
use std::time::Duration;

use etcd_client::ResponseHeader;
use tokio::time::Instant;
use tracing::warn;

/// What the cluster has said about its terms.
#[derive(Debug, Default)]
struct Seen {
    /// The cluster the terms are of; 0 before the first answer.
    cluster: u64,
    /// The highest term seen.
    term: u64,
    /// When `term` was first seen.
    since: Option<Instant>,
}

/// The Raft terms seen in the answers of one etcd cluster.
#[derive(Debug)]
pub(crate) struct Terms {
    seen: Mutex<Seen>,
    /// No answer arrives later than this after its request was sent.
    request_timeout: Duration,
}

impl Terms {
    pub(crate) fn new(request_timeout: Duration) -> Self {
        Terms {
            seen: Mutex::default(),
            request_timeout,
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an authoritative answer: a committed write or a
    /// linearizable read (see the module docs).
    pub(crate) fn observe(&self, header: Option<&ResponseHeader>) {
        if let Some(h) = header {
            self.record(h.cluster_id(), h.raft_term(), true, Instant::now());
        }
    }

    /// Records a keep-alive answer, which a stale leader can give: it may
    /// raise the highest term, never lower it.
    pub(crate) fn observe_renewal(&self, header: Option<&ResponseHeader>) {
        if let Some(h) = header {
            self.record(h.cluster_id(), h.raft_term(), false, Instant::now());
        }
    }

    fn record(&self, cluster: u64, term: u64, authoritative: bool, now: Instant) {
        let mut seen = self.seen();
        if cluster != seen.cluster {
            if !authoritative {
                return; // only the cluster itself says it changed
            }
            if seen.cluster != 0 {
                warn!(
                    old = format_args!("{:x}", seen.cluster),
                    new = format_args!("{cluster:x}"),
                    term,
                    "etcd answers as another cluster (restored from a snapshot?): \
                     its Raft terms are counted afresh"
                );
            }
            *seen = Seen {
                cluster,
                term,
                since: Some(now),
            };
            return;
        }
        if term > seen.term {
            seen.term = term;
            seen.since = Some(now);
            return;
        }
        let produced_after = seen
            .since
            .is_some_and(|since| now.saturating_duration_since(since) > self.request_timeout);
        if authoritative && term < seen.term && produced_after {
            warn!(
                term,
                highest = seen.term,
                "etcd's Raft term went back (restored from a snapshot?): counting from it"
            );
            seen.term = term;
            seen.since = Some(now);
        }
    }

    /// Whether an answer comes from a term older than the cluster's newest
    /// seen: a stale leader's.
    pub(crate) fn is_stale(&self, header: Option<&ResponseHeader>) -> bool {
        header.is_some_and(|h| self.is_older(h.cluster_id(), h.raft_term()))
    }

    fn is_older(&self, cluster: u64, term: u64) -> bool {
        let seen = self.seen();
        cluster == seen.cluster && term < seen.term
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_stale_leaders_term_is_refused_and_a_late_answer_changes_nothing() {
        let terms = Terms::new(TIMEOUT);
        assert!(!terms.is_older(7, 3), "nothing seen yet");
        terms.record(7, 4, true, Instant::now());
        // A late answer from before the election, and a stale leader's renewal.
        tokio::time::advance(Duration::from_secs(1)).await;
        terms.record(7, 2, true, Instant::now());
        terms.record(7, 2, false, Instant::now());
        assert!(
            terms.is_older(7, 3),
            "a paused leader's term after an election"
        );
        assert!(!terms.is_older(7, 4));
        assert!(!terms.is_older(7, 5));
        assert!(!terms.is_stale(None));
        // Renewals never lower the record, however late.
        tokio::time::advance(TIMEOUT * 2).await;
        terms.record(7, 2, false, Instant::now());
        assert!(terms.is_older(7, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_cluster_is_followed() {
        // Another cluster id: counted afresh at once.
        let terms = Terms::new(TIMEOUT);
        terms.record(7, 40, true, Instant::now());
        terms.record(9, 2, false, Instant::now());
        assert!(
            terms.is_older(7, 3),
            "a renewal does not say the cluster changed"
        );
        terms.record(9, 2, true, Instant::now());
        assert!(
            !terms.is_older(9, 2),
            "the new cluster's terms are judged anew"
        );
        assert!(terms.is_older(9, 1));

        // The same cluster id, its term gone back: followed once an
        // authoritative answer must have been produced after the high term.
        let terms = Terms::new(TIMEOUT);
        terms.record(7, 40, true, Instant::now());
        tokio::time::advance(TIMEOUT + Duration::from_secs(1)).await;
        terms.record(7, 2, true, Instant::now());
        assert!(
            !terms.is_older(7, 2),
            "every keep-alive would be judged stale forever"
        );
        terms.record(7, 3, false, Instant::now());
        assert!(terms.is_older(7, 2));
    }
}
