#!/usr/bin/env bash
# Soak: ctgate at table capacity with churn, for MINUTES (default 60), and
# proof that nothing leaks. Between two network namespaces of its own
# (scripts/testbed.sh with prefix ctsk: 192.0.2.2 -> ctgate -> 198.51.100.2,
# SNAT to 203.0.113.1; no route out), with a small table (2048 connections),
# short timeouts, masquerade of TCP to a 512-port range, endpoint-independent
# SNAT of UDP to port 7000, it runs (scripts/soak_traffic.py):
#   - long-lived flows for the whole run: 4 TCP streams, 2 UDP flows through
#     each UDP rule, a request every 0.25 s, every answer checked;
#   - short-lived TCP connect/echo/close and UDP request/answer, 20/s each;
#   - a spray of one-datagram UDP flows to closed ports (250/s) that keeps
#     the table full (early drop);
#   - every 30 s a burst of 800 TCP connections (more than the 512 ports):
#     NAT exhaustion;
#   - REST clients: `ctgate ct list`, GET list / count, DELETE, event streams
#     opened and closed.
# Every 10 s it samples (scripts/soak_report.py) ctgate's RSS, mbufs in use,
# table fill, NAT ports, EIM mappings, neighbour entries, REST connections and
# the packet counters into a CSV. It passes when forwarding never stops (the
# forwarded counter and every long-lived flow's answers rise in every
# sample), the accounting balances at the end (rx + generated = tx +
# dropped), and once the traffic stopped and the timeouts passed every figure
# is back at its start (RSS within a margin of its value after the warm-up).
# It prints start / peak / end per figure and exits 1 with the reasons on
# failure.
#
# usage: sudo scripts/soak.sh [--plot DIR] [MINUTES]
#   --plot DIR   write soak.csv and soak.png (matplotlib; python3-matplotlib
#                is installed if missing) to DIR
# Needs the release build (scripts/setup.sh). SOAK_API (127.0.0.1:18290)
# is the REST address; SOAK_KEEP=1 keeps the work files (config, logs,
# counters) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MINUTES=60
PLOT=
usage() { echo "usage: $0 [--plot DIR] [MINUTES]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    --plot) [ $# -ge 2 ] || usage; PLOT=$2; shift ;;
    [0-9]*) MINUTES=$1 ;;
    *) usage ;;
    esac
    shift
done
[[ "$MINUTES" =~ ^[1-9][0-9]*$ ]] || { echo "soak: MINUTES must be a whole number of minutes, got $MINUTES" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "soak: needs root (DPDK, network namespaces): sudo $0" >&2; exit 1; }
CTGATE=$ROOT/target/release/ctgate
[ -x "$CTGATE" ] || { echo "soak: $CTGATE missing: run scripts/setup.sh" >&2; exit 1; }
# The system Python (the test hosts' servers and clients need only its
# standard library; the plot needs matplotlib).
PY=/usr/bin/python3
if [ -n "$PLOT" ] && ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    source scripts/pkgs.sh
    need_pkgs soak python3-matplotlib || { echo "soak: cannot install python3-matplotlib for --plot" >&2; exit 1; }
fi

export CTGW_PREFIX=ctsk
CLI=(ip netns exec ctsk-cli)
SRV=(ip netns exec ctsk-srv)
API=${SOAK_API:-127.0.0.1:18290}
TRAFFIC_S=$((MINUTES * 60))
WARMUP_S=30
SETTLE_S=60
# The helpers stay off the worker's CPU (1) where there is another.
PIN=()
[ "$(nproc)" -gt 1 ] && PIN=(taskset -c 0)

WORK=$(mktemp -d /tmp/ctgate-soak.XXXXXX)
CT_PID=
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$CT_PID" ] && kill -0 "$CT_PID" 2>/dev/null; then
        kill -TERM "$CT_PID" 2>/dev/null || true
        wait "$CT_PID" 2>/dev/null || true
    fi
    scripts/testbed.sh down >/dev/null 2>&1 || true
    if [ "$rc" != 0 ] && [ -s "$WORK/ctgate.log" ]; then
        echo "soak: ctgate's log (last lines):" >&2
        tail -n 20 "$WORK/ctgate.log" >&2
    fi
    if [ -n "${SOAK_KEEP:-}" ]; then echo "soak: work files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/testbed.sh up >/dev/null
# The SNAT address's prefix is reached through ctgate, like the client's.
ip -n ctsk-srv route add 203.0.113.0/24 via 198.51.100.1 dev eth0
# The exhaustion bursts hold hundreds of sockets on each side.
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] || [ "$HARD" -ge 4096 ] || { echo "soak: the open-files limit ($HARD) is below 4096" >&2; exit 1; }
ulimit -n 4096

EAL='"--in-memory"'
if [ "$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)" -lt 64 ]; then
    echo "soak: fewer than 64 hugepages free: running ctgate with --no-huge"
    EAL='"--in-memory", "--no-huge", "-m", "256"'
fi
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && echo "$TOKEN" >"$WORK/token")
cat >"$WORK/ctgate.toml" <<EOF
workers = [1]
main_lcore = 0
mempool_mbufs = 8191
eal_args = [$EAL]

[[port]]
name = "cli"
devargs = "net_af_packet0,iface=ctsk-cli-gw"
ipv4 = "192.0.2.1/24"

[[port]]
name = "srv"
devargs = "net_af_packet1,iface=ctsk-srv-gw"
ipv4 = "198.51.100.1/24"

# A small table that the traffic fills, and short timeouts, so that
# everything is gone within a minute of the traffic's end.
[conntrack]
max_connections = 2048
policy_default = "drop"

[conntrack.timeouts]
tcp_timeout_syn_sent = 5
tcp_timeout_syn_recv = 5
tcp_timeout_established = 20
tcp_timeout_fin_wait = 5
tcp_timeout_close_wait = 5
tcp_timeout_last_ack = 5
tcp_timeout_time_wait = 5
tcp_timeout_close = 5
tcp_timeout_max_retrans = 5
tcp_timeout_unacknowledged = 5
udp_timeout = 10
udp_timeout_stream = 15
icmp_timeout = 5
generic_timeout = 10
nat_eim_timeout = 10

[[policy]]
name = "established"
states = "established,related"
action = "accept"

[[policy]]
name = "new-from-inside"
in_port = "cli"
states = "new"
action = "accept"

# Endpoint-independent filtering: outside hosts may reach a mapping.
[[policy]]
name = "eim-inbound"
in_port = "srv"
states = "new"
status = "dnat"
action = "accept"

[[nat]]
name = "eim-udp"
out_port = "srv"
src = "192.0.2.0/24"
proto = "udp"
dport = "7000"
action = "snat to 203.0.113.1"
endpoint_independent = true

# 512 ports: the bursts of 800 connections exhaust them.
[[nat]]
name = "masq-tcp"
out_port = "srv"
src = "192.0.2.0/24"
proto = "tcp"
action = "masquerade to :20000-20511"

[[nat]]
name = "masq"
out_port = "srv"
src = "192.0.2.0/24"
action = "masquerade"

[rest]
bind = "$API"
token_file = "$WORK/token"
EOF
"$CTGATE" check-config "$WORK/ctgate.toml" >/dev/null

"$CTGATE" run --config "$WORK/ctgate.toml" --stats-json "$WORK/stats.json" --stats-interval 10 \
    >"$WORK/ctgate.out" 2>"$WORK/ctgate.log" &
CT_PID=$!
for _ in $(seq 1 100); do
    grep -q "forwarding;" "$WORK/ctgate.log" 2>/dev/null && break
    kill -0 "$CT_PID" 2>/dev/null || { echo "soak: ctgate exited at start" >&2; exit 1; }
    sleep 0.1
done
grep -q "forwarding;" "$WORK/ctgate.log" || { echo "soak: ctgate did not start" >&2; exit 1; }
echo "soak: ctgate is running (pid $CT_PID, REST $API); ${MINUTES} min of traffic, work files in $WORK"

# The server (bounded: the traffic, the settle, a margin).
SERVE_S=$((TRAFFIC_S + 60))
"${SRV[@]}" "${PIN[@]}" "$PY" scripts/soak_traffic.py serve 198.51.100.2 --seconds "$SERVE_S" \
    >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
    grep -q serving "$WORK/serve.log" 2>/dev/null && break
    sleep 0.1
done
grep -q serving "$WORK/serve.log" || { echo "soak: the server did not start" >&2; cat "$WORK/serve.log" >&2; exit 1; }

REPORT=("${PIN[@]}" "$PY" scripts/soak_report.py)
"${REPORT[@]}" sample --metrics "http://$API/metrics" --pid "$CT_PID" >"$WORK/start.json"

"${CLI[@]}" "${PIN[@]}" "$PY" scripts/soak_traffic.py clients 198.51.100.2 --seconds "$TRAFFIC_S" \
    --status "$WORK/clients.json" >"$WORK/clients.log" 2>&1 &
PIDS+=($!)
"${PIN[@]}" "$PY" scripts/soak_traffic.py rest "$API" --token "$TOKEN" --ctgate "$CTGATE" \
    --seconds "$TRAFFIC_S" --status "$WORK/rest.json" >"$WORK/rest.log" 2>&1 &
PIDS+=($!)

"${REPORT[@]}" watch --metrics "http://$API/metrics" --pid "$CT_PID" --start "$WORK/start.json" \
    --seconds "$TRAFFIC_S" --warmup "$WARMUP_S" --settle "$SETTLE_S" \
    --clients-status "$WORK/clients.json" --rest-status "$WORK/rest.json" \
    --csv "$WORK/soak.csv" --result "$WORK/result.json"

for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
PIDS=()
kill -TERM "$CT_PID" 2>/dev/null || true
wait "$CT_PID" || echo "soak: ctgate exited with status $?"
CT_PID=

if [ -n "$PLOT" ]; then
    mkdir -p "$PLOT"
    cp "$WORK/soak.csv" "$PLOT/soak.csv"
    "$PY" scripts/soak_report.py plot "$PLOT/soak.csv" "$PLOT/soak.png"
    echo "soak: $PLOT/soak.csv, $PLOT/soak.png"
fi
RC=0
"$PY" scripts/soak_report.py final --result "$WORK/result.json" --stats-json "$WORK/stats.json" || RC=$?
if [ "$RC" != 0 ]; then
    for f in clients.log rest.log serve.log; do
        [ -s "$WORK/$f" ] && { echo "soak: $f:"; tail -n 5 "$WORK/$f"; }
    done
fi
exit "$RC"
