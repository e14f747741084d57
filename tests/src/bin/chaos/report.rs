//! The run's table and its SVG timeline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::checker::{Analysis, Prim, Violation, RULES};
use crate::history::Event;

/// p-th percentile (0..=100) of sorted `v`.
fn percentile(v: &[u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) * p).div_ceil(100);
    v[i.min(v.len() - 1)]
}

/// The table: operations by kind and outcome, faults by kind, recovery times,
/// violations by rule with their first offending events.
pub fn table(a: &Analysis) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<32} {:<16} {:>8}", "operation", "outcome", "count");
    for ((op, outcome), n) in &a.ops {
        let _ = writeln!(out, "{op:<32} {outcome:<16} {n:>8}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<26} {:>8}", "fault", "count");
    for (kind, n) in &a.faults {
        let _ = writeln!(out, "{kind:<26} {n:>8}");
    }
    let mut rec = a.recovery_ms.clone();
    rec.sort_unstable();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "recovery (fault healed -> every key acquired again), ms: p50 {} p99 {} max {} (n = {})",
        percentile(&rec, 50),
        percentile(&rec, 99),
        rec.last().copied().unwrap_or(0),
        rec.len()
    );
    let by: Vec<String> = a
        .excused_by
        .iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "critical sections: {}; overlaps excused (holder cut off, fence held): {}{}, of which a resumed etcd leader revoked a live lease (etcd-io/etcd#15247): {}",
        a.sections.len(),
        a.excused_overlaps,
        if by.is_empty() {
            String::new()
        } else {
            format!(" ({})", by.join(", "))
        },
        a.stale_leader_overlaps.len()
    );
    for what in &a.stale_leader_overlaps {
        let _ = writeln!(out, "    {what}");
    }
    let count =
        |f: &dyn Fn(&crate::checker::Section) -> bool| a.sections.iter().filter(|s| f(s)).count();
    let multi_sections: std::collections::BTreeSet<(&str, u64)> = a
        .sections
        .iter()
        .filter(|s| s.prim == Prim::Multi)
        .map(|s| (s.p.as_str(), s.sec))
        .collect();
    let _ = writeln!(
        out,
        "sections by primitive: lock {} (Tower {}), read lock {}, write lock {} (downgraded {}), semaphore {}, multi-lock {} (on {} names)",
        count(&|s| s.prim == Prim::Lock),
        count(&|s| s.prim == Prim::Lock && s.p.starts_with('s')),
        count(&|s| s.prim == Prim::Read),
        count(&|s| s.prim == Prim::Write),
        count(&|s| s.prim == Prim::Write && s.shared_from.is_some()),
        count(&|s| s.prim == Prim::Permit),
        multi_sections.len(),
        count(&|s| s.prim == Prim::Multi),
    );
    let o = &a.observed;
    let _ = writeln!(
        out,
        "elections: {} leaders ({} through run_while_leader), {} proclaimed; {} observers saw {} changes ({} error items); leaders some observer saw: {} of {}",
        count(&|s| s.prim == Prim::Leader && s.kind != crate::elect::USURP),
        count(&|s| s.kind == "elect.run_while_leader"),
        a.ops
            .get(&("proclaim".to_owned(), "ok".to_owned()))
            .copied()
            .unwrap_or(0),
        o.observers,
        o.changes,
        o.errors,
        o.leaders_seen,
        o.leaders
    );
    let full: Vec<String> = a
        .permits_full
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "readers sharing a name at once: {} pairs; semaphore sections that started with every permit then held: {}",
        a.shared_overlaps,
        if full.is_empty() { "0".to_owned() } else { full.join(", ") }
    );
    let mut by_prim: BTreeMap<&str, usize> =
        ["lock", "read-write", "semaphore", "multi-lock", "election"]
            .into_iter()
            .map(|p| (p, 0))
            .collect();
    for v in &a.violations {
        for p in primitives(v) {
            *by_prim.entry(p).or_default() += 1;
        }
    }
    let _ = writeln!(
        out,
        "violations by primitive: {}",
        by_prim
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out);
    let mut by_rule: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, v) in a.violations.iter().enumerate() {
        let r = RULES.iter().position(|r| *r == v.rule).unwrap_or(0);
        by_rule.entry(r).or_default().push(i);
    }
    let _ = writeln!(out, "{:<14} {:>10}", "rule", "violations");
    for (r, rule) in RULES.iter().enumerate() {
        let list = by_rule.get(&r).map(Vec::as_slice).unwrap_or(&[]);
        let _ = writeln!(out, "{rule:<14} {:>10}", list.len());
        for &i in list.iter().take(3) {
            let v = &a.violations[i];
            let _ = writeln!(out, "    {}", v.what);
            for e in v.events.iter().take(3) {
                let _ = writeln!(
                    out,
                    "        {}",
                    serde_json::to_string(e).unwrap_or_default()
                );
            }
        }
        if list.len() > 3 {
            let _ = writeln!(out, "    ... and {} more", list.len() - 3);
        }
    }
    out
}

/// The primitive an event belongs to, if it says.
fn primitive(e: &Event) -> Option<&'static str> {
    let kind = e.kind.as_deref();
    match e.op.as_str() {
        "acquire" => Some(Prim::of_kind(kind.unwrap_or("")).name()),
        "read" | "write" | "leave" => Some(match kind {
            None => "lock",
            Some("permit") => "semaphore",
            Some("multi") => "multi-lock",
            Some("elect") => "election",
            Some(_) => "read-write",
        }),
        "release" => Some(match kind {
            Some("sem") => "semaphore",
            Some("rw") => "read-write",
            Some("multi") => "multi-lock",
            Some("elect") => "election",
            _ => "lock",
        }),
        "downgrade" => Some("read-write"),
        "proclaim" | "observe" => Some("election"),
        _ => None,
    }
}

/// The primitives a violation's events involve.
pub fn primitives(v: &Violation) -> std::collections::BTreeSet<&'static str> {
    v.events.iter().filter_map(primitive).collect()
}

/// A colour per process name.
fn colour(p: &str) -> String {
    let h = p
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    format!("hsl({},65%,50%)", h % 360)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The timeline: one row per key with each holder's sections coloured by
/// process, faults shaded behind (member faults grey, process faults orange)
/// and ticked in a row of their own, violations' first events as red lines.
///
/// `window` (µs from, µs to) zooms in on part of the run.
pub fn svg(a: &Analysis, window: Option<(u64, u64)>) -> String {
    let (from, to) = window.unwrap_or((0, a.t_end.max(1)));
    let to = to.max(from + 1);
    let visible = |start: u64, end: u64| end >= from && start <= to;
    let mut keys: Vec<&str> = a.sections.iter().map(|s| s.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let (left, top, row, width) = (60.0, 30.0, 62.0, 1400.0);
    let fault_rows = 1.0;
    let height = top + row * (keys.len() as f64 + fault_rows) + 40.0;
    let span = (to - from) as f64;
    let x = |t: u64| left + (t.clamp(from, to) - from) as f64 / span * width;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="monospace" font-size="11">"#,
        left + width + 20.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="16">who held each key (colour = process; pale = shared: readers, downgraded writers); grey = member fault, orange = process fault, red = violation</text>"#
    );
    let bottom = top + row * keys.len() as f64;
    for f in a.fault_spans.iter().filter(|f| visible(f.start, f.end)) {
        let (x0, x1) = (x(f.start), x(f.end).max(x(f.start) + 1.0));
        let fill = if f.kind.starts_with("member")
            || f.kind.starts_with("leader")
            || f.kind == "compact"
        {
            "gray"
        } else {
            "orange"
        };
        let _ = writeln!(
            out,
            r#"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{fill}" fill-opacity="0.15"><title>{} {} {:.2}s-{:.2}s</title></rect>"#,
            x1 - x0,
            bottom - top,
            esc(&f.kind),
            esc(&f.target),
            f.start as f64 / 1e6,
            f.end as f64 / 1e6
        );
        // And a tick in the fault row, labelled.
        let _ = writeln!(
            out,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="8" fill="{fill}"><title>{} {}</title></rect>"#,
            bottom + 6.0,
            x1 - x0,
            esc(&f.kind),
            esc(&f.target)
        );
    }
    let _ = writeln!(out, r#"<text x="4" y="{:.1}">faults</text>"#, bottom + 14.0);
    for (i, key) in keys.iter().enumerate() {
        let y = top + row * i as f64;
        let _ = writeln!(
            out,
            r#"<text x="4" y="{:.1}">{}</text>"#,
            y + row / 2.0,
            esc(key)
        );
        let _ = writeln!(
            out,
            r#"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="silver"/>"#,
            left + width
        );
        // Greedy lanes: a section goes to the first lane free at its start, so
        // overlapping holders are drawn one above the other.
        let mut lane_end = [0u64; 4];
        for s in a
            .sections
            .iter()
            .filter(|s| s.key == *key && visible(s.start, s.end))
        {
            let lane = lane_end.iter().position(|&e| e <= s.start).unwrap_or(3);
            lane_end[lane] = s.end;
            let (x0, x1) = (x(s.start), x(s.end).max(x(s.start) + 0.5));
            let y0 = y + 6.0 + lane as f64 * 13.0;
            // Held shared (a reader, a downgraded writer): paler.
            let shared = s.shared_from.unwrap_or(s.end).clamp(s.start, s.end);
            let xs = x(shared).clamp(x0, x1);
            let what = match s.prim {
                Prim::Lock => String::new(),
                Prim::Read => " read".to_owned(),
                Prim::Write if s.shared_from.is_some() => " write, downgraded".to_owned(),
                Prim::Write => " write".to_owned(),
                Prim::Multi => " multi-lock".to_owned(),
                Prim::Permit => " permit".to_owned(),
                Prim::Leader => " leader".to_owned(),
            };
            let title = format!(
                "{} sec {}{} token {} {:.3}s-{:.3}s ({})",
                esc(&s.p),
                s.sec,
                what,
                s.token,
                s.start as f64 / 1e6,
                s.end as f64 / 1e6,
                esc(&s.how)
            );
            if xs > x0 {
                let _ = writeln!(
                    out,
                    r#"<rect x="{x0:.2}" y="{y0:.1}" width="{:.2}" height="12" fill="{}"><title>{title}</title></rect>"#,
                    xs - x0,
                    colour(&s.p),
                );
            }
            if x1 > xs {
                let _ = writeln!(
                    out,
                    r#"<rect x="{xs:.2}" y="{y0:.1}" width="{:.2}" height="12" fill="{}" fill-opacity="0.45"><title>{title}</title></rect>"#,
                    x1 - xs,
                    colour(&s.p),
                );
            }
            if x1 - x0 > 90.0 {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" fill="white">{} {}{}</text>"#,
                    x0 + 2.0,
                    y0 + 10.0,
                    esc(&s.p),
                    s.token,
                    if s.how == "release" {
                        String::new()
                    } else {
                        format!(" ({})", esc(&s.how))
                    }
                );
            }
        }
    }
    for v in &a.violations {
        if let Some(e) = v.events.first().filter(|e| visible(e.t, e.t)) {
            let _ = writeln!(
                out,
                r#"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{bottom:.1}" stroke="red" stroke-width="1.5"><title>{1}: {2}</title></line>"#,
                x(e.t),
                v.rule,
                esc(&v.what)
            );
        }
    }
    // Time axis, in seconds of the run.
    let span_ms = ((to - from) / 1000).max(1);
    let step_ms = [100, 500, 1000, 5000, 10_000, 30_000, 60_000]
        .into_iter()
        .find(|s| span_ms / s <= 20)
        .unwrap_or(120_000);
    let mut tick = from / 1000 / step_ms * step_ms;
    while tick * 1000 <= to {
        if tick * 1000 >= from {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{}s</text>"#,
                x(tick * 1000),
                height - 10.0,
                tick as f64 / 1000.0
            );
        }
        tick += step_ms;
    }
    let _ = writeln!(out, "</svg>");
    out
}
