use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "a", ttl = "30s", ttl = "10s")]
async fn twice() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "a", key = "b")]
async fn two_keys() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
