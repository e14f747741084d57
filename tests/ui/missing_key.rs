use distlock::{distributed_lock, LockError};

#[distributed_lock(ttl = "30s")]
async fn settle(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock]
async fn bare(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
