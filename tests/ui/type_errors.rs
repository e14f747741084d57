// What the type checker says about a manager that is not one, an error type
// without `From<LockError>`, and a key value without `Display`.
use distlock::distributed_lock;

struct NotAManager;

#[derive(Debug)]
struct MyError;

struct NoDisplay;

#[distributed_lock(key = "a", manager = NotAManager)]
async fn wrong_manager() -> Result<(), distlock::LockError> {
    Ok(())
}

#[distributed_lock(key = "b", manager = distlock::LockManager::in_memory())]
async fn wrong_error() -> Result<(), MyError> {
    Ok(())
}

#[distributed_lock(key = "c:{value}", manager = distlock::LockManager::in_memory())]
async fn not_display(value: NoDisplay) -> Result<(), distlock::LockError> {
    Ok(())
}

fn main() {}
