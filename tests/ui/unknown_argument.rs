use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "a", tll = "30s")]
async fn typo() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "b", timeout = "5s", on_lost = "panic", auto_renew = "yes", max_retries = -1)]
async fn wrong_values() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "c", ttl)]
async fn not_name_value() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
