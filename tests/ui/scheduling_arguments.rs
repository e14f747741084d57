// Mistakes in the scheduling arguments and `crate`, each reported at its cause.
use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "job", skip_if_busy, wait = "5s")]
async fn waits_and_skips() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "job", hold_at_least = "30s", hold_at_most = "10s")]
async fn at_most_below_at_least() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "job", hold_at_least = "0s", hold_at_most = "soon")]
async fn bad_holds() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "job", skip_if_busy = "yes")]
async fn flag_with_a_string() {}

#[distributed_lock(key = "job", crate = "not a path")]
async fn bad_crate_path() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "job", crate = distlock)]
async fn crate_not_a_string() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
