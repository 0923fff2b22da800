#!/usr/bin/env bash
# Sets up the machine and runs every test:
#   1. scripts/setup.sh (packages, hugepages, release build);
#   2. the demo (scripts/demo.sh --no-setup), with one worker and with two:
#      real hosts talking through ctgate; then the container image
#      (scripts/docker.sh build) and the same demo with ctgate in a container;
#   3. cargo test --workspace: unit tests of every crate and the integration
#      tests in tests/ (pcap in -> pcap out, the netns test bed, the CLI),
#      which start the real appliance; and the benches must build.
#
# usage: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test: needs root (DPDK, network namespaces): sudo $0" >&2; exit 1; }

scripts/setup.sh
source scripts/rust-env.sh

echo "test: demo"
scripts/demo.sh --no-setup
echo "test: demo with two workers"
scripts/demo.sh --no-setup --workers 2
echo "test: the container image from Debian packages, and the demo in a container"
scripts/docker.sh build --no-setup
scripts/docker.sh demo --no-setup

# The TRex client library (PyPI) for tests/trex_profiles.rs, in a venv.
VENV=target/trex-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import trex_stl_lib, scapy' 2>/dev/null; then
    echo "test: TRex client library (PyPI trex-stl-lib) in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q trex-stl-lib 'scapy==2.4.5'
fi
export CTGATE_TREX_PYTHON=$PWD/$VENV/bin/python

echo "test: cargo test --workspace"
cargo test --workspace 2>&1
# cargo test builds the examples but not the benches (scripts/bench.sh runs
# ctgate's engine bench): they must build too.
echo "test: the benches build"
cargo build --workspace --benches 2>&1

echo "test: soak, 3 minutes at table capacity with churn"
scripts/soak.sh 3
