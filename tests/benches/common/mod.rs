//! What the benches share: statistics, the ✓/✗ marks, settings from the
//! environment, timed hand-offs ([`handoff`]) and load loops ([`load`]).
//!
//! Each bench includes this module with `mod common;` and uses part of it.
#![allow(dead_code)]

pub mod handoff;
pub mod load;

use std::time::Duration;

/// The median and 99th percentile of some samples.
pub struct Stats {
    pub median: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The statistics of `samples` (at least one).
pub fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// A duration in milliseconds, right-aligned to 8 characters.
pub fn ms(d: Duration) -> String {
    format!("{:8.3}", d.as_secs_f64() * 1000.0)
}

/// `x / y`.
pub fn ratio(x: Duration, y: Duration) -> f64 {
    x.as_secs_f64() / y.as_secs_f64()
}

/// ✓ when a target is met, ✗ when it is missed.
pub fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

/// The median of some rates (at least one).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The environment variable `name` as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The environment variable `name` as a comma-separated list of numbers, or
/// `default` when it is unset or lists none.
pub fn env_counts(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}
