#!/usr/bin/env python3
"""scripts/bench.sh's established-flow cells, for comparing ctgate builds.

Runs the ctgate cells of `scripts/bench.py`'s main table (its config, its
capture of N distinct flows replayed by net_pcap `infinite_rx` into
net_null, its measurement: per-second medians once every flow has its
connection) for each ctgate binary given, alternating the binaries round
by round, so that load from elsewhere on the machine hits them alike.
Prints Mpps and cycles per packet (raw and stall-free) per run, and with
`--stages` the cycles of each stage (`ctgate run --profile-stages`).

usage: sudo scripts/bench-established.py [--flows N] [--modes routing,conntrack,snat]
                                          [--rounds R] [--secs S] [--stages] [--tcp] BINARY...

With --tcp the flows are TCP (one ACK per flow, picked up mid-stream: each
connection has its TCP state, which a UDP one has not).
e.g.   sudo scripts/bench-established.py --flows 1000000 --modes conntrack,snat \\
           --rounds 3 /tmp/ctgate-before target/release/ctgate

Needs what scripts/bench.sh needs (scripts/setup.sh, hugepages). Work files
go to a temporary directory (the capture of 1M flows is about 100 MB).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def stage_line(log):
    """The stage profile ctgate printed at exit, if any."""
    try:
        with open(log) as f:
            lines = [ln.strip() for ln in f if ln.lstrip().startswith("stages,")]
    except OSError:
        return None
    return lines[-1] if lines else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--flows", type=int, default=1000000, help="distinct flows (default 1000000)")
    ap.add_argument("--modes", default="conntrack,snat")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--secs", type=int, default=6, help="seconds measured per run (default 6)")
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--tcp", action="store_true", help="TCP flows (ACKs) instead of UDP")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-established: needs root: sudo %s" % sys.argv[0])
    bench.ab_binaries(args.binaries, "bench-established")
    modes = args.modes.split(",")
    for m in modes:
        if m not in ("routing", "conntrack", "snat"):
            sys.exit("bench-established: unknown mode %r (routing, conntrack, snat)" % m)
    if bench.hugepages_short(args.flows):
        sys.exit("bench-established: %s" % bench.hugepages_short(args.flows))
    with bench.ab_workdir("bench-established", args.keep) as work:
        pcap = bench.capture(args.flows, first=0, tcp=args.tcp)
        for rnd in range(args.rounds):
            for i, b in enumerate(args.binaries):
                binary = os.path.abspath(b)
                bench.CTGATE = bench.stages_wrapper(binary) if args.stages else binary
                for mode in modes:
                    name = "established-%d-%s-%d" % (i, mode, rnd)
                    r = bench.ctgate_forward(pcap, args.flows, mode, args.secs, name)
                    if "error" in r:
                        print("%-32s %-9s round %d: %s" % (b, mode, rnd + 1, r["error"]), flush=True)
                        continue
                    print("%-32s %-9s round %d: %.2f Mpps, %.1f cycles/packet, stall-free %.1f (%d stalls)"
                          % (b, mode, rnd + 1, r["mpps"], r["cpp"] or 0, r["cpp_stall_free"] or 0,
                             r["stalls"]), flush=True)
                    if args.stages:
                        line = stage_line(os.path.join(work, name + ".log"))
                        if line:
                            print("    " + line, flush=True)


if __name__ == "__main__":
    main()
