// Any path may be a `Result` alias, so the type checker decides: a type that
// turns out not to be one is reported at the return type.
use distlock::distributed_lock;

type Outcome<T> = Option<T>;

#[distributed_lock(key = "k", manager = distlock::LockManager::in_memory())]
async fn not_really_a_result() -> Outcome<u8> {
    None
}

fn main() {}
