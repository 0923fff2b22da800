#!/usr/bin/env python3
"""The traffic of scripts/soak.sh, every loop bounded by --seconds:

  serve   ADDR            (in the server's namespace) TCP echo on 8000 (lines),
                          UDP echo on 7000 (the endpoint-independent SNAT rule;
                          datagrams starting with "L" are also answered from
                          7001, which only endpoint-independent filtering lets
                          in) and on 7100 (masquerade).
  clients DST             (in the client's namespace) long-lived flows for the
                          whole run (TCP streams, UDP flows through both rules:
                          a request every 0.25 s, every answer checked),
                          short-lived TCP connect/echo/close and UDP request /
                          answer at a steady rate, a spray of one-datagram UDP
                          flows to closed ports (they fill the table), and every
                          --burst-every s a burst of TCP connections from more
                          source ports than the masquerade rule's range
                          (NAT exhaustion), held 3 s, then closed.
  rest    API             (in the root namespace) the REST clients: `ctgate ct
                          list`, GET list / count, DELETE of short-lived
                          connections, event streams (SSE) opened and closed.

clients and rest write their counters as JSON to --status (atomically, every
second and at the end); scripts/soak_report.py reads them."""
import argparse
import errno
import http.client
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import threading
import time

TCP_PORT = 8000
UDP_EIM_PORT = 7000
UDP_EIM_ALT_PORT = 7001
UDP_MASQ_PORT = 7100
SPRAY_PORTS = (9000, 9999)
LONG_EVERY = 0.25
T0 = time.monotonic()


class Stop:
    """Set by SIGTERM / SIGINT or the deadline."""

    def __init__(self, seconds):
        self.deadline = time.monotonic() + seconds
        self.flag = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_):
        self.flag = True

    def __bool__(self):
        return self.flag or time.monotonic() >= self.deadline


def write_status(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------- server


def serve(args):
    stop = Stop(args.seconds)
    sel = selectors.DefaultSelector()
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((args.addr, TCP_PORT))
    lst.listen(4096)
    lst.setblocking(False)
    sel.register(lst, selectors.EVENT_READ, "accept")
    udp = {}
    for port in (UDP_EIM_PORT, UDP_EIM_ALT_PORT, UDP_MASQ_PORT):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((args.addr, port))
        s.setblocking(False)
        udp[port] = s
        if port != UDP_EIM_ALT_PORT:
            sel.register(s, selectors.EVENT_READ, ("udp", port))
    print("serving", flush=True)
    conns = {}
    while not stop:
        for key, _ in sel.select(0.5):
            what = key.data
            if what == "accept":
                for _ in range(64):
                    try:
                        c, _ = lst.accept()
                    except OSError:
                        break
                    c.setblocking(False)
                    conns[c] = b""
                    sel.register(c, selectors.EVENT_READ, "tcp")
            elif what == "tcp":
                c = key.fileobj
                try:
                    data = c.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c)
                    conns.pop(c, None)
                    c.close()
                    continue
                try:
                    c.send(data)  # echo (small lines: the buffer takes them)
                except OSError:
                    pass
            else:
                s = udp[what[1]]
                for _ in range(64):
                    try:
                        data, peer = s.recvfrom(2048)
                    except OSError:
                        break
                    try:
                        s.sendto(data, peer)
                        if what[1] == UDP_EIM_PORT and data.startswith(b"L"):
                            udp[UDP_EIM_ALT_PORT].sendto(b"A" + data, peer)
                    except OSError:
                        pass
    return 0


# ---------------------------------------------------------------- clients


class Long:
    """A long-lived flow: a request every LONG_EVERY s, answers counted."""

    def __init__(self, name, kind, sock, dst):
        self.name, self.kind, self.sock, self.dst = name, kind, sock, dst
        self.seq = 0
        self.answers = 0
        self.alt_answers = 0
        self.last_answer = time.monotonic()
        self.max_gap = 0.0
        self.broken = None
        self.gaps = []
        self.buf = b""
        self.next_send = time.monotonic()

    def answered(self, now):
        gap = now - self.last_answer
        if gap > 1.0 and len(self.gaps) < 100:
            # (Relative to the run's start: the clients' t0.)
            self.gaps.append([round(self.last_answer - T0, 1), round(gap, 1)])
        self.max_gap = max(self.max_gap, gap)
        self.last_answer = now
        self.answers += 1

    def status(self, now):
        return {
            "kind": self.kind,
            "answers": self.answers,
            "alt_answers": self.alt_answers,
            "max_gap_s": round(max(self.max_gap, now - self.last_answer), 2),
            "broken": self.broken,
            "gaps": self.gaps,
        }


def clients(args):
    stop = Stop(args.seconds)
    sel = selectors.DefaultSelector()
    dst = args.dst
    t0 = T0
    longs = []
    for i in range(args.long_tcp):
        s = socket.create_connection((dst, TCP_PORT), timeout=10)
        s.setblocking(False)
        f = Long("tcp%d" % i, "tcp", s, (dst, TCP_PORT))
        sel.register(s, selectors.EVENT_READ, ("long", f))
        longs.append(f)
    for i in range(args.long_udp):
        for kind, port, src_port in (("udp-eim", UDP_EIM_PORT, 40001 + i), ("udp-masq", UDP_MASQ_PORT, 40101 + i)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", src_port))
            s.setblocking(False)
            f = Long("%s%d" % (kind, i), kind, s, (dst, port))
            sel.register(s, selectors.EVENT_READ, ("long", f))
            longs.append(f)

    short = {"tcp_ok": 0, "tcp_fail": 0, "udp_ok": 0, "udp_fail": 0}
    spray = {"sent": 0, "errors": 0}
    bursts = []
    pending = {}  # socket -> (kind, deadline)
    burst = None  # {"socks": [...], "until": t, "result": {...}}
    next_short_tcp = next_short_udp = next_spray = t0
    next_burst = t0 + args.burst_first
    next_status = t0
    udp_dsts = [UDP_EIM_PORT, UDP_MASQ_PORT]
    udp_sent = 0

    def close_pending(s, ok):
        kind, _ = pending.pop(s)
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        short[kind + ("_ok" if ok else "_fail")] += 1

    def status(final=False):
        now = time.monotonic()
        write_status(args.status, {
            "t": round(now - t0, 1),
            "final": final,
            "long": {f.name: f.status(now) for f in longs},
            "short": short,
            "spray": spray,
            "bursts": bursts,
        })

    while not stop:
        now = time.monotonic()
        # Long-lived: send what is due.
        for f in longs:
            if f.broken or now < f.next_send:
                continue
            f.next_send = now + LONG_EVERY
            f.seq += 1
            msg = ("L %s %d\n" % (f.name, f.seq)).encode()
            try:
                if f.kind == "tcp":
                    f.sock.send(msg)
                else:
                    f.sock.sendto(msg, f.dst)
            except OSError as e:
                if f.kind == "tcp":
                    f.broken = "send: %s" % e
        # Short-lived TCP and UDP, at their rates (catching up at most a second).
        while next_short_tcp <= now:
            next_short_tcp = max(next_short_tcp + 1.0 / args.short_tcp_rate, now - 1)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((dst, TCP_PORT))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                short["tcp_fail"] += 1
                continue
            pending[s] = ("tcp", now + 3.0)
            sel.register(s, selectors.EVENT_WRITE, ("short-tcp-connect", s))
        while next_short_udp <= now:
            next_short_udp = max(next_short_udp + 1.0 / args.short_udp_rate, now - 1)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            port = udp_dsts[udp_sent % 2]
            udp_sent += 1
            try:
                s.sendto(b"S short\n", (dst, port))
            except OSError:
                s.close()
                short["udp_fail"] += 1
                continue
            pending[s] = ("udp", now + 2.0)
            sel.register(s, selectors.EVENT_READ, ("short-udp", s))
        # The spray: one datagram from a new port to a closed one.
        while next_spray <= now:
            next_spray = max(next_spray + 1.0 / args.spray_rate, now - 1)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(b"X", (dst, random.randint(*SPRAY_PORTS)))
                spray["sent"] += 1
            except OSError:
                spray["errors"] += 1
            s.close()
        # NAT exhaustion: a burst of connections, held, then closed.
        if burst is None and now >= next_burst and now < stop.deadline - 5:
            next_burst = now + args.burst_every
            socks = []
            for _ in range(args.burst_size):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                if s.connect_ex((dst, TCP_PORT)) in (0, errno.EINPROGRESS):
                    socks.append(s)
                else:
                    s.close()
            burst = {"socks": socks, "until": now + 3.0,
                     "result": {"t": round(now - t0, 1), "tried": args.burst_size, "connected": 0}}
        if burst is not None and now >= burst["until"]:
            connected = 0
            for s in burst["socks"]:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    try:
                        s.getpeername()
                        connected += 1
                    except OSError:
                        pass
                s.close()
            burst["result"]["connected"] = connected
            bursts.append(burst["result"])
            burst = None
        # Expire short-lived ones that got no answer.
        for s, (kind, deadline) in list(pending.items()):
            if now >= deadline:
                close_pending(s, False)

        for key, ev in sel.select(0.02):
            tag = key.data[0]
            if tag == "long":
                f = key.data[1]
                try:
                    if f.kind == "tcp":
                        data = f.sock.recv(4096)
                        if not data:
                            f.broken = "closed by the server"
                            sel.unregister(f.sock)
                            continue
                        f.buf += data
                        while b"\n" in f.buf:
                            _, f.buf = f.buf.split(b"\n", 1)
                            f.answered(time.monotonic())
                    else:
                        while True:
                            data, peer = f.sock.recvfrom(2048)
                            if peer[1] == UDP_EIM_ALT_PORT:
                                f.alt_answers += 1
                            else:
                                f.answered(time.monotonic())
                except BlockingIOError:
                    pass
                except OSError as e:
                    if f.kind == "tcp":
                        f.broken = "recv: %s" % e
                        sel.unregister(f.sock)
            elif tag == "short-tcp-connect":
                s = key.data[1]
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    close_pending(s, False)
                    continue
                try:
                    s.send(b"S short\n")
                except OSError:
                    close_pending(s, False)
                    continue
                sel.modify(s, selectors.EVENT_READ, ("short-tcp", s))
            elif tag == "short-tcp":
                s = key.data[1]
                try:
                    ok = s.recv(4096).startswith(b"S short")
                except OSError:
                    ok = False
                close_pending(s, ok)
            elif tag == "short-udp":
                s = key.data[1]
                try:
                    ok = s.recv(2048).startswith(b"S short")
                except OSError:
                    ok = False
                close_pending(s, ok)
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + 1.0
            status()

    # The end: long-lived TCP streams closed properly, everything else dropped.
    for f in longs:
        f.sock.close()
    for s in list(pending):
        close_pending(s, False)
    if burst is not None:
        for s in burst["socks"]:
            s.close()
    status(final=True)
    return 0


# ---------------------------------------------------------------- REST


def rest(args):
    stop = Stop(args.seconds)
    host, port = args.api.rsplit(":", 1)
    auth = {"Authorization": "Bearer " + args.token}
    counts = {"cli_list": 0, "get_list": 0, "get_count": 0, "delete": 0, "deleted": 0,
              "streams_opened": 0, "stream_events": 0, "errors": 0, "last_error": None}
    lock = threading.Lock()
    env = dict(os.environ, CTGATE_API="http://" + args.api, CTGATE_TOKEN=args.token, CTGATE_LOG="warn")

    def request(method, path):
        c = http.client.HTTPConnection(host, int(port), timeout=20)
        try:
            c.request(method, path, headers=auth)
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError("%s %s: %d %s" % (method, path, r.status, body[:200]))
            return json.loads(body)
        finally:
            c.close()

    def stream(seconds):
        """An event stream read for `seconds`, then closed."""
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        n = 0
        try:
            c.request("GET", "/api/v1/conntrack/events", headers=auth)
            r = c.getresponse()
            if r.status != 200:
                raise RuntimeError("events: %d %s" % (r.status, r.read()[:200]))
            end = time.monotonic() + seconds
            while time.monotonic() < end and not stop:
                line = r.fp.readline()
                if not line:
                    break
                n += line.startswith(b"event:")
            with lock:
                counts["streams_opened"] += 1
                counts["stream_events"] += n
        except Exception as e:  # noqa: BLE001 (counted, the run goes on)
            with lock:
                counts["errors"] += 1
                counts["last_error"] = "events: %s" % e
        finally:
            c.close()

    streams = []
    step = 0
    next_status = 0.0
    while not stop:
        step += 1
        try:
            if step % 5 == 1:
                out = subprocess.run([args.ctgate, "ct", "list"], env=env, capture_output=True,
                                     timeout=30, check=True)
                counts["cli_list"] += 1
                del out
            elif step % 5 == 2:
                request("GET", "/api/v1/conntrack?limit=500")
                counts["get_list"] += 1
            elif step % 5 == 3:
                request("GET", "/api/v1/conntrack/count?proto=tcp")
                counts["get_count"] += 1
            elif step % 5 == 4:
                # Short-lived connections only: masqueraded UDP, closed TCP.
                for q in ("proto=udp&dport=%d" % UDP_MASQ_PORT, "proto=tcp&state=TIME_WAIT"):
                    counts["deleted"] += request("DELETE", "/api/v1/conntrack?" + q)["deleted"]
                    counts["delete"] += 1
            else:
                streams = [t for t in streams if t.is_alive()]
                for _ in range(random.randint(1, 3) - len(streams) if len(streams) < 3 else 0):
                    t = threading.Thread(target=stream, args=(random.uniform(1.0, 6.0),), daemon=True)
                    t.start()
                    streams.append(t)
        except Exception as e:  # noqa: BLE001 (counted, the run goes on)
            with lock:
                counts["errors"] += 1
                counts["last_error"] = str(e)[:300]
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + 1.0
            with lock:
                write_status(args.status, dict(counts, final=False))
        time.sleep(0.4)
    for t in streams:
        t.join(10)
    with lock:
        write_status(args.status, dict(counts, final=True))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("addr")
    s.add_argument("--seconds", type=float, required=True)
    c = sub.add_parser("clients")
    c.add_argument("dst")
    c.add_argument("--seconds", type=float, required=True)
    c.add_argument("--status", required=True)
    c.add_argument("--long-tcp", type=int, default=4)
    c.add_argument("--long-udp", type=int, default=2, help="flows per UDP rule")
    c.add_argument("--short-tcp-rate", type=float, default=20)
    c.add_argument("--short-udp-rate", type=float, default=20)
    c.add_argument("--spray-rate", type=float, default=250)
    c.add_argument("--burst-size", type=int, default=800)
    c.add_argument("--burst-every", type=float, default=30)
    c.add_argument("--burst-first", type=float, default=20)
    r = sub.add_parser("rest")
    r.add_argument("api")
    r.add_argument("--token", required=True)
    r.add_argument("--ctgate", required=True)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--status", required=True)
    a = p.parse_args()
    return {"serve": serve, "clients": clients, "rest": rest}[a.mode](a)


if __name__ == "__main__":
    raise SystemExit(main())
