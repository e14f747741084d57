use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "a", ttl = "30 parsecs")]
async fn unknown_unit() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "b", wait = "soon")]
async fn not_a_duration() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "c", ttl = 30)]
async fn not_a_string() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "d", renew_interval = "", retry_interval = "0s")]
async fn empty_and_zero() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
