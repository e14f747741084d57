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

// Shorter than ttl, but a renewal sent this late could not land before the
// client gives the lease up: the runtime refuses it, so it does not compile.
#[distributed_lock(key = "e", ttl = "10s", renew_interval = "9500ms")]
async fn renew_too_late() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "f", ttl = "1000years")]
async fn ttl_too_long() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "g", retry_interval = "400days")]
async fn retry_too_long() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "h", hold_at_most = "2000years")]
async fn hold_too_long() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
