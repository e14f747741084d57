//! `#[distributed_lock]` without `manager = ...` uses the process default.
//! One test, in a binary of its own: the default is process-wide state.

use distlock::{distributed_lock, ErrorCode, LockError, LockManager};

#[derive(Debug)]
struct AppError(LockError);

impl From<LockError> for AppError {
    fn from(err: LockError) -> Self {
        AppError(err)
    }
}

#[distributed_lock(key = "invoice:{id}", ttl = "2s")]
async fn issue(id: u32) -> Result<String, AppError> {
    let name = distlock::current_lock().unwrap().name().to_owned();
    // Held in the default manager, under the rendered name.
    let manager = distlock::default_manager().unwrap();
    assert!(manager.lock_info(&name).await.map_err(AppError)?.is_some());
    Ok(name)
}

#[tokio::test]
async fn default_manager_unset_is_an_error_then_set_is_used() {
    assert!(distlock::default_manager().is_none());

    // Unset: a clear error through `E: From<LockError>`, not a panic.
    let AppError(err) = issue(1).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOptions);
    assert!(
        err.to_string().contains("set_default_manager"),
        "the error should say what to do: {err}"
    );
    assert!(err.to_string().contains("`issue`"), "{err}");

    let first = LockManager::in_memory();
    assert!(distlock::set_default_manager(first.clone()).is_none());
    assert_eq!(issue(2).await.unwrap(), "invoice:2");

    // Held by someone else through the same default manager: contends.
    let held = first
        .new_lock("invoice:3", Default::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiting = tokio::spawn(issue(3));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "ran while the lock was held");
    held.unlock().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "invoice:3");

    // Replacing the default returns the previous one.
    let previous = distlock::set_default_manager(LockManager::in_memory()).unwrap();
    assert!(previous.list_locks("").await.unwrap().is_empty());
    assert_eq!(issue(4).await.unwrap(), "invoice:4");
}
