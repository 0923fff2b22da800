#!/usr/bin/env python3
"""The programs the fragment test (tests/netns_frag.rs) runs on its Linux
hosts: a UDP echo server that prints what arrived whole, a client that sends
one large datagram (the kernel fragments it) and checks the echo, and a
sender of hand-made IPv4 fragment sets (out of order, overlapping,
duplicated, incomplete) through a raw socket.

Every command has a time bound; nothing here talks to anything but the
addresses it is given.
"""

import socket
import struct
import sys
import time

from hosts_common import family


def pattern(n, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def echo_server(host, port, secs):
    """Echoes every datagram; prints 'got LEN from IP PORT' for each."""
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    s.settimeout(0.2)
    print("listening", flush=True)
    end = time.time() + float(secs)
    while time.time() < end:
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        print("got %d from %s %d" % (len(data), addr[0], addr[1]), flush=True)
        s.sendto(data, addr)


def await_echo(s, want, secs):
    s.settimeout(float(secs))
    try:
        data, _ = s.recvfrom(65535)
    except socket.timeout:
        print("no echo", flush=True)
        return
    print("echo %d %s" % (len(data), "ok" if data == want else "mismatch"), flush=True)


def big_client(src, dst, port, size):
    """One datagram of SIZE bytes from SRC (any port) to DST:PORT; waits
    for its echo."""
    s = socket.socket(family(dst), socket.SOCK_DGRAM)
    s.bind((src, 0))
    data = pattern(int(size), 3)
    s.sendto(data, (dst, int(port)))
    await_echo(s, data, 5)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF


def raw_fragments(src, sport, dst, dport, size, shape):
    """A UDP datagram of SIZE payload bytes from SRC:SPORT to DST:DPORT, as
    IPv4 fragments built by hand and sent through a raw socket, in SHAPE:
    reverse (last first), overlap (the second overlaps the first), dup
    (the last one twice, the middle missing: incomplete), tiny (a first
    fragment of 8 bytes, then the rest). Then waits for the echo on
    SRC:SPORT."""
    size, sport, dport = int(size), int(sport), int(dport)
    payload = pattern(size, 5)
    sa, da = socket.inet_aton(src), socket.inet_aton(dst)
    udp = struct.pack("!HHHH", sport, dport, 8 + size, 0) + payload
    c = csum(sa + da + struct.pack("!BBH", 0, 17, len(udp)) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ident = sport  # one datagram id per set

    def frag(off, n, more):
        data = udp[off:off + n]
        flags = (0x2000 if more else 0) | (off // 8)
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), ident, flags, 64, 17, 0, sa, da)
        h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
        return h + data

    n = len(udp)
    a, b = 1480, 2960
    pieces = {
        "reverse": [frag(b, n - b, False), frag(a, a, True), frag(0, a, True)],
        "overlap": [frag(0, a, True), frag(a - 8, a, True), frag(b, n - b, False)],
        "dup": [frag(0, a, True), frag(b, n - b, False), frag(b, n - b, False)],
        "tiny": [frag(0, 8, True), frag(8, a - 8, True), frag(a, a, True), frag(b, n - b, False)],
    }[shape]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((src, sport))
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for p in pieces:
        tx.sendto(p, (dst, 0))
        time.sleep(0.01)
    print("sent %d fragments" % len(pieces), flush=True)
    await_echo(rx, payload, 3)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "echo-server": echo_server,
        "big-client": big_client,
        "raw-fragments": raw_fragments,
    }[cmd](*args)
