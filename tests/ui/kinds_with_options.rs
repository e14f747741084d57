// The other arguments mean the same for every kind: their mistakes are the
// same errors with `permits`, `read`, `write` or `keys`.
use distlock::{distributed_lock, LockError};

#[distributed_lock(key = "crawl:{host}", permits = 2, skip_if_busy, wait = "1s")]
async fn permit_waits_and_skips(host: &str) {}

#[distributed_lock(key = "doc:{id}", read, hold_at_least = "1m", hold_at_most = "10s")]
async fn read_at_most_below_at_least(id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], ttl = "500ms", skip_if_busy)]
async fn transfer_short_ttl(from: u64, to: u64) -> Result<u64, LockError> {
    Ok(from + to)
}

fn main() {}
