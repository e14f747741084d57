// A `permits` expression is a `u32`: another type is the type checker's
// error, at the expression.
use distlock::{distributed_lock, LockError, LockManager};

#[distributed_lock(key = "crawl:{host}", permits = limit, manager = LockManager::in_memory())]
async fn crawl(host: &str, limit: usize) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
