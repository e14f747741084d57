//! `chaos`: a Jepsen-style check of distlock on a real 3-member etcd cluster.
//!
//! ```text
//! cargo run --release -p distlock-tests --bin chaos -- --seconds 60 --seed 1 [--broken]
//! ```
//!
//! The driver starts the cluster (each member reached through a fault proxy
//! per worker), lock-worker processes (locks, read-write locks, a semaphore,
//! multi-locks and elections), two axum servers behind `LockLayer` and
//! an HTTP load loop (all this same binary, re-executed with a hidden
//! subcommand), and a seeded nemesis. Every process records its history as
//! JSONL; the checker merges them and decides whether the history is legal.
//! See docs/chaos.md.

mod checker;
mod cluster;
mod driver;
mod elect;
mod history;
mod observers;
mod prims;
mod report;
mod store;
mod work;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

/// A small seeded PRNG (SplitMix64): the same seed gives the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

const USAGE: &str = "usage: chaos [--seconds S] [--seed N] [--broken] [--out DIR] \
[--workers W] [--tasks T] [--keys K] [--accounts A] [--permits N] [--ttl-ms MS]\n       chaos check DIR [--ttl-ms MS] [--svg FILE] [--window FROM-TO (seconds)]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match args.first().map(String::as_str) {
        Some(sub @ ("worker" | "server" | "load")) => match worker::ChildArgs::parse(&args[1..]) {
            Ok(a) => runtime.block_on(async move {
                // distlock's warnings go to this process's `.stderr` file.
                tracing_subscriber::fmt()
                    .with_env_filter("distlock=warn")
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .init();
                match sub {
                    "worker" => worker::run_worker(a).await,
                    "server" => worker::run_server(a).await,
                    _ => worker::run_load(a).await,
                }
            }),
            Err(e) => {
                eprintln!("chaos {sub}: {e}");
                2
            }
        },
        Some("check") => check_dir(&args[1..]),
        _ => match parse(&args) {
            Ok(opts) => runtime.block_on(driver::run(opts)),
            Err(e) => {
                eprintln!("chaos: {e}\n{USAGE}");
                2
            }
        },
    };
    // Don't wait for blocking tasks (the stdin watcher) to finish.
    runtime.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}

/// `chaos check DIR`: re-checks a recorded history.
fn check_dir(args: &[String]) -> i32 {
    let Some(dir) = args.first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let ttl_ms = flag("--ttl-ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let window = flag("--window").and_then(|w| {
        let (a, b) = w.split_once('-')?;
        let secs = |s: &str| s.parse::<f64>().ok().map(|s| (s * 1e6) as u64);
        Some((secs(a)?, secs(b)?))
    });
    let events = match history::load_dir(std::path::Path::new(dir)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("chaos: {dir}: {e}");
            return 2;
        }
    };
    let a = checker::check(
        &events,
        checker::Limits {
            ttl_ms,
            ..checker::Limits::default()
        },
    );
    println!("{}", report::table(&a));
    if let Some(svg) = flag("--svg") {
        if let Err(e) = std::fs::write(svg, report::svg(&a, window)) {
            eprintln!("chaos: {svg}: {e}");
        }
    }
    println!(
        "chaos: {} operations, {} faults, {} violations",
        a.total_ops(),
        a.total_faults(),
        a.violations.len()
    );
    i32::from(!a.violations.is_empty())
}

fn parse(args: &[String]) -> Result<driver::Options, String> {
    let mut opts = driver::Options {
        seconds: 60,
        seed: 1,
        broken: false,
        out: PathBuf::new(),
        workers: 4,
        tasks: 4,
        keys: 4,
        accounts: 3,
        permits: 2,
        ttl: Duration::from_secs(3),
    };
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--broken" {
            opts.broken = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err("help".into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || -> Result<u64, String> { value.parse().map_err(|e| format!("{flag}: {e}")) };
        match flag.as_str() {
            "--seconds" => opts.seconds = num()?,
            "--seed" => opts.seed = num()?,
            "--out" => out = Some(PathBuf::from(value)),
            "--workers" => opts.workers = num()?.max(1) as usize,
            "--tasks" => opts.tasks = num()?.max(1) as usize,
            "--keys" => opts.keys = num()?.max(1) as usize,
            "--accounts" => opts.accounts = num()?.max(2) as usize,
            "--permits" => opts.permits = num()?.clamp(1, 64) as u32,
            "--ttl-ms" => opts.ttl = Duration::from_millis(num()?.max(1000)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    opts.out = out.unwrap_or_else(|| driver::default_out(opts.seed, opts.broken));
    Ok(opts)
}
