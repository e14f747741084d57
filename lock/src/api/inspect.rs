//! Reading and repairing locks, as operators do: [`LockManager::lock_info`],
//! [`list_locks`](LockManager::list_locks) and
//! [`force_unlock`](LockManager::force_unlock).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::info;

use super::info::{LockInfo, Metadata};
use super::manager::LockManager;
use crate::backend::Entry;
use crate::error::{ErrorCode, LockError, Result};
use crate::key::validate_name;
use crate::shared::Shared;

/// The keys of lock `name`'s queue, holder first (oldest create revision),
/// in one read: what [`LockManager::lock_info`], `force_unlock` and
/// [`Lock::is_locked`](crate::Lock::is_locked) look at.
pub(crate) async fn read_queue(shared: &Shared, name: &str) -> Result<Vec<Entry>> {
    validate_name(name)?;
    shared.ensure_open()?;
    shared.backend.list(&shared.keys.queue(name)).await
}

/// A queue's holder as [`LockInfo`], with its lease's expiry from `expiries`.
fn describe(
    name: &str,
    holder: &Entry,
    waiters: usize,
    expiries: &HashMap<i64, Option<SystemTime>>,
) -> LockInfo {
    let meta = Metadata::decode(&holder.value);
    LockInfo {
        name: name.to_owned(),
        create_time: meta.create_time(),
        owner: meta.owner,
        key: crate::key::shown(&holder.key).into_owned(),
        expire_time: expiries.get(&holder.lease).copied().flatten(),
        fencing_token: holder.create_rev as u64,
        waiters,
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
        let entries = read_queue(&self.shared, name).await?;
        let Some(holder) = entries.first() else {
            return Ok(None);
        };
        let expiries = self.expiries([holder.lease]).await?;
        Ok(Some(describe(name, holder, entries.len() - 1, &expiries)))
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
        let entries = self.shared.backend.list(self.shared.keys.root()).await?;
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
            .map(|(name, queue)| describe(name, &queue[0], queue.len() - 1, &expiries))
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
                asking.spawn(async move { (lease, backend.time_to_live(lease).await) });
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
        let queue = read_queue(&self.shared, name).await?;
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
