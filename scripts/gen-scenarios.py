#!/usr/bin/python3
"""gen-scenarios.py — write the synthetic conntrack scenarios to tests/pcaps/scenarios/.

Every file is a classic pcap (microsecond timestamps, link type 1 = Ethernet),
deterministic: fixed MACs, addresses, ports, sequence numbers, IP ids, and
timestamps (1 ms apart from 2023-11-14 22:13:20 UTC; every file lasts well under
2 s, so no timeout and no time-based rule can matter). Addresses are from the
documentation ranges only (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32). Running the script twice gives byte-identical files; the
generated pcaps are committed, so CI needs neither scapy nor this script.

Usage: scripts/gen-scenarios.py [OUTDIR]      (default: tests/pcaps/scenarios)
       scripts/gen-scenarios.py --list        (name and description of each)
Needs python3-scapy (Debian bookworm: 2.5.0).

Conventions: client 192.0.2.10 / 2001:db8:1::10, server 198.51.100.20 /
2001:db8:2::20, routers 203.0.113.x / 2001:db8:3::x; every flow in a file has
its own client port, so each table line comes from one intended flow.
"""
import os
import struct
import sys

import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import (  # noqa: E402
    Ether, Dot1Q, Dot1AD, IP, IPv6, TCP, UDP, ICMP, Raw, GRE, GRE_PPTP,
    ICMPv6EchoRequest, ICMPv6EchoReply, ICMPv6DestUnreach, ICMPv6TimeExceeded,
    ICMPv6PacketTooBig, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting,
    IPv6ExtHdrFragment, fragment, fragment6,
    SCTP, SCTPChunkInit, SCTPChunkInitAck, SCTPChunkParamStateCookie,
    SCTPChunkCookieEcho, SCTPChunkCookieAck, SCTPChunkData, SCTPChunkSACK,
    SCTPChunkShutdown, SCTPChunkShutdownAck, SCTPChunkShutdownComplete,
)

BASE_US = 1_700_000_000 * 1_000_000
MAC_C = "02:00:00:00:00:0a"     # client side
MAC_S = "02:00:00:00:00:14"     # server side
MAC_R = "02:00:00:00:00:fe"     # a router sending ICMP errors

C4, S4, R4 = "192.0.2.10", "198.51.100.20", "203.0.113.1"
C6, S6, R6 = "2001:db8:1::10", "2001:db8:2::20", "2001:db8:3::1"


# ------------------------------------------------------------------ helpers
class Capture:
    def __init__(self, name, desc):
        self.name, self.desc = name, desc
        self.frames = []        # (ts_us, bytes)
        self.t_us = 0

    def raw(self, frame, gap_us=1000):
        self.t_us += gap_us
        self.frames.append((BASE_US + self.t_us, bytes(frame)))

    def add(self, l3, frm="c", tags=(), gap_us=1000):
        """l3: an IP/IPv6 packet (or raw bytes with ethertype given by tags[-1]...)
        frm: 'c' client->server, 's' server->client, 'r' router->client.
        tags: sequence of (tpid, vid), outermost first."""
        src, dst = {"c": (MAC_C, MAC_S), "s": (MAC_S, MAC_C), "r": (MAC_R, MAC_C)}[frm]
        l3b = bytes(l3)
        et = 0x86DD if (l3b[0] >> 4) == 6 else 0x0800
        hdr = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
        for tpid, vid in tags:
            hdr += struct.pack("!HH", tpid, vid)
        hdr += struct.pack("!H", et)
        self.raw(hdr + l3b, gap_us)

    def write(self, outdir):
        path = os.path.join(outdir, self.name + ".pcap")
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for ts, data in self.frames:
                sec, us = divmod(ts, 1_000_000)
                f.write(struct.pack("<IIII", sec, us, len(data), len(data)))
                f.write(data)
        return path


def ip(src, dst, **kw):
    if ":" in src:
        return IPv6(src=src, dst=dst, hlim=64, **kw)
    kw.setdefault("id", 1)
    return IP(src=src, dst=dst, ttl=64, **kw)


class Tcp:
    """One TCP connection; tracks both sides' next sequence numbers."""

    def __init__(self, cap, cport, sport=80, c=C4, s=S4, isn_c=1000, isn_s=500000,
                 tags=(), ext=None):
        self.cap, self.cport, self.sport, self.c, self.s = cap, cport, sport, c, s
        self.nxt = {"c": isn_c, "s": isn_s}
        self.tags, self.ext = tags, ext

    def send(self, frm, flags, data=b"", seq=None, ack=None, advance=True, win=65535,
             l3=None, chksum=None, gap_us=1000):
        other = "s" if frm == "c" else "c"
        if seq is None:
            seq = self.nxt[frm]
        if ack is None:
            ack = self.nxt[other] if "A" in flags else 0
        src, dst = (self.c, self.s) if frm == "c" else (self.s, self.c)
        sp, dp = (self.cport, self.sport) if frm == "c" else (self.sport, self.cport)
        tcp = TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, window=win)
        if chksum is not None:
            tcp.chksum = chksum
        pkt = l3 if l3 is not None else ip(src, dst)
        if self.ext is not None:
            pkt = pkt / self.ext()
        pkt = pkt / tcp
        if data:
            pkt = pkt / Raw(data)
        if advance:
            self.nxt[frm] = seq + len(data) + ("S" in flags) + ("F" in flags)
        self.cap.add(pkt, frm, self.tags, gap_us)
        return pkt

    def handshake(self):
        self.send("c", "S")
        self.send("s", "SA")
        self.send("c", "A")

    def exchange(self, req=b"GET / HTTP/1.0\r\n\r\n", resp=b"HTTP/1.0 200 OK\r\n\r\nhello"):
        self.send("c", "PA", req)
        self.send("s", "A")
        self.send("s", "PA", resp)
        self.send("c", "A")


def bad(pkt, layer):
    """Return pkt with layer's checksum made wrong (by a fixed amount)."""
    field = "cksum" if layer.__name__.startswith("ICMPv6") else "chksum"
    good = getattr(pkt.__class__(bytes(pkt))[layer], field)
    p = pkt.copy()
    setattr(p[layer], field, (good + 0x1111) & 0xFFFF or 0x1111)
    return p


def udp(cap, frm, cport, sport, data, c=C4, s=S4, tags=(), **kw):
    src, dst = (c, s) if frm == "c" else (s, c)
    sp, dp = (cport, sport) if frm == "c" else (sport, cport)
    pkt = ip(src, dst, **kw) / UDP(sport=sp, dport=dp) / Raw(data)
    cap.add(pkt, frm, tags)
    return pkt


# ------------------------------------------------------------------ scenarios
SCENARIOS = []


def scenario(desc):
    def deco(fn):
        SCENARIOS.append((fn.__name__.replace("_", "-"), desc, fn))
        return fn
    return deco


@scenario("TCP handshake, data both ways, client sends FIN first, server FIN, last ACK "
          "(IPv4 port 40001, IPv6 port 40002) -> TIME_WAIT")
def tcp_fin_client_first(cap):
    for port, c, s in ((40001, C4, S4), (40002, C6, S6)):
        t = Tcp(cap, port, c=c, s=s)
        t.handshake()
        t.exchange()
        t.send("c", "FA")
        t.send("s", "A")
        t.send("s", "FA")
        t.send("c", "A")


@scenario("TCP handshake and data, server closes first (FIN), client ACKs, sends more "
          "data on the half-closed connection, then FIN; last ACK (40011); and a second "
          "connection (40012) where the last ACK is missing (LAST_ACK)")
def tcp_fin_server_first(cap):
    t = Tcp(cap, 40011)
    t.handshake()
    t.exchange()
    t.send("s", "FA")
    t.send("c", "A")
    t.send("c", "PA", b"more data after the server's FIN")
    t.send("s", "A")
    t.send("c", "FA")
    t.send("s", "A")
    t = Tcp(cap, 40012)
    t.handshake()
    t.exchange()
    t.send("s", "FA")
    t.send("c", "A")
    t.send("c", "FA")


@scenario("TCP simultaneous close: both FINs cross, then both ACKs (40021)")
def tcp_fin_simultaneous(cap):
    t = Tcp(cap, 40021)
    t.handshake()
    t.exchange()
    fc, fs = t.nxt["c"], t.nxt["s"]
    t.send("c", "FA", seq=fc, ack=fs)
    t.send("s", "FA", seq=fs, ack=fc)
    t.send("c", "A", seq=fc + 1, ack=fs + 1)
    t.send("s", "A", seq=fs + 1, ack=fc + 1)


@scenario("RST after an established exchange: client RST/ACK (40031), server RST without "
          "ACK (40032), IPv6 client RST (40033)")
def tcp_rst_after_handshake(cap):
    for port, frm, flags, c, s in ((40031, "c", "RA", C4, S4), (40032, "s", "R", C4, S4),
                                   (40033, "c", "R", C6, S6)):
        t = Tcp(cap, port, c=c, s=s)
        t.handshake()
        t.exchange()
        t.send(frm, flags, ack=0 if flags == "R" else None)


@scenario("SYN answered by RST/ACK (closed port), IPv4 (40041) and IPv6 (40042); and a "
          "SYN to a closed port that is retried after the RST (40043)")
def tcp_rst_answers_syn(cap):
    for port, c, s in ((40041, C4, S4), (40042, C6, S6)):
        t = Tcp(cap, port, sport=81, c=c, s=s)
        t.send("c", "S")
        t.send("s", "RA", seq=0)
    t = Tcp(cap, 40043, sport=82)
    t.send("c", "S")
    t.send("s", "RA", seq=0)
    t.send("c", "S", seq=1000)


@scenario("TCP simultaneous open: SYN from each side with the same ports, then SYN/ACK "
          "from each side, then ACKs (SYN_SENT2 path) (40051 <-> 40052)")
def tcp_simultaneous_open(cap):
    t = Tcp(cap, 40051, sport=40052, isn_c=7000, isn_s=9000)
    t.send("c", "S")
    t.send("s", "S", ack=0)
    # each side now acknowledges the other's SYN, re-sending its own SYN
    t.send("c", "SA", seq=7000)
    t.send("s", "SA", seq=9000)
    t.send("c", "PA", b"hello from a")
    t.send("s", "A")


@scenario("Out-of-window segments on established connections: data far beyond the "
          "window then normal data (40061); an out-of-window RST that must be ignored "
          "(40062); an out-of-window FIN that must be ignored (40063); an ACK for data "
          "never sent (40064)")
def tcp_out_of_window(cap):
    far = 0x40000000
    t = Tcp(cap, 40061)
    t.handshake()
    t.send("c", "PA", b"x" * 100, seq=t.nxt["c"] + far, advance=False)
    t.exchange()
    t = Tcp(cap, 40062)
    t.handshake()
    t.exchange()
    t.send("s", "R", seq=t.nxt["s"] + far, ack=0, advance=False)
    t = Tcp(cap, 40063)
    t.handshake()
    t.exchange()
    t.send("c", "FA", seq=t.nxt["c"] + far, advance=False)
    t = Tcp(cap, 40064)
    t.handshake()
    t.exchange()
    t.send("s", "A", ack=t.nxt["c"] + far, advance=False)


@scenario("Invalid TCP flag combinations as the first packet of a flow: SYN+FIN (40071), "
          "SYN+RST (40072), no flags (40073), FIN without ACK (40074), FIN+PSH+URG 'xmas' "
          "(40075), SYN+FIN+ACK (40076); and on an established connection: SYN+RST "
          "(40077) and FIN without ACK (40078), which must not change its state")
def tcp_invalid_flags(cap):
    for port, flags in ((40071, "SF"), (40072, "SR"), (40073, ""), (40074, "F"),
                        (40075, "FPU"), (40076, "SFA")):
        t = Tcp(cap, port)
        t.send("c", flags, ack=1 if "A" in flags else 0)
    for port, flags in ((40077, "SR"), (40078, "F")):
        t = Tcp(cap, port)
        t.handshake()
        t.exchange()
        t.send("c", flags, ack=0, advance=False)


@scenario("Mid-stream pickup (no SYN seen): data/ACK both ways (40081); one direction "
          "only (40082); a flow whose first packet is FIN/ACK (40083); one whose first "
          "packet is RST (40084); IPv6 mid-stream both ways (40085)")
def tcp_midstream(cap):
    t = Tcp(cap, 40081, isn_c=123456, isn_s=654321)
    t.send("c", "PA", b"middle of a request")
    t.send("s", "A")
    t.send("s", "PA", b"middle of a response")
    t.send("c", "A")
    t = Tcp(cap, 40082, isn_c=223456, isn_s=754321)
    t.send("c", "PA", b"one way 1")
    t.send("c", "PA", b"one way 2")
    t = Tcp(cap, 40083, isn_c=323456, isn_s=854321)
    t.send("c", "FA")
    t = Tcp(cap, 40084, isn_c=423456, isn_s=954321)
    t.send("c", "R")
    t = Tcp(cap, 40085, c=C6, s=S6, isn_c=523456, isn_s=1054321)
    t.send("c", "PA", b"v6 middle")
    t.send("s", "PA", b"v6 answer")
    t.send("c", "A")


@scenario("Half-open connections: SYN only (40091), SYN + SYN/ACK only (40092), "
          "SYN + SYN/ACK + ACK without data (40093), IPv6 SYN only (40094)")
def tcp_half_open(cap):
    Tcp(cap, 40091).send("c", "S")
    t = Tcp(cap, 40092)
    t.send("c", "S")
    t.send("s", "SA")
    Tcp(cap, 40093).handshake()
    Tcp(cap, 40094, c=C6, s=S6).send("c", "S")


@scenario("TIME_WAIT reuse: a connection closed normally (TIME_WAIT), then a new SYN on "
          "the same 5-tuple with a higher ISN, answered and established (40101)")
def tcp_time_wait_reuse(cap):
    t = Tcp(cap, 40101)
    t.handshake()
    t.exchange()
    t.send("c", "FA")
    t.send("s", "FA")
    t.send("c", "A")
    t.send("s", "A")
    t2 = Tcp(cap, 40101, isn_c=t.nxt["c"] + 100000, isn_s=900000)
    t2.handshake()
    t2.exchange(b"second request", b"second response")


@scenario("Retransmitted SYNs: SYN sent 3 times then answered, SYN/ACK retransmitted, "
          "handshake completes (40111); SYN sent 4 times, never answered (40112); SYN "
          "retried with a different ISN after no answer, then answered (40113)")
def tcp_syn_retransmit(cap):
    t = Tcp(cap, 40111)
    for _ in range(3):
        t.send("c", "S", seq=1000)
    t.send("s", "SA", seq=500000)
    t.send("s", "SA", seq=500000)
    t.send("c", "A")
    t.exchange()
    t = Tcp(cap, 40112)
    for _ in range(4):
        t.send("c", "S", seq=1000)
    t = Tcp(cap, 40113)
    t.send("c", "S", seq=1000)
    t.nxt["c"] = 77000
    t.send("c", "S")
    t.send("s", "SA")
    t.send("c", "A")


@scenario("SYN flood: 500 SYNs from 203.0.113.1-250 (source ports 40000 and 40001) to "
          "198.51.100.80:80; the server answers the first 10 with SYN/ACK; one legitimate "
          "client (192.0.2.10:40121) completes a handshake in the middle")
def tcp_syn_flood(cap):
    srv = "198.51.100.80"
    n = 0
    for port in (40000, 40001):
        for host in range(1, 251):
            t = Tcp(cap, port, c=f"203.0.113.{host}", s=srv, isn_c=host * 1000 + port,
                    isn_s=1000000 + host)
            t.send("c", "S", gap_us=100)
            if n < 10:
                t.send("s", "SA", gap_us=100)
            n += 1
            if n == 250:
                good = Tcp(cap, 40121, s=srv)
                good.handshake()
                good.exchange()


@scenario("ICMP echo: ids 1, 2 and 3 with 3 request/reply pairs each; id 4 requests "
          "never answered; id 5 answered only by a reply with the wrong id")
def icmp_echo_ids(cap):
    for ident in (1, 2, 3):
        for seq in range(1, 4):
            cap.add(ip(C4, S4) / ICMP(type=8, id=ident, seq=seq) / Raw(b"ping" * 8), "c")
            cap.add(ip(S4, C4) / ICMP(type=0, id=ident, seq=seq) / Raw(b"ping" * 8), "s")
    for seq in range(1, 3):
        cap.add(ip(C4, S4) / ICMP(type=8, id=4, seq=seq) / Raw(b"lost" * 8), "c")
    cap.add(ip(C4, S4) / ICMP(type=8, id=5, seq=1) / Raw(b"ping"), "c")
    cap.add(ip(S4, C4) / ICMP(type=0, id=6, seq=1) / Raw(b"ping"), "s")


@scenario("ICMPv6 echo: ids 1, 2 and 3 with 3 request/reply pairs each; id 4 requests "
          "never answered; an echo reply that matches no request (id 6)")
def icmpv6_echo_ids(cap):
    for ident in (1, 2, 3):
        for seq in range(1, 4):
            cap.add(ip(C6, S6) / ICMPv6EchoRequest(id=ident, seq=seq, data=b"ping" * 8), "c")
            cap.add(ip(S6, C6) / ICMPv6EchoReply(id=ident, seq=seq, data=b"ping" * 8), "s")
    for seq in range(1, 3):
        cap.add(ip(C6, S6) / ICMPv6EchoRequest(id=4, seq=seq, data=b"lost"), "c")
    cap.add(ip(S6, C6) / ICMPv6EchoReply(id=6, seq=1, data=b"ping"), "s")


@scenario("ICMP errors: port unreachable from the server quoting an existing UDP flow "
          "(50001->53); port unreachable quoting a UDP flow never seen (50002->53); "
          "time exceeded from a router quoting the SYN of an existing TCP flow (40131); "
          "frag-needed quoting data of an established TCP flow (40132); an ICMP error "
          "quoting an ICMP echo request that exists (id 7)")
def icmp_errors(cap):
    q = udp(cap, "c", 50001, 53, b"query one")
    cap.add(ip(S4, C4) / ICMP(type=3, code=3) / Raw(bytes(q)), "s")
    ghost = ip(C4, S4) / UDP(sport=50002, dport=53) / Raw(b"never seen")
    cap.add(ip(S4, C4) / ICMP(type=3, code=3) / Raw(bytes(ghost)), "s")
    t = Tcp(cap, 40131, sport=443)
    syn = t.send("c", "S")
    cap.add(ip(R4, C4) / ICMP(type=11, code=0) / Raw(bytes(syn)[:28]), "r")
    t = Tcp(cap, 40132)
    t.handshake()
    data = t.send("c", "PA", b"d" * 200)
    cap.add(ip(R4, C4) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(bytes(data)[:48]), "r")
    echo = ip(C4, S4) / ICMP(type=8, id=7, seq=1) / Raw(b"ping")
    cap.add(echo, "c")
    cap.add(ip(R4, C4) / ICMP(type=3, code=1) / Raw(bytes(echo)), "r")


@scenario("ICMPv6 errors: port unreachable quoting an existing UDP flow (50011->53); "
          "destination unreachable quoting a UDP flow never seen (50012->53); time "
          "exceeded from a router quoting a TCP SYN that exists (40141); packet too big "
          "quoting data of an established TCP flow (40142)")
def icmpv6_errors(cap):
    q = udp(cap, "c", 50011, 53, b"query one", c=C6, s=S6)
    cap.add(ip(S6, C6) / ICMPv6DestUnreach(code=4) / Raw(bytes(q)), "s")
    ghost = ip(C6, S6) / UDP(sport=50012, dport=53) / Raw(b"never seen")
    cap.add(ip(S6, C6) / ICMPv6DestUnreach(code=4) / Raw(bytes(ghost)), "s")
    t = Tcp(cap, 40141, sport=443, c=C6, s=S6)
    syn = t.send("c", "S")
    cap.add(ip(R6, C6) / ICMPv6TimeExceeded(code=0) / Raw(bytes(syn)), "r")
    t = Tcp(cap, 40142, c=C6, s=S6)
    t.handshake()
    data = t.send("c", "PA", b"d" * 200)
    cap.add(ip(R6, C6) / ICMPv6PacketTooBig(mtu=1280) / Raw(bytes(data)), "r")


def frags4(pkt, size):
    return [IP(bytes(f)) for f in fragment(pkt, fragsize=size)]


@scenario("IPv4 fragments, complete sets in order: a 3000-byte UDP datagram in 3 "
          "fragments (50021->5000) answered by an unfragmented reply; an ICMP echo "
          "request of 2000 bytes in 2 fragments (id 21) with a fragmented reply")
def ipv4_frag_in_order(cap):
    req = ip(C4, S4, id=0x2101) / UDP(sport=50021, dport=5000) / Raw(bytes(range(250)) * 12)
    for f in frags4(req, 1200):
        cap.add(f, "c")
    udp(cap, "s", 50021, 5000, b"got it", id=0x2102)
    ping = ip(C4, S4, id=0x2103) / ICMP(type=8, id=21, seq=1) / Raw(b"p" * 2000)
    for f in frags4(ping, 1480):
        cap.add(f, "c")
    pong = ip(S4, C4, id=0x2104) / ICMP(type=0, id=21, seq=1) / Raw(b"p" * 2000)
    for f in frags4(pong, 1480):
        cap.add(f, "s")


@scenario("IPv4 fragments, complete sets out of order: UDP datagram with the fragments "
          "sent last-first (50031->5000), reply unfragmented; ICMP echo request sent as "
          "middle, last, first (id 31), reply unfragmented")
def ipv4_frag_out_of_order(cap):
    req = ip(C4, S4, id=0x3101) / UDP(sport=50031, dport=5000) / Raw(bytes(range(250)) * 12)
    for f in reversed(frags4(req, 1200)):
        cap.add(f, "c")
    udp(cap, "s", 50031, 5000, b"got it", id=0x3102)
    ping = ip(C4, S4, id=0x3103) / ICMP(type=8, id=31, seq=1) / Raw(b"q" * 2500)
    fr = frags4(ping, 1000)
    for i in (1, 2, 0):
        cap.add(fr[i], "c")
    cap.add(ip(S4, C4, id=0x3104) / ICMP(type=0, id=31, seq=1) / Raw(b"q" * 2500), "s")


@scenario("IPv4 incomplete fragment sets (nothing may be created): UDP datagram missing "
          "its middle fragment (50041->5000); UDP datagram missing its first fragment "
          "(50042->5000); ICMP echo missing its last fragment (id 41); and one complete "
          "UDP set for contrast (50043->5000)")
def ipv4_frag_incomplete(cap):
    base = Raw(bytes(range(250)) * 12)
    a = frags4(ip(C4, S4, id=0x4101) / UDP(sport=50041, dport=5000) / base, 1200)
    cap.add(a[0], "c")
    cap.add(a[2], "c")
    b = frags4(ip(C4, S4, id=0x4102) / UDP(sport=50042, dport=5000) / base, 1200)
    cap.add(b[1], "c")
    cap.add(b[2], "c")
    c = frags4(ip(C4, S4, id=0x4103) / ICMP(type=8, id=41, seq=1) / Raw(b"r" * 2000), 1480)
    cap.add(c[0], "c")
    d = frags4(ip(C4, S4, id=0x4104) / UDP(sport=50043, dport=5000) / base, 1200)
    for f in d:
        cap.add(f, "c")


def frags6(src, dst, ident, upper, size):
    pkt = ip(src, dst) / IPv6ExtHdrFragment(id=ident) / upper
    return [IPv6(bytes(f)) for f in fragment6(pkt, size)]


@scenario("IPv6 fragments, complete sets: UDP datagram in 3 fragments in order "
          "(50051->5000) with an unfragmented reply; ICMPv6 echo request in 2 fragments "
          "sent out of order (id 51) with a fragmented reply in order")
def ipv6_frag_complete(cap):
    for f in frags6(C6, S6, 0x51, UDP(sport=50051, dport=5000) / Raw(bytes(range(250)) * 12),
                    1280):
        cap.add(f, "c")
    udp(cap, "s", 50051, 5000, b"got it", c=C6, s=S6)
    fr = frags6(C6, S6, 0x52, ICMPv6EchoRequest(id=51, seq=1, data=b"e" * 2000), 1280)
    for f in reversed(fr):
        cap.add(f, "c")
    for f in frags6(S6, C6, 0x53, ICMPv6EchoReply(id=51, seq=1, data=b"e" * 2000), 1280):
        cap.add(f, "s")


@scenario("IPv6 incomplete fragment sets (nothing may be created): UDP missing the middle "
          "fragment (50061->5000), UDP first fragment only (50062->5000), ICMPv6 echo last "
          "fragment only (id 61); one complete UDP set for contrast (50063->5000)")
def ipv6_frag_incomplete(cap):
    payload = Raw(bytes(range(250)) * 12)
    a = frags6(C6, S6, 0x61, UDP(sport=50061, dport=5000) / payload, 1280)
    cap.add(a[0], "c")
    cap.add(a[2], "c")
    b = frags6(C6, S6, 0x62, UDP(sport=50062, dport=5000) / payload, 1280)
    cap.add(b[0], "c")
    c = frags6(C6, S6, 0x63, ICMPv6EchoRequest(id=61, seq=1, data=b"e" * 2000), 1280)
    cap.add(c[-1], "c")
    for f in frags6(C6, S6, 0x64, UDP(sport=50063, dport=5000) / payload, 1280):
        cap.add(f, "c")


def cut4(pkt, ranges):
    """IPv4 fragments of `pkt` cut by hand: (offset, length, more) each, in
    the order given (overlaps and repeats allowed; zeros past the end)."""
    data = bytes(pkt[IP].payload) + bytes(64)
    out = []
    for off, n, more in ranges:
        out.append(IP(src=pkt[IP].src, dst=pkt[IP].dst, ttl=64, id=pkt[IP].id,
                      proto=pkt[IP].proto, flags="MF" if more else 0, frag=off // 8)
                   / Raw(data[off:off + n]))
    return out


def cut6(src, dst, ident, upper, ranges, before=None):
    """IPv6 fragments of `upper` cut by hand, as `cut4`; `before`: an
    extension header the fragmentable part starts with."""
    whole = ip(src, dst) / (before / upper if before is not None else upper)
    data = bytes(whole)[40:]
    nh = whole[IPv6].nh
    return [ip(src, dst) / IPv6ExtHdrFragment(nh=nh, offset=off // 8, m=int(more), id=ident)
            / Raw(data[off:off + n]) for off, n, more in ranges]


@scenario("IPv4 overlapping and duplicated fragments (RFC 5722 as Linux applies it to "
          "IPv4 too): a UDP datagram whose second fragment overlaps the first by 8 bytes "
          "(50171->5000: the set is discarded, nothing created, its last fragment starts a "
          "set that never completes); a set with its middle fragment sent twice "
          "(50172->5000: the duplicate is dropped, the datagram completes); a set where a "
          "fragment lies inside one already held (50173->5000: a duplicate too); a set "
          "whose third fragment spans two runs held (50174->5000: overlap)")
def ipv4_frag_overlap(cap):
    body = Raw(bytes(range(250)) * 8)
    a = ip(C4, S4, id=0x7101) / UDP(sport=50171, dport=5000) / body
    for f in cut4(a, [(0, 1000, True), (992, 1000, True), (1992, 16, False)]):
        cap.add(f, "c")
    b = ip(C4, S4, id=0x7102) / UDP(sport=50172, dport=5000) / body
    for f in cut4(b, [(0, 800, True), (800, 800, True), (800, 800, True), (1600, 408, False)]):
        cap.add(f, "c")
    udp(cap, "s", 50172, 5000, b"got b", id=0x7103)
    c = ip(C4, S4, id=0x7104) / UDP(sport=50173, dport=5000) / body
    for f in cut4(c, [(0, 1600, True), (800, 400, True), (1600, 408, False)]):
        cap.add(f, "c")
    udp(cap, "s", 50173, 5000, b"got c", id=0x7105)
    d = ip(C4, S4, id=0x7106) / UDP(sport=50174, dport=5000) / body
    for f in cut4(d, [(0, 400, True), (800, 400, True), (400, 400, True), (0, 800, True),
                      (1200, 808, False)]):
        cap.add(f, "c")


@scenario("IPv4 tiny first fragments: a TCP SYN whose first fragment holds only 8 bytes of "
          "its header (40175->80), answered and acknowledged unfragmented; a UDP datagram "
          "whose first fragment is its 8-byte header alone (50175->5000); the kernel "
          "tracks both from the reassembled datagrams")
def ipv4_frag_tiny_first(cap):
    syn = ip(C4, S4, id=0x7501) / TCP(sport=40175, dport=80, flags="S", seq=1000,
                                      window=65535, options=[("MSS", 1460)])
    for f in cut4(syn, [(0, 8, True), (8, 16, False)]):
        cap.add(f, "c")
    cap.add(ip(S4, C4, id=0x7502) / TCP(sport=80, dport=40175, flags="SA", seq=500000,
                                        ack=1001, window=65535), "s")
    cap.add(ip(C4, S4, id=0x7503) / TCP(sport=40175, dport=80, flags="A", seq=1001,
                                        ack=500001, window=65535), "c")
    u = ip(C4, S4, id=0x7504) / UDP(sport=50175, dport=5000) / Raw(b"t" * 600)
    for f in cut4(u, [(0, 8, True), (8, 600, False)]):
        cap.add(f, "c")
    udp(cap, "s", 50175, 5000, b"got tiny", id=0x7505)


@scenario("IPv4 corrupt fragment sets, dropped whole by ip_frag_queue: a second last "
          "fragment ending elsewhere (50176->5000); data beyond the end a last fragment "
          "set (50177->5000); then the complete sets of the same datagrams' ids never "
          "come, and a clean set completes (50178->5000)")
def ipv4_frag_corrupt(cap):
    body = Raw(bytes(range(200)) * 6)
    a = ip(C4, S4, id=0x7601) / UDP(sport=50176, dport=5000) / body
    for f in cut4(a, [(0, 600, True), (1000, 208, False), (1000, 200, False), (600, 400, True)]):
        cap.add(f, "c")
    b = ip(C4, S4, id=0x7602) / UDP(sport=50177, dport=5000) / body
    for f in cut4(b, [(600, 608, False), (1208, 16, True), (0, 600, True)]):
        cap.add(f, "c")
    c = ip(C4, S4, id=0x7603) / UDP(sport=50178, dport=5000) / body
    for f in cut4(c, [(600, 608, False), (0, 600, True)]):
        cap.add(f, "c")
    udp(cap, "s", 50178, 5000, b"got c", id=0x7604)


@scenario("IPv6 overlapping, duplicated and out-of-order fragments: overlap by 8 bytes "
          "(50181->5000: discarded); the middle fragment twice, last-first order "
          "(50182->5000: completes); an atomic fragment (offset 0, no more; 50183->5000: a "
          "datagram by itself); a first fragment that ends inside the TCP header after a "
          "destination options header (40184->80, RFC 7112: passed unreassembled, INVALID, "
          "its datagram never completes)")
def ipv6_frag_overlap(cap):
    body = Raw(bytes(range(250)) * 8)
    for f in cut6(C6, S6, 0x81, UDP(sport=50181, dport=5000) / body,
                  [(0, 1000, True), (992, 1000, True), (1992, 16, False)]):
        cap.add(f, "c")
    fr = cut6(C6, S6, 0x82, UDP(sport=50182, dport=5000) / body,
              [(0, 800, True), (800, 800, True), (1600, 408, False)])
    for f in (fr[2], fr[1], fr[1], fr[0]):
        cap.add(f, "c")
    udp(cap, "s", 50182, 5000, b"got it", c=C6, s=S6)
    for f in cut6(C6, S6, 0x83, UDP(sport=50183, dport=5000) / Raw(b"atomic"), [(0, 14, False)]):
        cap.add(f, "c")
    udp(cap, "s", 50183, 5000, b"atomic too", c=C6, s=S6)
    syn = TCP(sport=40184, dport=80, flags="S", seq=1000, window=65535)
    for f in cut6(C6, S6, 0x84, syn, [(0, 16, True), (16, 12, False)],
                  before=IPv6ExtHdrDestOpt()):
        cap.add(f, "c")


@scenario("802.1Q: TCP connection with FIN teardown in VLAN 100 (40151); UDP request/reply "
          "in VLAN 200 (50071->53); the same UDP 5-tuple (50072->53) in VLAN 100 and in "
          "VLAN 200 (one connection when tags are ignored); priority-tagged (VID 0) ICMP "
          "echo (id 71)")
def vlan_8021q(cap):
    v100, v200, v0 = ((0x8100, 100),), ((0x8100, 200),), ((0x8100, 0),)
    t = Tcp(cap, 40151, tags=v100)
    t.handshake()
    t.exchange()
    t.send("c", "FA")
    t.send("s", "FA")
    t.send("c", "A")
    udp(cap, "c", 50071, 53, b"q", tags=v200)
    udp(cap, "s", 50071, 53, b"a", tags=v200)
    udp(cap, "c", 50072, 53, b"q in 100", tags=v100)
    udp(cap, "c", 50072, 53, b"q in 200", tags=v200)
    udp(cap, "s", 50072, 53, b"a in 200", tags=v200)
    cap.add(ip(C4, S4) / ICMP(type=8, id=71, seq=1), "c", v0)
    cap.add(ip(S4, C4) / ICMP(type=0, id=71, seq=1), "s", v0)


@scenario("QinQ: TCP connection (40161) under 802.1ad outer tag 300 + 802.1Q inner tag 10; "
          "ICMP echo (id 81) under two 802.1Q tags 20/30; IPv6 UDP (50081->53) under "
          "802.1ad 300 / 802.1Q 11")
def vlan_qinq(cap):
    qq = ((0x88A8, 300), (0x8100, 10))
    t = Tcp(cap, 40161, tags=qq)
    t.handshake()
    t.exchange()
    t.send("c", "FA")
    t.send("s", "FA")
    t.send("c", "A")
    dq = ((0x8100, 20), (0x8100, 30))
    cap.add(ip(C4, S4) / ICMP(type=8, id=81, seq=1), "c", dq)
    cap.add(ip(S4, C4) / ICMP(type=0, id=81, seq=1), "s", dq)
    q6 = ((0x88A8, 300), (0x8100, 11))
    udp(cap, "c", 50081, 53, b"q", c=C6, s=S6, tags=q6)
    udp(cap, "s", 50081, 53, b"a", c=C6, s=S6, tags=q6)


@scenario("IPv6 extension headers before the transport header: TCP connection with "
          "hop-by-hop options on every packet (40171); UDP request/reply with destination "
          "options (50091->53); TCP connection with hop-by-hop + destination options + "
          "routing header (type 0, segments left 0) (40172)")
def ipv6_ext_headers(cap):
    t = Tcp(cap, 40171, c=C6, s=S6, ext=lambda: IPv6ExtHdrHopByHop())
    t.handshake()
    t.exchange()
    for frm, data in (("c", b"q"), ("s", b"a")):
        src, dst = (C6, S6) if frm == "c" else (S6, C6)
        sp, dp = (50091, 53) if frm == "c" else (53, 50091)
        cap.add(ip(src, dst) / IPv6ExtHdrDestOpt() / UDP(sport=sp, dport=dp) / Raw(data), frm)
    t = Tcp(cap, 40172, c=C6, s=S6,
            ext=lambda: IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrRouting(type=0, segleft=0, addresses=[]))
    t.handshake()
    t.exchange()


@scenario("Bad layer-4 checksums (each on a flow of its own, nothing else on it unless "
          "said): TCP SYN (40181); UDP IPv4 (50101); ICMP echo (id 101); TCP RST with a bad "
          "checksum on an established connection, which must stay ESTABLISHED (40182); "
          "UDP IPv6 (50102); ICMPv6 echo (id 102); UDP IPv4 with checksum 0 = none, valid "
          "(50103); UDP IPv6 with checksum 0 (50104; illegal in IPv6, RFC 8200)")
def bad_checksums(cap):
    cap.add(bad(ip(C4, S4) / TCP(sport=40181, dport=80, flags="S", seq=1000), TCP), "c")
    cap.add(bad(ip(C4, S4) / UDP(sport=50101, dport=53) / Raw(b"q"), UDP), "c")
    cap.add(bad(ip(C4, S4) / ICMP(type=8, id=101, seq=1) / Raw(b"p"), ICMP), "c")
    t = Tcp(cap, 40182)
    t.handshake()
    t.exchange()
    rst = ip(S4, C4) / TCP(sport=80, dport=40182, flags="R", seq=t.nxt["s"], window=0)
    cap.add(bad(rst, TCP), "s")
    cap.add(bad(ip(C6, S6) / UDP(sport=50102, dport=53) / Raw(b"q"), UDP), "c")
    cap.add(bad(ip(C6, S6) / ICMPv6EchoRequest(id=102, seq=1, data=b"p"),
                ICMPv6EchoRequest), "c")
    cap.add(ip(C4, S4) / UDP(sport=50103, dport=53, chksum=0) / Raw(b"q"), "c")
    cap.add(ip(C6, S6) / UDP(sport=50104, dport=53, chksum=0) / Raw(b"q"), "c")


@scenario("Bad IPv4 header checksum (dropped before conntrack): UDP 50111->53 and a TCP "
          "SYN 40191->80 with a wrong header checksum; the same UDP flow's reply with a "
          "good checksum (creates the entry in reverse); UDP 50112->53 fully good")
def bad_ipv4_header_checksum(cap):
    cap.add(bad(ip(C4, S4) / UDP(sport=50111, dport=53) / Raw(b"q"), IP), "c")
    cap.add(bad(ip(C4, S4) / TCP(sport=40191, dport=80, flags="S", seq=1000), IP), "c")
    udp(cap, "s", 50111, 53, b"a")
    udp(cap, "c", 50112, 53, b"q")
    udp(cap, "s", 50112, 53, b"a")


@scenario("Truncated/malformed headers: IPv4 with a 10-byte TCP header (40201), 4-byte "
          "UDP header (50121), 2-byte ICMP header; TCP data offset 4 (40202) and 15 with "
          "no options present (40203); IPv4 total length larger than the frame (UDP "
          "50122); IPv6 with a 10-byte TCP header (40204) and IPv6 payload length larger "
          "than the frame (UDP 50123); one good UDP flow for contrast (50124)")
def truncated_headers(cap):
    tcp = bytes(TCP(sport=40201, dport=80, flags="S", seq=1000))
    cap.add(ip(C4, S4, proto=6) / Raw(tcp[:10]), "c")
    cap.add(ip(C4, S4, proto=17) / Raw(bytes(UDP(sport=50121, dport=53))[:4]), "c")
    cap.add(ip(C4, S4, proto=1) / Raw(b"\x08\x00"), "c")
    cap.add(ip(C4, S4) / TCP(sport=40202, dport=80, flags="S", seq=1000, dataofs=4), "c")
    cap.add(ip(C4, S4) / TCP(sport=40203, dport=80, flags="S", seq=1000, dataofs=15), "c")
    cap.add(ip(C4, S4, len=200) / UDP(sport=50122, dport=53, len=180) / Raw(b"q"), "c")
    tcp6 = bytes(TCP(sport=40204, dport=80, flags="S", seq=1000))
    cap.add(ip(C6, S6, nh=6) / Raw(tcp6[:10]), "c")
    cap.add(ip(C6, S6, plen=200) / UDP(sport=50123, dport=53, len=192) / Raw(b"q"), "c")
    udp(cap, "c", 50124, 53, b"q")


@scenario("UDP request/reply: 3 queries and answers on one 5-tuple (50131->53); a single "
          "exchange on 4 other source ports (50132-50135); IPv6 request/reply "
          "(50136->123); a reply from a different server port (TFTP style, 50137->69, "
          "answered from 51000)")
def udp_request_reply(cap):
    for i in range(3):
        udp(cap, "c", 50131, 53, b"query %d" % i)
        udp(cap, "s", 50131, 53, b"answer %d" % i)
    for p in range(50132, 50136):
        udp(cap, "c", p, 53, b"q")
        udp(cap, "s", p, 53, b"a")
    udp(cap, "c", 50136, 123, b"\x23" + b"\0" * 47, c=C6, s=S6)
    udp(cap, "s", 50136, 123, b"\x24" + b"\0" * 47, c=C6, s=S6)
    udp(cap, "c", 50137, 69, b"\x00\x01file\x00octet\x00")
    udp(cap, "s", 50137, 51000, b"\x00\x03\x00\x01data")


@scenario("One-way UDP: 10 datagrams on one 5-tuple with no answer (50141->514); one "
          "datagram each to 5 ports (50142->7000-7004); IPv6 one-way (50143->514)")
def udp_one_way(cap):
    for i in range(10):
        udp(cap, "c", 50141, 514, b"<13>log line %d" % i)
    for p in range(7000, 7005):
        udp(cap, "c", 50142, p, b"x")
    udp(cap, "c", 50143, 514, b"<13>v6 log", c=C6, s=S6)


def esp(spi, seq, n=32):
    return Raw(struct.pack("!II", spi, seq) + bytes(range(n)))


@scenario("Generic protocols (no port/key): ESP (proto 50) both ways between two hosts "
          "with different SPIs; one-way IPv6 ESP; IPv4 protocol 253 (experimental) "
          "one-way; IPv6 protocol 253 both ways")
def generic_proto(cap):
    for i in range(3):
        cap.add(ip(C4, S4, proto=50) / esp(0x1000, i + 1), "c")
        cap.add(ip(S4, C4, proto=50) / esp(0x2000, i + 1), "s")
    cap.add(ip(C6, S6, nh=50) / esp(0x3000, 1), "c")
    cap.add(ip(C4, S4, proto=253) / Raw(b"experimental"), "c")
    cap.add(ip(C6, S6, nh=253) / Raw(b"experimental"), "c")
    cap.add(ip(S6, C6, nh=253) / Raw(b"experimental"), "s")


@scenario("GRE: version 0 (plain, proto 47) carrying IPv4 both ways between two "
          "endpoints; enhanced GRE version 1 (PPTP) with call ids 0x1111 / 0x2222, both "
          "ways, no PPTP control connection seen")
def gre(cap):
    inner = IP(src="192.0.2.100", dst="198.51.100.100") / ICMP(type=8, id=1)
    back = IP(src="198.51.100.100", dst="192.0.2.100") / ICMP(type=0, id=1)
    for _ in range(2):
        cap.add(ip(C4, S4, proto=47) / GRE(proto=0x0800) / inner, "c")
        cap.add(ip(S4, C4, proto=47) / GRE(proto=0x0800) / back, "s")
    c2, s2 = "192.0.2.11", "198.51.100.21"
    for i in range(2):
        cap.add(ip(c2, s2, proto=47) / GRE_PPTP(seqnum_present=1, seqence_number=i + 1,
                                                call_id=0x2222) / Raw(b"\xff\x03ppp"), "c")
        cap.add(ip(s2, c2, proto=47) / GRE_PPTP(seqnum_present=1, seqence_number=i + 1,
                                                call_id=0x1111) / Raw(b"\xff\x03ppp"), "s")


@scenario("SCTP: INIT / INIT-ACK / COOKIE-ECHO / COOKIE-ACK, DATA and SACK both ways "
          "(association 1, 5001->5002); INIT only (5011->5002); full association with "
          "SHUTDOWN / SHUTDOWN-ACK / SHUTDOWN-COMPLETE (5021->5002); IPv6 INIT / INIT-ACK "
          "only (5031->5002)")
def sctp_association(cap):
    def assoc(cport, c=C4, s=S4, shutdown=False, stop_after_initack=False, only_init=False):
        tc, ts = 0x10000000 + cport, 0x20000000 + cport
        cookie = b"C" * 16

        def sc(frm, tag, chunk):
            src, dst = (c, s) if frm == "c" else (s, c)
            sp, dp = (cport, 5002) if frm == "c" else (5002, cport)
            cap.add(ip(src, dst) / SCTP(sport=sp, dport=dp, tag=tag) / chunk, frm)
        sc("c", 0, SCTPChunkInit(init_tag=tc, a_rwnd=65535, n_out_streams=1,
                                 n_in_streams=1, init_tsn=100))
        if only_init:
            return
        sc("s", tc, SCTPChunkInitAck(init_tag=ts, a_rwnd=65535, n_out_streams=1,
                                     n_in_streams=1, init_tsn=200,
                                     params=[SCTPChunkParamStateCookie(cookie=cookie)]))
        if stop_after_initack:
            return
        sc("c", ts, SCTPChunkCookieEcho(cookie=cookie))
        sc("s", tc, SCTPChunkCookieAck())
        sc("c", ts, SCTPChunkData(tsn=100, stream_id=0, stream_seq=0, proto_id=0,
                                  data=b"hello"))
        sc("s", tc, SCTPChunkSACK(cumul_tsn_ack=100, a_rwnd=65535))
        sc("s", tc, SCTPChunkData(tsn=200, stream_id=0, stream_seq=0, proto_id=0,
                                  data=b"world"))
        sc("c", ts, SCTPChunkSACK(cumul_tsn_ack=200, a_rwnd=65535))
        if shutdown:
            sc("c", ts, SCTPChunkShutdown(cumul_tsn_ack=200))
            sc("s", tc, SCTPChunkShutdownAck())
            sc("c", ts, SCTPChunkShutdownComplete())
    assoc(5001)
    assoc(5011, only_init=True)
    assoc(5021, shutdown=True)
    assoc(5031, c=C6, s=S6, stop_after_initack=True)


def inet_csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t > 0xFFFF:
        t = (t & 0xFFFF) + (t >> 16)
    return (~t) & 0xFFFF


def pseudo(src, dst, proto, length):
    """The IPv4 or IPv6 pseudo-header of an upper-layer packet."""
    import ipaddress
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        return a.packed + b.packed + struct.pack("!BBH", 0, proto, length)
    return a.packed + b.packed + struct.pack("!IxxxB", length, proto)


def l3(src, dst, proto, payload):
    """An IPv4 or IPv6 packet of protocol `proto` carrying `payload` bytes."""
    if ":" in src:
        return ip(src, dst, nh=proto) / Raw(payload)
    return ip(src, dst, proto=proto) / Raw(payload)


def dccp(src, dst, sport, dport, ptype, seq, ack=None, data=b""):
    """A DCCP packet (RFC 4340) with 48-bit sequence numbers (X=1) and a
    checksum over all of it (CsCov 0)."""
    hdr_len = 16 + (8 if ack is not None else 0) + (4 if ptype == 0 else 0)
    h = struct.pack("!HHBBHBBH", sport, dport, hdr_len // 4, 0, 0,
                    (ptype << 1) | 1, 0, seq >> 32) + struct.pack("!I", seq & 0xFFFFFFFF)
    if ptype == 0:                      # Request: service code
        h += struct.pack("!I", 42)
    if ack is not None:
        h += struct.pack("!HHI", 0, ack >> 32, ack & 0xFFFFFFFF)
    if ptype == 1:                      # Response: service code after the ack
        h += struct.pack("!I", 42)
        h = h[:4] + bytes([(len(h)) // 4]) + h[5:]
    pkt = h + data
    c = inet_csum(pseudo(src, dst, 33, len(pkt)) + pkt)
    return pkt[:6] + struct.pack("!H", c) + pkt[8:]


@scenario("DCCP (proto 33; this kernel has no DCCP tracker since 6.16: it tracks DCCP "
          "generically, by addresses): Request / Response / Ack / Data both ways (5001->5000); "
          "a second connection between the same hosts (5002->5000); Request only to "
          "another host (5003->5000); IPv6 Request / Response (5004->5000)")
def dccp_generic(cap):
    def conn(cport, c=C4, s=S4, only_request=False):
        cap.add(l3(c, s, 33, dccp(c, s, cport, 5000, 0, 100)), "c")
        if only_request:
            return
        cap.add(l3(s, c, 33, dccp(s, c, 5000, cport, 1, 200, ack=100)), "s")
        if ":" in c:
            return
        cap.add(l3(c, s, 33, dccp(c, s, cport, 5000, 3, 101, ack=200)), "c")
        cap.add(l3(c, s, 33, dccp(c, s, cport, 5000, 4, 102, ack=200, data=b"hello")), "c")
        cap.add(l3(s, c, 33, dccp(s, c, 5000, cport, 4, 201, ack=102, data=b"world")), "s")
    conn(5001)
    conn(5002)
    conn(5003, s="198.51.100.21", only_request=True)
    conn(5004, c=C6, s=S6)


def udplite(src, dst, sport, dport, data, cov=8, csum=None, pseudo_proto=136):
    """A UDP-Lite datagram (RFC 3828): checksum coverage `cov` bytes (0: all),
    checksum over the covered bytes and the pseudo-header (with the
    datagram's length and protocol `pseudo_proto`), or `csum` as given."""
    n = 8 + len(data)
    pkt = struct.pack("!HHHH", sport, dport, cov, 0) + data
    if csum is None:
        covered = pkt[: n if cov == 0 else min(cov, n)]
        csum = inet_csum(pseudo(src, dst, pseudo_proto, n) + covered) or 0xFFFF
    return pkt[:6] + struct.pack("!H", csum) + pkt[8:]


@scenario("UDP-Lite (proto 136): request/reply covering the header only (50151->5000) and "
          "the whole datagram (coverage 0, 50152->5000); one-way (50153->5000); IPv6 "
          "request/reply with coverage 12 (50154->5000); invalid: a bad checksum "
          "(50155), checksum 0 (50156), coverage 4 (under the header, 50157), coverage "
          "beyond the datagram (50158); request/reply with checksums over a pseudo-header "
          "naming UDP (17) instead of UDP-Lite, covering the header (50159) and everything "
          "(50160), and over IPv6 (50161)")
def udplite_flows(cap):
    def send(frm, cport, data, c=C4, s=S4, **kw):
        src, dst, sp, dp = (c, s, cport, 5000) if frm == "c" else (s, c, 5000, cport)
        cap.add(l3(src, dst, 136, udplite(src, dst, sp, dp, data, **kw)), frm)
    for i in range(2):
        send("c", 50151, b"question %d" % i)
        send("s", 50151, b"answer %d" % i)
    send("c", 50152, b"all covered", cov=0)
    send("s", 50152, b"all covered too", cov=0)
    send("c", 50153, b"one way")
    send("c", 50154, b"v6 partly covered", c=C6, s=S6, cov=12)
    send("s", 50154, b"v6 answer", c=C6, s=S6, cov=12)
    send("c", 50155, b"bad checksum", csum=0x1234)
    send("c", 50156, b"zero checksum", csum=0)
    send("c", 50157, b"short coverage", cov=4)
    send("c", 50158, b"long coverage", cov=200)
    # Checksums over a pseudo-header naming UDP (17), as Linux's conntrack
    # verifies UDP-Lite (udplite_error passes IPPROTO_UDP): valid to it.
    for cov in (8, 0):
        port = 50159 + (cov == 0)
        send("c", port, b"udp pseudo-header", cov=cov, pseudo_proto=17)
        send("s", port, b"udp pseudo-header", cov=cov, pseudo_proto=17)
    send("c", 50161, b"v6 udp pseudo-header", c=C6, s=S6, pseudo_proto=17)
    send("s", 50161, b"v6 udp pseudo-header", c=C6, s=S6, pseudo_proto=17)


def main():
    args = sys.argv[1:]
    if args == ["--list"]:
        for name, desc, _ in SCENARIOS:
            print(f"{name}.pcap\t{desc}")
        return 0
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(__doc__, file=sys.stderr)
        return 2
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = args[0] if args else os.path.join(root, "tests", "pcaps", "scenarios")
    os.makedirs(outdir, exist_ok=True)
    index = []
    for name, desc, fn in SCENARIOS:
        cap = Capture(name, desc)
        fn(cap)
        cap.write(outdir)
        index.append(f"{name}.pcap\t{len(cap.frames)}\t{desc}")
    with open(os.path.join(outdir, "INDEX.tsv"), "w") as f:
        f.write("file\tpackets\tdescription\n" + "\n".join(index) + "\n")
    print(f"wrote {len(SCENARIOS)} captures to {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
