//! The driver: starts the cluster, the proxies and the worker processes, runs
//! the nemesis, stops everything, and hands the history to the checker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use distlock::{EtcdConfig, LockManager};
use distlock_tests::{ProxyMode, TcpProxy};
use etcd_client::{Client, CompactionOptions, GetOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::checker::{self, Limits};
use crate::cluster::{signal, Cluster};
use crate::elect;
use crate::history::{self, Clock, Event, Recorder};
use crate::report;
use crate::store::Store;
use crate::worker::ChildArgs;
use crate::{prims, Rng};

/// The nemesis' rolls of the faults that take a lock from a live holder
/// (`proc_pause`, `lease_revoke`, `force_unlock`, an election's candidate
/// key deleted): the only faults of a
/// `--broken` run. Those are the faults the fence is for, so a client that
/// ignores `lost()` and its token is caught by every one that lands in a
/// critical section, not by the few a 20-second mixed schedule happens to
/// roll (`chaos_smoke` missed it about one run in two).
/// Each is the first roll of that fault's arm in [`Driver::inject`]: keep
/// them in step.
const CUTTING_ROLLS: [u64; 4] = [52, 72, 82, 88];

/// Command-line options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds of faults (the run lasts longer: start, a quiet tail, checks).
    pub seconds: u64,
    /// Seed of the nemesis and the workers.
    pub seed: u64,
    /// Workers that ignore `lost()` and fencing.
    pub broken: bool,
    /// Where the history, table and timeline go.
    pub out: PathBuf,
    /// Lock worker processes.
    pub workers: usize,
    /// Tasks per worker.
    pub tasks: usize,
    /// Hot keys.
    pub keys: usize,
    /// Accounts (multi-lock transfers).
    pub accounts: usize,
    /// The semaphore's permits.
    pub permits: u32,
    /// Lock TTL.
    pub ttl: Duration,
}

impl Options {
    /// Every lock name: the hot keys, then the accounts.
    pub fn lock_names(&self) -> Vec<String> {
        (0..self.keys)
            .map(|k| format!("k{k}"))
            .chain(prims::accounts(self.accounts))
            .collect()
    }
}

const NS: &str = "/chaos";
const STORE_ROOT: &str = "/chaos-store";

/// What a child process is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Worker,
    Server,
    Load,
}

impl Role {
    fn subcommand(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Server => "server",
            Role::Load => "load",
        }
    }
}

/// One child process slot: a role, its proxies (one per member), the
/// current incarnation.
struct Slot {
    base: String,
    role: Role,
    incarnation: u32,
    name: String,
    proxies: Vec<TcpProxy>,
    child: Option<Child>,
    /// The child's stdin: it exits when this closes (`Child::wait` would close it).
    stdin: Option<tokio::process::ChildStdin>,
    pid: u32,
    /// Output for `listening ADDR` (servers).
    addr: Option<String>,
}

/// A fault to heal later.
#[derive(Debug, Clone)]
enum Heal {
    MemberRestart(usize),
    MemberCont(usize),
    MemberProxies(usize),
    ProcProxies(usize),
    ProcCont(usize),
}

struct Driver {
    opts: Options,
    rec: Recorder,
    clock: Clock,
    epoch: u64,
    cluster: Cluster,
    client: Client,
    manager: LockManager,
    slots: Vec<Slot>,
    stop_at: u64,
    /// Proxy faults in force, per member and per slot.
    member_mode: Vec<ProxyMode>,
    slot_mode: Vec<ProxyMode>,
    /// Members down (killed or paused).
    member_down: Vec<bool>,
    /// Slots whose process is SIGSTOPped.
    slot_paused: Vec<bool>,
    next_fault_id: u64,
    last_kill: u64,
    active: BTreeMap<u64, String>,
}

/// A key held now (see [`Driver::holders`]).
struct Holder {
    /// `locks/{name}`, `semaphores/{name}` or `elections/{name}`.
    queue: String,
    key: String,
    rev: i64,
    pid: u32,
    lease: i64,
}

fn worse(a: ProxyMode, b: ProxyMode) -> ProxyMode {
    use ProxyMode::*;
    match (a, b) {
        (Drop, _) | (_, Drop) => Drop,
        (Stall, _) | (_, Stall) => Stall,
        _ => Open,
    }
}

/// Runs the whole thing; returns the process exit code.
pub async fn run(opts: Options) -> i32 {
    tokio::select! {
        code = run_inner(opts) => code,
        _ = tokio::signal::ctrl_c() => {
            // Returning drops the cluster and every child (kill_on_drop).
            eprintln!("\nchaos: interrupted; stopping everything");
            130
        }
    }
}

async fn run_inner(opts: Options) -> i32 {
    let _ = std::fs::remove_dir_all(&opts.out);
    if let Err(e) = std::fs::create_dir_all(&opts.out) {
        eprintln!("chaos: cannot create {}: {e}", opts.out.display());
        return 2;
    }
    let (clock, epoch) = Clock::new_epoch();
    let rec =
        Recorder::open(&opts.out.join("driver.jsonl"), "driver", clock).expect("history file");
    eprintln!("chaos: starting a 3-member etcd cluster");
    let cluster = match Cluster::start(3).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chaos: {e}");
            return 2;
        }
    };
    let eps = cluster.endpoints();
    let client = Client::connect(&eps, None)
        .await
        .expect("connect to the cluster");
    let store = Store::connect(&eps, STORE_ROOT).await.expect("store");
    for name in opts.lock_names() {
        store.init(&name).await.expect("init the store");
    }
    store
        .init_permits(prims::SEMAPHORE)
        .await
        .expect("init the store");
    for name in elect::ELECTIONS {
        store.init(name).await.expect("init the store");
    }
    let manager = LockManager::connect(
        EtcdConfig::new(eps.clone()).request_timeout(Duration::from_secs(2)),
        NS,
    )
    .await
    .expect("driver's manager");
    let quiet = quiet_tail(opts.ttl);
    // Workers start a little after us; give them 2 s to connect before faults.
    let warmup = Duration::from_secs(2);
    let stop_at =
        clock.now() + (warmup + Duration::from_secs(opts.seconds) + quiet).as_micros() as u64;
    let mut d = Driver {
        member_mode: vec![ProxyMode::Open; cluster.len()],
        member_down: vec![false; cluster.len()],
        slot_mode: Vec::new(),
        slot_paused: Vec::new(),
        opts: opts.clone(),
        rec,
        clock,
        epoch,
        cluster,
        client,
        manager,
        slots: Vec::new(),
        stop_at,
        next_fault_id: 1,
        last_kill: 0,
        active: BTreeMap::new(),
    };
    let mut roles = Vec::new();
    for w in 0..opts.workers {
        roles.push((format!("w{w}"), Role::Worker));
    }
    roles.push(("s0".to_owned(), Role::Server));
    roles.push(("s1".to_owned(), Role::Server));
    roles.push(("http".to_owned(), Role::Load));
    for (base, role) in roles {
        let mut proxies = Vec::new();
        if role != Role::Load {
            for ep in &eps {
                proxies.push(TcpProxy::start_for(ep).await);
            }
        }
        d.slots.push(Slot {
            base: base.clone(),
            role,
            incarnation: 0,
            name: base,
            proxies,
            child: None,
            stdin: None,
            pid: 0,
            addr: None,
        });
        d.slot_mode.push(ProxyMode::Open);
        d.slot_paused.push(false);
    }
    for i in 0..d.slots.len() {
        if let Err(e) = d.spawn(i).await {
            eprintln!("chaos: {e}");
            return 2;
        }
    }
    eprintln!(
        "chaos: {} workers x {} tasks, 2 Tower servers + load loop, {} keys, {} accounts, a semaphore of {}, TTL {:?}, seed {}{}",
        opts.workers,
        opts.tasks,
        opts.keys,
        opts.accounts,
        opts.permits,
        opts.ttl,
        opts.seed,
        if opts.broken { ", BROKEN workers" } else { "" }
    );
    tokio::time::sleep(warmup).await;
    d.nemesis().await;
    d.finish().await;
    drop(d);

    let events = match history::load_dir(&opts.out) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("chaos: cannot read the history: {e}");
            return 2;
        }
    };
    let limits = Limits {
        ttl_ms: opts.ttl.as_millis() as u64,
        ..Limits::default()
    };
    let analysis = checker::check(&events, limits);
    let table = report::table(&analysis);
    let svg = report::svg(&analysis, None);
    let _ = std::fs::write(opts.out.join("table.txt"), &table);
    let _ = std::fs::write(opts.out.join("timeline.svg"), &svg);
    println!("{table}");
    println!(
        "history: {} (timeline: {})",
        opts.out.display(),
        opts.out.join("timeline.svg").display()
    );
    let v = analysis.violations.len();
    println!(
        "chaos: {} operations, {} faults, {v} violations",
        analysis.total_ops(),
        analysis.total_faults()
    );
    i32::from(v != 0)
}

impl Driver {
    fn slot_endpoints(&self, i: usize) -> Vec<String> {
        self.slots[i]
            .proxies
            .iter()
            .map(TcpProxy::endpoint)
            .collect()
    }

    async fn spawn(&mut self, i: usize) -> Result<(), String> {
        let servers: Vec<String> = self
            .slots
            .iter()
            .filter_map(|s| Some(format!("{}@{}", s.name, s.addr.as_ref()?)))
            .collect();
        let slot = &self.slots[i];
        let name = if slot.incarnation == 0 {
            slot.base.clone()
        } else {
            format!("{}#{}", slot.base, slot.incarnation)
        };
        let seed = self.opts.seed
            ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
        let args = ChildArgs {
            name: name.clone(),
            endpoints: self.slot_endpoints(i),
            ns: NS.to_owned(),
            store_root: STORE_ROOT.to_owned(),
            keys: self.opts.keys,
            accounts: self.opts.accounts,
            permits: self.opts.permits,
            tasks: if slot.role == Role::Load {
                6
            } else {
                self.opts.tasks
            },
            seed,
            stop_at: self.stop_at,
            epoch: self.epoch,
            out: self.opts.out.join(format!("{name}.jsonl")),
            ttl: self.opts.ttl,
            broken: self.opts.broken,
            servers,
        };
        let stderr = std::fs::File::create(self.opts.out.join(format!("{name}.stderr")))
            .map_err(|e| format!("stderr file: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg(slot.role.subcommand())
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("spawn {name}: {e}"))?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        let mut addr = None;
        if slot.role == Role::Server {
            let stdout = child.stdout.take().expect("piped");
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .map_err(|_| format!("{name} did not start serving in 30 s"))?
                .map_err(|e| format!("{name}: {e}"))?
                .ok_or_else(|| format!("{name} exited before serving"))?;
            addr = line.strip_prefix("listening ").map(str::to_owned);
        }
        let mut e = Event::new("proc", "spawn").target(&name);
        e.pid = Some(pid);
        if let Some(addr) = &addr {
            e.detail = Some(format!("listening {addr}"));
        }
        self.rec.record(e);
        let slot = &mut self.slots[i];
        slot.name = name;
        slot.child = Some(child);
        slot.stdin = stdin;
        slot.pid = pid;
        if addr.is_some() {
            slot.addr = addr;
        }
        Ok(())
    }

    fn apply_modes(&self) {
        for (s, slot) in self.slots.iter().enumerate() {
            for (m, proxy) in slot.proxies.iter().enumerate() {
                let mode = worse(self.slot_mode[s], self.member_mode[m]);
                if proxy.mode() != mode {
                    proxy.set_mode(mode);
                }
            }
        }
    }

    fn fault_start(&mut self, kind: &str, target: &str, detail: String) -> u64 {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.rec.record(
            Event::new("fault", "start")
                .id(id)
                .kind(kind)
                .target(target)
                .detail(detail),
        );
        self.active.insert(id, format!("{kind} {target}"));
        id
    }

    fn fault_end(&mut self, id: u64, kind: &str, target: &str) {
        self.rec
            .record(Event::new("fault", "end").id(id).kind(kind).target(target));
        self.active.remove(&id);
    }

    /// Holders now, one entry per held key: (queue, key, create revision,
    /// pid, lease). A lock's holder is the oldest key of its queue (exclusive
    /// entries at `{NS}/locks/{name}/{lease}`, readers at
    /// `{NS}/locks/{name}/r/...`), so is an election's (its leader, at
    /// `{NS}/elections/{name}/{lease}`); a semaphore's are its `permits`
    /// oldest (`{NS}/semaphores/{name}/...`).
    async fn holders(&mut self) -> Vec<Holder> {
        let mut out = Vec::new();
        for (queue, keys) in self.queues().await {
            let n = if queue.starts_with("semaphores/") {
                self.opts.permits as usize
            } else {
                1
            };
            out.extend(keys.into_iter().take(n));
        }
        out
    }

    /// Every key under the namespace by queue (`locks/k0`, `semaphores/sem0`,
    /// `elections/e0`), oldest first. The owner's pid is read from a key's
    /// metadata, or from a candidate's value (`{process}/{pid}/...`, see
    /// `elect.rs`).
    async fn queues(&mut self) -> BTreeMap<String, Vec<Holder>> {
        let prefix = format!("{NS}/");
        let Ok(Ok(resp)) = tokio::time::timeout(
            Duration::from_secs(2),
            self.client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await
        else {
            return BTreeMap::new();
        };
        let mut queues: BTreeMap<String, Vec<Holder>> = BTreeMap::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let Some((space, rest)) = rest.split_once('/') else {
                continue;
            };
            let Some((name, _)) = rest.split_once('/') else {
                continue;
            };
            let value: serde_json::Value =
                serde_json::from_slice(kv.value()).unwrap_or(serde_json::Value::Null);
            let owner = match value.get("owner").and_then(|o| o.as_str()) {
                Some(owner) => owner.to_owned(),
                None => String::from_utf8_lossy(kv.value()).into_owned(),
            };
            let pid = owner
                .split('/')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            queues
                .entry(format!("{space}/{name}"))
                .or_default()
                .push(Holder {
                    queue: format!("{space}/{name}"),
                    key,
                    rev: kv.create_revision(),
                    pid,
                    lease: kv.lease(),
                });
        }
        for keys in queues.values_mut() {
            keys.sort_by_key(|h| h.rev);
        }
        queues
    }

    fn slot_of_pid(&self, pid: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.pid == pid && s.child.is_some())
    }

    /// A slot holding a lock (half the time when there is one, always with
    /// `--broken` workers), else any etcd user.
    async fn pick_slot(&mut self, rng: &mut Rng, only_workers: bool) -> usize {
        let holders = self.holders().await;
        let held: Vec<usize> = holders
            .iter()
            .filter_map(|h| self.slot_of_pid(h.pid))
            .filter(|&s| !only_workers || self.slots[s].role == Role::Worker)
            .collect();
        if !held.is_empty() && (self.opts.broken || rng.below(2) == 0) {
            return held[rng.below(held.len() as u64) as usize];
        }
        let candidates: Vec<usize> = (0..self.slots.len())
            .filter(|&s| match self.slots[s].role {
                Role::Worker => true,
                Role::Server => !only_workers,
                Role::Load => false,
            })
            .collect();
        candidates[rng.below(candidates.len() as u64) as usize]
    }

    async fn nemesis(&mut self) {
        let mut rng = Rng::new(self.opts.seed);
        let start = Instant::now();
        // The faults end a quiet tail before the workers stop, however late
        // the cluster and the workers came up: the checker wants every key
        // acquired again after the last heal.
        let quiet_from = self.clock.instant_at(self.stop_at) - quiet_tail(self.opts.ttl);
        let end = (start + Duration::from_secs(self.opts.seconds)).min(quiet_from);
        let mut heals: Vec<(Instant, u64, String, String, Heal)> = Vec::new();
        let mut next = Instant::now() + Duration::from_millis(300 + rng.below(1500));
        let mut last_progress = Instant::now();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now.duration_since(last_progress) >= Duration::from_secs(1) {
                last_progress = now;
                self.progress(start);
            }
            heals.sort_by_key(|h| h.0);
            if let Some(h) = heals.first() {
                if h.0 <= now {
                    let (_, id, kind, target, heal) = heals.remove(0);
                    self.heal(id, &kind, &target, heal).await;
                    continue;
                }
            }
            if next <= now {
                if let Some(h) = self.inject(&mut rng).await {
                    heals.push(h);
                }
                next = Instant::now() + Duration::from_millis(200 + rng.below(2300));
                continue;
            }
            let wake = heals
                .first()
                .map(|h| h.0)
                .unwrap_or(next)
                .min(next)
                .min(now + Duration::from_millis(250));
            tokio::time::sleep_until(wake.into()).await;
        }
        eprintln!();
        for (_, id, kind, target, heal) in heals {
            self.heal(id, &kind, &target, heal).await;
        }
        eprintln!("chaos: faults healed; quiet until the workers stop");
    }

    fn progress(&self, start: Instant) {
        let events: u64 = std::fs::read_dir(&self.opts.out)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        let active: Vec<&str> = self.active.values().map(String::as_str).collect();
        eprint!(
            "\rchaos: {:>4}s/{}s, {:>6} KiB of history, {} faults, active: {:<60}",
            start.elapsed().as_secs(),
            self.opts.seconds,
            events / 1024,
            self.next_fault_id - 1,
            active.join(", ")
        );
    }

    async fn inject(&mut self, rng: &mut Rng) -> Option<(Instant, u64, String, String, Heal)> {
        let member_free = !self.member_down.iter().any(|&d| d)
            && self.member_mode.iter().all(|&m| m == ProxyMode::Open);
        let roll = if self.opts.broken {
            CUTTING_ROLLS[rng.below(CUTTING_ROLLS.len() as u64) as usize]
        } else {
            rng.below(100)
        };
        let dur = |rng: &mut Rng, lo: u64, hi: u64| Duration::from_millis(lo + rng.below(hi - lo));
        let now = Instant::now();
        match roll {
            0..=29 if member_free => {
                let leader = self.cluster.leader().await;
                let m = match rng.below(2) {
                    0 => leader.unwrap_or(0),
                    _ => rng.below(self.cluster.len() as u64) as usize,
                };
                let target = format!("m{m}");
                let d = dur(rng, 1000, 4000);
                let (kind, heal) = match roll % 4 {
                    0 => {
                        self.cluster.kill(m);
                        self.member_down[m] = true;
                        ("member_kill", Heal::MemberRestart(m))
                    }
                    1 => {
                        self.cluster.pause(m, true);
                        self.member_down[m] = true;
                        // Told apart in the history: a leader that resumes
                        // from a pause can revoke live leases on etcd before
                        // 3.4.28 / 3.5.11 (see the checker's `STALE_LEADER`).
                        let kind = if leader == Some(m) {
                            "leader_pause"
                        } else {
                            "member_pause"
                        };
                        (kind, Heal::MemberCont(m))
                    }
                    2 => {
                        self.member_mode[m] = ProxyMode::Stall;
                        self.apply_modes();
                        ("member_stall", Heal::MemberProxies(m))
                    }
                    _ => {
                        self.member_mode[m] = ProxyMode::Drop;
                        self.apply_modes();
                        ("member_drop", Heal::MemberProxies(m))
                    }
                };
                let id = self.fault_start(kind, &target, format!("for {d:?}"));
                Some((now + d, id, kind.to_owned(), target, heal))
            }
            // Also the member faults' share when a member is already down.
            0..=44 => {
                let s = self.pick_slot(rng, false).await;
                if self.slot_mode[s] != ProxyMode::Open {
                    return None;
                }
                let stall = rng.below(3) != 0;
                let d = dur(rng, 500, 5000);
                self.slot_mode[s] = if stall {
                    ProxyMode::Stall
                } else {
                    ProxyMode::Drop
                };
                self.apply_modes();
                let kind = if stall { "proc_stall" } else { "proc_drop" };
                let target = self.slots[s].name.clone();
                let id = self.fault_start(kind, &target, format!("for {d:?}"));
                Some((now + d, id, kind.to_owned(), target, Heal::ProcProxies(s)))
            }
            45..=51 => {
                let s = self.pick_slot(rng, false).await;
                for p in &self.slots[s].proxies {
                    p.reset_connections();
                }
                let target = self.slots[s].name.clone();
                let id = self.fault_start("proc_reset", &target, String::new());
                self.fault_end(id, "proc_reset", &target);
                None
            }
            52..=63 => {
                // The GC pause: a holder stopped for longer than its TTL.
                let s = self.pick_slot(rng, self.opts.broken).await;
                if self.slot_paused[s] || self.slots[s].child.is_none() {
                    return None;
                }
                let d = self.opts.ttl + dur(rng, 500, 2000);
                signal(self.slots[s].pid, "STOP");
                self.slot_paused[s] = true;
                let target = self.slots[s].name.clone();
                let id = self.fault_start("proc_pause", &target, format!("for {d:?}"));
                Some((
                    now + d,
                    id,
                    "proc_pause".to_owned(),
                    target,
                    Heal::ProcCont(s),
                ))
            }
            64..=71 => {
                let s = self.pick_slot(rng, true).await;
                if self.slot_mode[s] != ProxyMode::Open {
                    return None;
                }
                let target = self.slots[s].name.clone();
                let id =
                    self.fault_start("proc_kill", &target, format!("pid {}", self.slots[s].pid));
                if let Some(mut child) = self.slots[s].child.take() {
                    let _ = child.kill().await;
                }
                self.rec
                    .record(Event::new("proc", "killed").target(&target));
                self.last_kill = self.clock.now();
                self.slots[s].incarnation += 1;
                if let Err(e) = self.spawn(s).await {
                    eprintln!("\nchaos: respawn failed: {e}");
                }
                self.fault_end(id, "proc_kill", &target);
                None
            }
            72..=81 => {
                // Any holder's lease; one time in three an election
                // leader's, if there is one.
                let mut list = self.holders().await;
                if rng.below(3) == 0 && list.iter().any(|h| h.queue.starts_with("elections/")) {
                    list.retain(|h| h.queue.starts_with("elections/"));
                }
                if list.is_empty() {
                    return None;
                }
                let h = &list[rng.below(list.len() as u64) as usize];
                let target = self
                    .slot_of_pid(h.pid)
                    .map(|s| self.slots[s].name.clone())
                    .unwrap_or_else(|| format!("pid {}", h.pid));
                let (name, lease) = (h.queue.clone(), h.lease);
                let id = self.fault_start(
                    "lease_revoke",
                    &target,
                    format!("lease {lease:x} holding {name}"),
                );
                let r =
                    tokio::time::timeout(Duration::from_secs(3), self.client.lease_revoke(lease))
                        .await;
                self.fault_end(id, "lease_revoke", &target);
                if !matches!(r, Ok(Ok(_))) {
                    self.rec.record(
                        Event::new("fault", "info")
                            .id(id)
                            .detail(format!("revoke failed: {r:?}")),
                    );
                }
                None
            }
            82..=87 => {
                // A lock name, or now and then the semaphore: there, an
                // operator deletes one holder's key (fenced by its create
                // revision), and the fault names the holder's process.
                let names = self.opts.lock_names();
                let pick = rng.below(names.len() as u64 + 1) as usize;
                let Some(key) = names.get(pick).cloned() else {
                    return self.force_unlock_permit(rng).await;
                };
                let id = self.fault_start("force_unlock", &key, String::new());
                let r =
                    tokio::time::timeout(Duration::from_secs(3), self.manager.force_unlock(&key))
                        .await;
                self.fault_end(id, "force_unlock", &key);
                self.rec.record(
                    Event::new("fault", "info")
                        .id(id)
                        .detail(format!("force_unlock: {r:?}")),
                );
                None
            }
            88..=94 => self.delete_candidate(rng).await,
            _ => {
                let id = self.fault_start("compact", "", String::new());
                let r = async {
                    let rev = self
                        .client
                        .get("/", None)
                        .await?
                        .header()
                        .map(|h| h.revision())
                        .unwrap_or(0);
                    self.client
                        .compact(rev, Some(CompactionOptions::new().with_physical()))
                        .await
                        .map(|_| rev)
                };
                let r = tokio::time::timeout(Duration::from_secs(3), r).await;
                self.fault_end(id, "compact", "");
                self.rec.record(
                    Event::new("fault", "info")
                        .id(id)
                        .detail(format!("compact: {r:?}")),
                );
                None
            }
        }
    }

    /// Deletes one holder's permit of the semaphore, as an operator would
    /// with etcdctl (there is no `force_unlock` for a semaphore's permit).
    async fn force_unlock_permit(
        &mut self,
        rng: &mut Rng,
    ) -> Option<(Instant, u64, String, String, Heal)> {
        let queue = format!("semaphores/{}", prims::SEMAPHORE);
        let list: Vec<Holder> = self
            .holders()
            .await
            .into_iter()
            .filter(|h| h.queue == queue)
            .collect();
        if list.is_empty() {
            return None;
        }
        let h = &list[rng.below(list.len() as u64) as usize];
        let target = self
            .slot_of_pid(h.pid)
            .map(|s| self.slots[s].name.clone())
            .unwrap_or_else(|| format!("pid {}", h.pid));
        let id = self.fault_start(
            "force_unlock",
            &target,
            format!("permit {} (token {})", h.key, h.rev),
        );
        let txn = etcd_client::Txn::new()
            .when([etcd_client::Compare::create_revision(
                h.key.clone(),
                etcd_client::CompareOp::Equal,
                h.rev,
            )])
            .and_then([etcd_client::TxnOp::delete(h.key.clone(), None)]);
        let r = tokio::time::timeout(Duration::from_secs(3), self.client.txn(txn)).await;
        self.fault_end(id, "force_unlock", &target);
        self.rec
            .record(Event::new("fault", "info").id(id).detail(format!(
                "delete permit: {:?}",
                r.map(|r| r.map(|t| t.succeeded()))
            )));
        None
    }

    /// Deletes one candidate's key of an election, as an operator would
    /// with etcdctl: the leader's (two times in three; recorded as a
    /// `force_unlock` of its process, and of the election as `key`) or a
    /// waiting candidate's (`candidate_delete`: it must never lead with
    /// that key). Each delete is fenced by the key's create revision, a
    /// waiter's also by the leader's: so a deleted waiter was not leading.
    async fn delete_candidate(
        &mut self,
        rng: &mut Rng,
    ) -> Option<(Instant, u64, String, String, Heal)> {
        let leader_wanted = rng.below(3) != 0;
        let pick = rng.next_u64();
        // An election with candidates: waiting up to a second for one (an
        // election is often between leaders).
        let mut tries = 0;
        let (mut queues, contested) = loop {
            let queues = self.queues().await;
            let contested: Vec<&str> = elect::ELECTIONS
                .into_iter()
                .filter(|name| queues.contains_key(&format!("elections/{name}")))
                .collect();
            tries += 1;
            if !contested.is_empty() || tries == 20 {
                break (queues, contested);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let &name = contested.get((pick % contested.len().max(1) as u64) as usize)?;
        let list = queues
            .remove(&format!("elections/{name}"))
            .unwrap_or_default();
        let (i, kind) = match list.len() {
            0 => return None,
            1 => (0, "force_unlock"),
            _ if leader_wanted => (0, "force_unlock"),
            n => (1 + rng.below(n as u64 - 1) as usize, "candidate_delete"),
        };
        let h = &list[i];
        let target = self
            .slot_of_pid(h.pid)
            .map(|s| self.slots[s].name.clone())
            .unwrap_or_else(|| format!("pid {}", h.pid));
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.rec.record(
            Event::new("fault", "start")
                .id(id)
                .kind(kind)
                .target(&target)
                .key(name)
                .detail(format!("candidate {} (token {})", h.key, h.rev)),
        );
        self.active.insert(id, format!("{kind} {target} {name}"));
        let mut when = vec![etcd_client::Compare::create_revision(
            h.key.clone(),
            etcd_client::CompareOp::Equal,
            h.rev,
        )];
        if i > 0 {
            when.push(etcd_client::Compare::create_revision(
                list[0].key.clone(),
                etcd_client::CompareOp::Equal,
                list[0].rev,
            ));
        }
        let txn = etcd_client::Txn::new()
            .when(when)
            .and_then([etcd_client::TxnOp::delete(h.key.clone(), None)]);
        let r = tokio::time::timeout(Duration::from_secs(3), self.client.txn(txn)).await;
        self.rec.record(
            Event::new("fault", "end")
                .id(id)
                .kind(kind)
                .target(&target)
                .key(name),
        );
        self.active.remove(&id);
        self.rec
            .record(Event::new("fault", "info").id(id).detail(format!(
                "delete candidate: {:?}",
                r.map(|r| r.map(|t| t.succeeded()))
            )));
        None
    }

    async fn heal(&mut self, id: u64, kind: &str, target: &str, heal: Heal) {
        match heal {
            Heal::MemberRestart(m) => {
                if let Err(e) = self.cluster.restart(m) {
                    eprintln!("\nchaos: cannot restart m{m}: {e}");
                }
                self.member_down[m] = false;
            }
            Heal::MemberCont(m) => {
                self.cluster.pause(m, false);
                self.member_down[m] = false;
            }
            Heal::MemberProxies(m) => {
                self.member_mode[m] = ProxyMode::Open;
                self.apply_modes();
            }
            Heal::ProcProxies(s) => {
                self.slot_mode[s] = ProxyMode::Open;
                self.apply_modes();
            }
            Heal::ProcCont(s) => {
                signal(self.slots[s].pid, "CONT");
                self.slot_paused[s] = false;
            }
        }
        self.fault_end(id, kind, target);
    }

    /// Every key under the namespace. A few tries: the client's balanced
    /// channel may still pick a member that a late fault restarted (its
    /// connection refused), which says nothing about what is left.
    async fn list_namespace(&mut self) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        let prefix = format!("{NS}/");
        let mut tries = 0;
        loop {
            let listed = self
                .client
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await;
            tries += 1;
            match listed {
                Err(e) if tries < 20 => {
                    eprintln!("chaos: listing what is left failed ({e}); trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                listed => return listed,
            }
        }
    }

    /// Waits for the workers to stop, records the store's final state and what
    /// is left under the namespace.
    async fn finish(&mut self) {
        let stop = self.clock.instant_at(self.stop_at);
        tokio::time::sleep_until(stop.into()).await;
        eprintln!("chaos: stopping workers");
        // Servers stop 8 s after the load loop; close() may take a while.
        let deadline = Instant::now() + Duration::from_secs(25);
        for s in 0..self.slots.len() {
            let name = self.slots[s].name.clone();
            if let Some(mut child) = self.slots[s].child.take() {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, child.wait()).await {
                    Ok(Ok(status)) => {
                        let mut e = Event::new("proc", "exited").target(&name);
                        e.detail = Some(status.to_string());
                        self.rec.record(e);
                    }
                    _ => {
                        self.rec.record(Event::new("proc", "hung").target(&name));
                        let _ = child.kill().await;
                    }
                }
            }
        }
        // Keys of killed workers live until their lease runs out.
        let settle = self.last_kill + (self.opts.ttl + Duration::from_secs(1)).as_micros() as u64;
        tokio::time::sleep_until(self.clock.instant_at(settle).into()).await;
        match self.list_namespace().await {
            Ok(resp) => {
                for kv in resp.kvs() {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let mut e = Event::new("leftover", "info").key(&key);
                    e.value = Some(String::from_utf8_lossy(kv.value()).into_owned());
                    self.rec.record(e);
                }
                // Each election's final state, which every observer's last
                // view must equal: its oldest candidate now, if any (nobody
                // campaigns any more).
                for name in elect::ELECTIONS {
                    let queue = format!("{NS}/elections/{name}/");
                    let leader = resp
                        .kvs()
                        .iter()
                        .filter(|kv| kv.key().starts_with(queue.as_bytes()))
                        .min_by_key(|kv| kv.create_revision());
                    let mut e = Event::new("final", "info").key(name).kind("election");
                    match leader {
                        Some(kv) => {
                            e.token = Some(kv.create_revision() as u64);
                            e.value = Some(String::from_utf8_lossy(kv.value()).into_owned());
                            e.outcome = Some("leader".into());
                        }
                        None => e.outcome = Some("none".into()),
                    }
                    self.rec.record(e);
                }
            }
            Err(e) => {
                self.rec
                    .record(Event::new("leftover", "info").detail(format!("cannot list: {e}")));
            }
        }
        if let Ok(store) = Store::connect(&self.cluster.endpoints(), STORE_ROOT).await {
            let mut names = self.opts.lock_names();
            names.push(prims::SEMAPHORE.to_owned());
            names.extend(elect::ELECTIONS.map(str::to_owned));
            for key in names {
                if let Ok(value) = store.peek(&key).await {
                    let mut e = Event::new("final", "info").key(&key);
                    e.value = Some(value);
                    self.rec.record(e);
                }
            }
        }
        self.manager.close().await;
    }
}

/// The default output directory for a run.
pub fn default_out(seed: u64, broken: bool) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // The binary lives in target/<profile>/: use target/chaos next to it.
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("target"))
        });
    target.join("chaos").join(format!(
        "seed-{seed}{}",
        if broken { "-broken" } else { "" }
    ))
}

/// How long the workers go on after the last fault healed: a lease's TTL
/// (a lost holder's key lives that long) and 4 s to take every key again.
fn quiet_tail(ttl: Duration) -> Duration {
    ttl + Duration::from_secs(4)
}
