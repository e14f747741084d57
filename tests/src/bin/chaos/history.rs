//! The recorded history: one JSON object per line, one file per process.
//!
//! # Time
//!
//! Every event carries `t`, microseconds since the driver started (its *epoch*).
//! A process reads the wall clock once at start to learn how far it is from the
//! epoch, and from then on adds its own monotonic clock ([`Instant`], which on
//! Linux is `CLOCK_MONOTONIC`). So within a process time never goes backwards,
//! and across processes on this one machine the only error is how much the wall
//! clock was slewed between the driver's start and the process's start
//! (NTP slews by at most 500 ppm: under 0.1 ms over a 2-minute-old process, far
//! below the ~1 ms an etcd hand-off takes). A stepped clock (someone setting the
//! date mid-run) would break this; the driver refuses nothing, but a run on a
//! machine whose clock is stepped is not a valid run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One history event. Which fields are set depends on `op` and `phase`:
///
/// | op | phase | meaning |
/// |---|---|---|
/// | `acquire` | `invoke` / `ok` / `fail` | a lock call (`kind`: lock, lock_timeout, try_lock, cancel, reentrant, tower; `sem.*`, `rw.read*`, `rw.write*`, `multi.*`, `elect.*` for the other primitives; a multi-lock's `ok` has `tokens`, a semaphore's `permits`, a campaign's `invoke` the candidate's `value`) |
/// | `release` | `invoke` / `ok` / `fail` | `guard.unlock()` (`kind`: the primitive, none for a lock) |
/// | `downgrade` | `invoke` / `ok` / `fail` | `WriteGuard::downgrade` of section `sec` |
/// | `proclaim` | `invoke` / `ok` / `fail` | `Leadership::proclaim` of `value` by section `sec` |
/// | `observe` | `info` / `final` | an election's observer was told of a change (`outcome`: leader, with `token` and `value`; none; error), or (`final`) its last view once the run is quiet |
/// | `lost` | `info` | `guard.lost()` resolved or `is_held()` turned false |
/// | `end` | `info` | the critical section `sec` ends on `key` (`outcome`: release, lost, fenced, dropped); a multi-lock's, once per name |
/// | `read` / `write` | `invoke` / `ok` / `fail` | a fenced store access (`outcome`: accepted, rejected, unknown; `kind`: none for a lock or Tower handler, `rw.write`, `rw.read`, `rw.downgraded`, `multi`, `permit`, `elect`) |
/// | `leave` | `invoke` / `ok` / `fail` | a semaphore holder leaves the store |
/// | `http` | `invoke` / `ok` / `fail` | a request of the Tower load loop |
/// | `fault` | `start` / `end` | a nemesis action (`kind`, `target`; `key` when it hit one name of its target process) |
/// | `proc` | `start` / `exit` / `killed` / `hung` | a worker process's life |
/// | `final` | `info` | the store's counter at the end (`key`, `value`); with `kind` election, an election's final state (`outcome` leader, `token`, `value`; or none) |
/// | `leftover` | `info` | a key under the lock namespace after every worker exited |
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Event {
    /// Microseconds since the driver's epoch.
    pub t: u64,
    /// The process that recorded it (`driver`, `w0#1`, `s0`, `http`).
    pub p: String,
    /// What happened.
    pub op: String,
    /// invoke, ok, fail, info, start, end, ...
    pub phase: String,
    /// Call id, unique within the process: links an invoke to its completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Critical-section id, unique within the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sec: Option<u64>,
    /// The lock name (= the store key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Sub-kind: the acquire method, the fault kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Result of a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// etcd revision at which a store access took effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i64>,
    /// How long the call may take by what it asked (its wait), in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_ms: Option<u64>,
    /// Store payload: `count opid` written or read; `base` opid for writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The opid a write builds on (what its read saw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Fault target: a process name, `m1`, a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Free text: an error message, a fault's details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// OS process id (on `proc` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A multi-lock's fencing token per name (on its `acquire` `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<BTreeMap<String, u64>>,
    /// A semaphore's number of permits (on its `acquire` `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
}

impl Event {
    /// An event with `op` and `phase`; the recorder fills in `t` and `p`.
    pub fn new(op: &str, phase: &str) -> Event {
        Event {
            op: op.to_owned(),
            phase: phase.to_owned(),
            ..Event::default()
        }
    }

    /// Sets `key`.
    pub fn key(mut self, key: &str) -> Event {
        self.key = Some(key.to_owned());
        self
    }

    /// Sets `kind`.
    pub fn kind(mut self, kind: &str) -> Event {
        self.kind = Some(kind.to_owned());
        self
    }

    /// Sets `outcome`.
    pub fn outcome(mut self, outcome: &str) -> Event {
        self.outcome = Some(outcome.to_owned());
        self
    }

    /// Sets `id`.
    pub fn id(mut self, id: u64) -> Event {
        self.id = Some(id);
        self
    }

    /// Sets `sec`.
    pub fn sec(mut self, sec: u64) -> Event {
        self.sec = Some(sec);
        self
    }

    /// Sets `token`.
    pub fn token(mut self, token: u64) -> Event {
        self.token = Some(token);
        self
    }

    /// Sets `target`.
    pub fn target(mut self, target: &str) -> Event {
        self.target = Some(target.to_owned());
        self
    }

    /// Sets `detail`.
    pub fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }

    /// Sets `limit_ms`.
    pub fn limit(mut self, limit: Duration) -> Event {
        self.limit_ms = Some(limit.as_millis() as u64);
        self
    }
}

/// The clock shared by all processes of a run (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Our monotonic origin.
    start: Instant,
    /// `t` at `start`.
    offset_us: u64,
}

impl Clock {
    /// The driver's clock: its epoch is now. Returns it with the epoch in Unix µs.
    pub fn new_epoch() -> (Clock, u64) {
        let epoch = unix_us();
        (
            Clock {
                start: Instant::now(),
                offset_us: 0,
            },
            epoch,
        )
    }

    /// A worker's clock for the driver's `epoch_unix_us`.
    pub fn from_epoch(epoch_unix_us: u64) -> Clock {
        let start = Instant::now();
        Clock {
            start,
            offset_us: unix_us().saturating_sub(epoch_unix_us),
        }
    }

    /// Microseconds since the epoch.
    pub fn now(&self) -> u64 {
        self.offset_us + self.start.elapsed().as_micros() as u64
    }

    /// The [`Instant`] at which `now()` reads `t` (the past gives now).
    pub fn instant_at(&self, t: u64) -> Instant {
        let ahead = t.saturating_sub(self.now());
        Instant::now() + Duration::from_micros(ahead)
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Appends events to a process's JSONL file, one `write` per line, so that a
/// SIGKILLed process loses nothing it recorded.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<File>>,
    clock: Clock,
    process: Arc<str>,
}

impl Recorder {
    /// Records into `path` (created or appended) as `process`.
    pub fn open(path: &Path, process: &str, clock: Clock) -> std::io::Result<Recorder> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Recorder {
            inner: Arc::new(Mutex::new(file)),
            clock,
            process: process.into(),
        })
    }

    /// The clock events are stamped with.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Stamps `event` with the time and process and appends it. Returns the time.
    pub fn record(&self, mut event: Event) -> u64 {
        let mut file = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Stamped under the lock, so a file's lines are in time order.
        event.t = self.clock.now();
        event.p = self.process.to_string();
        let mut line = serde_json::to_string(&event).expect("events serialize");
        line.push('\n');
        if let Err(e) = file.write_all(line.as_bytes()) {
            eprintln!("chaos: cannot record to history: {e}");
        }
        event.t
    }
}

/// Reads every `*.jsonl` file in `dir` and merges the events by time.
pub fn load_dir(dir: &Path) -> std::io::Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Event>(line) {
                Ok(e) => events.push(e),
                // A process killed mid-write leaves a torn last line: skip it, say so.
                Err(e) => eprintln!("chaos: {}:{}: skipped: {e}", path.display(), n + 1),
            }
        }
    }
    events.sort_by(|a, b| a.t.cmp(&b.t).then_with(|| a.p.cmp(&b.p)));
    Ok(events)
}
