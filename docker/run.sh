#!/usr/bin/env bash
# Runs the ctgate image with what DPDK needs from the host: hugepages
# (reserve them first: scripts/setup.sh), /dev for VFIO-bound NICs, the host
# network for net_af_packet / net_af_xdp vdevs, and the config.
#
# usage: docker/run.sh [CONFIG]   (default: ./ctgate.toml)
set -euo pipefail
CONFIG=$(realpath "${1:-ctgate.toml}")
exec docker run --rm -it \
    --privileged \
    --network host \
    -v /dev/hugepages:/dev/hugepages \
    -v /dev:/dev \
    -v /sys/bus/pci:/sys/bus/pci \
    -v "$CONFIG":/etc/ctgate/ctgate.toml:ro \
    ctgate run --config /etc/ctgate/ctgate.toml
