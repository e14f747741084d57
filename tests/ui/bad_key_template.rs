use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "order:{order_id")]
async fn unclosed(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "order:{}")]
async fn empty(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "order:{0}")]
async fn positional(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "order:{order_id:>8}")]
async fn format_spec(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "order:{order_id +}")]
async fn expression(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "")]
async fn empty_key(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = order_id)]
async fn not_a_string(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
