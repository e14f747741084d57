// Arguments that ask for two kinds of lock at once, each an error at the
// argument that contradicts another.
use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "crawl:{host}", permits = 3, read)]
async fn permits_and_read(host: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "crawl:{host}", write, permits = 3)]
async fn permits_and_write(host: &str) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "doc:{id}", read, write)]
async fn read_and_write(id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "acct:{from}", keys = ["acct:{from}", "acct:{to}"])]
async fn key_and_keys(from: u64, to: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], read)]
async fn keys_and_read(from: u64, to: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], write = true)]
async fn keys_and_write(from: u64, to: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], permits = 2)]
async fn keys_and_permits(from: u64, to: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(permits = 2, read)]
async fn neither_key_nor_keys() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "doc", read = "yes")]
async fn flag_with_a_string() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
