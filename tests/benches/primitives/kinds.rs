//! The hand-offs of each primitive, next to the mutex's
//! ([`MutexHandOff`](crate::common::handoff::MutexHandOff)), and of etcd's
//! own election RPCs.

use std::future::Future;
use std::sync::Arc;

use distlock::{Election, Leadership, LockManager, LockOptions, Permit, Semaphore};
use etcd_client::{Client, LeaderKey, ResignOptions};

use crate::common::handoff::HandOff;

/// Permits of the hand-off's semaphore: all held, one waiter.
pub const PERMITS: u32 = 3;

/// A semaphore of [`PERMITS`]: manager `c` holds all but one for the whole
/// run, `a` takes the last one and releases it, `b` waits for it.
pub struct SemaphoreHandOff {
    holder: Semaphore,
    waiter: Arc<Semaphore>,
    _others: Vec<Permit>,
}

impl SemaphoreHandOff {
    /// Semaphore `name` on `a` (holder), `b` (waiter) and `c` (the other
    /// holders); `b`'s session is started, so that no lease grant is timed.
    pub async fn new(a: &LockManager, b: &LockManager, c: &LockManager, name: &str) -> Self {
        let opts = LockOptions::default;
        let holder = a.new_semaphore(name, PERMITS, opts()).unwrap();
        let waiter = Arc::new(b.new_semaphore(name, PERMITS, opts()).unwrap());
        waiter.acquire().await.unwrap().release().await.unwrap();
        let others_sem = c.new_semaphore(name, PERMITS, opts()).unwrap();
        let mut others = Vec::new();
        for _ in 1..PERMITS {
            others.push(others_sem.acquire().await.unwrap());
        }
        SemaphoreHandOff {
            holder,
            waiter,
            _others: others,
        }
    }
}

impl HandOff for SemaphoreHandOff {
    type Held = Permit;
    type Got = Permit;

    async fn take(&mut self) -> Permit {
        self.holder.acquire().await.unwrap()
    }

    fn wait(&self) -> impl Future<Output = Permit> + Send + 'static {
        let waiter = self.waiter.clone();
        async move { waiter.acquire().await.unwrap() }
    }

    async fn give(&mut self, held: Permit) {
        held.release().await.unwrap();
    }

    async fn done(&mut self, got: Permit) {
        got.release().await.unwrap();
    }
}

/// An election: the leader on manager `a` resigns, the candidate on `b`
/// leads next.
pub struct ElectionHandOff {
    leader: Election,
    next: Arc<Election>,
}

impl ElectionHandOff {
    /// Election `name` on `a` (leader) and `b` (next); `b`'s session is
    /// started.
    pub async fn new(a: &LockManager, b: &LockManager, name: &str) -> Self {
        let leader = a.new_election(name, LockOptions::default()).unwrap();
        let next = Arc::new(b.new_election(name, LockOptions::default()).unwrap());
        next.campaign("b").await.unwrap().resign().await.unwrap();
        ElectionHandOff { leader, next }
    }
}

impl HandOff for ElectionHandOff {
    type Held = Leadership;
    type Got = Leadership;

    async fn take(&mut self) -> Leadership {
        self.leader.campaign("a").await.unwrap()
    }

    fn wait(&self) -> impl Future<Output = Leadership> + Send + 'static {
        let next = self.next.clone();
        async move { next.campaign("b").await.unwrap() }
    }

    async fn give(&mut self, held: Leadership) {
        held.resign().await.unwrap();
    }

    async fn done(&mut self, got: Leadership) {
        got.resign().await.unwrap();
    }
}

/// etcd's v3election RPCs (`campaign`, `resign`) through etcd-client, two
/// clients with a pre-granted lease each.
pub struct RpcElectionHandOff {
    leader: Client,
    next: Client,
    name: String,
    leases: (i64, i64),
}

impl RpcElectionHandOff {
    /// Election `name` between two clients, each with a lease of its own.
    pub async fn new(mut leader: Client, next: Client, name: &str) -> Self {
        let a = leader.lease_grant(600, None).await.unwrap().id();
        let b = leader.lease_grant(600, None).await.unwrap().id();
        RpcElectionHandOff {
            leader,
            next,
            name: name.to_owned(),
            leases: (a, b),
        }
    }

    /// Revokes the two leases.
    pub async fn close(mut self) {
        for lease in [self.leases.0, self.leases.1] {
            self.leader.lease_revoke(lease).await.unwrap();
        }
    }
}

impl HandOff for RpcElectionHandOff {
    type Held = LeaderKey;
    type Got = (Client, LeaderKey);

    async fn take(&mut self) -> LeaderKey {
        let (name, lease) = (self.name.clone(), self.leases.0);
        let mut won = self.leader.campaign(name, "a", lease).await.unwrap();
        won.take_leader().unwrap()
    }

    fn wait(&self) -> impl Future<Output = (Client, LeaderKey)> + Send + 'static {
        let (mut next, name, lease) = (self.next.clone(), self.name.clone(), self.leases.1);
        async move {
            let mut won = next.campaign(name, "b", lease).await.unwrap();
            (next, won.take_leader().unwrap())
        }
    }

    async fn give(&mut self, held: LeaderKey) {
        let resign = ResignOptions::new().with_leader(held);
        self.leader.resign(Some(resign)).await.unwrap();
    }

    async fn done(&mut self, (mut next, got): (Client, LeaderKey)) {
        let resign = ResignOptions::new().with_leader(got);
        next.resign(Some(resign)).await.unwrap();
    }
}
