//! Reading and repairing locks, as operators do: [`LockManager::lock_info`],
//! [`list_locks`](LockManager::list_locks) and
//! [`force_unlock`](LockManager::force_unlock).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::info;

use super::info::{LockInfo, PermitInfo, SemaphoreInfo};
use super::manager::LockManager;
use crate::backend::Entry;
use crate::error::{ErrorCode, LockError, Result};
use crate::key::validate_name;
use crate::lease::one_shot;
use crate::queue::Metadata;
use crate::shared::Shared;

/// Every key of the queue under `queue` (a lock's or a semaphore's), oldest
/// first (a lock's holder first), in one read: what `lock_info`,
/// `semaphore_info`, `force_unlock` and
/// [`Lock::is_locked`](crate::Lock::is_locked) look at.
pub(crate) async fn read_queue(shared: &Shared, queue: &str) -> Result<Vec<Entry>> {
    shared.ensure_open()?;
    listed(shared, queue).await
}

/// Every key under `prefix`, in one read; an inspection read that fails
/// transiently (a connection reset) is tried again ([`one_shot`]).
async fn listed(shared: &Shared, prefix: &str) -> Result<Vec<Entry>> {
    let list = move || shared.backend.list(prefix);
    Ok(one_shot("inspection read", list).await?.entries)
}

/// A lock queue (oldest first, not empty) as [`LockInfo`], with its holder's
/// lease's expiry from `expiries`.
fn describe(
    name: &str,
    prefix: &str,
    queue: &[Entry],
    expiries: &HashMap<i64, Option<SystemTime>>,
) -> LockInfo {
    let holder = &queue[0];
    let meta = Metadata::decode(&holder.value);
    let readers = shared_holders(prefix, queue);
    LockInfo {
        name: name.to_owned(),
        create_time: meta.create_time(),
        owner: meta.owner,
        key: crate::key::shown(&holder.key).into_owned(),
        expire_time: expiries.get(&holder.lease).copied().flatten(),
        fencing_token: holder.create_rev as u64,
        waiters: queue.len() - readers.max(1),
        readers,
    }
}

/// How many shared entries (read locks, downgraded write locks) hold the
/// lock queue under `prefix` together from its head: 0 when its head is
/// exclusive.
fn shared_holders(prefix: &str, queue: &[Entry]) -> usize {
    let readers = format!("{prefix}r/");
    let shared =
        |e: &Entry| e.key.starts_with(readers.as_bytes()) || Metadata::decode(&e.value).shared;
    queue.iter().take_while(|e| shared(e)).count()
}

/// A semaphore's queue (oldest first) as [`SemaphoreInfo`].
fn describe_semaphore(name: &str, queue: &[Entry]) -> SemaphoreInfo {
    let permits = queue
        .iter()
        .find_map(|e| Metadata::decode(&e.value).permits)
        .unwrap_or(0);
    let held = (permits as usize).min(queue.len());
    let holders = queue[..held]
        .iter()
        .map(|e| {
            let meta = Metadata::decode(&e.value);
            PermitInfo {
                create_time: meta.create_time(),
                owner: meta.owner,
                key: crate::key::shown(&e.key).into_owned(),
                fencing_token: e.create_rev as u64,
            }
        })
        .collect();
    SemaphoreInfo {
        name: name.to_owned(),
        permits,
        holders,
        waiters: queue.len() - held,
    }
}

impl LockManager {
    /// The holder of lock `name`, or `None` when nobody holds it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// assert!(manager.lock_info("free").await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn lock_info(&self, name: &str) -> Result<Option<LockInfo>> {
        validate_name(name)?;
        let entries = read_queue(&self.shared, &self.shared.keys.queue(name)).await?;
        let Some(holder) = entries.first() else {
            return Ok(None);
        };
        let expiries = self.expiries([holder.lease]).await?;
        let prefix = self.shared.keys.queue(name);
        Ok(Some(describe(name, &prefix, &entries, &expiries)))
    }

    /// Every held lock whose *name* starts with `prefix` (`""` lists all),
    /// ordered by name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let _a = manager.new_lock("user-1", LockOptions::default())?.lock().await?;
    /// let _b = manager.new_lock("order-1", LockOptions::default())?.lock().await?;
    /// let users = manager.list_locks("user-").await?;
    /// assert_eq!(users.len(), 1);
    /// assert_eq!(users[0].name, "user-1");
    /// assert_eq!(manager.list_locks("").await?.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn list_locks(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.shared.ensure_open()?;
        // Escaping keeps name order within a segment but not across `/` and
        // `%`, so read the namespace and match on decoded names.
        let entries = listed(&self.shared, self.shared.keys.root()).await?;
        let mut queues: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for entry in entries {
            if let Some(name) = self.shared.keys.name_of_key(&entry.key) {
                if name.starts_with(prefix) {
                    queues.entry(name).or_default().push(entry);
                }
            }
        }
        for queue in queues.values_mut() {
            queue.sort_by_key(|e| e.create_rev);
        }
        // A manager's locks share a lease: one TTL query per distinct lease.
        let expiries = self.expiries(queues.values().map(|q| q[0].lease)).await?;
        Ok(queues
            .iter()
            .map(|(name, queue)| describe(name, &self.shared.keys.queue(name), queue, &expiries))
            .collect())
    }

    /// The semaphore `name`'s permits, holders and waiters; `None` when
    /// nobody holds or waits for it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// assert!(manager.semaphore_info("pool").await?.is_none());
    /// let _p = manager.new_semaphore("pool", 4, LockOptions::default())?.acquire().await?;
    /// assert_eq!(manager.semaphore_info("pool").await?.unwrap().permits, 4);
    /// # Ok(()) }
    /// ```
    pub async fn semaphore_info(&self, name: &str) -> Result<Option<SemaphoreInfo>> {
        validate_name(name)?;
        let entries = read_queue(&self.shared, &self.shared.keys.semaphore(name)).await?;
        Ok((!entries.is_empty()).then(|| describe_semaphore(name, &entries)))
    }

    /// Every semaphore in use whose name starts with `prefix` (`""` lists
    /// all), ordered by name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let _p = manager.new_semaphore("crawl:a", 2, LockOptions::default())?.acquire().await?;
    /// let all = manager.list_semaphores("crawl:").await?;
    /// assert_eq!(all.len(), 1);
    /// assert_eq!(all[0].name, "crawl:a");
    /// # Ok(()) }
    /// ```
    pub async fn list_semaphores(&self, prefix: &str) -> Result<Vec<SemaphoreInfo>> {
        self.shared.ensure_open()?;
        let root = self.shared.keys.semaphore_root();
        let entries = listed(&self.shared, &root).await?;
        let mut queues: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for entry in entries {
            if let Some(name) = crate::key::name_under(&root, &entry.key) {
                if name.starts_with(prefix) {
                    queues.entry(name).or_default().push(entry);
                }
            }
        }
        Ok(queues
            .iter_mut()
            .map(|(name, queue)| {
                queue.sort_by_key(|e| e.create_rev);
                describe_semaphore(name, queue)
            })
            .collect())
    }

    /// When each of `leases` expires (`None` when it is gone), asking each
    /// distinct lease once, several at a time.
    async fn expiries(
        &self,
        leases: impl IntoIterator<Item = i64>,
    ) -> Result<HashMap<i64, Option<SystemTime>>> {
        const AT_ONCE: usize = 16;
        let mut pending: Vec<i64> = leases.into_iter().filter(|&l| l != 0).collect();
        pending.sort_unstable();
        pending.dedup();
        let mut out = HashMap::with_capacity(pending.len());
        let mut asking = tokio::task::JoinSet::new();
        let mut pending = pending.into_iter();
        loop {
            while asking.len() < AT_ONCE {
                let Some(lease) = pending.next() else { break };
                let backend = Arc::clone(&self.shared.backend);
                asking.spawn(async move {
                    let asked = one_shot("lease query", || backend.time_to_live(lease)).await;
                    (lease, asked)
                });
            }
            let Some(answer) = asking.join_next().await else {
                return Ok(out);
            };
            let (lease, remaining) = answer.map_err(|e| {
                LockError::with_source(ErrorCode::Backend, "lease query task failed", e)
            })?;
            let remaining = remaining?;
            // The server's answer: checked, never a panic on a huge value.
            let expiry = (remaining > 0)
                .then(|| SystemTime::now().checked_add(Duration::from_secs(remaining as u64)))
                .flatten();
            out.insert(lease, expiry);
        }
    }

    /// Removes the current holder of lock `name` — an administrator's tool.
    /// Exactly the holder's key is deleted, fenced by its create revision, so
    /// the next waiter proceeds and the holder's other locks stay held; the
    /// holder's guard reports the lock lost. `false` when nobody held it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("stuck", LockOptions::default())?.lock().await?;
    /// assert!(manager.force_unlock("stuck").await?);
    /// guard.lost().await; // the holder hears about it
    /// assert!(!guard.is_held());
    /// # Ok(()) }
    /// ```
    pub async fn force_unlock(&self, name: &str) -> Result<bool> {
        self.remove_holder(name, None).await
    }

    /// Removes the holder of lock `name` only if it is the one with fencing
    /// token `token` — what an operator saw in [`lock_info`](Self::lock_info)
    /// before deciding. If the lock changed hands meanwhile, the new holder
    /// keeps it and this returns `false`, as when nobody holds the lock.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("stuck", LockOptions::default())?.lock().await?;
    /// let seen = manager.lock_info("stuck").await?.unwrap().fencing_token;
    /// assert!(!manager.force_unlock_token("stuck", seen + 1).await?); // not that holder
    /// assert!(guard.is_held());
    /// assert!(manager.force_unlock_token("stuck", seen).await?);
    /// guard.lost().await;
    /// # Ok(()) }
    /// ```
    pub async fn force_unlock_token(&self, name: &str, token: u64) -> Result<bool> {
        self.remove_holder(name, Some(token)).await
    }

    /// Deletes the head key of `name`'s queue (if its token is `token`),
    /// fenced by its create revision.
    async fn remove_holder(&self, name: &str, token: Option<u64>) -> Result<bool> {
        validate_name(name)?;
        let queue = read_queue(&self.shared, &self.shared.keys.queue(name)).await?;
        let Some(holder) = queue
            .first()
            .filter(|h| token.is_none_or(|t| h.create_rev as u64 == t))
        else {
            return Ok(false);
        };
        let deleted = self
            .shared
            .backend
            .delete(&holder.key, Some(holder.create_rev))
            .await?;
        let key = crate::key::shown(&holder.key);
        info!(name, %key, token = holder.create_rev, deleted, "force unlock");
        Ok(deleted)
    }
}
