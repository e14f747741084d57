// `keys` is a non-empty list of distinct key templates; `key` is one.
use distlock::{distributed_lock, LockError};

#[distributed_lock(keys = [])]
async fn no_names() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(keys = "acct:{from}")]
async fn not_a_list(from: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(keys = ["acct:{from}", "acct:{from}"])]
async fn listed_twice(from: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(keys = ["acct:{form}", 7])]
async fn bad_names(from: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = ["acct:{from}", "acct:{to}"])]
async fn key_with_a_list(from: u64, to: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
