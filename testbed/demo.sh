#!/usr/bin/env bash
# `make demo`: dsrlb doing L2 direct server return in a namespace testbed,
# with real traffic (curl, wrk, UDP). The testbed itself is Go (package
# testbed/nsbed, the same the e2e tests use); this script builds the demo
# program and backendsrv next to `make build`'s binaries and runs it.
# Needs root. Exits 0 only if every check held.
#
#   BIN=bin bash testbed/demo.sh [--duration 10s] [--requests 200] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}

if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root (network namespaces, DPDK)" >&2
	exit 1
fi
for b in dsrlb dsrctl; do
	[ -x "$BIN/$b" ] || { echo "demo: $BIN/$b missing: run make build" >&2; exit 1; }
done
for t in ip ethtool curl wrk tcpdump tshark sysctl; do
	command -v "$t" >/dev/null || { echo "demo: $t not installed: run make deps" >&2; exit 1; }
done

go build -o "$BIN/backendsrv" ./testbed/backendsrv
go build -o "$BIN/dsrlb-demo" ./testbed/demo

# The demo tears its testbed down itself, also on Ctrl-C; should it be
# killed outright, this sweep removes what it left behind.
trap '"$BIN/dsrlb-demo" --sweep >/dev/null 2>&1 || true' EXIT
"$BIN/dsrlb-demo" --bin "$BIN" "$@"
