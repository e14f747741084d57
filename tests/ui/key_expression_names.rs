// Names in a key placeholder's expression are checked: a lowercase name that
// is not an argument is an error naming it, with the closest argument.
use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "slot:{ids[idx]}")]
async fn slot(ids: Vec<u32>, index: usize) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "user:{name.replace(sep, \"-\")}")]
async fn rename(name: String, separator: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "order:{req.get_ref().order_id}")]
async fn settle(request: tonic::Request<u64>) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
