use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "order:{orderid}")]
async fn settle(order_id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "user:{req.user.id}")]
async fn rename(request: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "shard:{self.shard}")]
async fn free_function(shard: u32) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "nothing:{x}")]
async fn no_arguments() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
