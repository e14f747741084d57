//! Taking what a locked call locks, as its [`Spec`] says: the lock of its
//! key, a permit of the key's semaphore, a side of the key's read-write
//! lock, or a lock of each name of a multi-lock ([`take`]); and how messages
//! name it ([`what`]).

use super::held::Held;
use super::names::Names;
use super::spec::{Spec, Take};
use crate::api::{Lock, LockManager};
use crate::error::{ErrorCode, LockError};
use crate::metrics::Source;

/// Takes what `spec` says of `names` through `manager`, waiting as `spec`
/// says; `None` when a try (`skip_if_busy`) found it busy.
///
/// Each handle is an owner scope of its own ([`Lock::owned_by_scope`]):
/// the hold is the call's, re-entered only by its body, never by other
/// branches of its task; inside an owner scope holding the name through the
/// same manager, a lock or either side of a read-write lock is a child
/// section of that hold (a permit is always one of its own).
pub(super) async fn take(
    manager: &LockManager,
    spec: &Spec,
    names: &Names,
) -> Result<Option<Held>, LockError> {
    let options = spec.options();
    let ours = |lock: Lock| lock.with_metrics_source(Source::Macro).owned_by_scope();
    match names {
        Names::One(name) => {
            let lock = match spec.take {
                Take::Lock => manager.new_lock(name.clone(), options)?,
                Take::Permit(permits) => manager
                    .new_semaphore(name.clone(), permits, options)?
                    .into_lock(),
                Take::Read => manager.new_rw_lock(name.clone(), options)?.into_sides().0,
                Take::Write => manager.new_rw_lock(name.clone(), options)?.into_sides().1,
            };
            let lock = ours(lock);
            let guard = if spec.skip_if_busy {
                lock.try_lock().await?
            } else {
                match spec.wait {
                    None => Some(lock.lock().await?),
                    // A zero wait tries once.
                    Some(wait) => Some(lock.lock_timeout(wait).await?),
                }
            };
            Ok(guard.map(Held::one))
        }
        Names::All(names) => {
            if spec.take != Take::Lock {
                return Err(LockError::new(
                    ErrorCode::InvalidOptions,
                    format!(
                        "`{}`: a multi-lock takes each name's lock, not a permit or a side of \
                         a read-write lock",
                        spec.function
                    ),
                ));
            }
            let multi = manager
                .new_multi_lock(names.iter().cloned(), options)?
                .map_locks(ours);
            let guard = if spec.skip_if_busy {
                multi.try_lock().await?
            } else {
                match spec.wait {
                    None => Some(multi.lock().await?),
                    Some(wait) => Some(multi.lock_timeout(wait).await?),
                }
            };
            let held = guard.and_then(|guard| Held::all(guard.into_guards()));
            Ok(held)
        }
    }
}

/// What a call holds, for messages: "{what} was lost".
pub(super) fn what(spec: &Spec, names: &Names) -> String {
    match (names, spec.take) {
        (Names::One(name), Take::Lock) => format!("lock `{name}`"),
        (Names::One(name), Take::Permit(_)) => format!("a permit of semaphore `{name}`"),
        (Names::One(name), Take::Read) => format!("the read lock of `{name}`"),
        (Names::One(name), Take::Write) => format!("the write lock of `{name}`"),
        (Names::All(names), _) => format!("the multi-lock of `{}`", names.join("`, `")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn messages_name_the_kind() {
        let spec = Spec::new("f", Duration::from_secs(3));
        let one = Names::One("k".into());
        assert_eq!(what(&spec, &one), "lock `k`");
        assert_eq!(what(&spec.permits(2), &one), "a permit of semaphore `k`");
        assert_eq!(what(&spec.read(), &one), "the read lock of `k`");
        assert_eq!(what(&spec.write(), &one), "the write lock of `k`");
        let all = Names::All(vec!["a".into(), "b".into()]);
        assert_eq!(what(&spec, &all), "the multi-lock of `a`, `b`");
    }

    #[tokio::test]
    async fn a_multi_lock_takes_locks_only() {
        let manager = LockManager::in_memory();
        let spec = Spec::new("f", Duration::from_secs(3)).read();
        let all = Names::All(vec!["a".into()]);
        let err = take(&manager, &spec, &all).await.err().unwrap();
        assert_eq!(err.code(), ErrorCode::InvalidOptions);
    }
}
