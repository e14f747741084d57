// `permits` takes 1 to distlock::MAX_PERMITS (1024), or a `u32` expression
// evaluated at each call.
use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "crawl:{host}", permits = 0)]
async fn no_permits(host: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "crawl:{host}", permits = 1025)]
async fn too_many(host: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "crawl:{host}", permits = 99999999999)]
async fn not_a_u32(host: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "crawl:{host}", permits = -1)]
async fn negative(host: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "crawl:{host}", permits = "3")]
async fn a_string(host: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "crawl:{host}", permits)]
async fn no_value(host: &str) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
