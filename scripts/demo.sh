#!/usr/bin/env bash
# The demo: set up the machine, bring up the netns test bed, run ctgate
# between the two test hosts and send real traffic through it:
#   ping (IPv4, IPv6, to the far host and to ctgate itself), a TCP transfer
#   (Python http.server -> curl, content checked by SHA-256), UDP (echo, checked),
# then print what went through and ctgate's counters, and clean up.
#
# usage: sudo scripts/demo.sh [--keep] [--no-setup] [--workers N] [--docker IMAGE]
#   --keep       leave ctgate and the test bed running until Ctrl-C
#   --no-setup   skip scripts/setup.sh (packages, hugepages, build)
#   --docker IMAGE  run ctgate in a container of IMAGE instead of the host's
#                build (scripts/docker.sh demo does: the same traffic, the
#                same checks); the container gets the host network (the test
#                bed's veth ports), /dev/hugepages, and only the capabilities
#                in DOCKER_CAPS below
#   --workers N  N workers (lcores 1..N; on a machine with fewer CPUs they
#                share them, see worker_cpus); net_af_packet gets N queue
#                pairs, and the workers hand packets to each connection's
#                owner (software dispatch): the final counters show each worker
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

KEEP=0
SETUP=1
WORKERS=1
IMAGE=
usage() { echo "usage: $0 [--keep] [--no-setup] [--workers N] [--docker IMAGE]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    --keep) KEEP=1 ;;
    --no-setup) SETUP=0 ;;
    --workers)
        [ $# -ge 2 ] || usage
        WORKERS=$2; shift
        [[ "$WORKERS" =~ ^[1-9][0-9]?$ ]] || { echo "demo: --workers wants a number of workers (1-99), got $WORKERS" >&2; exit 2; } ;;
    --docker)
        [ $# -ge 2 ] || usage
        IMAGE=$2; shift ;;
    *) usage ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "demo: needs root: sudo $0 $*" >&2; exit 1; }

[ "$SETUP" = 1 ] && scripts/setup.sh
CTGATE=$ROOT/target/release/ctgate
# In a container: AF_PACKET sockets (NET_RAW), promiscuous mode and the
# ports' settings (NET_ADMIN), NUMA memory policy for DPDK's hugepages
# (SYS_NICE: Docker's seccomp profile allows mbind/set_mempolicy only with
# it); everything else dropped. DOCKER=docker client to use.
DOCKER=${DOCKER:-docker}
DOCKER_CAPS=(--cap-drop ALL --cap-add NET_RAW --cap-add NET_ADMIN --cap-add SYS_NICE)
CONTAINER=ctgate-demo-$$
if [ -n "$IMAGE" ]; then
    "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 || { echo "demo: no image $IMAGE: scripts/docker.sh build" >&2; exit 1; }
    ctgate() { "$DOCKER" run --rm --network none "$IMAGE" "$@"; }
else
    [ -x "$CTGATE" ] || { echo "demo: $CTGATE missing: run scripts/setup.sh" >&2; exit 1; }
    ctgate() { "$CTGATE" "$@"; }
fi

WORK=$(mktemp -d /tmp/ctgate-demo.XXXXXX)
CT_PID=
# Stops ctgate (SIGTERM: it drains and prints its report); its exit status.
stop_ctgate() {
    if [ -n "$IMAGE" ]; then
        "$DOCKER" kill --signal TERM "$CONTAINER" >/dev/null 2>&1 || true
    else
        kill -TERM "$CT_PID" 2>/dev/null || true
    fi
    wait "$CT_PID"
}
cleanup() {
    if [ -n "$CT_PID" ] && kill -0 "$CT_PID" 2>/dev/null; then
        stop_ctgate 2>/dev/null || true
    fi
    [ -n "$IMAGE" ] && "$DOCKER" rm -f "$CONTAINER" >/dev/null 2>&1 || true
    scripts/testbed.sh down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/testbed.sh up
CLI=(ip netns exec ctgw-cli)
SRV=(ip netns exec ctgw-srv)

# The built-in config is the test bed (ctgate default-config shows it); without
# free hugepages, fall back to --no-huge (slower, works everywhere).
CONFIG=$WORK/ctgate.toml
ctgate default-config >"$CONFIG"
if [ "$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)" -lt 64 ]; then
    echo "demo: fewer than 64 hugepages free: running ctgate with --no-huge"
    sed -i 's/^eal_args = .*/eal_args = ["--in-memory", "--no-huge", "-m", "256"]/' "$CONFIG"
fi
if [ "$WORKERS" -gt 1 ]; then
    # Lcores 1..N on CPUs 1.. (wrapping onto the CPUs there are, main on 0).
    NCPU=$(nproc)
    LCORES=$(seq -s, 1 "$WORKERS")
    CPUS=$(for i in $(seq 0 $((WORKERS - 1))); do
        if [ "$NCPU" -gt 1 ]; then echo $((1 + i % (NCPU - 1))); else echo 0; fi
    done | paste -sd,)
    sed -i "s/^workers = .*/workers = [$LCORES]\nworker_cpus = [$CPUS]/" "$CONFIG"
    sed -i "s/^\(devargs = \"net_af_packet[0-9]*,iface=[^\"]*\)\"/\1,qpairs=$WORKERS\"/" "$CONFIG"
    echo "demo: $WORKERS workers (lcores $LCORES on CPUs $CPUS)"
fi
if [ -n "$IMAGE" ]; then
    # The work directory at the same path inside: the config in, the stats out.
    "$DOCKER" run --rm --name "$CONTAINER" --network host "${DOCKER_CAPS[@]}" \
        -v /dev/hugepages:/dev/hugepages -v "$WORK:$WORK" "$IMAGE" \
        run --config "$CONFIG" --stats-json "$WORK/stats.json" >"$WORK/ctgate.out" 2>"$WORK/ctgate.log" &
else
    "$CTGATE" run --config "$CONFIG" --stats-json "$WORK/stats.json" >"$WORK/ctgate.out" 2>"$WORK/ctgate.log" &
fi
CT_PID=$!
for _ in $(seq 1 100); do
    grep -q "forwarding;" "$WORK/ctgate.log" 2>/dev/null && break
    kill -0 "$CT_PID" 2>/dev/null || { cat "$WORK/ctgate.log" "$WORK/ctgate.out" >&2; exit 1; }
    sleep 0.1
done
grep -q "forwarding;" "$WORK/ctgate.log" || { echo "demo: ctgate did not start" >&2; cat "$WORK/ctgate.log" >&2; exit 1; }
if [ -n "$IMAGE" ]; then
    echo "demo: ctgate is running in container $CONTAINER (image $IMAGE; ${DOCKER_CAPS[*]})"
else
    echo "demo: ctgate is running (pid $CT_PID)"
fi

FAIL=0
step() { # name command...
    local name=$1; shift
    if out=$("$@" 2>&1); then
        local summary
        summary=$(echo "$out" | grep -E 'packets transmitted|datagrams|bytes' | tail -1 || true)
        [ -n "$summary" ] || summary=$(echo "$out" | tail -1)
        echo "  ok    $name: $summary"
    else
        echo "  FAIL  $name"; echo "$out" | sed 's/^/        /'; FAIL=1
    fi
}

echo "demo: traffic between ctgw-cli (192.0.2.2, 2001:db8:1::2) and ctgw-srv (198.51.100.2, 2001:db8:2::2):"
step "ping ctgate 192.0.2.1"        "${CLI[@]}" ping -c 3 -i 0.2 -W 2 192.0.2.1
step "ping ctgate 2001:db8:1::1"    "${CLI[@]}" ping -6 -c 3 -i 0.2 -W 2 2001:db8:1::1
step "ping 198.51.100.2 via ctgate" "${CLI[@]}" ping -c 5 -i 0.2 -W 2 198.51.100.2
step "ping 2001:db8:2::2 via ctgate" "${CLI[@]}" ping -6 -c 5 -i 0.2 -W 2 2001:db8:2::2

# TCP: a 4 MiB random file served by Python's http.server, fetched with curl.
mkdir -p "$WORK/www"
head -c 4194304 /dev/urandom >"$WORK/www/blob.bin"
WANT=$(sha256sum <"$WORK/www/blob.bin" | cut -d' ' -f1)
"${SRV[@]}" timeout 120 python3 -m http.server 8080 --bind :: --directory "$WORK/www" >"$WORK/http.log" 2>&1 &
HTTP_PID=$!
tcp_check() { # url
    for _ in $(seq 1 50); do
        "${CLI[@]}" curl -s -I -o /dev/null --max-time 1 "$1" && break
        sleep 0.1
    done
    "${CLI[@]}" curl -sS --max-time 60 -o "$WORK/got.bin" -w '%{size_download} bytes in %{time_total} s\n' "$1"
    GOT=$(sha256sum <"$WORK/got.bin" | cut -d' ' -f1)
    [ "$GOT" = "$WANT" ] || { echo "content differs: sha256 $GOT, want $WANT"; return 1; }
    echo "sha256 matches"
}
step "TCP http.server -> curl, IPv4, 4 MiB" tcp_check http://198.51.100.2:8080/blob.bin
step "TCP http.server -> curl, IPv6, 4 MiB" tcp_check "http://[2001:db8:2::2]:8080/blob.bin"
kill "$HTTP_PID" 2>/dev/null || true
# Masquerade: the server saw ctgate's outside addresses, not the client's.
masq_check() {
    # http.server listens on :: and logs IPv4 clients as ::ffff:a.b.c.d.
    grep -qE '^(::ffff:)?198\.51\.100\.1 ' "$WORK/http.log" || { cat "$WORK/http.log"; return 1; }
    grep -q '^2001:db8:2::1 ' "$WORK/http.log" || { cat "$WORK/http.log"; return 1; }
    if grep -qE '^((::ffff:)?192\.0\.2\.2|2001:db8:1::2) ' "$WORK/http.log"; then cat "$WORK/http.log"; return 1; fi
    echo "the server saw 198.51.100.1 and 2001:db8:2::1: $(wc -l <"$WORK/http.log") requests, no client address"
}
step "masquerade (server's log)" masq_check

# UDP: 50 datagrams each way through an echo server, every answer checked.
udp_check() { # addr
    "${SRV[@]}" timeout 60 python3 "$ROOT/scripts/udp_check.py" serve "$1" 5353 30 &
    local srv=$!
    sleep 0.5
    "${CLI[@]}" timeout 60 python3 "$ROOT/scripts/udp_check.py" send "$1" 5353 50
    local rc=$?
    wait "$srv" 2>/dev/null || true
    return $rc
}
step "UDP echo, IPv4" udp_check 198.51.100.2
step "UDP echo, IPv6" udp_check 2001:db8:2::2

# TTL: a ping with TTL 1 must come back as time exceeded from ctgate.
ttl_check() {
    local out
    out=$("${CLI[@]}" ping -c 1 -t 1 -W 2 198.51.100.2 2>&1 || true)
    echo "$out" | grep -q "From 192.0.2.1 .*Time to live exceeded" || { echo "$out"; return 1; }
    echo "time exceeded from 192.0.2.1 (1 packets transmitted)"
}
step "TTL 1 -> ICMP time exceeded" ttl_check

# Policy: the outside may answer but not open connections (policy_default drop).
policy_check() {
    local out
    out=$("${SRV[@]}" ping -c 2 -i 0.2 -W 1 192.0.2.2 2>&1 || true)
    echo "$out" | grep -q " 0 received" || { echo "$out"; return 1; }
    echo "ping from ctgw-srv to 192.0.2.2: 2 packets transmitted, 0 received (dropped by policy)"
}
step "policy: outside cannot open connections" policy_check

if [ "$KEEP" = 1 ]; then
    echo "demo: --keep: ctgate keeps running; try: ip netns exec ctgw-cli ping 198.51.100.2. Ctrl-C stops."
    wait "$CT_PID" || true
fi
stop_ctgate || FAIL=1
CT_PID=
echo
cat "$WORK/ctgate.out"
echo
if [ "$WORKERS" -gt 1 ]; then
    # Every worker carried some of the traffic (its own or handed over).
    for i in $(seq 0 $((WORKERS - 1))); do
        P=$(sed -n "s/^  worker $i (lcore [0-9]*): .* processed \([0-9]*\) .*/\1/p" "$WORK/ctgate.out")
        if [ "${P:-0}" -gt 0 ]; then
            echo "  ok    worker $i processed $P packets"
        else
            echo "  FAIL  worker $i processed no packets"; FAIL=1
        fi
    done
fi
if [ "$FAIL" = 0 ]; then
    echo "demo: all traffic went through ctgate"
else
    echo "demo: FAILED (see above)"
fi
exit "$FAIL"
