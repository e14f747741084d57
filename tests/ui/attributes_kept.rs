// Attributes next to #[distributed_lock] stay on the function.
#![deny(deprecated)]

use distlock::{distributed_lock, LockError, LockManager};

/// Settles an order (doc comments stay too).
#[deprecated(note = "use settle_v2")]
#[distributed_lock(key = "order:{order_id}", manager = manager)]
async fn settle(manager: &LockManager, order_id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let manager = LockManager::in_memory();
    let _ = settle(&manager, 1);
}
