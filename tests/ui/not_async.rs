use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "order:{order_id}")]
fn settle(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

struct Service;

impl Service {
    #[distributed_lock(key = "job")]
    pub fn run(&self) -> Result<(), LockError> {
        Ok(())
    }
}

#[distributed_lock(key = "x")]
struct NotAFunction;

fn main() {}
