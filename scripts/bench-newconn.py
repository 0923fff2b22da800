#!/usr/bin/env python3
"""scripts/bench.sh's new-connection cells, for comparing ctgate builds.

Runs the cell of `scripts/bench.py` (its config, its one-pass capture of 2M
distinct flows from 240 clients, its rate: inserts over the worker's busy
time) for each ctgate binary given, alternating the binaries round by round,
so that load from elsewhere on the machine hits them alike. Prints new
connections per second and cycles per packet per run, and with
`--stages` the cycles of each stage (`ctgate run --profile-stages`).

usage: sudo scripts/bench-newconn.py [--table N] [--modes conntrack,snat]
                                      [--rounds R] [--stages] BINARY...
e.g.   sudo scripts/bench-newconn.py --table 1000000 --modes snat --rounds 3 \\
           /tmp/ctgate-before target/release/ctgate

Needs what scripts/bench.sh needs (scripts/setup.sh, hugepages). Work files
go to a temporary directory (the capture, about 250 MB, is made once there).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--table", type=int, default=1000, help="table capacity (default 1000)")
    ap.add_argument("--modes", default="conntrack,snat")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-newconn: needs root: sudo %s" % sys.argv[0])
    bench.ab_binaries(args.binaries, "bench-newconn")
    with bench.ab_workdir("bench-newconn", args.keep) as work:
        pcap = bench.capture(2000000, first=0)
        for rnd in range(args.rounds):
            for b in args.binaries:
                bench.CTGATE = bench.stages_wrapper(os.path.abspath(b)) if args.stages else os.path.abspath(b)
                for mode in args.modes.split(","):
                    name = "newconn-%d-%s-%d" % (args.binaries.index(b), mode, rnd)
                    cfg = os.path.join(work, name + ".toml")
                    bench.ctgate_config(cfg, [("in", "net_pcap0,rx_pcap=%s" % pcap, "192.0.2.1/24", bench.GW_MAC),
                                              ("out", "net_null0,no-rx=1", "198.51.100.1/24", bench.OUT_MAC)],
                                        mode, args.table, 16383)
                    _, report, _ = bench.run_until_idle(cfg, name, 2000000)
                    if not report:
                        print("%-32s %-9s no report (see %s)" % (b, mode, work))
                        continue
                    tot = report["totals"]
                    counters = report["conntrack"]["counters"]
                    busy_s = tot["busy_cycles"] / report["tsc_hz"]
                    print("%-32s %-9s round %d: %.2f M new connections/s, %.0f cycles/packet"
                          % (b, mode, rnd + 1, counters.get("insert", 0) / busy_s / 1e6,
                             tot["busy_cycles"] / max(1, tot["busy_packets"])), flush=True)
                    # (The report has the stage counters, all zero, without --stages.)
                    st = tot.get("stage_cycles") or {}
                    if args.stages and st:
                        sp = max(1, tot.get("stage_packets", 1))
                        print("    stages: " + " ".join("%s=%.0f" % (k, v / sp) for k, v in st.items()),
                              flush=True)


if __name__ == "__main__":
    main()
