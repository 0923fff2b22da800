#!/usr/bin/env bash
# ctgate's container image, built from Debian packages only (no registry):
#
#   build  the base image: a bookworm root file system made by mmdebstrap
#          from the Debian archive (Essential packages plus the DPDK runtime
#          libraries ctgate links and the PMDs it drives, docs and man pages
#          left out), imported with `docker import`; then the ctgate image:
#          the base plus the release binary (docker/Dockerfile.debian),
#          tagged ctgate:VERSION and ctgate:latest. Prints the image sizes.
#   demo   the README demo (scripts/demo.sh: the same test bed, traffic and
#          checks) with ctgate running in a container of that image;
#          --workers N as in the demo. Builds the image first if missing.
#   clean  removes the images (and any demo container left over).
#
# Docker's engine comes from Debian (docker.io), installed if missing. If no
# daemon runs, this script starts one and stops it again when it is done.
# docker/Dockerfile is the other way, for machines that reach a registry.
#
# usage: sudo scripts/docker.sh build|demo|clean [--no-setup] [--workers N]
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "docker: $*"; }
die() { echo "docker: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (packages, the Docker daemon, the test bed): sudo $0 $*"

CMD=${1:-}
[ $# -gt 0 ] && shift
SETUP=1
DEMO_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
    --no-setup) SETUP=0 ;;
    --workers)
        [ $# -ge 2 ] || die "--workers wants a number"
        DEMO_ARGS+=(--workers "$2"); shift ;;
    *) die "unknown argument $1 (usage: $0 build|demo|clean [--no-setup] [--workers N])" ;;
    esac
    shift
done

BASE=ctgate-base:bookworm
SUITE=bookworm
MIRROR=${CTGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What ctgate links (ldd target/release/ctgate) and loads (the PMD plugins):
# the virtual ports of the test bed and the common Intel NICs.
RUNTIME_PKGS=(
    librte-eal23 librte-ethdev23 librte-mbuf23 librte-mempool23 librte-ring23 librte-net23
    librte-kvargs23 librte-telemetry23 librte-meter23 librte-pdump23 librte-pcapng23 librte-bpf23
    librte-mempool-ring23
    librte-net-af-packet23 librte-net-af-xdp23 librte-net-pcap23 librte-net-tap23
    librte-net-memif23 librte-net-ring23 librte-net-null23
    librte-net-ixgbe23 librte-net-i40e23 librte-net-ice23
)

# --- packages and the daemon --------------------------------------------------
source scripts/pkgs.sh
need_pkgs docker docker.io
# Debian's client, which matches Debian's daemon (another `docker` may come
# first in PATH).
DOCKER=/usr/bin/docker
export DOCKER

STARTED=
DOCKERD_LOG=
stop_daemon() {
    [ -n "$STARTED" ] || return 0
    say "stopping the Docker daemon this script started"
    kill -TERM "$STARTED" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$STARTED" 2>/dev/null || break
        sleep 0.1
    done
    STARTED=
    rm -f "$DOCKERD_LOG"
}
trap stop_daemon EXIT
trap 'exit 130' INT TERM

ensure_daemon() {
    "$DOCKER" info >/dev/null 2>&1 && return 0
    DOCKERD_LOG=$(mktemp /tmp/ctgate-dockerd.XXXXXX)
    say "starting the Docker daemon (log: $DOCKERD_LOG)"
    # Host networking only (the test bed's veth ports): no bridge, no
    # iptables rules, so nothing is left on the host when it stops.
    dockerd --bridge=none --iptables=false --ip6tables=false >"$DOCKERD_LOG" 2>&1 &
    STARTED=$!
    for _ in $(seq 1 300); do
        "$DOCKER" info >/dev/null 2>&1 && return 0
        kill -0 "$STARTED" 2>/dev/null || { tail -20 "$DOCKERD_LOG" >&2; STARTED=; die "dockerd exited (its log is above)"; }
        sleep 0.1
    done
    tail -20 "$DOCKERD_LOG" >&2
    die "dockerd did not answer within 30 s (its log is above)"
}

mib() { echo $(($1 / 1048576)); }

# --- build --------------------------------------------------------------------
build() {
    need_pkgs docker mmdebstrap
    if [ "$SETUP" = 1 ]; then
        scripts/setup.sh
    fi
    local bin=target/release/ctgate
    [ -x "$bin" ] || die "$bin missing: run scripts/setup.sh"
    ensure_daemon
    local version
    version=$("$bin" --version | awk '{print $2}')
    [ -n "$version" ] || die "cannot read the version from $bin --version"
    local tmp
    tmp=$(mktemp -d /tmp/ctgate-image.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'; stop_daemon" EXIT
    if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
        say "base image $BASE: mmdebstrap $SUITE from $MIRROR"
        local inc
        inc=$(IFS=,; echo "${RUNTIME_PKGS[*]}")
        mmdebstrap --quiet --variant=essential --include="$inc" \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
            "$SUITE" "$tmp/base.tar" "$MIRROR" \
            || die "mmdebstrap failed (is $MIRROR reachable? CTGATE_DEBIAN_MIRROR names another)"
        "$DOCKER" import --message "ctgate base: Debian $SUITE + DPDK runtime (mmdebstrap)" \
            "$tmp/base.tar" "$BASE" >/dev/null
        rm -f "$tmp/base.tar"
    else
        say "base image $BASE present"
    fi
    install -m 0755 "$bin" "$tmp/ctgate"
    strip "$tmp/ctgate"
    "$DOCKER" build --quiet -f docker/Dockerfile.debian --build-arg "BASE=$BASE" \
        -t "ctgate:$version" -t ctgate:latest "$tmp" >/dev/null
    rm -rf "$tmp"
    # The binary runs in it and finds its libraries.
    "$DOCKER" run --rm --network none "ctgate:$version" --version >/dev/null \
        || die "the image's ctgate does not run"
    say "built ctgate:$version (also ctgate:latest): $(mib "$("$DOCKER" image inspect -f '{{.Size}}' "ctgate:$version")") MiB" \
        "(base $(mib "$("$DOCKER" image inspect -f '{{.Size}}' "$BASE")") MiB)"
}

# --- demo ---------------------------------------------------------------------
demo() {
    [ "$SETUP" = 1 ] && scripts/setup.sh
    ensure_daemon
    if ! "$DOCKER" image inspect ctgate:latest >/dev/null 2>&1; then
        SETUP=0 build
    fi
    scripts/demo.sh --no-setup --docker ctgate:latest "${DEMO_ARGS[@]}"
}

# --- clean --------------------------------------------------------------------
clean() {
    if ! "$DOCKER" info >/dev/null 2>&1 && ! command -v dockerd >/dev/null; then
        say "no Docker engine: nothing to clean"
        return 0
    fi
    ensure_daemon
    local c imgs
    c=$("$DOCKER" ps -aq --filter name=ctgate-demo-)
    [ -z "$c" ] || "$DOCKER" rm -f $c >/dev/null
    imgs=$("$DOCKER" images --format '{{.Repository}}:{{.Tag}}' | grep -E '^(ctgate|ctgate-base):' || true)
    if [ -n "$imgs" ]; then
        # shellcheck disable=SC2086
        "$DOCKER" rmi -f $imgs >/dev/null
        say "removed $(echo $imgs)"
    else
        say "no ctgate images"
    fi
    "$DOCKER" image prune -f >/dev/null
}

case "$CMD" in
build) build ;;
demo) demo ;;
clean) clean ;;
*) die "usage: $0 build|demo|clean [--no-setup] [--workers N]" ;;
esac
