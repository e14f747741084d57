//! Timed hand-offs: a holder lets go while another party waits, and the time
//! from the holder's call to the waiter holding is one sample.
//!
//! Every hand-off bench measures this way (issue #15's method, first in
//! `lock_latency`): the holder takes the primitive, the waiter starts waiting
//! in a task of its own, 30 ms later (the waiter is queued and watching) the
//! holder's release is timed until the waiter's call returns.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distlock::{Lock, LockGuard, LockManager, LockOptions};

/// How long the waiter gets to queue and arm its watch before the release.
pub const QUEUED: Duration = Duration::from_millis(30);

/// One kind of hand-off between a holder and a waiter.
pub trait HandOff {
    /// What the holder holds.
    type Held;
    /// What the waiter gets.
    type Got: Send + 'static;
    /// The holder takes the primitive (nobody else holds it).
    fn take(&mut self) -> impl Future<Output = Self::Held>;
    /// The waiter's call, run in a task of its own; resolves holding.
    fn wait(&self) -> impl Future<Output = Self::Got> + Send + 'static;
    /// The holder lets go: the timed call.
    fn give(&mut self, held: Self::Held) -> impl Future<Output = ()>;
    /// The waiter lets go, untimed, before the next hand-off.
    fn done(&mut self, got: Self::Got) -> impl Future<Output = ()>;
}

/// One hand-off: from the holder's [`give`](HandOff::give) call to the
/// waiter holding.
pub async fn handoff<H: HandOff>(h: &mut H) -> Duration {
    let held = h.take().await;
    let wait = h.wait();
    let waiting = tokio::spawn(async move {
        let got = wait.await;
        (Instant::now(), got)
    });
    tokio::time::sleep(QUEUED).await;
    let t = Instant::now();
    h.give(held).await;
    let (at, got) = waiting.await.unwrap();
    h.done(got).await;
    at - t
}

/// `n` hand-offs of `h`, one after another.
pub async fn handoffs<H: HandOff>(h: &mut H, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(handoff(h).await);
    }
    out
}

/// `n` hand-offs of `h` and `n` of `mutex`, interleaved one by one so that
/// drift on a shared machine weighs on both alike: (`h`'s, the mutex's).
pub async fn paired<H: HandOff, M: HandOff>(
    h: &mut H,
    mutex: &mut M,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut ours, mut theirs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        ours.push(handoff(h).await);
        theirs.push(handoff(mutex).await);
    }
    (ours, theirs)
}

/// The mutex hand-off between two managers: a `Lock` on manager `a` held
/// and unlocked, the same name's `Lock` on `b` waiting.
pub struct MutexHandOff {
    holder: Lock,
    waiter: Arc<Lock>,
}

impl MutexHandOff {
    /// Lock `name` on `a` (holder) and `b` (waiter); `b`'s session is
    /// started, so that no lease grant is timed.
    pub async fn new(a: &LockManager, b: &LockManager, name: &str) -> MutexHandOff {
        let holder = a.new_lock(name, LockOptions::default()).unwrap();
        let waiter = Arc::new(b.new_lock(name, LockOptions::default()).unwrap());
        waiter.lock().await.unwrap().unlock().await.unwrap();
        MutexHandOff { holder, waiter }
    }
}

impl HandOff for MutexHandOff {
    type Held = LockGuard;
    type Got = LockGuard;

    async fn take(&mut self) -> LockGuard {
        self.holder.lock().await.unwrap()
    }

    fn wait(&self) -> impl Future<Output = LockGuard> + Send + 'static {
        let waiter = self.waiter.clone();
        async move { waiter.lock().await.unwrap() }
    }

    async fn give(&mut self, held: LockGuard) {
        held.unlock().await.unwrap();
    }

    async fn done(&mut self, got: LockGuard) {
        got.unlock().await.unwrap();
    }
}
