#!/usr/bin/env bash
# The benchmark, in one run and one table: ctgate (routing only, conntrack,
# conntrack + SNAT) beside dpdk-testpmd macswap (the ceiling), the Linux
# kernel (forwarding + nftables ct + SNAT in network namespaces, one core)
# and OVS-DPDK (userspace datapath, ct(commit) / ct(commit,nat)), 64-byte
# frames, one worker core, 1k / 100k / 1M / 4M flows; then (at sizes up to
# 1M, --side-max) one and two workers, new connections per second, memory
# per connection, the table full under a flood of new flows, and GC at
# scale. Results: bench/results/<UTC date>/ (results.md, .csv, machine.md,
# SVG plots, raw logs). See README, "Benchmarks".
#
# usage: sudo scripts/bench.sh [--secs S] [--sizes 1000,100000,1000000,4000000] [--side-max 1000000]
#                              [--skip main,kernel,ovs,workers,newconn,memory,attack,gc] [--out DIR]
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

# --- hugepages: the pcap source keeps one 2.5 KiB mbuf per frame ---------------
# The main table runs one contender at a time, each giving its hugepages back:
# the largest size's source (4M flows: 10.3 GB). The flood test wants twice
# its size plus the steady flows, at the sizes up to --side-max (1M: 5.2 GB).
# Plus 600 pages for the EALs and PMDs. Never more than leaves 4 GiB of
# ordinary memory available (ctgate's table, the kernel's conntrack table and
# its sender live there): a size whose source does not fit says so in the table.
SIZES=1000,100000,1000000,4000000
SIDE_MAX=1000000
SKIP=
for ((i = 1; i <= $#; i++)); do
    j=$((i + 1))
    [ "${!i}" = --sizes ] && SIZES="${!j}"
    [ "${!i}" = --side-max ] && SIDE_MAX="${!j}"
    [ "${!i}" = --skip ] && SKIP="${!j}"
done
MAX=$(echo "$SIZES" | tr , '\n' | grep . | sort -n | tail -1)
SIDE=$(( MAX < SIDE_MAX ? MAX : SIDE_MAX ))
STEADY=$(( SIDE / 10 < 100 ? 100 : (SIDE / 10 > 10000 ? 10000 : SIDE / 10) ))
FLOOD=$(( 2 * SIDE + 2 * STEADY ))
case ",$SKIP," in *,attack,*) FLOOD=0 ;; esac
MBUFS=$(( (MAX > FLOOD ? MAX : FLOOD) + 24575 ))
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
# The mempool, 1.2 GiB for the EAL and the other contenders, and ctgate's
# largest table (its large regions go on hugepages: a table of 2N
# connections, about 184 B each, so 368 B a flow).
WANT=$(( MBUFS * 2560 / 2097152 + 600 + MAX * 368 / 2097152 ))
ORIG=$(cat "$HP/nr_hugepages")
FREE=$(cat "$HP/free_hugepages")
restore() { [ "$(cat "$HP/nr_hugepages")" = "$ORIG" ] || echo "$ORIG" >"$HP/nr_hugepages" || true; }
trap restore EXIT
if [ "$FREE" -lt "$WANT" ]; then
    AVAIL_KB=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    ROOM=$(( (AVAIL_KB - 4 * 1024 * 1024) / 2048 ))  # pages that leave 4 GiB available
    [ "$ROOM" -gt 0 ] || ROOM=0
    ADD=$(( WANT - FREE ))
    if [ "$ADD" -gt "$ROOM" ]; then
        ADD=$ROOM
        export BENCH_HUGEPAGES_NOTE="bench.sh reserved no more than leaves 4 GiB of $(( AVAIL_KB / 1048576 )) GiB available"
    fi
    echo $((ORIG + ADD)) >"$HP/nr_hugepages" || true
    GOT=$(cat "$HP/free_hugepages")
    if [ "$GOT" -lt "$WANT" ] && [ -z "${BENCH_HUGEPAGES_NOTE:-}" ]; then
        export BENCH_HUGEPAGES_NOTE="the kernel gave bench.sh $GOT of the $WANT pages it asked for"
    fi
    echo "bench: hugepages: $GOT x 2 MiB free (wanted $WANT; given back at the end)${BENCH_HUGEPAGES_NOTE:+: $BENCH_HUGEPAGES_NOTE}"
fi
MEM_FREE_GIB=$(awk '/^MemAvailable:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
echo "bench: memory available beside the hugepages: $MEM_FREE_GIB GiB"

python3 scripts/bench.py "$@"
