#!/usr/bin/env bash
# The data-path benchmark (not a test; never run by CI). See bench/README.md.
# Usage (as root, from anywhere): bench/run.sh [--duration S] [--reps N] [--profile DIR]
# Builds the release binaries, runs mc-bench in a fresh lab, prints the tables
# and appends them to bench/README.md. The lab is always removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "bench/run.sh: needs root (network namespaces, nftables)" >&2
    exit 1
fi

# Tools, installed only when missing. nginx must never run as a system
# service here: a temporary policy-rc.d stops the package from starting it.
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
if [[ " $* " == *" --profile "* ]]; then
    command -v perf >/dev/null || need+=(linux-perf)
    command -v strace >/dev/null || need+=(strace)
fi
if ((${#need[@]})); then
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
    [[ -n $made_policy ]] && rm -f "$policy"
fi

cargo build --release --workspace --bins
(cd bench && cargo build --release)

bench_pid=
finish() {
    if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
        kill -TERM "$bench_pid" 2>/dev/null || true
        wait "$bench_pid" 2>/dev/null || true
    fi
    # A bench killed hard leaves its lab (named by the test fixture) behind.
    if [[ -n $bench_pid && -d /run/mc-lab/t${bench_pid}x0 ]]; then
        target/release/mc-lab --lab "t${bench_pid}x0" down || true
    fi
}
trap finish EXIT
trap 'exit 130' INT TERM

target/release/mc-bench --record bench/README.md --command "bench/run.sh $*" "$@" &
bench_pid=$!
wait "$bench_pid"
