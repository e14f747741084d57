#!/usr/bin/env bash
# Every test: unit tests, doc tests, the behaviour suite on etcd and in memory,
# etcd fault tests, the macro's UI tests and the Tower layer's server tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --workspace --locked "$@"
# distlock-cli's TLS flags against an etcd that requires client certificates (feature `tls`).
cargo test -p distlock-cli --features tls --locked --test tls
# Publishing check (issue #12): each publishable crate packages and builds from its .crate, in dependency order.
cargo package -p distlock-macros -p distlock -p distlock-tower -p distlock-cli --locked --allow-dirty
