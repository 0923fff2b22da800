"""What the test hosts' programs (nat_hosts.py, fault_hosts.py) share: bound
servers that answer each UDP datagram or each TCP line as their caller says.
Every server prints "listening" once bound and stops after `secs`.
"""

import socket
import threading
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve_udp(host, port, secs, answer, flags=0):
    """Sends `answer(data, addr)` back for every datagram (nothing for None)."""
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    s.settimeout(0.5)
    end = time.time() + float(secs)
    print("listening", flush=True)
    while time.time() < end:
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        out = answer(data, addr)
        if out is None:
            continue
        try:
            s.sendto(out, flags, addr)
        except OSError:
            pass


def serve_tcp_lines(host, port, secs, answer, backlog=16):
    """Answers every line of every connection with `answer(line, addr)`; a
    None answer ends that connection."""
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(backlog)
    s.settimeout(0.5)
    end = time.time() + float(secs)

    def handle(c, addr):
        c.settimeout(max(1.0, end - time.time()))
        f = c.makefile("rb")
        try:
            for line in f:
                out = answer(line, addr)
                if out is None:
                    break
                c.sendall(out)
        except OSError:
            pass
        finally:
            f.close()
            c.close()

    print("listening", flush=True)
    while time.time() < end:
        try:
            c, addr = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(c, addr), daemon=True).start()
