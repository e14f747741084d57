//! The chaos checker can fail: a short run with `--broken` workers (they ignore
//! `lost()` and write without their fencing token; they also take the
//! semaphore with one permit too many, write under a read lock, lock only
//! the first account of a transfer, and act as an election's leader without
//! campaigning) must end with violations of every primitive's rules and a
//! non-zero exit status. The clean 60-second run is a
//! step of `scripts/test.sh`; this only proves the end-to-end path can say "no".

use std::process::Command;

#[test]
fn broken_workers_are_caught() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--seconds", "20", "--seed", "1", "--broken", "--out"])
        .arg(out_dir.path())
        .output()
        .expect("run the chaos binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let violations: u64 = last
        .strip_prefix("chaos: ")
        .and_then(|rest| rest.split(", ").nth(2))
        .and_then(|v| v.strip_suffix(" violations"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("last line is not the summary: {last:?}\n{stdout}"));
    assert!(violations > 0, "broken workers went unnoticed:\n{stdout}");
    // `violations by primitive: election 4, lock 3, multi-lock 5, read-write 7, semaphore 2`
    let by_primitive = stdout
        .lines()
        .find_map(|l| l.strip_prefix("violations by primitive: "))
        .unwrap_or_else(|| panic!("no violations by primitive:\n{stdout}"));
    for primitive in ["semaphore", "read-write", "multi-lock", "election"] {
        let n: u64 = by_primitive
            .split(", ")
            .find_map(|p| p.strip_prefix(primitive)?.trim().parse().ok())
            .unwrap_or(0);
        assert!(n > 0, "the broken {primitive} went unnoticed:\n{stdout}");
    }
    // The semaphore's own rule, not only the store's.
    let permits = stdout
        .lines()
        .find_map(|l| l.strip_prefix("permits "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        permits > 0,
        "more than N permit holders went unnoticed:\n{stdout}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(out_dir.path().join("timeline.svg").exists());
}
