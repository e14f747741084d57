//! Formatting: short durations, timestamps, tables and JSON.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use distlock::{LockInfo, SemaphoreInfo};
use serde_json::{json, Value};

use crate::keys::{self, Contender};

/// Prints one line of a watch to stdout, flushed, and says whether it got
/// out: false once nobody reads the output any more (`distlock watch |
/// head`: a closed pipe), where `println!` would panic.
pub fn emit(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `2h10m`, `3d04h`.
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// How long ago `t` was (`-` when unknown; `0ms` for a time in the future,
/// which another machine's clock can produce).
pub fn since(t: Option<SystemTime>) -> String {
    t.map_or("-".into(), |t| {
        short(SystemTime::now().duration_since(t).unwrap_or_default())
    })
}

/// How long until `t` (`-` when unknown, `0ms` when past).
pub fn until(t: Option<SystemTime>) -> String {
    t.map_or("-".into(), |t| {
        short(t.duration_since(SystemTime::now()).unwrap_or_default())
    })
}

/// RFC 3339 in UTC with milliseconds, or JSON `null`.
pub fn timestamp(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_millis(t).to_string())
    })
}

/// The time of day (UTC) with milliseconds: `02:31:07.123`.
pub fn clock(t: SystemTime) -> String {
    let full = humantime::format_rfc3339_millis(t).to_string(); // 2026-11-28T02:31:07.123Z
    full.get(11..23).unwrap_or(&full).to_owned()
}

/// An owner id, or `-` for a holder that wrote no metadata (etcdctl, Go).
pub fn owner(owner: &str) -> &str {
    if owner.is_empty() {
        "-"
    } else {
        owner
    }
}

/// A proclaimed value for people: quoted, with bytes that are not UTF-8 as
/// U+FFFD and control characters escaped (`"10.0.0.7:8080"`), so that it
/// stays on its line and where it ends is plain.
pub fn value(value: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(value))
}

/// A [`LockInfo`] as a JSON object with its fields (times are RFC 3339
/// strings), and `"kind": "lock"`. A lock held by readers reports its oldest
/// reader as the holder, and how many read together in `readers`.
pub fn info_json(info: &LockInfo) -> Value {
    json!({
        "kind": "lock",
        "name": info.name,
        "owner": info.owner,
        "key": info.key,
        "create_time": timestamp(info.create_time),
        "expire_time": timestamp(info.expire_time),
        "fencing_token": info.fencing_token,
        "waiters": info.waiters,
        "readers": info.readers,
    })
}

/// A [`SemaphoreInfo`] as a JSON object: `"kind": "semaphore"`, `name`,
/// `permits`, `holders` (oldest first, as [`holder_json`]) and `waiters`.
/// `expiries` are the holders' lease expiries, by lease.
pub fn semaphore_json(info: &SemaphoreInfo, expiries: &HashMap<i64, Option<SystemTime>>) -> Value {
    let holders: Vec<Value> = info
        .holders
        .iter()
        .map(|h| {
            let expires = expiries.get(&keys::lease_of(&h.key)).copied().flatten();
            holder_json(
                &h.owner,
                &h.key,
                "permit",
                h.create_time,
                expires,
                h.fencing_token,
            )
        })
        .collect();
    json!({
        "kind": "semaphore",
        "name": info.name,
        "permits": info.permits,
        "holders": holders,
        "waiters": info.waiters,
    })
}

/// An election as a JSON object: `"kind": "election"`, `name`, `leader`
/// (`null` when nobody leads) and `candidates` (how many campaign, the
/// leader included).
pub fn election_json(name: &str, leader: Option<Value>, candidates: usize) -> Value {
    json!({
        "kind": "election",
        "name": name,
        "leader": leader.unwrap_or(Value::Null),
        "candidates": candidates,
    })
}

/// A leader: `value` (as text; bytes that are not UTF-8 as U+FFFD) and
/// `fencing_token`.
pub fn leader_json(value: &[u8], fencing_token: u64) -> Value {
    json!({
        "value": String::from_utf8_lossy(value),
        "fencing_token": fencing_token,
    })
}

/// A leader with its key and lease expiry (`null` when unknown), as `list`
/// and `leader` print it.
pub fn leader_key_json(
    value: &[u8],
    fencing_token: u64,
    key: Option<&str>,
    expire_time: Option<SystemTime>,
) -> Value {
    let mut leader = leader_json(value, fencing_token);
    leader["key"] = key.map_or(Value::Null, Value::from);
    leader["expire_time"] = timestamp(expire_time);
    leader
}

/// One holder of a lock or a semaphore: `owner`, `key`, `mode`
/// (`exclusive`, `read` or `permit`), `create_time`, `expire_time`,
/// `fencing_token`.
pub fn holder_json(
    owner: &str,
    key: &str,
    mode: &str,
    create_time: Option<SystemTime>,
    expire_time: Option<SystemTime>,
    fencing_token: u64,
) -> Value {
    json!({
        "owner": owner,
        "key": key,
        "mode": mode,
        "create_time": timestamp(create_time),
        "expire_time": timestamp(expire_time),
        "fencing_token": fencing_token,
    })
}

/// One waiter: `owner`, `key`, `mode` and `since` (when it queued, by its
/// clock).
pub fn waiter_json(waiter: &Contender) -> Value {
    json!({
        "owner": waiter.owner,
        "key": waiter.key,
        "mode": waiter.mode_name(),
        "since": timestamp(waiter.since),
    })
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(short(Duration::from_millis(850)), "850ms");
        assert_eq!(short(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(short(Duration::from_secs(245)), "4m05s");
        assert_eq!(short(Duration::from_secs(7800)), "2h10m");
        assert_eq!(short(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d04h");
        assert_eq!(since(None), "-");
        assert_eq!(until(Some(SystemTime::UNIX_EPOCH)), "0ms");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }

    #[test]
    fn clock_is_time_of_day() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(3_723_004);
        assert_eq!(clock(t), "01:02:03.004");
    }
}
