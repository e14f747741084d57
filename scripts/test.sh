#!/usr/bin/env bash
# Every test: unit tests, doc tests, the behaviour suite on etcd and in memory,
# etcd fault tests, the macro's UI tests and the Tower layer's server tests;
# then a 60-second chaos run (randomized faults on a 3-member etcd cluster,
# history checked; see README "Chaos run"). DISTLOCK_CHAOS_SECONDS=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --workspace --locked "$@"

seconds="${DISTLOCK_CHAOS_SECONDS:-60}"
if [ "$seconds" != 0 ]; then
    # The debug build that `cargo test` just made: no release build to wait for.
    cargo run --locked -q -p distlock-tests --bin chaos -- --seconds "$seconds" --seed 1
fi
