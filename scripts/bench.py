#!/usr/bin/env python3
"""The benchmark of scripts/bench.sh, in one run: ctgate against dpdk-testpmd
(macswap, the ceiling), the Linux kernel (forwarding + nftables conntrack +
SNAT in network namespaces, one core) and OVS-DPDK (userspace datapath,
ct(commit) / ct(commit,nat(src=...))), 64-byte frames, one worker core, on
the same traffic. Then: new connections per second, memory per connection,
the table full under a flood of new flows, and GC at scale.

Writes bench/results/<UTC date>/ (results.md, results.csv, machine.md, the
SVG plots and raw/ with every log) and prints the main table.

Run through scripts/bench.sh (root, packages, hugepages, build). Options:
  --secs S        seconds measured per contender and cell (default 5)
  --sizes LIST    flow counts of the main table, comma-separated (default
                  1000,100000,1000000,4000000)
  --side-max N    the largest size the other tables use (default 1000000):
                  workers (the middle size), new connections, memory, the
                  flood and GC take the sizes, none over N
  --skip LIST     any of main,kernel,ovs,workers,newconn,memory,attack,gc
  --out DIR       result directory
Every figure printed comes from this run's measurements; a cell that could
not be measured says why.
"""
import argparse
import contextlib
import csv
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import bench_plot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CTGATE = os.path.join(ROOT, "target", "release", "ctgate")
FRAMES = os.path.join(ROOT, "scripts", "bench_frames.py")
GW_MAC = "02:00:00:00:00:01"
OUT_MAC = "02:00:00:00:00:02"
PEER_MAC = "02:00:00:00:00:0b"
SNAT_RANGE = "203.0.113.1-203.0.113.64"
# Over 1M flows: the address is picked by a hash of the client (240 of them)
# and has 64,512 ports towards the one server, so 4M flows (16,667 a client)
# need no more than 3 clients on an address: 64 addresses cannot do that, the
# 4,094 of the benchmarking range 198.18.0.0/20 nearly always do.
SNAT_RANGE_BIG = "198.18.0.1-198.18.15.254"


def snat_range(n):
    return SNAT_RANGE if n <= 1000000 else SNAT_RANGE_BIG
MBUF_BYTES = 2560  # a 2 KiB-data mbuf with its header, in a mempool
MODES = ["routing", "conntrack", "snat"]
GOAL_SIZE = 1000000  # the flow count the goals of the Speed issue are stated at
MODE_LABEL = {"routing": "routing only", "conntrack": "conntrack", "snat": "conntrack + SNAT"}

WORK = None  # scratch directory (captures, configs)
RAW = None  # raw logs kept with the results
WARMUP = 2  # per-second samples dropped at the start of each measurement


T0 = time.time()


def log(msg):
    print("bench: [%4.0f s] %s" % (time.time() - T0, msg), flush=True)


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=check, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw).stdout


def human(n):
    return {1000: "1k", 100000: "100k", 1000000: "1M", 4000000: "4M"}.get(n, str(n))


# ---------------------------------------------------------------- captures --
_pcaps = {}


def capture(n, first=0, reply=False, mac=GW_MAC, tcp=False):
    key = (n, first, reply, mac, tcp)
    if key not in _pcaps:
        path = os.path.join(WORK, "flows-%d-%d%s%s-%s.pcap" % (n, first, "-reply" if reply else "",
                                                                "-tcp" if tcp else "", mac.replace(":", "")))
        args = [sys.executable, FRAMES, path, mac, str(n), "--first", str(first)]
        if reply:
            args.append("--reply")
        if tcp:
            args.append("--tcp")
        subprocess.run(args, check=True)
        _pcaps[key] = path
    return _pcaps[key]


# ----------------------------------------------------------------- helpers --
def ab_binaries(paths, tool):
    """For the A/B scripts: exits with a message unless every one of `paths`
    is an executable and no two are the same file content (an A/B run of
    one binary against itself measures only the host: a build with `cargo
    build -p appliance` leaves target/release/ctgate as it was; the binary
    is the root package's, `cargo build --release -p ctgate`)."""
    import hashlib
    seen = {}
    for p in paths:
        if not os.access(p, os.X_OK):
            sys.exit("%s: %s is not an executable ctgate" % (tool, p))
        with open(p, "rb") as f:
            digest = hashlib.md5(f.read()).hexdigest()
        if digest in seen:
            sys.exit("%s: %s and %s are the same binary (md5 %s): build each with "
                     "`cargo build --release -p ctgate` and copy target/release/ctgate"
                     % (tool, seen[digest], p, digest))
        seen[digest] = p


@contextlib.contextmanager
def ab_workdir(tool, keep):
    """For the A/B scripts: a temporary directory as WORK and RAW for the
    run, removed at the end (kept, and named, with `keep`)."""
    global WORK, RAW
    work = tempfile.mkdtemp(prefix="ctgate-%s." % tool.split("-", 1)[-1])
    WORK = RAW = work
    try:
        yield work
    finally:
        if keep:
            print("%s: work files in %s" % (tool, work))
        else:
            shutil.rmtree(work, ignore_errors=True)


def stages_wrapper(binary):
    """A script in WORK that runs `binary` with --profile-stages added (for
    the A/B scripts' --stages)."""
    path = os.path.join(WORK, "stages-%d" % abs(hash(binary)))
    with open(path, "w") as f:
        f.write('#!/bin/sh\nexec %s "$@" --profile-stages\n' % binary)
    os.chmod(path, 0o755)
    return path


def hugepages_free():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free"):
                return int(line.split()[1])
    return 0


def mbufs_for(n):
    """Mbufs for an infinite_rx source of n frames: one per frame, plus the
    descriptor rings, the per-lcore caches and the frames in flight."""
    return n + 24575


def pages_for(n):
    """2 MiB hugepages a DPDK contender needs for an n-frame infinite_rx
    source: its mempool plus 64 MiB for the EAL, rings and PMDs (what
    ctgate's own preflight asks for)."""
    return -(-(mbufs_for(n) * MBUF_BYTES + (64 << 20)) // (2 << 20))


def hugepages_short(n):
    """None if the free hugepages hold an n-frame source, else why not (a
    table cell's "not measured" note)."""
    need, free = pages_for(n), hugepages_free()
    if free >= need:
        return None
    why = os.environ.get("BENCH_HUGEPAGES_NOTE", "").strip()
    return ("not measured: the %s-frame source needs %d hugepages of 2 MiB (%.1f GiB), %d are free%s"
            % (human(n), need, need / 512, free, " (%s)" % why if why else ""))


def mem_available():
    """MemAvailable, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    return 0


def side_sizes(args):
    """The sizes the tables after the main one use: the main table's, none
    over --side-max (4M flows would need 20 GB of hugepages for the flood
    alone)."""
    return sorted(set(min(n, args.side_max) for n in args.sizes))


def median(xs):
    return statistics.median(xs) if xs else 0.0


def stream(cmd, want, parse, timeout, name, env=None):
    """Runs cmd, feeds each output line to parse(line) (which returns True for
    a counted sample), sends SIGINT after `want` samples or `timeout` seconds;
    returns the whole output. The log is kept in RAW/name.log."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    out = []
    count = [0]
    timer = threading.Timer(timeout, lambda: p.send_signal(signal.SIGINT))
    timer.start()
    try:
        for line in p.stdout:
            out.append(line)
            if parse(line):
                count[0] += 1
                if count[0] == want:
                    p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    finally:
        timer.cancel()
    text = "".join(out)
    with open(os.path.join(RAW, name + ".log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + text)
    return text


# ----------------------------------------------------------------- testpmd --
def testpmd(pcap, n_frames, secs, name, infinite=True):
    """macswap, one forwarding core, pcap source -> net_null sink."""
    src = "net_pcap0,rx_pcap=%s%s" % (pcap, ",infinite_rx=1" if infinite else "")
    cmd = ["dpdk-testpmd", "-l", "0,1", "--in-memory", "--no-pci", "--log-level=*:error",
           "--vdev", src, "--vdev", "net_null0,no-rx=1", "--",
           "--forward-mode=macswap", "--nb-cores=1", "--auto-start", "--stats-period=1",
           "--record-core-cycles", "--total-num-mbufs=%d" % mbufs_for(n_frames if infinite else 0)]
    state = {"port": None, "pps": []}

    def parse(line):
        m = re.search(r"NIC statistics for port (\d)", line)
        if m:
            state["port"] = int(m.group(1))
            return False
        m = re.search(r"Tx-pps:\s+(\d+)", line)
        if m and state["port"] == 1:
            state["pps"].append(int(m.group(1)))
            return True
        return False

    text = stream(cmd, secs + WARMUP + 1, parse, secs + 120, name)
    pps = [x for x in state["pps"][WARMUP:] if x > 0]
    m = re.findall(r"CPU cycles/packet=([\d.]+)", text)
    if not pps:
        return {"error": "testpmd forwarded nothing (see raw/%s.log)" % name}
    return {"mpps": median(pps) / 1e6, "cpp": float(m[-1]) if m else None}


# ------------------------------------------------------------------ ctgate --
def ctgate_config(path, ports, mode, capacity, mbufs, extra_ct="", policy="", clients=0, workers=1,
                  snat=SNAT_RANGE):
    """ports: [(name, devargs, ipv4, mac or None)]; clients: permanent
    neighbours for the first `clients` flows' addresses on port in. With 2
    workers, the second runs on CPU 0 beside the (mostly sleeping) control
    thread: the machine has two."""
    w = ["workers = [1]"] if workers == 1 else [
        "workers = [%s]" % ", ".join(str(i + 1) for i in range(workers)),
        "worker_cpus = [%s]" % ", ".join(str((i + 1) % 2) for i in range(workers))]
    lines = w + ["main_lcore = 0", "mempool_mbufs = %d" % mbufs,
             'eal_args = ["--in-memory"]', "", "[rest]", "enabled = false", ""]
    for name, dev, ip, mac in ports:
        lines += ["[[port]]", 'name = "%s"' % name, 'devargs = "%s"' % dev, 'ipv4 = "%s"' % ip]
        if mac:
            lines.append('mac = "%s"' % mac)
        lines.append("")
    lines += ["[[neighbour]]", 'ip = "198.51.100.10"', 'mac = "%s"' % PEER_MAC, 'port = "out"', ""]
    for a in range(10, 10 + min(clients, 240)):
        lines += ["[[neighbour]]", 'ip = "192.0.2.%d"' % a, 'mac = "02:00:00:00:00:0a"', 'port = "in"', ""]
    if mode == "routing":
        lines += ["[conntrack]", "enabled = false", ""]
    else:
        lines += ["[conntrack]", "max_connections = %d" % capacity, extra_ct, ""]
        lines.append(policy)
        if mode == "snat":
            lines += ["[[nat]]", 'name = "snat"', 'out_port = "out"',
                      'action = "snat to %s"' % snat, ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


CT_LINE = re.compile(
    r"\[\s*([\d.]+)s\] ct connections (\d+) found (\d+) new (\d+) insert (\d+) insert_failed (\d+) "
    r"drop (\d+) early_drop (\d+) expired (\d+) conntrack_drops (\d+); burst cycles p50 (\d+) "
    r"p99 (\d+) max (\d+) bursts (\d+) busy_cycles (\d+) busy_packets (\d+)"
    r"(?: stall_iterations (\d+) stall_cycles (\d+) stall_packets (\d+))?")
RATE_LINE = re.compile(r"\[\s*([\d.]+)s\] rate (\d+) pps tx, rx (\d+) tx (\d+) forwarded (\d+) dropped (\d+)")
CT_KEYS = ["t", "connections", "found", "new", "insert", "insert_failed", "drop", "early_drop",
           "expired", "conntrack_drops", "p50", "p99", "max", "bursts", "busy_cycles", "busy_packets",
           "stall_iterations", "stall_cycles", "stall_packets"]


def run_ctgate(cfg, name, want_samples, timeout, interval=1.0, on_sample=None, counts=None):
    """Runs ctgate; returns (samples, report json, output). A sample is a dict
    of the rate line and the ct line of one interval."""
    js = os.path.join(RAW, name + ".json")
    cmd = [CTGATE, "run", "--config", cfg, "--stats-interval", str(interval), "--stats-json", js,
           "--log", "error", "--duration", str(timeout)]
    samples = []
    cur = {}

    def parse(line):
        m = RATE_LINE.search(line)
        if m:
            cur.clear()
            cur.update(t=float(m.group(1)), pps=int(m.group(2)), rx=int(m.group(3)),
                       tx=int(m.group(4)), dropped=int(m.group(6)))
            return False
        m = CT_LINE.search(line)
        if m:
            d = dict(cur)
            for k, v in zip(CT_KEYS, m.groups()):
                d[k] = float(v) if k == "t" else int(v or 0)
            samples.append(d)
            if on_sample:
                on_sample(d)
            return counts(samples) if counts else True
        return False

    text = stream(cmd, want_samples, parse, timeout + 30, name)
    try:
        with open(js) as f:
            report = json.load(f)
    except (OSError, ValueError):
        report = None
    return samples, report, text


def interval_cpp(samples, stall_free=False):
    """Cycles/packet of each interval's busy iterations; with `stall_free`,
    those over 100 us (the vCPU not running) left out."""
    out = []
    for a, b in zip(samples, samples[1:]):
        dp = b["busy_packets"] - a["busy_packets"]
        dc = b["busy_cycles"] - a["busy_cycles"]
        if stall_free:
            dp -= b["stall_packets"] - a["stall_packets"]
            dc -= b["stall_cycles"] - a["stall_cycles"]
        if dp > 0:
            out.append(dc / dp)
    return out


def ctgate_forward(pcap, n, mode, secs, name, workers=1):
    """With several workers the source has one queue per worker, each
    replaying the capture (net_pcap without RSS: software dispatch)."""
    cfg = os.path.join(WORK, name + ".toml")
    src = "net_pcap0,%s,infinite_rx=1" % ",".join(["rx_pcap=%s" % pcap] * workers)
    ctgate_config(cfg, [("in", src, "192.0.2.1/24", GW_MAC),
                        ("out", "net_null0,no-rx=1", "198.51.100.1/24", OUT_MAC)],
                  mode, max(2 * n, 4096), mbufs_for(n * workers), workers=workers, snat=snat_range(n))
    # Measured: the intervals after the warm-up and after the first pass over
    # the capture (the connections' creation) is over.
    def steady(ss):
        return len(ss) > WARMUP and len(ss) >= 2 and ss[-1]["new"] == ss[-2]["new"]

    samples, report, _ = run_ctgate(cfg, name, secs + 1, secs + 300, counts=steady)
    s = []
    for i, x in enumerate(samples):
        if steady(samples[:i + 1]):
            s.append(x)
    pps = [x["pps"] for x in s if x.get("pps")]
    if not pps:
        return {"error": "ctgate forwarded nothing (see raw/%s.log)" % name}
    r = {"mpps": median(pps) / 1e6, "cpp": median(interval_cpp(s)) or None,
         "cpp_stall_free": median(interval_cpp(s, stall_free=True)) or None,
         "stalls": s[-1]["stall_iterations"] - s[0]["stall_iterations"] if len(s) > 1 else 0}
    if report:
        r["tsc_hz"] = report["tsc_hz"]
        c = report["conntrack"]["counters"]
        r["connections"] = report["conntrack"]["connections"]
        r["dropped"] = report["totals"]["dropped"]
        r["new"] = c.get("new", 0)
        ws = report.get("workers", [])
        rx = sum(w["rx"] for w in ws)
        if len(ws) > 1 and rx:
            r["handoff_share"] = sum(w["handoff_out"] for w in ws) / rx
            r["worker_share"] = [w["processed"] / rx for w in ws]
    return r


# ------------------------------------------------------------------ kernel --
KNS, KSINK = "ctbench-kr", "ctbench-ks"
KERNEL_ORIG = {}  # global conntrack settings changed for the run, restored at the end
KERNEL_UDP_TIMEOUT = 600  # seconds, in the benchmark's namespace only
KERNEL_CT_BYTES = 256 + 8 + 128  # nf_conntrack object, hash bucket, NAT extension (about)


def kernel_restore():
    for path, val in KERNEL_ORIG.items():
        try:
            with open(path, "w") as f:
                f.write(val)
        except OSError as e:
            log("kernel: cannot restore %s to %s: %s" % (path, val, e))


def kernel_setup(mode, n):
    kernel_teardown()
    cmds = [
        "ip netns add %s" % KNS, "ip netns add %s" % KSINK,
        "ip link add ctbench-in type veth peer name ctbench-kin",
        "ip link set ctbench-kin netns %s" % KNS,
        "ip link add ctbench-kout type veth peer name ctbench-sink",
        "ip link set ctbench-kout netns %s" % KNS,
        "ip link set ctbench-sink netns %s" % KSINK,
        "ip -n %s link set ctbench-kin address %s" % (KNS, GW_MAC),
        "ip -n %s addr add 192.0.2.1/24 dev ctbench-kin" % KNS,
        "ip -n %s addr add 198.51.100.1/24 dev ctbench-kout" % KNS,
        "ip -n %s link set lo up" % KNS,
        "ip -n %s link set ctbench-kin up" % KNS,
        "ip -n %s link set ctbench-kout up" % KNS,
        "ip link set ctbench-in up",
        "ip -n %s neigh add 198.51.100.10 lladdr %s dev ctbench-kout nud permanent" % (KNS, PEER_MAC),
        "ip netns exec %s sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 "
        "net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.ctbench-kin.rp_filter=0" % KNS,
        # The forwarding work goes to CPU 1 (RPS), the sender stays on CPU 0.
        "ip netns exec %s sh -c 'echo 2 > /sys/class/net/ctbench-kin/queues/rx-0/rps_cpus'" % KNS,
    ]
    for c in cmds:
        sh(c)
    if mode != "routing":
        # The table must hold n connections (global settings: noted and restored).
        size = 1
        while size < n:
            size <<= 1
        for path, val in (("/proc/sys/net/netfilter/nf_conntrack_max", max(2 * n, 262144)),
                          ("/sys/module/nf_conntrack/parameters/hashsize", max(size, 65536))):
            try:
                if path not in KERNEL_ORIG:
                    with open(path) as f:
                        KERNEL_ORIG[path] = f.read().strip()
                with open(path, "w") as f:
                    f.write(str(val))
            except OSError as e:
                log("kernel: cannot set %s: %s" % (path, e))
        # A flow the sender sends faster than the kernel forwards can miss
        # its frame for a while: the namespace's own UDP timeout (gone with
        # it) keeps its connection, so that the table holds all n.
        sh(["ip", "netns", "exec", KNS, "sysctl", "-qw",
            "net.netfilter.nf_conntrack_udp_timeout=%d" % KERNEL_UDP_TIMEOUT])
        rules = ["table inet ctbench {",
                 "  chain bench_forward { type filter hook forward priority 0; policy accept; ct state invalid drop; }",
                 "}"]
        if mode == "snat":
            rules += ["table ip ctbenchnat {",
                      "  chain bench_post { type nat hook postrouting priority 100; "
                      "oifname \"ctbench-kout\" snat to %s; }" % snat_range(n),
                      "}"]
        p = subprocess.run(["ip", "netns", "exec", KNS, "nft", "-f", "-"], input="\n".join(rules),
                           text=True, capture_output=True)
        if p.returncode != 0:
            raise RuntimeError("nft: " + p.stderr.strip())


def kernel_teardown():
    for ns in (KNS, KSINK):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", "ctbench-in"], capture_output=True)


def kernel_snap():
    fwd = 0
    with open("/dev/null") as _:
        out = sh(["ip", "netns", "exec", KNS, "cat", "/proc/net/snmp"])
    rows = [l.split() for l in out.splitlines() if l.startswith("Ip:")]
    fwd = int(rows[1][rows[0].index("ForwDatagrams")])
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu1 "):
                v = [int(x) for x in line.split()[1:]]
                busy = v[2] + v[5] + v[6]  # system irq softirq (not other programs' user time)
                total = sum(v[:8])
    return fwd, busy, total, time.time()


def kernel_conntrack_count():
    out = sh(["ip", "netns", "exec", KNS, "sh", "-c",
              "cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0"], check=False)
    try:
        return int(out.split()[0])
    except (ValueError, IndexError):
        return 0


def kernel_fill(pcap, n, sender):
    """Creates the n connections before the measurement: one pass over the
    capture with RPS off, so that the frames are forwarded on the sender's
    CPU as it sends them (paced by the kernel: none lost at the backlog, as
    when the sender outruns the forwarding CPU). Returns (seconds, count)."""
    rps = "/sys/class/net/ctbench-kin/queues/rx-0/rps_cpus"
    t0 = time.time()
    sh("ip netns exec %s sh -c 'echo 0 > %s'" % (KNS, rps))
    out = sh(["taskset", "-c", "1", sender, "ctbench-in", pcap, str(60 + n // 20000), str(n)], check=False)
    # The backlog drains before RPS goes back to CPU 1.
    time.sleep(0.5)
    sh("ip netns exec %s sh -c 'echo 2 > %s'" % (KNS, rps))
    return time.time() - t0, kernel_conntrack_count(), out.strip()


def kernel_forward(pcap, n, mode, secs, name, sender, tsc_hz):
    if mode != "routing":
        need = n * KERNEL_CT_BYTES + n * 128 + (2 << 30)  # the table, the sender's frames, a margin
        if mem_available() < need:
            return {"error": "not measured: %s connections need about %.1f GiB of memory (table and "
                             "sender, 2 GiB margin), %.1f GiB are available"
                             % (human(n), need / 2 ** 30, mem_available() / 2 ** 30)}
    try:
        kernel_setup(mode, n)
    except (subprocess.CalledProcessError, RuntimeError) as e:
        kernel_teardown()
        return {"error": "set-up failed: %s" % (getattr(e, "output", None) or e)}
    fill = None
    if mode != "routing":
        fill = kernel_fill(pcap, n, sender)
        log("kernel %s: %d connections created in %.1f s" % (mode, fill[1], fill[0]))
    warm = 2 if fill else min(10, max(2, n / 150000))
    p = subprocess.Popen(["taskset", "-c", "0", sender, "ctbench-in", pcap, str(warm + secs + 1)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(warm)
    a = kernel_snap()
    time.sleep(secs)
    b = kernel_snap()
    conns = kernel_conntrack_count() if mode != "routing" else 0
    out = p.communicate()[0]
    with open(os.path.join(RAW, name + ".log"), "w") as f:
        if fill:
            f.write("fill (one pass, RPS off): %s; %d connections after %.1f s\n" % (fill[2], fill[1], fill[0]))
        f.write(out + "\nforwarded %d in %.2f s, cpu1 busy %d of %d ticks, conntrack_count %d\n"
                % (b[0] - a[0], b[3] - a[3], b[1] - a[1], b[2] - a[2], conns))
    kernel_teardown()
    pkts = b[0] - a[0]
    if pkts <= 0:
        return {"error": "the kernel forwarded nothing (raw/%s.log)" % name}
    hz = os.sysconf("SC_CLK_TCK")
    busy_s = (b[1] - a[1]) / hz
    busy_frac = (b[1] - a[1]) / max(1, b[2] - a[2])
    mpps = pkts / (b[3] - a[3]) / 1e6
    # When the sender could not keep the forwarding CPU busy, compare per core:
    # the packets it did forward over the CPU time it spent on them.
    core = mpps / busy_frac if 0 < busy_frac < 0.9 else mpps
    return {"mpps": mpps, "mpps_core": core, "cpp": busy_s * tsc_hz / pkts,
            "busy": busy_frac, "connections": conns}


# --------------------------------------------------------------------- OVS --
class Ovs:
    BIN = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"

    def __init__(self, name="ovs"):
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir, exist_ok=True)
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_DBDIR=self.dir, OVS_LOGDIR=self.dir,
                        OVS_SYSCONFDIR=self.dir)
        self.port_src = None

    def run(self, *args, check=True):
        p = subprocess.run(list(args), env=self.env, text=True, capture_output=True)
        if check and p.returncode != 0:
            raise RuntimeError("%s: %s" % (" ".join(args), p.stderr.strip()))
        return p.stdout

    def ctl(self, *args):
        pid = open(os.path.join(self.dir, "ovs-vswitchd.pid")).read().strip()
        return self.run("ovs-appctl", "-t", os.path.join(self.dir, "ovs-vswitchd-dpdk.%s.ctl" % pid),
                        *args)

    def start(self):
        d = self.dir
        self.run("ovsdb-tool", "create", d + "/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        self.run("ovsdb-server", d + "/conf.db", "--remote=punix:%s/db.sock" % d,
                 "--pidfile=%s/ovsdb-server.pid" % d, "--detach", "--log-file=%s/ovsdb-server.log" % d)
        self.run("ovs-vsctl", "--no-wait", "init")
        self.run("ovs-vsctl", "--no-wait", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                 "other_config:dpdk-socket-mem=1024", "other_config:dpdk-lcore-mask=0x1",
                 "other_config:pmd-cpu-mask=0x2", 'other_config:dpdk-extra="--no-pci --in-memory"')
        self.run(self.BIN, "unix:%s/db.sock" % d, "--pidfile=%s/ovs-vswitchd.pid" % d, "--detach",
                 "--log-file=%s/ovs-vswitchd.log" % d)
        self.run("ovs-vsctl", "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
                 "fail_mode=secure")
        self.run("ovs-vsctl", "add-port", "br0", "sink", "--", "set", "Interface", "sink", "type=dpdk",
                 "options:dpdk-devargs=net_null0,no-rx=1", "ofport_request=2")

    def source(self, pcap, queues=1):
        """The source port: `queues` RX queues, each replaying `pcap`; as many
        PMD threads (CPU 1, then CPU 0)."""
        if self.port_src == (pcap, queues):
            return
        if self.port_src is not None:
            self.run("ovs-vsctl", "del-port", "br0", "src")
            time.sleep(1)
        self.run("ovs-vsctl", "set", "Open_vSwitch", ".",
                 "other_config:pmd-cpu-mask=%s" % ("0x2" if queues == 1 else "0x3"))
        devargs = "net_pcap0,%s,infinite_rx=1" % ",".join(["rx_pcap=%s" % pcap] * queues)
        # Queue i on PMD i (CPU 1, then CPU 0), as ctgate's workers.
        affinity = ",".join("%d:%d" % (q, (q + 1) % 2) for q in range(queues))
        self.run("ovs-vsctl", "add-port", "br0", "src", "--", "set", "Interface", "src", "type=dpdk",
                 "options:dpdk-devargs=%s" % devargs, "options:n_rxq=%d" % queues,
                 "other_config:pmd-rxq-affinity=%s" % affinity, "ofport_request=1")
        self.port_src = (pcap, queues)
        time.sleep(2)

    def flows(self, mode):
        fwd = "dec_ttl,mod_dl_src:%s,mod_dl_dst:%s,output:2" % (OUT_MAC, PEER_MAC)
        if mode == "routing":
            fl = ["table=0,priority=10,ip,in_port=1,actions=" + fwd]
        else:
            nat = ",nat" if mode == "snat" else ""
            commit = "ct(commit,nat(src=%s))" % SNAT_RANGE if mode == "snat" else "ct(commit)"
            fl = ["table=0,priority=10,ip,in_port=1,actions=ct(table=1%s)" % nat,
                  "table=1,priority=10,ct_state=+trk+new,ip,actions=%s,%s" % (commit, fwd),
                  "table=1,priority=10,ct_state=+trk+est,ip,actions=" + fwd]
        path = os.path.join(WORK, "ovs.flows")
        with open(path, "w") as f:
            f.write("\n".join(fl) + "\n")
        self.run("ovs-ofctl", "del-flows", "br0")
        self.ctl("dpctl/flush-conntrack")
        self.run("ovs-ofctl", "add-flows", "br0", path)

    def tx(self):
        out = self.run("ovs-ofctl", "dump-ports", "br0", "2")
        m = re.search(r"tx pkts=(\d+)", out)
        return int(m.group(1)) if m else 0

    def rss_kb(self):
        pid = open(os.path.join(self.dir, "ovs-vswitchd.pid")).read().strip()
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
        return 0

    def measure(self, pcap, n, mode, secs, name, queues=1):
        self.source(pcap, queues)
        rss0 = self.rss_kb()
        self.flows(mode)
        time.sleep(min(10, max(2, n / 300000)))  # first pass: connections created
        self.ctl("dpif-netdev/pmd-stats-clear")
        samples = []
        last = (self.tx(), time.time())
        for _ in range(secs):
            time.sleep(1)
            cur = (self.tx(), time.time())
            samples.append((cur[0] - last[0]) / (cur[1] - last[1]))
            last = cur
        stats = self.ctl("dpif-netdev/pmd-stats-show") + self.ctl("dpif-netdev/pmd-rxq-show")
        conns = 0
        if mode != "routing":
            m = re.search(r"Total: (\d+)", self.ctl("dpctl/ct-stats-show"))
            conns = int(m.group(1)) if m else 0
        with open(os.path.join(RAW, name + ".log"), "w") as f:
            f.write("pps samples %s\n%s\nconnections %d\n" % (samples, stats, conns))
        # Per PMD thread "avg processing cycles per packet: C (cycles/packets)":
        # all threads' cycles over all their packets.
        per_pmd = re.findall(r"avg processing cycles per packet: [\d.]+ \((\d+)/(\d+)\)", stats)
        pkts = sum(int(p) for _, p in per_pmd)
        cpp = sum(int(c) for c, _ in per_pmd) / pkts if pkts else None
        if cpp is None:
            m = re.search(r"avg processing cycles per packet: ([\d.]+)", stats)
            cpp = float(m.group(1)) if m else None
        pps = [x for x in samples if x > 0]
        if not pps:
            return {"error": "OVS forwarded nothing (raw/%s.log)" % name}
        r = {"mpps": median(pps) / 1e6, "cpp": cpp, "connections": conns}
        if conns:
            r["rss_growth_per_conn"] = (self.rss_kb() - rss0) * 1024 / conns
        return r

    def stop(self):
        for prog in ("ovs-vswitchd", "ovsdb-server"):
            pidf = os.path.join(self.dir, prog + ".pid")
            if not os.path.exists(pidf):
                continue
            pid = open(pidf).read().strip()
            name = "ovs-vswitchd-dpdk" if prog == "ovs-vswitchd" else prog
            subprocess.run(["ovs-appctl", "-t", os.path.join(self.dir, "%s.%s.ctl" % (name, pid)), "exit"],
                           env=self.env, capture_output=True)
        time.sleep(1)


# ----------------------------------------------------------------- machine --
def machine(args):
    lscpu = sh("lscpu", check=False)
    model = re.search(r"Model name:\s+(.*)", lscpu)
    m = {
        "date (UTC)": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S"),
        "CPU": model.group(1).strip() if model else "?",
        "cores": str(os.cpu_count()),
        "memory": sh("free -g | awk '/^Mem:/ {print $2 \" GiB\"}'", check=False).strip(),
        "kernel": os.uname().release,
        "DPDK": sh("pkg-config --modversion libdpdk", check=False).strip(),
        "ctgate": sh([CTGATE, "--version"], check=False).strip(),
        "git": sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=False).strip(),
        "OVS": sh("%s --version 2>/dev/null | head -1" % Ovs.BIN, check=False).strip() or "not installed",
        "load average at start": open("/proc/loadavg").read().strip(),
        "hugepages free at start": str(hugepages_free()),
        "TSC": "",
    }
    return m


# --------------------------------------------------------------- main table --
def main_table(args, res, tsc_hz, sender):
    """Per size: testpmd, ctgate's modes, the kernel's, then OVS-DPDK's. Each
    contender runs alone: OVS-DPDK is started for its own cells and stopped
    after them (its PMD thread polls CPU 1 as long as it runs, and its source
    port keeps replaying the capture: left running, it took half of CPU 1
    from every contender measured after it was started)."""
    ovs_bin = os.path.exists(Ovs.BIN)
    for n in args.sizes:
        pcap = capture(n)
        # The DPDK contenders keep the whole capture in hugepages (one
        # mbuf per frame): a size they do not fit in is not measured.
        short = hugepages_short(n)
        if short:
            log("%s flows: %s" % (human(n), short))
        log("%s flows: testpmd macswap" % human(n))
        res["cells"][("testpmd", "routing", n)] = (
            {"error": short} if short else testpmd(pcap, n, args.secs, "testpmd-%d" % n))
        for mode in MODES:
            log("%s flows: ctgate %s" % (human(n), mode))
            res["cells"][("ctgate", mode, n)] = (
                {"error": short} if short else
                ctgate_forward(pcap, n, mode, args.secs, "ctgate-%s-%d" % (mode, n)))
        for mode in MODES:
            if "kernel" in args.skip:
                break
            log("%s flows: kernel %s" % (human(n), mode))
            res["cells"][("kernel", mode, n)] = kernel_forward(pcap, n, mode, args.secs,
                                                               "kernel-%s-%d" % (mode, n), sender, tsc_hz)
        if "ovs" in args.skip:
            continue
        if not ovs_bin:
            for mode in MODES:
                res["cells"][("ovs", mode, n)] = {"error": "openvswitch-switch-dpdk is not installed"}
            continue
        if n > 200000:
            # OVS-DPDK's shared mempool holds 262144 mbufs; the pcap
            # source needs one per frame of the capture.
            for mode in MODES:
                res["cells"][("ovs", mode, n)] = {
                    "error": "not measured: OVS-DPDK's mempool (262144 mbufs) cannot hold a %s-frame "
                             "net_pcap source" % human(n)}
            continue
        ovs = Ovs("ovs-%d" % n)
        try:
            ovs.start()
        except (RuntimeError, OSError) as e:
            ovs.stop()
            for mode in MODES:
                res["cells"][("ovs", mode, n)] = {"error": "OVS-DPDK did not start: %s" % str(e)[:200]}
            continue
        try:
            for mode in MODES:
                log("%s flows: OVS-DPDK %s" % (human(n), mode))
                try:
                    res["cells"][("ovs", mode, n)] = ovs.measure(pcap, n, mode, args.secs,
                                                                 "ovs-%s-%d" % (mode, n))
                except (RuntimeError, OSError) as e:
                    res["cells"][("ovs", mode, n)] = {"error": str(e)[:200]}
        finally:
            ovs.stop()


# ------------------------------------------------------------------ workers --
def workers(args, res):
    """1 and 2 workers (ctgate) / PMD threads (OVS-DPDK) on the same source:
    the 100k-flow capture (the middle of the sizes up to --side-max), one RX queue per worker each
    replaying it. net_pcap has no RSS: ctgate dispatches in software (the
    receiving worker hands each packet to its connection's owner), OVS
    shares one connection table between its PMD threads."""
    sizes = sorted(side_sizes(args))
    n = sizes[len(sizes) // 2]
    pcap = capture(n)
    out = {"flows": n}
    for w in (1, 2):
        for mode in ("conntrack", "snat"):
            log("workers: %s flows, ctgate %s, %d worker(s)" % (human(n), mode, w))
            out[("ctgate", mode, w)] = ctgate_forward(pcap, n, mode, args.secs,
                                                      "ctgate-%s-%dw-%d" % (mode, w, n), workers=w)
    if "ovs" not in args.skip and os.path.exists(Ovs.BIN) and n <= 100000:
        ovs = Ovs("ovs-workers")
        try:
            ovs.start()
            for w in (1, 2):
                for mode in ("conntrack", "snat"):
                    log("workers: %s flows, OVS-DPDK %s, %d PMD thread(s)" % (human(n), mode, w))
                    out[("ovs", mode, w)] = ovs.measure(pcap, n, mode, args.secs,
                                                       "ovs-%s-%dw-%d" % (mode, w, n), queues=w)
        except (RuntimeError, OSError) as e:
            out["ovs_error"] = str(e)[:200]
        finally:
            ovs.stop()
    res["workers"] = out


# ---------------------------------------------------------- new connections --
# Passes per new-connection cell (the median is reported).
NEWCONN_RUNS = 3


def new_connections(args, res):
    """Every packet a new flow: a one-pass capture of F distinct flows (net_pcap
    without infinite_rx reads the file once), into a table of capacity N."""
    sizes = side_sizes(args)
    f = max(sizes) * 2
    pcap = capture(f, first=0)
    log("new connections: testpmd on the one-pass source (%s frames)" % human(f))
    out = {"frames": f}
    # The source's own cost, one pass.
    t = testpmd_onepass(pcap, "testpmd-onepass")
    out["source"] = t
    for n in sizes:
        for mode in ("conntrack", "snat"):
            name = "ctgate-newconn-%s-%d" % (mode, n)
            log("new connections: ctgate %s, table of %s, %s new flows" % (mode, human(n), human(f)))
            cfg = os.path.join(WORK, name + ".toml")
            ctgate_config(cfg, [("in", "net_pcap0,rx_pcap=%s" % pcap, "192.0.2.1/24", GW_MAC),
                                ("out", "net_null0,no-rx=1", "198.51.100.1/24", OUT_MAC)],
                          mode, n, 16383)
            # One pass takes a second or two of work: a burst of load from
            # elsewhere on a shared host moves it by tens of percent, so
            # the cell is the median of NEWCONN_RUNS passes (all kept).
            runs = []
            for k in range(NEWCONN_RUNS):
                samples, report, _ = run_until_idle(cfg, "%s-%d" % (name, k + 1), f)
                if not report:
                    runs.append({"error": "no report (raw/%s-%d.log)" % (name, k + 1)})
                    continue
                tot = report["totals"]
                c = report["conntrack"]["counters"]
                busy_s = tot["busy_cycles"] / report["tsc_hz"]
                runs.append({
                    "packets": tot["rx"], "new": c.get("new", 0), "insert": c.get("insert", 0),
                    "early_drop": c.get("early_drop", 0), "drop": c.get("drop", 0),
                    "insert_failed": c.get("insert_failed", 0), "found": c.get("found", 0),
                    "cps": c.get("insert", 0) / busy_s if busy_s else 0,
                    "cpp": tot["busy_cycles"] / max(1, tot["busy_packets"]),
                    "connections": report["conntrack"]["connections"],
                })
            good = sorted((r for r in runs if "error" not in r), key=lambda r: r["cps"])
            if not good:
                out[(mode, n)] = runs[0]
                continue
            cell = dict(good[len(good) // 2])
            cell["all_cps"] = [r["cps"] for r in good]
            out[(mode, n)] = cell
    res["newconn"] = out


def run_until_idle(cfg, name, frames):
    """ctgate over a one-pass source: stopped after two idle intervals."""
    js = os.path.join(RAW, name + ".json")
    cmd = [CTGATE, "run", "--config", cfg, "--stats-interval", "0.5", "--stats-json", js,
           "--log", "error", "--duration", str(120 + frames // 100000)]
    state = {"last": -1, "idle": 0, "started": False}
    samples = []

    def parse(line):
        m = CT_LINE.search(line)
        if not m:
            return False
        d = dict(zip(CT_KEYS, [float(x) for x in m.groups()]))
        samples.append(d)
        if d["busy_packets"] > 0:
            state["started"] = True
        if state["started"] and d["busy_packets"] == state["last"]:
            state["idle"] += 1
        else:
            state["idle"] = 0
        state["last"] = d["busy_packets"]
        return state["idle"] >= 2

    stream(cmd, 1, parse, 120 + frames // 100000 + 30, name)
    try:
        with open(js) as f:
            report = json.load(f)
    except (OSError, ValueError):
        report = None
    return samples, report, None


def testpmd_onepass(pcap, name):
    cmd = ["dpdk-testpmd", "-l", "0,1", "--in-memory", "--no-pci", "--log-level=*:error",
           "--vdev", "net_pcap0,rx_pcap=%s" % pcap, "--vdev", "net_null0,no-rx=1", "--",
           "--forward-mode=macswap", "--nb-cores=1", "--auto-start", "--stats-period=1",
           "--record-core-cycles", "--no-flush-rx", "--total-num-mbufs=16384"]
    state = {"port": None, "idle": 0, "seen": False}

    def parse(line):
        m = re.search(r"NIC statistics for port (\d)", line)
        if m:
            state["port"] = int(m.group(1))
        m = re.search(r"Tx-pps:\s+(\d+)", line)
        if m and state["port"] == 1:
            v = int(m.group(1))
            if v > 0:
                state["seen"] = True
            elif state["seen"]:
                state["idle"] += 1
                return state["idle"] >= 2
        return False

    text = stream(cmd, 1, parse, 120, name)
    m = re.findall(r"CPU cycles/packet=([\d.]+)", text)
    return {"cpp": float(m[-1]) if m else None}


# ------------------------------------------------------------------ memory --
def rss_of(name_pat):
    """Resident memory: VmRSS plus the hugetlb pages mapped (a large table's
    regions are on them, which VmRSS does not count)."""
    out = sh(["pgrep", "-n", "-f", name_pat], check=False).strip()
    if not out:
        return None
    total, seen = 0, False
    with open("/proc/%s/status" % out.split()[0]) as f:
        for line in f:
            if line.startswith("VmRSS") or line.startswith("HugetlbPages"):
                total += int(line.split()[1]) * 1024
                seen = seen or line.startswith("VmRSS")
    return total if seen else None


def memory(args, res):
    """ctgate: resident memory growth from a table of 1k to a full table of N
    connections, once with UDP flows and once with TCP ones (a TCP
    connection has a state line more; resident memory counts the hugetlb
    pages a large table's regions are on, and the packet pool, alike at
    both sizes, cancels out); the kernel: the nf_conntrack slab object
    plus its hash bucket. Conntrack without NAT (a source NAT connection's
    translation is in its record too; the bench's NAT pool holds fewer
    than 4M), at the largest size whose source the hugepages hold: what
    the process holds apart from the table (huge-page rounding, a few MB)
    is then spread thinnest."""
    out = {}
    n = max(args.sizes)
    if hugepages_short(n):
        n = max(side_sizes(args))
    for proto in ("udp", "tcp"):
        pcap = capture(n, tcp=proto == "tcp")
        rss = {}
        for cap in (1000, n):
            name = "ctgate-memory-%s-%d" % (proto, cap)
            cfg = os.path.join(WORK, name + ".toml")
            ctgate_config(cfg, [("in", "net_pcap0,rx_pcap=%s,infinite_rx=1" % pcap, "192.0.2.1/24", GW_MAC),
                                ("out", "net_null0,no-rx=1", "198.51.100.1/24", OUT_MAC)],
                          "conntrack", cap, mbufs_for(n))
            got = {}

            def on_sample(d, got=got, cap=cap, cfg=cfg):
                if d["connections"] >= min(cap, n) * 0.99 and "rss" not in got:
                    got["rss"] = rss_of("ctgate run --config %s" % cfg)
                    got["conns"] = d["connections"]

            run_ctgate(cfg, name, 4, 120, on_sample=on_sample)
            rss[cap] = got
        if rss[1000].get("rss") and rss[n].get("rss"):
            out["ctgate-" + proto] = {
                "bytes": (rss[n]["rss"] - rss[1000]["rss"]) / (rss[n]["conns"] - rss[1000]["conns"]),
                "how": "%s flows, conntrack: resident memory (VmRSS + HugetlbPages) at %s connections minus "
                       "at %s, per connection"
                       % (proto.upper(), rss[n]["conns"], rss[1000]["conns"])}
    for m in sorted((k for k in res["cells"] if k[0] == "ovs" and k[1] == "conntrack"), key=lambda k: -k[2]):
        r = res["cells"][m]
        if r.get("rss_growth_per_conn", 0) > 0:
            out["ovs"] = {"bytes": r["rss_growth_per_conn"],
                          "how": "ovs-vswitchd VmRSS growth over the conntrack run with %s connections, per "
                                 "connection" % human(m[2])}
            break
    slab = sh("grep '^nf_conntrack ' /proc/slabinfo", check=False).split()
    if len(slab) > 3:
        objsize = int(slab[3])
        out["kernel"] = {"bytes": objsize + 8 * 1.0,
                         "how": "nf_conntrack slab object (%d B, /proc/slabinfo) + one 8-byte hash bucket "
                                "(hashsize = table size)" % objsize}
    else:
        out["kernel"] = {"error": "/proc/slabinfo has no nf_conntrack line"}
    res["memory"] = out


# ------------------------------------------------------------------ attack --
def attack(args, res):
    """A table of capacity C full of flood connections: the flood (C*2
    distinct one-way UDP flows, every packet new) on port atk, beside S steady
    two-way TCP flows (ACKs both ways, picked up mid-stream, ASSURED once the
    reply is seen; requests on port in, replies on port out). The policy:
    new connections only from the inside (in, atk), established both ways,
    so a steady flow that lost its connection loses its replies (policy drops)."""
    cap = max(side_sizes(args))
    steady = max(100, min(10000, cap // 10))
    flood = 2 * cap
    while flood > 100000 and (mbufs_for(flood + 2 * steady) * MBUF_BYTES >> 21) > hugepages_free() - 64:
        flood //= 2
    if flood <= cap:
        cap = flood // 2
    req = capture(steady, first=0, tcp=True)
    rep = capture(steady, first=0, reply=True, mac=OUT_MAC, tcp=True)
    fl = capture(flood, first=steady)
    name = "ctgate-attack"
    cfg = os.path.join(WORK, name + ".toml")
    pol = "\n".join([
        'policy_default = "drop"', "",
        "[[policy]]", 'name = "established"', 'states = "established,related"', 'action = "accept"', "",
        "[[policy]]", 'name = "new-from-inside"', 'in_port = "in"', 'states = "new"', 'action = "accept"', "",
        "[[policy]]", 'name = "new-from-flood"', 'in_port = "atk"', 'states = "new"', 'action = "accept"', ""])
    ports = [("in", "net_pcap0,rx_pcap=%s,infinite_rx=1" % req, "192.0.2.1/24", GW_MAC),
             ("out", "net_pcap1,rx_pcap=%s,infinite_rx=1" % rep, "198.51.100.1/24", OUT_MAC),
             ("atk", "net_pcap2,rx_pcap=%s,infinite_rx=1" % fl, "203.0.113.254/24", GW_MAC)]
    # The [conntrack] table keys go before the policy rules (TOML tables).
    ctgate_config(cfg, ports, "conntrack", cap, mbufs_for(flood + 2 * steady), extra_ct=pol, clients=steady)
    log("attack: table %s, flood of %s distinct flows beside %d steady two-way flows, %d s"
        % (human(cap), human(flood), steady, args.attack_secs))
    samples, report, _ = run_ctgate(cfg, name, int(args.attack_secs / 0.5), args.attack_secs + 300,
                                    interval=0.5)
    out = {"capacity": cap, "flood_flows": flood, "steady_flows": steady, "samples": samples}
    if report:
        t = report["totals"]
        # Port order: in (0), out (1), atk (2). Replies arrive on out and leave by in.
        out["replies_in"] = t["rx_per_port"][1]
        out["replies_forwarded"] = t["tx_per_port"][0]
        out["requests_in"] = t["rx_per_port"][0]
        out["flood_in"] = t["rx_per_port"][2]
        out["counters"] = report["conntrack"]["counters"]
        out["policy"] = report["conntrack"]["policy"]
        out["connections"] = report["conntrack"]["connections"]
        out["drops"] = t["drops"]
    res["attack"] = out


# ---------------------------------------------------------------------- GC --
def gc(args, res):
    """Fill a table with N one-way UDP connections from a one-pass capture,
    then nothing more of them: they expire after udp_timeout (10 s here) and
    the per-worker GC slices reclaim them; a steady 1k-flow stream on another
    port keeps the worker busy so its burst latency can be watched."""
    n = max(side_sizes(args))
    fill = capture(n, first=100000)
    steady = capture(1000, first=0)
    name = "ctgate-gc"
    cfg = os.path.join(WORK, name + ".toml")
    ports = [("in", "net_pcap0,rx_pcap=%s,infinite_rx=1" % steady, "192.0.2.1/24", GW_MAC),
             ("out", "net_null0,no-rx=1", "198.51.100.1/24", OUT_MAC),
             ("fill", "net_pcap1,rx_pcap=%s" % fill, "203.0.113.254/24", GW_MAC)]
    ctgate_config(cfg, ports, "conntrack", n + 4096, mbufs_for(1000),
                  extra_ct="[conntrack.timeouts]\nudp_timeout = 10\nudp_timeout_stream = 10")
    log("gc: %s connections, udp_timeout 10 s, %d s" % (human(n), args.gc_secs))
    samples, report, _ = run_ctgate(cfg, name, int(args.gc_secs / 0.5), args.gc_secs + 300, interval=0.5)
    res["gc"] = {"samples": samples, "connections": n}


# ------------------------------------------------------------------ output --
def fmt(x, spec="%.2f"):
    return "-" if x is None else spec % x


def write_results(args, res, mach):
    cells = res["cells"]
    rows = []
    md = []
    md.append("# ctgate benchmark, %s\n" % mach["date (UTC)"])
    md.append("One run of `sudo scripts/bench.sh` (git %s). 64-byte frames (60 + FCS), one-way UDP, "
              "one forwarding core per contender, %d s measured per cell (per-second medians after %d s "
              "warm-up). Source: `net_pcap,infinite_rx=1` replaying N distinct flows, sink `net_null` "
              "(DPDK contenders); the kernel gets the same capture from an AF_PACKET sender on the "
              "other core (see README, Benchmarks); its table is filled first (one pass over the "
              "capture, forwarded on the sender's CPU so that no frame is lost) and its namespace's UDP "
              "timeout is %d s, so that it holds all N connections while the measured sender, faster "
              "than the kernel, loses frames. SNAT pool: %s, over 1M flows %s (the address is a hash "
              "of the client: 64 addresses cannot hold 4M flows from 240 clients). The DPDK contenders "
              "keep the whole capture in hugepages: a size that does not fit says so. Machine: see "
              "machine.md (2 shared vCPUs: figures move by tens of percent between runs).\n"
              % (mach["git"], args.secs, WARMUP, KERNEL_UDP_TIMEOUT, SNAT_RANGE, SNAT_RANGE_BIG))
    md.append("Cycles/packet: TSC cycles of busy poll iterations over packets (ctgate), testpmd's "
              "`--record-core-cycles`, OVS `avg processing cycles per packet`, and for the kernel the "
              "forwarding CPU's system+softirq time over packets. Ratios are of Mpps, per core. "
              "Stall-free: ctgate's cycles/packet with its poll iterations over 100 us left out "
              "(the vCPU not running; how many in brackets), so that the figure is of the code, not "
              "of the host; the other contenders keep no per-iteration figures to do the same.\n")
    md.append("| flows | mode | contender | Mpps | cycles/packet | stall-free | ratio to testpmd | ctgate / this | connections | note |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        t = cells.get(("testpmd", "routing", n), {})
        for mode in MODES:
            c = cells.get(("ctgate", mode, n), {})
            for who in ("testpmd", "ctgate", "kernel", "ovs"):
                if who == "testpmd" and mode != "routing":
                    continue
                r = cells.get((who, mode, n))
                if r is None:
                    continue
                label = {"testpmd": "testpmd macswap", "ctgate": "ctgate", "kernel": "Linux kernel",
                         "ovs": "OVS-DPDK"}[who]
                if "error" in r:
                    md.append("| %s | %s | %s | - | - | - | - | - | - | %s |" % (human(n), MODE_LABEL[mode], label, r["error"]))
                    rows.append([n, mode, who, "", "", "", "", "", "", r["error"]])
                    continue
                per_core = r.get("mpps_core", r["mpps"])
                rt = per_core / t["mpps"] if t.get("mpps") else None
                rc = c["mpps"] / per_core if c.get("mpps") and who != "ctgate" else None
                note = ""
                if who == "kernel":
                    note = "forwarding CPU %.0f%% busy" % (100 * r["busy"])
                    if per_core != r["mpps"]:
                        note += "; the sender could not saturate it: ratios use its per-core rate, " \
                                "%.2f Mpps (forwarded / CPU time spent)" % per_core
                conns = r.get("connections", "")
                free = "n/a"
                if r.get("cpp_stall_free"):
                    free = "%.0f (%d)" % (r["cpp_stall_free"], r.get("stalls", 0))
                md.append("| %s | %s | %s | %.2f | %s | %s | %s | %s | %s | %s |" % (
                    human(n), MODE_LABEL[mode], label, r["mpps"], fmt(r.get("cpp"), "%.0f"), free,
                    fmt(rt), fmt(rc), conns if conns != "" else "-", note))
                rows.append([n, mode, who, "%.3f" % r["mpps"], fmt(r.get("cpp"), "%.1f"),
                             fmt(r.get("cpp_stall_free"), "%.1f"), fmt(rt, "%.3f"),
                             fmt(rc, "%.3f"), conns, note])
    res["table_md"] = "\n".join(md[3:])
    # Goals.
    md.append("\n## Goals (issue 7), from this run\n")
    md.append("| goal | measured | met |")
    md.append("|---|---|---|")
    big = max(args.sizes)

    def ratio(a, b):
        if a and b and "mpps" in a and "mpps" in b:
            return a["mpps"] / b.get("mpps_core", b["mpps"])
        return None

    # The goals are stated at 1M flows; a larger size run gets its own rows.
    gsizes = sorted(set([GOAL_SIZE if GOAL_SIZE in args.sizes else big, big]))
    goals = []
    for n in gsizes:
        goals.append(("conntrack + SNAT at %s >= 0.4x testpmd macswap" % human(n),
                      ratio(cells.get(("ctgate", "snat", n)), cells.get(("testpmd", "routing", n))), 0.4))
    ovs_goals = []
    for n in gsizes:
        r = ratio(cells.get(("ctgate", "snat", n)), cells.get(("ovs", "snat", n)))
        if r is not None:
            ovs_goals.append(("conntrack + SNAT at %s >= 8x OVS-DPDK" % human(n), r, 8))
    if not ovs_goals:
        ovs_goals.append(("conntrack + SNAT at %s >= 8x OVS-DPDK" % human(gsizes[0]), None, 8))
        # OVS at the goal's size may be missing: report the largest size measured.
        for n in sorted(args.sizes, reverse=True):
            r = ratio(cells.get(("ctgate", "snat", n)), cells.get(("ovs", "snat", n)))
            if r is not None:
                ovs_goals.append(("conntrack + SNAT at %s >= 8x OVS-DPDK (largest size OVS could run)"
                                  % human(n), r, 8))
                break
    goals += ovs_goals
    for n in gsizes:
        goals.append(("conntrack + SNAT at %s >= 20x the kernel" % human(n),
                      ratio(cells.get(("ctgate", "snat", n)), cells.get(("kernel", "snat", n))), 20))
    for n in sorted(set([min(args.sizes)] + gsizes)):
        goals.append(("routing only >= 0.8x testpmd (at %s flows)" % human(n),
                      ratio(cells.get(("ctgate", "routing", n)), cells.get(("testpmd", "routing", n))), 0.8))
    nc = res.get("newconn", {})
    for n in args.sizes:
        v = nc.get(("snat", n), {}).get("cps")
        if v is not None:
            goals.append(("new connections >= 2M/s per core (SNAT, table of %s)" % human(n), v / 1e6, 2))
    mem = res.get("memory", {})
    lows = []
    for proto, want in (("udp", 128), ("tcp", 192)):
        r = mem.get("ctgate-" + proto, {})
        lows.append(("memory per connection with its index (%s) <= %d B" % (proto.upper(), want),
                     r.get("bytes"), want))
    for g, v, want in goals:
        md.append("| %s | %s | %s |" % (g, "-" if v is None else "%.2f" % v,
                                        "not measured" if v is None else ("yes" if v >= want else "**no**")))
    for g, v, want in lows:
        md.append("| %s | %s | %s |" % (g, "-" if v is None else "%.0f" % v,
                                        "not measured" if v is None else ("yes" if v <= want else "**no**")))
    goals += lows
    res["goals_md"] = "\n".join(md[-(len(goals) + 2):])
    # New connections.
    if nc:
        md.append("\n## New connections per second (every packet a new flow)\n")
        md.append("Source: one pass over a capture of %s distinct flows (net_pcap without infinite_rx, so "
                  "the file is read per packet: the source's own cost is in the figures; testpmd macswap "
                  "on the same one-pass source: %s cycles/packet). Table of capacity N: once full, every "
                  "new connection evicts one through early drop. Rate = inserts over the worker's busy time; "
                  "each cell is the median of %d passes (all of them in the last column).\n"
                  % (human(nc.get("frames", 2 * big)), fmt(nc.get("source", {}).get("cpp"), "%.0f"),
                     NEWCONN_RUNS))
        md.append("| table | mode | new connections/s (per core) | cycles/packet | packets | insert | early_drop | drop | insert_failed | found | passes (M/s) |")
        md.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for n in args.sizes:
            for mode in ("conntrack", "snat"):
                r = nc.get((mode, n))
                if not r:
                    continue
                if "error" in r:
                    md.append("| %s | %s | %s |" % (human(n), mode, r["error"]))
                    continue
                md.append("| %s | %s | %.2f M | %.0f | %d | %d | %d | %d | %d | %d | %s |" % (
                    human(n), MODE_LABEL[mode], r["cps"] / 1e6, r["cpp"], r["packets"], r["insert"],
                    r["early_drop"], r["drop"], r["insert_failed"], r["found"],
                    " / ".join("%.2f" % (c / 1e6) for c in r.get("all_cps", [r["cps"]]))))
                rows.append([n, mode, "ctgate-newconn", "", "%.1f" % r["cpp"], "", "", r["connections"],
                             "new connections/s %.0f" % r["cps"]])
    wk = res.get("workers")
    if wk:
        md.append("\n## One and two workers (issue 11)\n")
        md.append("%s flows; one RX queue per worker / PMD thread, each replaying the capture (net_pcap: "
                  "no RSS). **This machine has two vCPUs**: the first worker runs on CPU 1, the second on "
                  "CPU 0, which it shares with the control thread, the source's file reads and the OS, so "
                  "two workers cannot show a clean 2x here; the figures are for comparing the two "
                  "contenders under the same handicap, not for sizing. Mpps: packets out per second, all "
                  "workers together; cycles/packet: busy cycles of all workers over packets received. "
                  "ctgate hands a packet to its connection's owner when another worker received it "
                  "(share in the note).\n" % human(wk["flows"]))
        md.append("| contender | mode | workers | Mpps | cycles/packet | 2 / 1 workers | note |")
        md.append("|---|---|---|---|---|---|---|")
        for who, label in (("ctgate", "ctgate"), ("ovs", "OVS-DPDK")):
            for mode in ("conntrack", "snat"):
                one = wk.get((who, mode, 1), {})
                for w in (1, 2):
                    r = wk.get((who, mode, w))
                    if r is None:
                        continue
                    if "error" in r:
                        md.append("| %s | %s | %d | - | - | - | %s |" % (label, MODE_LABEL[mode], w, r["error"]))
                        continue
                    sp = r["mpps"] / one["mpps"] if w == 2 and one.get("mpps") else None
                    note = ""
                    if r.get("handoff_share") is not None:
                        note = "handed off %.0f%%; per worker %s" % (
                            100 * r["handoff_share"], " / ".join("%.0f%%" % (100 * x) for x in r["worker_share"]))
                    md.append("| %s | %s | %d | %.2f | %s | %s | %s |" % (
                        label, MODE_LABEL[mode], w, r["mpps"], fmt(r.get("cpp"), "%.0f"),
                        fmt(sp), note))
                    rows.append([wk["flows"], mode, "%s-%dw" % (who, w), "%.3f" % r["mpps"],
                                 fmt(r.get("cpp"), "%.1f"), "", "", "", r.get("connections", ""), note])
        if wk.get("ovs_error"):
            md.append("\nOVS-DPDK: %s\n" % wk["ovs_error"])
    mem = res.get("memory")
    if mem:
        md.append("\n## Memory per connection\n")
        md.append("| contender | bytes per connection | how |")
        md.append("|---|---|---|")
        for who, label in (("ctgate-udp", "ctgate (UDP)"), ("ctgate-tcp", "ctgate (TCP)"),
                           ("kernel", "Linux kernel"), ("ovs", "OVS-DPDK")):
            r = mem.get(who)
            if not r:
                continue
            if "error" in r:
                md.append("| %s | - | %s |" % (label, r["error"]))
            else:
                md.append("| %s | %.0f | %s |" % (label, r["bytes"], r["how"]))
    at = res.get("attack")
    if at:
        md.append("\n## Table full under a flood of new flows\n")
        if "counters" in at:
            c = at["counters"]
            kept = at["replies_forwarded"] / at["replies_in"] if at["replies_in"] else None
            pol = dict((k, v) for k, v in at["policy"])
            md.append("Table of %s connections; port `atk` replays %s distinct one-way UDP flows (each "
                      "packet a new, never assured connection once the table has turned over), ports "
                      "`in`/`out` replay %d steady two-way TCP flows (an ACK each way per round, picked up "
                      "mid-stream, ASSURED once the reply is seen). The worker polls the three ports in "
                      "turn, so the flood gets about a third of the core. Policy: established accepted, new "
                      "accepted from the inside only, so a steady flow whose connection was evicted loses "
                      "its replies (policy drops) until its next request recreates it.\n"
                      % (human(at["capacity"]), human(at["flood_flows"]), at["steady_flows"]))
            md.append("| figure | value |")
            md.append("|---|---|")
            md.append("| steady replies received / forwarded | %d / %d |" % (at["replies_in"], at["replies_forwarded"]))
            md.append("| established flows' packets kept | %s |" % ("-" if kept is None else "%.4f%%" % (100 * kept)))
            md.append("| flood packets | %d |" % at["flood_in"])
            for k in ("new", "insert", "early_drop", "insert_failed", "drop", "found", "expired"):
                md.append("| %s | %d |" % (k, c.get(k, 0)))
            md.append("| connections at the end | %d |" % at["connections"])
            md.append("| policy: %s |" % ", ".join("%s %d" % kv for kv in pol.items()))
            md.append("| goal: established keep >= 99%% | %s |" % ("-" if kept is None else ("yes" if kept >= 0.99 else "**no**")))
            md.append("\n![attack](attack.svg)\n")
        else:
            md.append("The attack run produced no report (raw/ctgate-attack.log).\n")
    g = res.get("gc")
    if g and g["samples"]:
        s = g["samples"]
        md.append("\n## GC at scale\n")
        md.append("%s one-way UDP connections from a one-pass capture, udp_timeout 10 s; a steady 1k-flow "
                  "stream keeps the worker busy. Per-interval burst figures: TSC cycles of one busy poll "
                  "iteration (both ports' bursts, the stage, the forwarder, a GC slice when due), from the "
                  "worker's histogram (buckets at most 12.5 %% wide; max is its bucket's upper bound).\n"
                  % human(g["connections"]))
        phases = gc_phases(s)
        md.append("| phase | intervals | connections (start -> end) | expired | burst p50 | burst p99 | burst max |")
        md.append("|---|---|---|---|---|---|---|")
        for ph, ss in phases:
            if not ss:
                continue
            i0 = s.index(ss[0])
            before = s[i0 - 1] if i0 else {"connections": 0, "expired": 0}
            md.append("| %s | %d | %d -> %d | %d | %d | %d | %d |" % (
                ph, len(ss), before["connections"], ss[-1]["connections"], ss[-1]["expired"] - before["expired"],
                median([x["p50"] for x in ss]), median([x["p99"] for x in ss]), max(x["max"] for x in ss)))
        md.append("\n(p50 and p99: medians over the phase's intervals; max: over the phase.)\n")
        md.append("![gc](gc.svg)\n")
    md.append("\nRaw logs: raw/. CSV: results.csv. Machine: machine.md.\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["flows", "mode", "contender", "mpps", "cycles_per_packet",
                    "cycles_per_packet_stall_free", "ratio_to_testpmd", "ctgate_over_this",
                    "connections", "note"])
        w.writerows(rows)
    with open(os.path.join(args.out, "machine.md"), "w") as f:
        f.write("# Machine\n\n| | |\n|---|---|\n")
        for k, v in mach.items():
            f.write("| %s | %s |\n" % (k, v))


def gc_phases(s):
    """Splits the GC run's intervals: filling, full (nothing expired yet),
    draining (connections expiring), drained (only the steady flows left)."""
    phases = {"filling": [], "full": [], "draining": [], "drained": []}
    peak = max(x["connections"] for x in s)
    at_peak = next(i for i, x in enumerate(s) if x["connections"] == peak)
    base = min(x["connections"] for x in s[at_peak:])
    for i, x in enumerate(s):
        grew = i > 0 and x["expired"] > s[i - 1]["expired"]
        if i < at_peak:
            phases["filling"].append(x)
        elif grew:
            phases["draining"].append(x)
        elif x["connections"] <= base + max(10, base // 100):
            phases["drained"].append(x)
        elif not phases["draining"]:
            phases["full"].append(x)
        else:
            phases["draining"].append(x)
    return [("filling", phases["filling"]), ("full, nothing expired", phases["full"]),
            ("draining (GC reclaiming)", phases["draining"]), ("drained (steady flows only)", phases["drained"])]


def main():
    global WORK, RAW
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--sizes", default="1000,100000,1000000,4000000")
    ap.add_argument("--side-max", type=int, default=1000000)
    ap.add_argument("--skip", default="")
    ap.add_argument("--out", default=None)
    ap.add_argument("--attack-secs", type=int, default=20)
    ap.add_argument("--gc-secs", type=int, default=40)
    args = ap.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    args.skip = set(x for x in args.skip.split(",") if x)
    day = datetime.datetime.utcnow().strftime("%Y-%m-%d")
    args.out = args.out or os.path.join(ROOT, "bench", "results", day)
    os.makedirs(args.out, exist_ok=True)
    RAW = os.path.join(args.out, "raw")
    shutil.rmtree(RAW, ignore_errors=True)
    os.makedirs(RAW)
    WORK = sh("mktemp -d /tmp/ctgate-bench.XXXXXX").strip()
    sender = os.path.join(WORK, "bench_send")
    sh(["cc", "-O2", "-o", sender, os.path.join(ROOT, "scripts", "bench_send.c")])
    mach = machine(args)
    res = {"cells": {}}
    # The TSC rate, from a short ctgate run (it reports it).
    try:
        # (On a small capture: it needs few hugepages and loads at once.)
        pcap = capture(1000)
        log("start %s; load %s" % (mach["date (UTC)"], mach["load average at start"]))
        probe = ctgate_forward(pcap, 1000, "routing", 1, "tsc-probe")
        res["tsc_hz"] = probe.get("tsc_hz", 0)
        mach["TSC"] = "%.3f GHz" % (res["tsc_hz"] / 1e9)
        if "main" not in args.skip:
            main_table(args, res, res["tsc_hz"], sender)
        if "workers" not in args.skip:
            workers(args, res)
        if "newconn" not in args.skip:
            new_connections(args, res)
        if "memory" not in args.skip:
            memory(args, res)
        if "attack" not in args.skip:
            attack(args, res)
        if "gc" not in args.skip:
            gc(args, res)
    finally:
        kernel_teardown()
        kernel_restore()
        mach["load average at end"] = open("/proc/loadavg").read().strip()
        mach["date (UTC) at end"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S")
        write_results(args, res, mach)
        bench_plot.plots(args, res, MODES, human)
        shutil.rmtree(WORK, ignore_errors=True)
    print()
    print(res.get("table_md", ""))
    print()
    print(res.get("goals_md", ""))
    print("\nbench: results in %s" % os.path.relpath(args.out, os.getcwd()))


if __name__ == "__main__":
    main()
