#!/usr/bin/env bash
# Every test: unit tests, doc tests, the behaviour suite on etcd and in memory,
# etcd fault tests, the macro's UI tests and the Tower layer's server tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
exec cargo test --workspace --locked "$@"
