#!/usr/bin/env bash
# The demo: workers contending for named locks on a throwaway local etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
exec cargo run --quiet -p distlock-examples --example demo
