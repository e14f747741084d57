// A placeholder whose value is not `Display` is an error about that
// placeholder: its message names it (and, on compilers that can point into
// a string literal, the error points at it alone).
use distlock::{distributed_lock, LockError};

struct Order {
    id: u64,
    coupon: Option<String>,
}

#[distributed_lock(key = "order:{order.id}:{order.coupon}", manager = distlock::LockManager::in_memory())]
async fn redeem(order: Order) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "batch:{ids.first()}", manager = distlock::LockManager::in_memory())]
async fn first(ids: Vec<u32>) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
