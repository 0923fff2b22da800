#!/usr/bin/env bash
# Forwarding benchmark, in one run: dpdk-testpmd (macswap) and ctgate, each
# with ONE forwarding core, on the same source: net_pcap with infinite_rx=1
# replaying 64-byte frames (60 + FCS), sent to a net_null sink. ctgate runs in
# three modes: routing only (`[conntrack] enabled = false`), conntrack
# (every packet tracked), and conntrack + SNAT (masquerade out of the sink
# port). Prints Mpps and cycles/packet for each and the ratio to testpmd.
#
# The two alternate for BENCH_ROUNDS rounds and each figure is the median
# over the rounds' per-second rates, so that load from elsewhere on the
# machine hits both alike.
#
# usage: sudo scripts/bench-forward.sh [SECONDS]   (default 6 per contender and round)
# env:   BENCH_FLOWS   distinct frames in the source capture (default 64)
#        BENCH_ROUNDS  rounds (default 3)
#        BENCH_MODES   ctgate modes to run (default "routing conntrack snat")
#        BENCH_CTGATE  the ctgate binary (default target/release/ctgate)
#        BENCH_STAGES  1: after the rounds, one more run of each mode with
#                      `ctgate run --profile-stages`, and a table of cycles
#                      per packet by stage (the rounds themselves run untimed)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-6}"
ROUNDS="${BENCH_ROUNDS:-3}"
FLOWS="${BENCH_FLOWS:-64}"
MODES="${BENCH_MODES:-routing conntrack snat}"
STAGES="${BENCH_STAGES:-0}"
[ "$(id -u)" = 0 ] || { echo "bench: needs root: sudo $0" >&2; exit 1; }
CTGATE="${BENCH_CTGATE:-target/release/ctgate}"
[ -x "$CTGATE" ] || { echo "bench: $CTGATE missing: run scripts/setup.sh" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || { echo "bench: dpdk-testpmd missing: run scripts/setup.sh" >&2; exit 1; }

EAL_MEM=(--in-memory)
if [ "$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)" -lt 256 ]; then
    echo "bench: fewer than 256 free hugepages: using --no-huge (slower; run scripts/setup.sh)"
    EAL_MEM=(--in-memory --no-huge -m 512)
fi

WORK=$(mktemp -d /tmp/ctgate-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
GW_MAC=02:00:00:00:00:01
python3 scripts/bench_frames.py "$WORK/src.pcap" "$GW_MAC" "$FLOWS"
SRC="net_pcap0,rx_pcap=$WORK/src.pcap,infinite_rx=1"
SINK="net_null0,no-rx=1"

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print a[int((NR + 1) / 2)]}'; }

run_testpmd() { # round
    timeout -s INT "$((SECS + 3))" dpdk-testpmd -l 0,1 "${EAL_MEM[@]}" --no-pci --log-level='*:error' \
        --vdev "$SRC" --vdev "$SINK" -- \
        --forward-mode=macswap --nb-cores=1 --auto-start --stats-period=1 --record-core-cycles \
        --total-num-mbufs=16384 </dev/null >"$WORK/testpmd.$1.log" 2>&1 || true
    # Tx-pps of the sink port (port 1) per second; skip the first two (warm-up).
    awk '/NIC statistics for port 1/ {p=1} p && /Tx-pps:/ {print $2; p=0}' "$WORK/testpmd.$1.log" | tail -n +3 >>"$WORK/testpmd.pps"
    grep -o 'CPU cycles/packet=[0-9.]*' "$WORK/testpmd.$1.log" | tail -1 | cut -d= -f2 >>"$WORK/testpmd.cpp"
}

EAL_TOML=$(printf '"%s", ' "${EAL_MEM[@]}")
write_config() { # mode
    local ct="" nat=""
    case "$1" in
    routing) ct=$'[conntrack]\nenabled = false' ;;
    conntrack) ct=$'[conntrack]\nmax_connections = 262144' ;;
    snat)
        ct=$'[conntrack]\nmax_connections = 262144'
        nat=$'[[nat]]\nname = "masq"\nout_port = "out"\naction = "masquerade"'
        ;;
    esac
    cat >"$WORK/ctgate.$1.toml" <<CONF
workers = [1]
mempool_mbufs = 16383
eal_args = [${EAL_TOML%, }]

$ct

[[port]]
name = "in"
devargs = "$SRC"
ipv4 = "192.0.2.1/24"
mac = "$GW_MAC"

[[port]]
name = "out"
devargs = "$SINK"
ipv4 = "198.51.100.1/24"

[[neighbour]]
ip = "198.51.100.10"
mac = "02:00:00:00:00:0b"
port = "out"

$nat
CONF
}
for m in $MODES; do write_config "$m"; done

run_ctgate() { # mode round
    local m=$1 r=$2
    "$CTGATE" run --config "$WORK/ctgate.$m.toml" --duration "$((SECS + 2))" --stats-interval 1 \
        --stats-json "$WORK/ctgate.$m.$r.json" --log error >"$WORK/ctgate.$m.$r.log" 2>&1
    grep -o 'rate [0-9]*' "$WORK/ctgate.$m.$r.log" | awk '{print $2}' | tail -n +3 >>"$WORK/ctgate.$m.pps"
    python3 -c "
import json; r = json.load(open('$WORK/ctgate.$m.$r.json')); t = r['totals']
print('%.1f' % (t['busy_cycles'] / max(t['busy_packets'], 1)))" >>"$WORK/ctgate.$m.cpp"
    # Stall-free: the busy iterations over 100 us (vCPU not running) left out.
    python3 -c "
import json; r = json.load(open('$WORK/ctgate.$m.$r.json')); t = r['totals']
p = t['busy_packets'] - t['stall_packets']
print('%.1f %d' % ((t['busy_cycles'] - t['stall_cycles']) / max(p, 1), t['stall_iterations']))" >>"$WORK/ctgate.$m.free"
    python3 -c "import json; print(json.load(open('$WORK/ctgate.$m.$r.json'))['tsc_hz'])" >"$WORK/tsc_hz"
}

for r in $(seq 1 "$ROUNDS"); do
    run_testpmd "$r"
    for m in $MODES; do run_ctgate "$m" "$r"; done
done
T_PPS=$(median <"$WORK/testpmd.pps")
T_CPP=$(median <"$WORK/testpmd.cpp")
TSC_HZ=$(cat "$WORK/tsc_hz")
[ "${T_PPS:-0}" -gt 0 ] || { echo "bench: testpmd forwarded nothing:"; tail -30 "$WORK/testpmd.1.log"; exit 1; }
ROWS=()
for m in $MODES; do
    C_PPS=$(median <"$WORK/ctgate.$m.pps")
    C_CPP=$(median <"$WORK/ctgate.$m.cpp")
    C_FREE=$(cut -d' ' -f1 "$WORK/ctgate.$m.free" | median)
    C_STALLS=$(awk '{s += $2} END {print s + 0}' "$WORK/ctgate.$m.free")
    [ "${C_PPS:-0}" -gt 0 ] || { echo "bench: ctgate ($m) forwarded nothing:"; tail -30 "$WORK/ctgate.$m.1.log"; exit 1; }
    ROWS+=("$m" "$C_PPS" "$C_CPP" "$C_FREE" "$C_STALLS")
done

python3 - "$T_PPS" "${T_CPP:-0}" "$TSC_HZ" "$FLOWS" "$ROUNDS" "${ROWS[@]}" <<'PY'
import sys
t_pps, t_cpp, hz, flows, rounds = map(float, sys.argv[1:6])
rows = sys.argv[6:]
goal = {"routing": "goal >= 0.80", "conntrack": "", "snat": "goal >= 0.40 at 1M flows"}
label = {"routing": "routing only", "conntrack": "conntrack", "snat": "conntrack + SNAT"}
print("bench-forward: one forwarding core, net_pcap infinite_rx source (%d distinct 64-byte frames) -> net_null sink;"
      " medians over %d rounds" % (flows, rounds))
print("  %-24s: %7.2f Mpps  %6.1f cycles/packet (TSC %.2f GHz / pps: %.1f)  stall-free: n/a (testpmd keeps no per-iteration figures)"
      % ("testpmd macswap", t_pps / 1e6, t_cpp, hz / 1e9, hz / t_pps))
for i in range(0, len(rows), 5):
    m, c_pps, c_cpp, c_free, stalls = rows[i], float(rows[i + 1]), float(rows[i + 2]), float(rows[i + 3]), rows[i + 4]
    print("  %-24s: %7.2f Mpps  %6.1f cycles/packet (TSC %.2f GHz / pps: %.1f)  ratio to testpmd %.2f %s"
          % ("ctgate " + label.get(m, m), c_pps / 1e6, c_cpp, hz / 1e9, hz / c_pps, c_pps / t_pps,
             ("(" + goal[m] + ")") if goal.get(m) else ""))
    print("  %-24s  stall-free %.1f cycles/packet (%s iterations over 100 us left out)" % ("", c_free, stalls))
PY

[ "$STAGES" = 1 ] || exit 0
# Cycles per packet by stage: one profiled run per mode (its TSC reads cost
# a few cycles per burst, so its total is a little above the figures above).
for m in $MODES; do
    "$CTGATE" run --config "$WORK/ctgate.$m.toml" --duration "$((SECS + 2))" --profile-stages \
        --stats-json "$WORK/ctgate.$m.stages.json" --log error >"$WORK/ctgate.$m.stages.log" 2>&1
done
python3 - "$WORK" $MODES <<'PY'
import json, sys
work, modes = sys.argv[1], sys.argv[2:]
label = {"routing": "routing only", "conntrack": "conntrack", "snat": "conntrack + SNAT"}
rows = {}
for m in modes:
    t = json.load(open("%s/ctgate.%s.stages.json" % (work, m)))["totals"]
    n = max(t["stage_packets"], 1)
    rows[m] = {k: v / n for k, v in t["stage_cycles"].items()}
stages = list(next(iter(rows.values())).keys()) if rows else []
order = ["rx", "classify", "ct_parse", "ct_prefetch", "ct_track", "ct_rewrite", "forward", "tx", "other"]
stages = [s for s in order if s in stages]
print("cycles/packet by stage (ctgate run --profile-stages; busy iterations up to 100 us):")
print("  %-12s" % "stage" + "".join("%18s" % label.get(m, m) for m in modes))
for s in stages + ["total"]:
    vals = [sum(rows[m].values()) if s == "total" else rows[m][s] for m in modes]
    print("  %-12s" % s + "".join("%18.1f" % v for v in vals))
PY
