//! The distlock demo: worker processes contend for a few named locks on a
//! throwaway local etcd; one is killed while holding and its lock is taken
//! over after the TTL; an administrator lists, inspects and force-unlocks;
//! a semaphore limits the fleet to two crawlers at once; the `distlock`
//! command runs a job under a lock and lists it.
//!
//! `cargo run -p distlock-examples --example demo` (or `scripts/demo.sh`), on
//! the etcd of `DISTLOCK_ENDPOINTS`, else on a throwaway local one. Without
//! etcd on the machine it runs the same story in memory.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use distlock::{EtcdConfig, LockManager, LockOptions};
use support::Etcd;
use tokio::process::{Child, Command};
use tokio::time::sleep;

const NAMES: [&str; 3] = ["order:1", "order:2", "report"];
const NAMESPACE: &str = "/demo";
const CRASH_TTL: Duration = Duration::from_secs(3);
/// The semaphore of step 4 and its permits.
const CRAWL: &str = "crawl:example.com";
const CRAWL_PERMITS: u32 = 2;

/// How the demo reaches its locks: a real etcd, or memory as a fallback.
enum Backend {
    Etcd(Etcd),
    Memory(LockManager),
}

impl Backend {
    async fn manager(&self) -> LockManager {
        match self {
            Backend::Etcd(etcd) => {
                LockManager::connect(EtcdConfig::new(etcd.endpoints()), NAMESPACE)
                    .await
                    .expect("connect to the demo etcd")
            }
            Backend::Memory(first) => first.peer(),
        }
    }
}

fn opts() -> LockOptions {
    LockOptions::default()
        .ttl(CRASH_TTL)
        .renew_interval(Duration::from_secs(1))
}

fn say(who: &str, what: impl std::fmt::Display) {
    println!("  [{who:>8}] {what}");
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("worker") {
        let id: usize = args.next().and_then(|a| a.parse().ok()).expect("worker id");
        let endpoint = args.next().expect("endpoint");
        let role = args.next().expect("role");
        return run_worker_process(id, endpoint, role).await;
    }

    let backend = match support::etcd().await {
        Ok(etcd) => {
            println!("== distlock demo on etcd at {}", etcd.endpoints()[0]);
            Backend::Etcd(etcd)
        }
        Err(e) => {
            println!("== NOTICE: no etcd here ({e}); running the demo in memory");
            println!("==         (LockManager::in_memory(): same semantics, one process)");
            Backend::Memory(LockManager::in_memory())
        }
    };
    let started = Instant::now();
    let admin = backend.manager().await;

    println!("\n-- 1. three workers contend for {NAMES:?}; tokens only grow per lock");
    let mut children = Vec::new();
    let mut tasks = Vec::new();
    for id in 1..=3 {
        match &backend {
            Backend::Etcd(etcd) => children.push(spawn_worker(id, &etcd.endpoints()[0], "contend")),
            Backend::Memory(_) => {
                let manager = backend.manager().await;
                tasks.push(tokio::spawn(contend(id, manager)));
            }
        }
    }
    sleep(Duration::from_millis(1500)).await;
    show_locks(&admin).await;
    for child in &mut children {
        let _ = child.wait().await;
    }
    for task in tasks {
        let _ = task.await;
    }

    println!("\n-- 2. a worker dies while holding `invoice:7`; the lock frees after its TTL ({CRASH_TTL:?})");
    let waiter = backend.manager().await;
    let crashed_at;
    match &backend {
        Backend::Etcd(etcd) => {
            let mut victim = spawn_worker(4, &etcd.endpoints()[0], "hold");
            wait_until_held(&admin, "invoice:7").await;
            show_info(&admin, "invoice:7").await;
            victim.kill().await.expect("kill the worker");
            crashed_at = Instant::now();
            say(
                "demo",
                "killed worker 4 (SIGKILL): no unlock, no lease revoke",
            );
        }
        Backend::Memory(_) => {
            let victim = backend.manager().await;
            let lock = victim
                .new_lock("invoice:7", opts().auto_renew(false))
                .unwrap();
            let guard = lock.lock().await.unwrap();
            say(
                "worker 4",
                format!("holds invoice:7 (token {})", guard.fencing_token()),
            );
            show_info(&admin, "invoice:7").await;
            std::mem::forget(guard); // a crash: nobody unlocks, nobody renews
            crashed_at = Instant::now();
            say("demo", "worker 4 stops renewing (simulated crash)");
        }
    }
    let lock = waiter.new_lock("invoice:7", opts()).unwrap();
    let guard = lock
        .lock_timeout(Duration::from_secs(10))
        .await
        .expect("takeover");
    say(
        "worker 5",
        format!(
            "took over invoice:7 {:.1}s after the crash (token {})",
            crashed_at.elapsed().as_secs_f64(),
            guard.fencing_token()
        ),
    );
    guard.unlock().await.unwrap();

    println!("\n-- 3. an administrator force-unlocks a stuck lock; the holder notices, the waiter proceeds");
    let holder = backend.manager().await;
    let stuck = holder.new_lock("nightly-job", opts()).unwrap();
    let kept = holder
        .new_lock("other-job", opts())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let guard = stuck.lock().await.unwrap();
    let lost = guard.lost();
    let noticed = tokio::spawn(async move {
        lost.await;
        say(
            "holder",
            "lost() fired: nightly-job is no longer mine, stopping work",
        );
    });
    let queued = waiter.new_lock("nightly-job", opts()).unwrap();
    let next = tokio::spawn(async move {
        let g = queued.lock_timeout(Duration::from_secs(10)).await.unwrap();
        say(
            "waiter",
            format!("got nightly-job (token {})", g.fencing_token()),
        );
        g
    });
    sleep(Duration::from_millis(200)).await;
    show_locks(&admin).await;
    let removed = admin.force_unlock("nightly-job").await.unwrap();
    say(
        "admin",
        format!("force_unlock(\"nightly-job\") -> {removed}"),
    );
    noticed.await.unwrap();
    let g = next.await.unwrap();
    say(
        "holder",
        format!("other-job still held: {}", kept.is_held()),
    );
    g.unlock().await.unwrap();
    kept.unlock().await.unwrap();
    show_locks(&admin).await;

    println!(
        "\n-- 4. a semaphore of 2 permits: three workers crawl `example.com`, at most two at once"
    );
    let mut children = Vec::new();
    let mut tasks = Vec::new();
    for id in 6..=8 {
        match &backend {
            Backend::Etcd(etcd) => children.push(spawn_worker(id, &etcd.endpoints()[0], "crawl")),
            Backend::Memory(_) => tasks.push(tokio::spawn(crawl(id, backend.manager().await))),
        }
    }
    for _ in 0..3 {
        sleep(Duration::from_millis(450)).await;
        show_semaphore(&admin, CRAWL).await;
    }
    for child in &mut children {
        let _ = child.wait().await;
    }
    for task in tasks {
        let _ = task.await;
    }

    println!("\n-- 5. the `distlock` command: `hold` runs a shell job under lock `report`, `list` shows it, a second `hold` is busy");
    match &backend {
        Backend::Etcd(etcd) => cli_step(&etcd.endpoints()[0]).await,
        Backend::Memory(_) => say("demo", "skipped: the `distlock` command needs etcd"),
    }

    for m in [&admin, &waiter, &holder] {
        m.close().await;
    }
    println!("\n== done in {:.1}s", started.elapsed().as_secs_f64());
    drop(backend); // stops etcd and removes its data
}

/// Step 5: the `distlock` command against the demo's etcd.
async fn cli_step(endpoint: &str) {
    let Some(bin) = distlock_cli_binary().await else {
        say(
            "demo",
            "skipped: cannot build the `distlock` command (cargo build -p distlock-cli)",
        );
        return;
    };
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.args(["--endpoints", endpoint, "--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    let show = |cmdline: &str, out: &std::process::Output| {
        say("shell", format!("$ {cmdline}"));
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            say("shell", format!("  {line}"));
        }
        say(
            "shell",
            format!("  (exit status {})", out.status.code().unwrap_or(-1)),
        );
    };
    let job = r#"echo "  [     job] running under lock $DISTLOCK_LOCK, fencing token $DISTLOCK_FENCING_TOKEN"; sleep 2"#;
    say("shell", "$ distlock hold report -- sh -c '...; sleep 2' &");
    let mut held = cli(&["hold", "report", "--", "sh", "-c", job])
        .spawn()
        .expect("start distlock hold");
    let admin = LockManager::connect(EtcdConfig::new([endpoint]), NAMESPACE)
        .await
        .expect("connect");
    wait_until_held(&admin, "report").await;
    sleep(Duration::from_millis(200)).await;
    let listed = cli(&["list"]).output().await.expect("distlock list");
    show("distlock list", &listed);
    let busy = cli(&[
        "hold",
        "report",
        "--wait",
        "0s",
        "--",
        "echo",
        "never printed",
    ])
    .output()
    .await
    .expect("distlock hold");
    show(
        "distlock hold report --wait 0s -- echo never printed",
        &busy,
    );
    let status = tokio::time::timeout(Duration::from_secs(20), held.wait())
        .await
        .expect("the job ends")
        .expect("distlock hold");
    say(
        "shell",
        format!(
            "the job ended; `distlock hold report` exited {}",
            status.code().unwrap_or(-1)
        ),
    );
    let listed = cli(&["list"]).output().await.expect("distlock list");
    show("distlock list", &listed);
    admin.close().await;
}

/// The `distlock` binary: `$DISTLOCK_CLI`, else the one next to this
/// example's directory in `target/`, built with cargo when missing.
async fn distlock_cli_binary() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("DISTLOCK_CLI") {
        return Some(path.into());
    }
    let exe = std::env::current_exe().ok()?; // target/<profile>/examples/demo
    let bin = exe.parent()?.parent()?.join("distlock");
    if !bin.exists() {
        let profile = exe.parent()?.parent()?.file_name()?.to_str()?.to_owned();
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "--quiet", "-p", "distlock-cli"]);
        if profile == "release" {
            build.arg("--release");
        }
        let built = tokio::time::timeout(Duration::from_secs(600), build.status()).await;
        if !matches!(built, Ok(Ok(status)) if status.success()) || !bin.exists() {
            return None;
        }
    }
    Some(bin)
}

fn spawn_worker(id: usize, endpoint: &str, role: &str) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .args(["worker", &id.to_string(), endpoint, role])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn a worker process")
}

async fn run_worker_process(id: usize, endpoint: String, role: String) {
    let manager = LockManager::connect(EtcdConfig::new([endpoint]), NAMESPACE)
        .await
        .expect("worker connects");
    match role.as_str() {
        "hold" => {
            let guard = manager
                .new_lock("invoice:7", opts())
                .unwrap()
                .lock()
                .await
                .unwrap();
            say(
                &format!("worker {id}"),
                format!(
                    "holds invoice:7 (token {}), pid {}",
                    guard.fencing_token(),
                    std::process::id()
                ),
            );
            sleep(Duration::from_secs(60)).await; // until killed
        }
        "crawl" => {
            crawl(id, manager.clone()).await;
            manager.close().await;
        }
        _ => {
            contend(id, manager.clone()).await;
            manager.close().await;
        }
    }
}

/// Crawls a few pages, each under one of the semaphore's permits.
async fn crawl(id: usize, manager: LockManager) {
    let who = format!("worker {id}");
    let sem = manager.new_semaphore(CRAWL, CRAWL_PERMITS, opts()).unwrap();
    for page in 1..=3 {
        let permit = sem.acquire().await.unwrap();
        say(
            &who,
            format!(
                "crawls page {page} of example.com (permit token {})",
                permit.fencing_token()
            ),
        );
        sleep(Duration::from_millis(300)).await;
        permit.release().await.unwrap();
    }
}

async fn show_semaphore(admin: &LockManager, name: &str) {
    match admin.semaphore_info(name).await.unwrap() {
        Some(info) => {
            let tokens: Vec<u64> = info.holders.iter().map(|h| h.fencing_token).collect();
            say(
                "admin",
                format!(
                    "semaphore_info({name}): {}/{} permits in use (tokens {tokens:?}), {} waiting",
                    info.holders.len(),
                    info.permits,
                    info.waiters
                ),
            );
        }
        None => say("admin", format!("semaphore_info({name}): not in use")),
    }
}

/// Takes the demo's locks in turn for a few rounds, printing each hold.
async fn contend(id: usize, manager: LockManager) {
    let who = format!("worker {id}");
    for round in 0..4 {
        let name = NAMES[(id + round) % NAMES.len()];
        let lock = manager.new_lock(name, opts()).unwrap();
        let guard = lock.lock().await.unwrap();
        say(
            &who,
            format!("holds {name:<8} token {}", guard.fencing_token()),
        );
        sleep(Duration::from_millis(250 + 50 * id as u64)).await;
        guard.unlock().await.unwrap();
    }
}

async fn wait_until_held(admin: &LockManager, name: &str) {
    while admin.lock_info(name).await.unwrap().is_none() {
        sleep(Duration::from_millis(20)).await;
    }
}

async fn show_info(admin: &LockManager, name: &str) {
    if let Some(info) = admin.lock_info(name).await.unwrap() {
        let expires = info
            .expire_time
            .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
            .map_or("?".into(), |d| format!("{:.1}s", d.as_secs_f64()));
        say(
            "admin",
            format!(
                "lock_info({name}): owner {} token {} expires in {expires} waiters {}",
                info.owner, info.fencing_token, info.waiters
            ),
        );
    }
}

async fn show_locks(admin: &LockManager) {
    let locks = admin.list_locks("").await.unwrap();
    say("admin", format!("list_locks(\"\"): {} held", locks.len()));
    for info in locks {
        say(
            "admin",
            format!(
                "  {:<12} owner {:<32} token {:>4} waiters {}",
                info.name, info.owner, info.fencing_token, info.waiters
            ),
        );
    }
}
