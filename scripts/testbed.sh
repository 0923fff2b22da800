#!/usr/bin/env bash
# The netns test bed: two Linux hosts in network namespaces, each joined to one
# of ctgate's ports by a veth pair. ctgate runs in the root namespace and opens
# the root-side veth ends with net_af_packet.
#
#   ${P}-cli netns  eth0 192.0.2.2/24     2001:db8:1::2/64  <-veth->  ${P}-cli-gw  (ctgate port "cli": 192.0.2.1, 2001:db8:1::1)
#   ${P}-srv netns  eth0 198.51.100.2/24  2001:db8:2::2/64  <-veth->  ${P}-srv-gw  (ctgate port "srv": 198.51.100.1, 2001:db8:2::1)
#
# The hosts have routes to each other's prefix via ctgate and no other route:
# no traffic leaves the test bed. P defaults to "ctgw" (CTGW_PREFIX overrides).
#
# usage: scripts/testbed.sh up|down|status
set -euo pipefail

P="${CTGW_PREFIX:-ctgw}"
CLI="$P-cli"
SRV="$P-srv"

die() { echo "testbed: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root: sudo $0 $*"
command -v ip >/dev/null || die "iproute2 missing: run scripts/setup.sh"

# Checksum offload off on both veth ends: with net_af_packet the frames the
# Linux hosts send would otherwise carry unfilled (partial) checksums, and
# GRO/GSO would hand af_packet frames larger than the MTU.
offloads_off() { # [netns] dev
    local ns=() ; if [ $# = 2 ]; then ns=(ip netns exec "$1"); shift; fi
    "${ns[@]}" ethtool -K "$1" tx off rx off tso off gso off gro off >/dev/null 2>&1 ||
        "${ns[@]}" ethtool -K "$1" tx off >/dev/null 2>&1 ||
        die "ethtool -K $1 tx off failed (is ethtool installed? scripts/setup.sh)"
}

host_up() { # ns gwdev v4 v4gw v6 v6gw peer4 peer6
    local ns=$1 gw=$2
    ip netns add "$ns"
    ip link add "$gw" type veth peer name eth0 netns "$ns"
    # The root-side end carries no address; keep the root kernel quiet on it.
    sysctl -qw "net.ipv6.conf.$gw.disable_ipv6=1"
    ip link set "$gw" up
    offloads_off "$gw"
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    offloads_off "$ns" eth0
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.eth0.accept_ra=0 net.ipv6.conf.eth0.accept_dad=0
    ip -n "$ns" addr add "$3" dev eth0
    ip -n "$ns" -6 addr add "$5" dev eth0 nodad
    ip -n "$ns" route add "$7" via "$4" dev eth0
    ip -n "$ns" -6 route add "$8" via "$6" dev eth0
}

down() {
    for ns in "$CLI" "$SRV"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    for dev in "$CLI-gw" "$SRV-gw"; do
        ip link del "$dev" 2>/dev/null || true
    done
}

case "${1:-}" in
up)
    down
    host_up "$CLI" "$CLI-gw" 192.0.2.2/24 192.0.2.1 2001:db8:1::2/64 2001:db8:1::1 198.51.100.0/24 2001:db8:2::/64
    host_up "$SRV" "$SRV-gw" 198.51.100.2/24 198.51.100.1 2001:db8:2::2/64 2001:db8:2::1 192.0.2.0/24 2001:db8:1::/64
    echo "testbed up: $CLI (192.0.2.2, 2001:db8:1::2) <-> $CLI-gw [ctgate] $SRV-gw <-> $SRV (198.51.100.2, 2001:db8:2::2)"
    ;;
down)
    down
    echo "testbed down"
    ;;
status)
    ip netns list | grep -E "^($CLI|$SRV)( |$)" || echo "no test bed namespaces"
    ip -br link show | grep -E "^($CLI-gw|$SRV-gw)" || true
    ;;
*)
    echo "usage: $0 up|down|status   (CTGW_PREFIX=$P)" >&2
    exit 2
    ;;
esac
