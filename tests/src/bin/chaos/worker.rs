//! The processes the driver starts: lock workers, Tower servers and the HTTP
//! load loop. Each records its history into its own file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Router};
use bytes::Bytes;
use distlock::{ErrorCode, EtcdConfig, Lock, LockGuard, LockManager, LockOptions};
use distlock_tower::{HeldLock, LockLayer, PathSegment};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

use crate::elect::{self, Elections, Observers};
use crate::history::{Clock, Event, Recorder};
use crate::store::Store;
use crate::work::{record_end, Ctx, End, Stopped};
use crate::{prims, Rng};

/// How long a Tower request may wait for its key before the layer answers 503.
pub const TOWER_WAIT: Duration = Duration::from_secs(2);

/// Settings every child process gets from the driver (as `--name value` flags).
#[derive(Debug, Clone)]
pub struct ChildArgs {
    /// Process name in the history.
    pub name: String,
    /// etcd endpoints (the process's own proxies).
    pub endpoints: Vec<String>,
    /// Lock namespace.
    pub ns: String,
    /// Fenced store root.
    pub store_root: String,
    /// Number of hot keys.
    pub keys: usize,
    /// Number of accounts (multi-lock transfers, read-write locks).
    pub accounts: usize,
    /// The semaphore's permits.
    pub permits: u32,
    /// Concurrent tasks.
    pub tasks: usize,
    /// Seed of this process's choices.
    pub seed: u64,
    /// `t` at which to stop starting work.
    pub stop_at: u64,
    /// The driver's epoch (Unix µs).
    pub epoch: u64,
    /// History file.
    pub out: PathBuf,
    /// Lock TTL.
    pub ttl: Duration,
    /// Ignore `lost()` and fencing.
    pub broken: bool,
    /// Tower servers (for the load loop).
    pub servers: Vec<String>,
}

impl ChildArgs {
    /// Parses `--flag value` pairs.
    pub fn parse(args: &[String]) -> Result<ChildArgs, String> {
        let mut map = HashMap::new();
        let mut broken = false;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--broken" {
                broken = true;
                continue;
            }
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            map.insert(name.to_owned(), value.clone());
        }
        let get = |k: &str| {
            map.get(k)
                .cloned()
                .ok_or_else(|| format!("--{k} is required"))
        };
        let num =
            |k: &str| -> Result<u64, String> { get(k)?.parse().map_err(|e| format!("--{k}: {e}")) };
        let list = |k: &str| -> Vec<String> {
            map.get(k)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(ChildArgs {
            name: get("name")?,
            endpoints: list("endpoints"),
            ns: get("ns")?,
            store_root: get("store-root")?,
            keys: num("keys")? as usize,
            accounts: num("accounts")? as usize,
            permits: num("permits")? as u32,
            tasks: num("tasks")? as usize,
            seed: num("seed")?,
            stop_at: num("stop-at")?,
            epoch: num("epoch")?,
            out: PathBuf::from(get("out")?),
            ttl: Duration::from_millis(num("ttl-ms")?),
            broken,
            servers: list("servers"),
        })
    }

    /// The flags [`ChildArgs::parse`] reads.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "--name".into(),
            self.name.clone(),
            "--endpoints".into(),
            self.endpoints.join(","),
            "--ns".into(),
            self.ns.clone(),
            "--store-root".into(),
            self.store_root.clone(),
            "--keys".into(),
            self.keys.to_string(),
            "--accounts".into(),
            self.accounts.to_string(),
            "--permits".into(),
            self.permits.to_string(),
            "--tasks".into(),
            self.tasks.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--stop-at".into(),
            self.stop_at.to_string(),
            "--epoch".into(),
            self.epoch.to_string(),
            "--out".into(),
            self.out.display().to_string(),
            "--ttl-ms".into(),
            self.ttl.as_millis().to_string(),
            "--servers".into(),
            self.servers.join(","),
        ];
        if self.broken {
            v.push("--broken".into());
        }
        v
    }
}

/// Exits the process when stdin closes: the driver is gone, so are we.
fn exit_with_driver() {
    tokio::spawn(async {
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => std::process::exit(3),
                Ok(_) => {}
            }
        }
    });
}

/// Connects a manager, retrying while the cluster is unavailable (a worker may
/// be started in the middle of a fault). `None` once it is time to stop.
async fn connect(args: &ChildArgs, rec: &Recorder) -> Option<LockManager> {
    let config = EtcdConfig::new(args.endpoints.clone())
        .dial_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1));
    loop {
        match LockManager::connect(config.clone(), &args.ns).await {
            Ok(m) => return Some(m),
            Err(e) => {
                rec.record(Event::new("proc", "info").detail(format!("connect: {e}")));
                if rec.clock().now() >= args.stop_at {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn connect_store(args: &ChildArgs, rec: &Recorder) -> Option<Store> {
    loop {
        match Store::connect(&args.endpoints, &args.store_root).await {
            Ok(s) => return Some(s),
            Err(e) => {
                rec.record(Event::new("proc", "info").detail(format!("store connect: {e}")));
                if rec.clock().now() >= args.stop_at {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A lock worker: `tasks` tasks contending on the hot keys until `stop_at`.
pub async fn run_worker(args: ChildArgs) -> i32 {
    exit_with_driver();
    let clock = Clock::from_epoch(args.epoch);
    let rec = match Recorder::open(&args.out, &args.name, clock) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos worker: cannot open {}: {e}", args.out.display());
            return 2;
        }
    };
    let mut start = Event::new("proc", "start");
    start.pid = Some(std::process::id());
    rec.record(start);
    let (Some(manager), Some(store)) =
        (connect(&args, &rec).await, connect_store(&args, &rec).await)
    else {
        rec.record(Event::new("proc", "exit").detail("never connected"));
        return 0;
    };
    let ctx = Ctx::new(rec.clone(), store, args.broken, &args.name);
    let observers = Observers::start(&ctx, Elections::new(&manager, &options(&args)));
    let args = Arc::new(args);
    let mut tasks = Vec::new();
    for task in 0..args.tasks {
        let (ctx, args, manager) = (ctx.clone(), args.clone(), manager.clone());
        tasks.push(tokio::spawn(async move {
            worker_task(ctx, &args, &manager, task).await
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            rec.record(Event::new("proc", "error").detail(format!("task failed: {e}")));
        }
    }
    // Every process's observers give their last view once nobody campaigns
    // any more and every leader has resigned.
    tokio::time::sleep_until(clock.instant_at(elect::quiet_at(&args)).into()).await;
    observers.finish(&ctx);
    rec.record(Event::new("proc", "closing"));
    if tokio::time::timeout(Duration::from_secs(10), manager.close())
        .await
        .is_err()
    {
        rec.record(Event::new("proc", "info").detail("close() took over 10 s"));
    }
    rec.record(Event::new("proc", "exit"));
    0
}

/// How an acquisition was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Lock,
    LockTimeout(Duration),
    TryLock,
    Cancel(Duration),
    Reentrant,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::LockTimeout(_) => "lock_timeout",
            Kind::TryLock => "try_lock",
            Kind::Cancel(_) => "cancel",
            Kind::Reentrant => "reentrant",
        }
    }
}

/// Every primitive's options: the run's TTL, renewed three times per TTL.
fn options(args: &ChildArgs) -> LockOptions {
    LockOptions::default()
        .ttl(args.ttl)
        .renew_interval(args.ttl / 3)
}

/// A task: round after round, a lock (33 % of the rounds), a read or write
/// lock (21 %), a semaphore's permit (13 %), a transfer under a multi-lock
/// (15 %) or a campaign in an election (18 %), until the run stops.
async fn worker_task(ctx: Ctx, args: &ChildArgs, manager: &LockManager, task: usize) {
    let mut rng = Rng::new(args.seed ^ (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let options = options(args);
    let locks: Vec<Lock> = (0..args.keys)
        .map(|k| manager.new_lock(format!("k{k}"), options.clone()))
        .collect::<Result<_, _>>()
        .expect("valid lock names and options");
    let prims = prims::Handles::new(manager, args, &options);
    let elections = Elections::new(manager, &options);
    let clock = ctx.rec.clock();
    while clock.now() < args.stop_at {
        match rng.below(100) {
            0..=32 => lock_round(&ctx, args, &locks, &mut rng).await,
            33..=53 => prims::rw_round(&ctx, args, &prims, &mut rng).await,
            54..=66 => prims::semaphore_round(&ctx, args, &prims, &mut rng).await,
            67..=81 => prims::transfer_round(&ctx, args, &prims, &mut rng).await,
            _ => elect::election_round(&ctx, args, &elections, &mut rng).await,
        }
        // A little think time, so that every task does not hammer etcd back to back.
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
    }
}

/// One round of a task with a lock of a random hot key, as one of [`Kind`].
async fn lock_round(ctx: &Ctx, args: &ChildArgs, locks: &[Lock], rng: &mut Rng) {
    let clock = ctx.rec.clock();
    let stop = clock.instant_at(args.stop_at);
    let k = rng.below(args.keys as u64) as usize;
    let (key, lock) = (format!("k{k}"), &locks[k]);
    let kind = match rng.below(100) {
        0..=34 => Kind::Lock,
        35..=59 => Kind::LockTimeout(Duration::from_millis(match rng.below(4) {
            0 => 0,
            _ => rng.below(2000),
        })),
        60..=74 => Kind::TryLock,
        75..=87 => Kind::Cancel(Duration::from_millis(20 + rng.below(400))),
        _ => Kind::Reentrant,
    };
    let id = ctx.next_id();
    let limit = match kind {
        Kind::Lock => Duration::from_micros(args.stop_at.saturating_sub(clock.now())),
        Kind::LockTimeout(d) | Kind::Cancel(d) => d,
        Kind::TryLock => Duration::ZERO,
        Kind::Reentrant => Duration::from_secs(2),
    };
    let ev = |phase: &str| {
        Event::new("acquire", phase)
            .id(id)
            .key(&key)
            .kind(kind.name())
    };
    ctx.rec.record(ev("invoke").limit(limit));
    let result: Option<distlock::Result<Option<LockGuard>>> = match kind {
        Kind::Lock => tokio::select! {
            r = lock.lock() => Some(r.map(Some)),
            _ = tokio::time::sleep_until(stop.into()) => None,
        },
        Kind::LockTimeout(d) => Some(lock.lock_timeout(d).await.map(Some)),
        Kind::TryLock => Some(lock.try_lock().await),
        Kind::Cancel(d) => tokio::time::timeout(d, lock.lock())
            .await
            .ok()
            .map(|r| r.map(Some)),
        Kind::Reentrant => Some(lock.lock_timeout(Duration::from_secs(2)).await.map(Some)),
    };
    match result {
        None => {
            ctx.rec.record(ev("fail").outcome("cancelled"));
        }
        Some(Ok(None)) => {
            ctx.rec.record(ev("fail").outcome("busy"));
        }
        Some(Err(e)) => {
            let outcome = if e.code() == ErrorCode::Timeout {
                "timeout"
            } else {
                "error"
            };
            ctx.rec.record(
                ev("fail")
                    .outcome(outcome)
                    .detail(format!("{:?}: {e}", e.code())),
            );
            if outcome == "error" {
                // Don't spin on an unavailable cluster.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Some(Ok(Some(guard))) => {
            let sec = ctx.next_id();
            ctx.rec
                .record(ev("ok").outcome("ok").token(guard.fencing_token()).sec(sec));
            section(
                ctx,
                args,
                lock,
                guard,
                &key,
                sec,
                kind == Kind::Reentrant,
                rng,
            )
            .await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn section(
    ctx: &Ctx,
    args: &ChildArgs,
    lock: &Lock,
    guard: LockGuard,
    key: &str,
    sec: u64,
    reentrant: bool,
    rng: &mut Rng,
) {
    let token = guard.fencing_token();
    // A broken worker's sections are all long, so one cut off mid-section
    // still has accesses to make after the next holder's first one.
    let length = match rng.below(100) {
        _ if ctx.broken => Duration::from_millis(300 + rng.below(1200)),
        0..=2 => Duration::from_millis(args.ttl.as_millis() as u64 + 1000), // outlives the TTL: renewal
        3..=22 => Duration::from_millis(300 + rng.below(1200)),
        _ => Duration::from_millis(5 + rng.below(45)),
    };
    let long = length >= Duration::from_millis(300);
    let body = async {
        tokio::time::sleep(length / 2).await;
        let inner = if reentrant {
            let id = ctx.next_id();
            let ev = |phase: &str| {
                Event::new("acquire", phase)
                    .id(id)
                    .key(key)
                    .kind("reentrant")
            };
            ctx.rec.record(ev("invoke").limit(Duration::from_secs(2)));
            match lock.lock_timeout(Duration::from_secs(2)).await {
                Ok(g) => {
                    let t = g.fencing_token();
                    ctx.rec.record(ev("ok").outcome("nested").token(t).sec(sec));
                    Some((id, g))
                }
                Err(e) => {
                    ctx.rec
                        .record(ev("fail").outcome("error").detail(e.to_string()));
                    None
                }
            }
        } else {
            None
        };
        if !ctx.broken && !guard.is_held() {
            return End::Lost;
        }
        let first = ctx.increment(sec, key, token).await;
        if first == Err(Stopped::Fenced) && !ctx.broken {
            return End::Lost;
        }
        tokio::time::sleep(length / 2).await;
        if let Some((_, g)) = inner {
            let id = ctx.next_id();
            let ev = |phase: &str| {
                Event::new("release", phase)
                    .id(id)
                    .key(key)
                    .kind("reentrant")
            };
            ctx.rec.record(ev("invoke").limit(args.ttl));
            match g.unlock().await {
                Ok(()) => ctx.rec.record(ev("ok").outcome("ok")),
                Err(e) => ctx
                    .rec
                    .record(ev("fail").outcome(&format!("{:?}", e.code()))),
            };
        }
        // A write whose outcome is unknown may still be in flight, and the
        // fence cannot order two writes with one token: a second increment
        // built on a read taken before it lands would be overwritten by it
        // (a lost update the first chaos runs found). So a section whose
        // write went unanswered touches the store no more.
        if long && first != Err(Stopped::Unknown) {
            if !ctx.broken && !guard.is_held() {
                return End::Lost;
            }
            let _ = ctx.increment(sec, key, token).await;
        }
        End::Done
    };
    let end = if ctx.broken {
        body.await
    } else {
        let lost = guard.lost();
        tokio::select! {
            end = body => end,
            _ = lost => End::Lost,
        }
    };
    record_end(ctx, key, token, sec, &end);
    let id = ctx.next_id();
    let ev = |phase: &str| Event::new("release", phase).id(id).key(key).sec(sec);
    ctx.rec.record(ev("invoke").limit(args.ttl));
    match guard.unlock().await {
        Ok(()) => ctx.rec.record(ev("ok").outcome("ok")),
        Err(e) => ctx.rec.record(
            ev("fail")
                .outcome(&format!("{:?}", e.code()))
                .detail(e.to_string()),
        ),
    };
}

/// State of a Tower server process.
struct Server {
    ctx: Ctx,
    rng: Mutex<Rng>,
}

/// Records the end of a handler's section, also when the layer drops the handler
/// because the lock was lost.
struct EndOnDrop<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    token: u64,
    sec: u64,
    done: bool,
}

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        let outcome = if self.done { "release" } else { "dropped" };
        self.ctx.rec.record(
            Event::new("end", "info")
                .key(self.key)
                .token(self.token)
                .sec(self.sec)
                .outcome(outcome),
        );
    }
}

async fn incr(
    State(server): State<Arc<Server>>,
    Path(key): Path<String>,
    Extension(held): Extension<HeldLock>,
) -> (StatusCode, &'static str) {
    let ctx = &server.ctx;
    let token = held.fencing_token();
    let sec = ctx.next_id();
    ctx.rec.record(
        Event::new("acquire", "ok")
            .kind("tower")
            .key(&key)
            .token(token)
            .sec(sec)
            .outcome("ok"),
    );
    let mut end = EndOnDrop {
        ctx,
        key: &key,
        token,
        sec,
        done: false,
    };
    let length = {
        let mut rng = server.rng.lock().unwrap_or_else(|e| e.into_inner());
        match rng.below(100) {
            0..=14 => Duration::from_millis(300 + rng.below(700)),
            _ => Duration::from_millis(5 + rng.below(45)),
        }
    };
    tokio::time::sleep(length).await;
    let result = ctx.increment(sec, &key, token).await;
    end.done = true;
    drop(end);
    match result {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(_) => (StatusCode::CONFLICT, "store refused"),
    }
}

/// A Tower server: axum behind `LockLayer` on `/keys/{key}/incr`. Prints
/// `listening ADDR` on stdout once it serves.
pub async fn run_server(args: ChildArgs) -> i32 {
    exit_with_driver();
    let clock = Clock::from_epoch(args.epoch);
    let Ok(rec) = Recorder::open(&args.out, &args.name, clock) else {
        return 2;
    };
    let mut start = Event::new("proc", "start");
    start.pid = Some(std::process::id());
    rec.record(start);
    let (Some(manager), Some(store)) =
        (connect(&args, &rec).await, connect_store(&args, &rec).await)
    else {
        return 2;
    };
    let server = Arc::new(Server {
        ctx: Ctx::new(rec.clone(), store, args.broken, &args.name),
        rng: Mutex::new(Rng::new(args.seed)),
    });
    let layer = LockLayer::new(manager.clone(), PathSegment::new(1))
        .ttl(args.ttl)
        .expect("a valid TTL")
        .wait(TOWER_WAIT);
    let app = Router::new()
        .route("/keys/{key}/incr", post(incr))
        .layer(layer)
        .with_state(server);
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chaos server: bind: {e}");
            return 2;
        }
    };
    let addr = listener.local_addr().expect("bound");
    println!("listening {addr}");
    // Serve until the load loop has stopped and its last requests are answered.
    let until = clock.instant_at(args.stop_at + 8_000_000);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(tokio::time::sleep_until(until.into()))
        .await;
    rec.record(Event::new("proc", "closing"));
    let _ = tokio::time::timeout(Duration::from_secs(10), manager.close()).await;
    rec.record(Event::new("proc", "exit"));
    0
}

/// The HTTP load loop: `tasks` clients POSTing to random servers and keys.
pub async fn run_load(args: ChildArgs) -> i32 {
    exit_with_driver();
    let clock = Clock::from_epoch(args.epoch);
    let Ok(rec) = Recorder::open(&args.out, &args.name, clock) else {
        return 2;
    };
    let mut start = Event::new("proc", "start");
    start.pid = Some(std::process::id());
    rec.record(start);
    // `name@addr`: the history names the server, so the checker can tell
    // when it was paused.
    let servers: Vec<(String, SocketAddr)> = args
        .servers
        .iter()
        .filter_map(|s| {
            let (name, addr) = s.split_once('@')?;
            Some((name.to_owned(), addr.parse().ok()?))
        })
        .collect();
    let ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut tasks = Vec::new();
    for task in 0..args.tasks {
        let (rec, servers, ids) = (rec.clone(), servers.clone(), ids.clone());
        let (keys, stop_at) = (args.keys as u64, args.stop_at);
        let mut rng = Rng::new(args.seed ^ (task as u64 + 7).wrapping_mul(0x2545_F491_4F6C_DD1D));
        tasks.push(tokio::spawn(async move {
            while rec.clock().now() < stop_at {
                let (name, server) = &servers[rng.below(servers.len() as u64) as usize];
                let server = *server;
                let key = format!("k{}", rng.below(keys));
                let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ev = |phase: &str| Event::new("http", phase).id(id).key(&key).target(name);
                rec.record(ev("invoke").limit(TOWER_WAIT + Duration::from_secs(2)));
                let sent =
                    tokio::time::timeout(Duration::from_secs(30), post_incr(server, &key)).await;
                match sent {
                    Ok(Ok(200)) => rec.record(ev("ok").outcome("ok")),
                    Ok(Ok(429)) => rec.record(ev("ok").outcome("busy")),
                    Ok(Ok(503)) => rec.record(ev("ok").outcome("unavailable")),
                    Ok(Ok(code)) => rec.record(ev("ok").outcome(&format!("http {code}"))),
                    Ok(Err(e)) => rec.record(ev("fail").outcome("error").detail(e)),
                    Err(_) => rec.record(ev("fail").outcome("timeout")),
                };
                tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    rec.record(Event::new("proc", "exit"));
    0
}

async fn post_incr(addr: SocketAddr, key: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("/keys/{key}/incr"))
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}
