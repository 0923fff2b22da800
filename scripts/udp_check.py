#!/usr/bin/env python3
"""UDP through ctgate: `serve ADDR PORT` echoes datagrams reversed (for a
bounded time); `send ADDR PORT N` sends N numbered datagrams and checks every
answer. Exit 0 only if every datagram came back right."""
import socket
import sys
import time


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def serve(addr, port, seconds=60.0):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(0.5)
    end = time.time() + seconds
    while time.time() < end:
        try:
            data, peer = s.recvfrom(2048)
        except socket.timeout:
            continue
        if data == b"quit":
            return 0
        s.sendto(data[::-1], peer)
    return 0


def send(addr, port, n):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.settimeout(1.0)
    ok = 0
    for i in range(n):
        msg = ("ctgate-udp-%04d-" % i).encode() + bytes(range(32, 96))
        for _attempt in range(3):
            s.sendto(msg, (addr, port))
            try:
                data, _ = s.recvfrom(2048)
            except socket.timeout:
                continue
            if data == msg[::-1]:
                ok += 1
            break
    s.sendto(b"quit", (addr, port))
    print("udp %s:%d: %d/%d datagrams echoed correctly" % (addr, port, ok, n))
    return 0 if ok == n else 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 60.0))
    sys.exit(send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
