#!/usr/bin/env bash
# The benchmark, in one run and one table: ctgate (routing only, conntrack,
# conntrack + SNAT) beside dpdk-testpmd macswap (the ceiling), the Linux
# kernel (forwarding + nftables ct + SNAT in network namespaces, one core)
# and OVS-DPDK (userspace datapath, ct(commit) / ct(commit,nat)), 64-byte
# frames, one worker core, 1k / 100k / 1M flows; then new connections per
# second, memory per connection, the table full under a flood of new flows,
# and GC at scale. Results: bench/results/<UTC date>/ (results.md, .csv,
# machine.md, SVG plots, raw logs). See README, "Benchmarks".
#
# usage: sudo scripts/bench.sh [--secs S] [--sizes 1000,100000,1000000] [--skip main,kernel,ovs,workers,newconn,memory,attack,gc] [--out DIR]
# env:   BENCH_NO_SETUP=1  skip scripts/setup.sh (packages, hugepages, build)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: needs root: sudo $0" >&2; exit 1; }

# --- packages and build (idempotent) -------------------------------------------
if [ "${BENCH_NO_SETUP:-0}" != 1 ]; then
    scripts/setup.sh
fi
# The peers: OVS-DPDK (Debian's DPDK build of ovs-vswitchd) and its PMDs; the
# kernel peer needs nftables (setup.sh) and a C compiler for its sender.
PEERS=(openvswitch-switch-dpdk librte-net-pcap23 librte-net-null23 build-essential)
# (Installing may try to start the system's OVS service: the benchmark runs
# its own private instance and does not need it.)
source scripts/pkgs.sh
need_pkgs bench "${PEERS[@]}" ||
    echo "bench: could not install all of ${PEERS[*]}: those peers will say why in the table"
[ -x target/release/ctgate ] || { echo "bench: target/release/ctgate missing: run scripts/setup.sh" >&2; exit 1; }

# --- hugepages: the pcap source keeps one 2 KiB mbuf per frame ------------------
# 1M flows need about 2.6 GiB for the source, the flood test twice that.
SIZES=1000,100000,1000000
for ((i = 1; i <= $#; i++)); do
    [ "${!i}" = --sizes ] && { j=$((i + 1)); SIZES="${!j}"; }
done
MAX=$(echo "$SIZES" | tr , '\n' | sort -n | tail -1)
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
WANT=$(( (MAX * 2 + 60000) * 2560 / 2097152 + 600 ))
ORIG=$(cat "$HP/nr_hugepages")
FREE=$(cat "$HP/free_hugepages")
restore() { [ "$(cat "$HP/nr_hugepages")" = "$ORIG" ] || echo "$ORIG" >"$HP/nr_hugepages" || true; }
trap restore EXIT
if [ "$FREE" -lt "$WANT" ]; then
    echo $((ORIG + WANT - FREE)) >"$HP/nr_hugepages" || true
    echo "bench: hugepages: $(cat "$HP/free_hugepages") x 2 MiB free (wanted $WANT; given back at the end)"
fi

python3 scripts/bench.py "$@"
