// `skip_if_busy` needs a return type with a "skipped" value: `()`,
// `Option<T>`, `Result<(), E>` or `Result<Option<T>, E>`.
use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "job", skip_if_busy, manager = distlock::LockManager::in_memory())]
async fn returns_a_number() -> u32 {
    1
}

#[distributed_lock(key = "job", skip_if_busy, manager = distlock::LockManager::in_memory())]
async fn returns_a_plain_result() -> Result<u32, LockError> {
    Ok(1)
}

// Accepted: nothing to report for these.
#[distributed_lock(key = "job", skip_if_busy, manager = distlock::LockManager::in_memory())]
async fn returns_unit() {}

#[distributed_lock(key = "job", skip_if_busy, manager = distlock::LockManager::in_memory())]
async fn returns_an_option() -> Option<u32> {
    Some(1)
}

fn main() {}
