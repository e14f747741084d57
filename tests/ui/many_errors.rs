// Every problem is reported in one compile, each at its cause.
use distlock::distributed_lock;

#[distributed_lock(key = "order:{id}", ttl = "500ms", wait = "later", retries = 3, ttl = "1s")]
fn settle(order_id: u64) -> u64 {
    order_id
}

fn main() {}
