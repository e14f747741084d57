//! `#[distributed_lock]`: two service instances settle orders, one order at
//! a time per order id, and meet every argument of the macro on the way.
//!
//! `cargo run -p distlock-examples --example macro_example` (on the etcd of
//! `DISTLOCK_ENDPOINTS`, else on a throwaway local one)

mod support;

use std::fmt;
use std::time::Duration;

use distlock::{distributed_lock, ErrorCode, EtcdConfig, LockError, LockManager, LockOptions};
use tokio::time::{sleep, Instant};

/// The application's error type: lock failures convert into it.
#[derive(Debug)]
enum AppError {
    Lock(LockError),
    OutOfStock,
}

impl From<LockError> for AppError {
    fn from(err: LockError) -> Self {
        AppError::Lock(err)
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Lock(e) => write!(f, "lock error ({:?}): {e}", e.code()),
            AppError::OutOfStock => f.write_str("out of stock"),
        }
    }
}

impl std::error::Error for AppError {}

/// One instance of the service; in production, one per process.
struct Instance {
    name: &'static str,
    locks: LockManager,
    started: Instant,
}

impl Instance {
    fn log(&self, what: impl fmt::Display) {
        println!(
            "{:>6} ms  {:<10} {what}",
            self.started.elapsed().as_millis(),
            self.name
        );
    }

    /// Settles an order: one instance at a time per order id, fleet-wide.
    #[distributed_lock(key = "order:{order_id}", ttl = "5s", manager = self.locks)]
    async fn settle(&self, order_id: u64) -> Result<u64, AppError> {
        let token = distlock::current_fencing_token().expect("inside a locked call");
        self.log(format_args!(
            "settling order {order_id} (fencing token {token})"
        ));
        sleep(Duration::from_millis(300)).await;
        // A nested call with the same key runs under this lock.
        self.audit(order_id).await?;
        self.log(format_args!("settled order {order_id}"));
        Ok(token)
    }

    /// Also locks `order:{id}`; called on its own it waits like anyone else.
    #[distributed_lock(key = "order:{order_id}", ttl = "5s", manager = self.locks)]
    async fn audit(&self, order_id: u64) -> Result<(), AppError> {
        let lock = distlock::current_lock().expect("inside a locked call");
        self.log(format_args!(
            "  audit of `{}` runs under the same lock (token {})",
            lock.name(),
            lock.fencing_token()
        ));
        Ok(())
    }

    /// Audits twice at once: the two nested calls run under this call's lock,
    /// one after the other (concurrent same-key sections never overlap).
    #[distributed_lock(key = "order:{order_id}", ttl = "5s", manager = self.locks)]
    async fn reconcile(&self, order_id: u64) -> Result<(), AppError> {
        self.log(format_args!(
            "reconciling order {order_id}: two audits at once"
        ));
        let (a, b) = tokio::join!(self.audit(order_id), self.audit(order_id));
        a?;
        b?;
        Ok(())
    }

    /// Gives up when the order stays busy for 200 ms.
    #[distributed_lock(key = "order:{order_id}", wait = "200ms", manager = self.locks)]
    async fn refund(&self, order_id: u64) -> Result<(), AppError> {
        self.log(format_args!("refunded order {order_id}"));
        Ok(())
    }

    /// A long export that an operator force-unlocks halfway: the body is
    /// cancelled at its next await and the call returns `Expired`.
    #[distributed_lock(key = "export:{what}", ttl = "3s", renew_interval = "1s", manager = self.locks)]
    async fn export(&self, what: &str) -> Result<(), AppError> {
        self.log(format_args!("exporting {what}..."));
        for chunk in 1..=10 {
            sleep(Duration::from_millis(100)).await;
            self.log(format_args!("  exported chunk {chunk}/10"));
        }
        Ok(())
    }
}

/// A free function on the default manager, trying once (`wait = "0s"`).
#[distributed_lock(key = "stock:{sku}", wait = "0s", ttl = "2s", on_lost = "continue")]
async fn reserve(sku: &str, available: u32) -> Result<u32, AppError> {
    if available == 0 {
        return Err(AppError::OutOfStock);
    }
    Ok(available - 1)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // DISTLOCK_ENDPOINTS, or a throwaway etcd (examples/support), removed on exit.
    let etcd = support::etcd().await?;
    let config = EtcdConfig::new(etcd.endpoints());
    let namespace = "/macro-example";
    let started = Instant::now();
    let east = Instance {
        name: "east",
        locks: LockManager::connect(config.clone(), &namespace).await?,
        started,
    };
    let west = Instance {
        name: "west",
        locks: LockManager::connect(config.clone(), &namespace).await?,
        started,
    };
    println!("etcd at {:?}, namespace {namespace}\n", etcd.endpoints());

    println!("1. Both instances settle order 42 (one after the other) and order 7 (alongside):");
    let (a, b, c) = tokio::join!(east.settle(42), west.settle(42), west.settle(7));
    let (a, b, c) = (a?, b?, c?);
    assert!(a != b && c > 0);
    println!("   fencing tokens: {a} and {b} for order 42, {c} for order 7\n");

    println!(
        "2. Another part of the system holds `order:42` by name; refund gives up after 200 ms:"
    );
    let held = west
        .locks
        .new_lock("order:42", LockOptions::default())?
        .lock()
        .await?;
    match east.refund(42).await {
        Err(AppError::Lock(e)) if e.code() == ErrorCode::Timeout => east.log(format_args!("{e}")),
        other => panic!("expected a timeout, got {other:?}"),
    }
    held.unlock().await?;
    east.refund(42).await?;
    println!();

    println!("3. An operator force-unlocks a running export; it stops with `Expired`:");
    let (export, ()) = tokio::join!(east.export("ledger"), async {
        sleep(Duration::from_millis(350)).await;
        let removed = west.locks.force_unlock("export:ledger").await.unwrap();
        west.log(format_args!("force_unlock(\"export:ledger\") -> {removed}"));
    });
    match export {
        Err(AppError::Lock(e)) if e.code() == ErrorCode::Expired => east.log(format_args!("{e}")),
        other => panic!("expected Expired, got {other:?}"),
    }
    println!();

    println!("4. Nested calls are sections of the outer call's hold; concurrent ones take turns:");
    east.reconcile(42).await?;
    println!();

    println!("5. Without `manager = ...` the default manager is used; unset, that is an error:");
    match reserve("A-1", 3).await {
        Err(AppError::Lock(e)) => println!("   before set_default_manager: {e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    distlock::set_default_manager(east.locks.clone());
    println!("   reserve(\"A-1\", 3) -> {:?}", reserve("A-1", 3).await?);
    println!(
        "   reserve(\"A-1\", 0) -> {}",
        reserve("A-1", 0).await.unwrap_err()
    );

    east.locks.close().await;
    west.locks.close().await;
    println!("\ndone in {} ms", started.elapsed().as_millis());
    Ok(())
}
