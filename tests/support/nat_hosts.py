#!/usr/bin/env python3
"""The programs the NAT tests (tests/netns_nat.rs) run on the Linux hosts in
their network namespaces: servers that answer with the peer address they see,
clients that open many connections / flows and print what came back as JSON,
and a traceroute-like prober that prints the ICMP messages it received.

Every command has a time bound; nothing here talks to anything but the
addresses it is given.
"""

import json
import os
import select
import socket
import struct
import sys
import time

from hosts_common import family, serve_tcp_lines, serve_udp


def peer_text(addr):
    ip, port = addr[0], addr[1]
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    return "%s %d" % (ip, port)


def tcp_serve(host, port, name, secs):
    """Answers every line on every connection with 'NAME PEER_IP PEER_PORT'
    (an empty line ends the connection)."""
    serve_tcp_lines(
        host,
        port,
        secs,
        lambda line, addr: ("%s %s\n" % (name, peer_text(addr))).encode() if line.strip() else None,
        backlog=1024,
    )


def udp_serve(host, port, secs):
    """Answers every datagram with 'PEER_IP PEER_PORT PAYLOAD'."""
    serve_udp(host, port, secs, lambda data, addr: ("%s " % peer_text(addr)).encode() + data)


def read_line(sock, deadline):
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("no answer")
        r, _, _ = select.select([sock], [], [], left)
        if r:
            d = sock.recv(4096)
            if not d:
                raise ConnectionError("closed")
            buf += d
    return buf.decode().strip()


def tcp_many(host, port, n, binds, sport_base):
    """Opens n connections at once (non-blocking connects), then asks each for
    the peer address its server sees. binds: comma-separated local addresses
    used in turn; with sport_base, connection i binds port sport_base + i //
    len(binds), so the addresses share source ports."""
    n = int(n)
    binds = [b for b in binds.split(",") if b] if binds != "-" else []
    sport_base = int(sport_base)
    socks = []
    for i in range(n):
        s = socket.socket(family(host), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if binds:
            a = binds[i % len(binds)]
            p = sport_base + i // len(binds) if sport_base else 0
            s.bind((a, p))
        s.setblocking(False)
        s.connect_ex((host, int(port)))
        socks.append(s)
    deadline = time.time() + 30
    pending = set(range(n))
    while pending and time.time() < deadline:
        _, w, _ = select.select([], [socks[i] for i in pending], [], 1)
        for s in w:
            i = socks.index(s)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, "connect %d failed" % i)
            pending.discard(i)
    if pending:
        raise TimeoutError("%d connections never completed" % len(pending))
    out = []
    for s in socks:
        s.sendall(b"hi\n")
    for s in socks:
        line = read_line(s, time.time() + 10)
        local = s.getsockname()
        out.append({"local": peer_text(local), "seen": line})
    for s in socks:
        s.close()
    print(json.dumps(out))


def tcp_seq(host, port, n, sticky_every):
    """n sequential connections, each asked which backend it reached; a
    long-lived connection opened first is asked again every sticky_every."""
    n, sticky_every = int(n), int(sticky_every)
    fam = family(host)
    long = socket.create_connection((host, int(port)), timeout=10)
    sticky = []

    def ask_long():
        long.sendall(b"ping\n")
        sticky.append(read_line(long, time.time() + 10))

    ask_long()
    seen = []
    for i in range(n):
        for attempt in range(3):
            try:
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect((host, int(port)))
                s.sendall(b"hi\n")
                seen.append(read_line(s, time.time() + 5))
                s.close()
                break
            except OSError:
                s.close()
                if attempt == 2:
                    raise
        if sticky_every and (i + 1) % sticky_every == 0:
            ask_long()
    long.close()
    print(json.dumps({"seen": seen, "sticky": sticky}))


def tcp_exhaust(host, port, hold):
    """Holds `hold` connections open (the NAT pool's size), shows that one
    more cannot connect, closes them, then connects again (retrying, bounded).
    Prints what each step saw."""
    hold = int(hold)
    res = {"held": [], "while_full": None, "after": None}
    held = []
    for _ in range(hold):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"hi\n")
        res["held"].append(read_line(s, time.time() + 5))
        held.append(s)
    try:
        s = socket.create_connection((host, int(port)), timeout=2.5)
        s.sendall(b"hi\n")
        res["while_full"] = read_line(s, time.time() + 5)
        s.close()
    except OSError as e:
        res["while_full_error"] = str(e)
    for s in held:
        s.close()
    end = time.time() + 30
    while time.time() < end and res["after"] is None:
        try:
            s = socket.create_connection((host, int(port)), timeout=3)
            s.sendall(b"hi\n")
            res["after"] = read_line(s, time.time() + 5)
            s.close()
        except OSError:
            time.sleep(0.2)
    print(json.dumps(res))


def udp_flows(host, port, n, per_flow, wait):
    """n UDP flows (sockets), per_flow requests each; every answer must come
    back on its own socket with its own payload. Prints per flow the answers
    (or null for a request that got none within `wait` seconds)."""
    n, per_flow, wait = int(n), int(per_flow), float(wait)
    res = []
    socks = []
    for i in range(n):
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        s.connect((host, int(port)))
        socks.append(s)
    for i, s in enumerate(socks):
        got = []
        for j in range(per_flow):
            payload = ("flow %d req %d" % (i, j)).encode()
            s.send(payload)
            r, _, _ = select.select([s], [], [], wait)
            if not r:
                got.append(None)
                continue
            try:
                d = s.recv(2048).decode()
            except OSError as e:
                got.append("error %s" % e)
                continue
            ip, p, rest = d.split(" ", 2)
            got.append({"seen": "%s %s" % (ip, p), "echo_ok": rest == payload.decode()})
        res.append({"local": peer_text(s.getsockname()), "answers": got})
    for s in socks:
        s.close()
    print(json.dumps(res))


def udp_refused(host, port):
    """Sends to a port nobody listens on: prints 'refused' when the port
    unreachable came back to this socket (the kernel matched the quoted
    datagram to it), 'timeout' otherwise."""
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.connect((host, int(port)))
    s.settimeout(3)
    s.send(b"anyone?")
    try:
        s.recv(100)
        print("answered")
    except ConnectionRefusedError:
        print("refused")
    except socket.timeout:
        print("timeout")


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def parse_icmp(pkt):
    """An IPv4 packet carrying ICMP: the outer and quoted headers."""
    ihl = (pkt[0] & 15) * 4
    ic = pkt[ihl:]
    m = {
        "src": socket.inet_ntoa(pkt[12:16]),
        "dst": socket.inet_ntoa(pkt[16:20]),
        "type": ic[0],
        "code": ic[1],
        "ip_csum_ok": csum(pkt[:ihl]) == 0,
        "icmp_csum_ok": csum(ic) == 0,
    }
    if ic[0] in (0, 8):
        m["id"] = struct.unpack("!H", ic[4:6])[0]
        m["seq"] = struct.unpack("!H", ic[6:8])[0]
    elif ic[0] in (3, 11):
        q = ic[8:]
        qihl = (q[0] & 15) * 4
        m["inner_src"] = socket.inet_ntoa(q[12:16])
        m["inner_dst"] = socket.inet_ntoa(q[16:20])
        m["inner_proto"] = q[9]
        m["inner_ip_csum_ok"] = csum(q[:qihl]) == 0
        l4 = q[qihl:]
        if q[9] == 17 and len(l4) >= 8:
            m["inner_sport"], m["inner_dport"] = struct.unpack("!HH", l4[:4])
        if q[9] == 1 and len(l4) >= 8:
            m["inner_type"] = l4[0]
            m["inner_id"] = struct.unpack("!H", l4[4:6])[0]
            m["inner_seq"] = struct.unpack("!H", l4[6:8])[0]
    return m


def trace(dst, hops):
    """Traceroute by UDP (one socket, source port and TTL per probe, IP_RECVERR
    as traceroute uses it) and by ICMP echo (one id, TTL per probe). Prints the
    probes and every ICMP message the raw socket received, parsed, plus the
    errors the kernel delivered to the UDP sockets (which it only does when the
    quoted header matches the socket)."""
    hops = int(hops)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    probes = []
    udps = []
    for ttl in range(1, hops + 1):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
        s.connect((dst, 33434 + ttl))
        s.send(b"probe ttl %d" % ttl)
        probes.append({"kind": "udp", "ttl": ttl, "sport": s.getsockname()[1],
                       "dport": 33434 + ttl})
        udps.append(s)
        time.sleep(0.05)
    # Again from the TTL 2 socket, now with TTL 1: a packet of a connection
    # ctgate already translates expires at ctgate.
    if hops >= 2:
        udps[1].setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
        for _ in range(2):
            try:
                udps[1].send(b"probe again ttl 1")
                break
            except OSError:
                pass  # the socket reports the TTL 2 error first (IP_RECVERR)
        probes.append({"kind": "udp", "ttl": 1, "sport": probes[1]["sport"],
                       "dport": probes[1]["dport"], "again": True})
    ident = os.getpid() & 0xFFFF
    # Two rounds of echo probes with one id: the second round's packets belong
    # to the connection the first round made.
    for rnd in (0, 1):
        for ttl in range(1, hops + 1):
            seq = rnd * 100 + ttl
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"traceprobe"
            body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            raw.sendto(body, (dst, 0))
            probes.append({"kind": "icmp", "ttl": ttl, "id": ident, "seq": seq})
            time.sleep(0.05)
        time.sleep(0.3)
    got = []
    end = time.time() + 3
    while time.time() < end:
        r, _, _ = select.select([raw], [], [], 0.2)
        if r:
            pkt = raw.recv(4096)
            m = parse_icmp(pkt)
            if m["type"] == 8:
                continue  # our own echo requests, looped back to raw sockets
            got.append(m)
    recverr = []
    for s in udps:
        sport = s.getsockname()[1]
        while True:
            try:
                _, anc, _, _ = s.recvmsg(512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            for lvl, typ, data in anc:
                if lvl == socket.IPPROTO_IP and typ == 11:
                    # struct sock_extended_err, then the offender's sockaddr_in.
                    errno_, origin, etype, ecode = struct.unpack("=IBBB", data[:7])
                    offender = socket.inet_ntoa(data[16 + 4:16 + 8])
                    recverr.append({"sport": sport, "type": etype, "code": ecode,
                                    "offender": offender})
    print(json.dumps({"probes": probes, "icmp": got, "recverr": recverr}))


def main():
    cmds = {
        "tcp-serve": tcp_serve,
        "udp-serve": udp_serve,
        "tcp-many": tcp_many,
        "tcp-seq": tcp_seq,
        "tcp-exhaust": tcp_exhaust,
        "udp-flows": udp_flows,
        "udp-refused": udp_refused,
        "trace": trace,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit("usage: nat_hosts.py %s ARGS" % "|".join(cmds))
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
