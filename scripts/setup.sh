#!/usr/bin/env bash
# Prepares this machine for ctgate (idempotent; run it as often as you like):
#   1. Debian packages: DPDK 22.11 (headers, PMDs, testpmd), the build tools
#      for the bindings, the test bed / test tools, and Prometheus and
#      docker-compose for the deployment files' tests;
#   2. hugepages: hugetlbfs mounted, enough 2 MiB pages free;
#   3. a release build of ctgate (skip with --no-build).
#
# usage: sudo scripts/setup.sh [--no-build]
# env:   CTGATE_HUGEPAGES  2 MiB pages that should be free (default 512 = 1 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
for a in "$@"; do
    case "$a" in
    --no-build) BUILD=0 ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (apt, hugepages): sudo $0"

# --- 1. packages -------------------------------------------------------------
PKGS=(
    libdpdk-dev dpdk-dev dpdk pkg-config libclang-dev build-essential
    iproute2 iputils-ping ethtool curl python3 python3-venv tcpdump conntrack conntrackd nftables tcpreplay python3-scapy
    prometheus docker-compose
)
source scripts/pkgs.sh
need_pkgs setup "${PKGS[@]}"
pkg-config --atleast-version=22.11 libdpdk || die "DPDK >= 22.11 not found by pkg-config after installing libdpdk-dev"
say "DPDK $(pkg-config --modversion libdpdk)"

# --- 2. hugepages ------------------------------------------------------------
WANT="${CTGATE_HUGEPAGES:-512}"
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
[ -d "$HP" ] || die "this kernel has no 2 MiB hugepages ($HP missing): run ctgate with eal_args = [\"--no-huge\"]"
if ! grep -qs '^[^ ]* [^ ]* hugetlbfs ' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages
    say "mounted hugetlbfs on /dev/hugepages"
fi
free=$(cat "$HP/free_hugepages")
total=$(cat "$HP/nr_hugepages")
if [ "$free" -lt "$WANT" ]; then
    echo $((total + WANT - free)) >"$HP/nr_hugepages" || true
    free=$(cat "$HP/free_hugepages")
    total=$(cat "$HP/nr_hugepages")
fi
if [ "$free" -lt "$WANT" ]; then
    say "warning: only $free of $WANT wanted 2 MiB hugepages are free (total $total; memory is fragmented or in use):"
    say "         free memory and run me again, or run ctgate with eal_args = [\"--no-huge\"]"
else
    say "hugepages: $free x 2 MiB free (total $total)"
fi

# --- 3. build ----------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    # sudo may drop the invoking user's cargo (and rustup's home) from the environment.
    source scripts/rust-env.sh
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
    say "building (release)"
    cargo build --release --quiet
    say "built $(./target/release/ctgate --version)"
fi
