use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "a", ttl = "500ms")]
async fn sub_second() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "b", ttl = "1500ms")]
async fn fraction() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "c", ttl = "5s", renew_interval = "5s")]
async fn renew_not_shorter() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "d", auto_renew = false, renew_interval = "1s")]
async fn renew_without_auto_renew() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
