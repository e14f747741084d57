use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "order:{order_id}")]
async fn returns_unit(order_id: u64) {}

#[distributed_lock(key = "order:{order_id}")]
async fn returns_number(order_id: u64) -> u64 {
    order_id
}

#[distributed_lock(key = "order:{order_id}")]
async fn returns_option(order_id: u64) -> Option<LockError> {
    None
}

fn main() {}
