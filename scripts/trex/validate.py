#!/usr/bin/env python3
"""Validates the TRex STL profiles of this directory without a TRex box:
builds their streams with the TRex client library (PyPI `trex-stl-lib`),
runs each stream's field engine program (the instructions the TRex server
would run per packet: tuple / flow variables, writes, IPv4 checksum fix) to
produce the packets it would send, writes them to a pcap and replays that
through `ctgate replay` with conntrack + SNAT. Checks: the packets have the
sizes asked for, carry exactly `flows` distinct flows, and ctgate forwards
every one, tracks `flows` connections, finds nothing invalid and translates
every source into the SNAT range.

usage: validate.py --ctgate PATH [--keep DIR]
exit:  0 all good, 1 a check failed, 77 trex_stl_lib is not installed
       (python3 -m venv V && V/bin/pip install trex-stl-lib scapy; run with V/bin/python)
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

try:
    from trex_stl_lib.api import STLProfile
except ImportError:
    print("validate: trex_stl_lib is not installed (pip install trex-stl-lib scapy)", file=sys.stderr)
    sys.exit(77)

SNAT = ("203.0.113.1", "203.0.113.64")
CONFIG = """[conntrack]
max_connections = 200000

[[nat]]
name = "snat"
out_port = "out"
action = "snat to %s-%s"

[[port]]
name = "in"
devargs = "net_null0"
ipv4 = "192.0.2.1/24"

[[port]]
name = "out"
devargs = "net_null1"
ipv4 = "198.51.100.1/24"
""" % SNAT


def csum(b):
    if len(b) % 2:
        b += b"\x00"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


class FieldEngine:
    """The TRex field engine instructions the profiles use, run per packet."""

    def __init__(self, instructions):
        self.ins = instructions
        self.k = 0
        self.vals = {}
        for i in instructions:
            if i["type"] == "flow_var":
                self.vals[i["name"]] = i["init_value"]

    def next(self, base):
        pkt = bytearray(base)
        for i in self.ins:
            t = i["type"]
            if t == "tuple_flow_var":
                # TRex's tuple generator: client addresses first, then ports,
                # wrapping after limit_flows.
                n_ip = i["ip_max"] - i["ip_min"] + 1
                n_port = i["port_max"] - i["port_min"] + 1
                limit = i["limit_flows"] or n_ip * n_port
                k = self.k % limit
                self.vals[i["name"] + ".ip"] = (i["ip_min"] + k % n_ip, 4)
                self.vals[i["name"] + ".port"] = (i["port_min"] + (k // n_ip) % n_port, 2)
            elif t == "flow_var":
                lo, hi, step = i["min_value"], i["max_value"], i.get("step", 1)
                span = hi - lo + 1
                if i["op"] == "inc":
                    v = lo + (i["init_value"] - lo + self.k * step) % span
                elif i["op"] == "dec":
                    v = lo + (i["init_value"] - lo - self.k * step) % span
                else:
                    raise SystemExit("validate: flow_var op %r is not emulated" % i["op"])
                self.vals[i["name"]] = (v, i["size"])
            elif t == "write_flow_var":
                v, size = self.vals[i["name"]]
                v = (v + i["add_value"]) & ((1 << (8 * size)) - 1)
                o = i["pkt_offset"]
                pkt[o:o + size] = v.to_bytes(size, "big" if i["is_big_endian"] else "little")
            elif t == "fix_checksum_ipv4":
                o = i["pkt_offset"]
                ihl = (pkt[o] & 0x0F) * 4
                pkt[o + 10:o + 12] = b"\x00\x00"
                pkt[o + 10:o + 12] = struct.pack("!H", csum(bytes(pkt[o:o + ihl])))
            else:
                raise SystemExit("validate: instruction %r is not emulated" % t)
        self.k += 1
        return bytes(pkt)


def stream_packets(stream, count):
    j = stream.to_json()
    base = stream.get_pkt()
    fe = FieldEngine(j["vm"]["instructions"])
    return [fe.next(base) for _ in range(count)]


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", i // 1000000, i % 1000000, len(fr), len(fr)))
            f.write(fr)


def read_pcap(path):
    out = []
    with open(path, "rb") as f:
        f.read(24)
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            n = struct.unpack("<IIII", h)[2]
            out.append(f.read(n))
    return out


def flow_of(fr):
    ip = fr[14:34]
    return ip[12:16], ip[16:20], ip[9], fr[34:36], fr[36:38]


def check(case, ctgate, work):
    flows, size = case
    profile = STLProfile.load_py(os.path.join(HERE, "ctgate_udp.py"), flows=flows, size=size,
                                 dst_mac="02:00:00:00:00:01")
    streams = profile.get_streams()
    rates = [s.to_json()["mode"]["rate"]["value"] for s in streams]
    top = max(rates)
    per_stream = [stream_packets(s, flows * r // top) for s, r in zip(streams, rates)]
    # Interleave the streams in their rate proportions.
    frames = []
    idx = [0] * len(per_stream)
    while any(i < len(p) for i, p in zip(idx, per_stream)):
        for k, p in enumerate(per_stream):
            if idx[k] < len(p):
                frames.append(p[idx[k]])
                idx[k] += 1
    want_sizes = {64, 594, 1518} if size == "imix" else {int(size)}
    errors = []
    sizes = {len(f) + 4 for f in frames}  # + FCS
    if sizes != want_sizes:
        errors.append("frame sizes %s, wanted %s" % (sorted(sizes), sorted(want_sizes)))
    distinct = len({flow_of(f) for f in frames})
    if distinct != flows:
        errors.append("%d distinct flows, wanted %d" % (distinct, flows))
    for f in frames[:1000]:
        if csum(f[14:34]) != 0:
            errors.append("an IPv4 header checksum is wrong")
            break
    name = "ctgate_udp-%d-%s" % (flows, size)
    pcap = os.path.join(work, name + ".pcap")
    out = os.path.join(work, name + ".out.pcap")
    write_pcap(pcap, frames)
    cfg = os.path.join(work, "snat.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG)
    p = subprocess.run([ctgate, "replay", "-c", cfg, "--out", out, pcap], capture_output=True, text=True)
    if p.returncode != 0:
        errors.append("ctgate replay failed: %s" % p.stderr.strip()[-500:])
    else:
        m = re.search(r"(\d+) packets read, (\d+) forwarded.*?; (\d+) connections", p.stderr)
        inv = re.search(r"invalid=(\d+)", p.stderr)
        if not m or not inv:
            errors.append("unexpected replay summary: %s" % p.stderr.strip()[-500:])
        else:
            read, fwd, conns = map(int, m.groups())
            if read != len(frames) or fwd != len(frames):
                errors.append("replay read %d, forwarded %d of %d packets" % (read, fwd, len(frames)))
            if conns != flows:
                errors.append("replay tracked %d connections, wanted %d" % (conns, flows))
            if int(inv.group(1)) != 0:
                errors.append("replay found %s invalid packets" % inv.group(1))
        outs = read_pcap(out)
        lo, hi = [struct.unpack("!I", bytes(int(x) for x in a.split(".")))[0] for a in SNAT]
        bad = [f for f in outs if not lo <= struct.unpack("!I", f[26:30])[0] <= hi]
        if len(outs) != len(frames) or bad:
            errors.append("translated capture: %d frames, %d outside the SNAT range" % (len(outs), len(bad)))
    print("validate: %-28s %6d packets, %6d flows, sizes %s: %s"
          % (name, len(frames), distinct, sorted(sizes), "ok" if not errors else "; ".join(errors)))
    return not errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctgate", required=True)
    ap.add_argument("--keep", help="keep the captures in this directory")
    a = ap.parse_args()
    cases = [(1000, 64), (70000, 64), (1000, 1518), (3000, "imix")]
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or tmp
        os.makedirs(work, exist_ok=True)
        ok = all([check(c, a.ctgate, work) for c in cases])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
