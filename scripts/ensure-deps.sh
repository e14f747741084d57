#!/usr/bin/env bash
# Installs what distlock's demo and tests need on a Debian machine, when missing:
# etcd (the real backend the tests start) and protoc (etcd-client's build needs it).
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v openssl >/dev/null 2>&1 || missing+=(openssl) # distlock-cli's TLS test makes certificates
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "distlock: installing ${missing[*]}" >&2
# A fresh machine's package lists may be empty.
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
