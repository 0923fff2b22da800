#!/usr/bin/env python3
"""The programs the fault tests (tests/netns_faults.rs) run on the Linux
hosts in their network namespaces: echo servers, a sink, a UDP stream that
notes when each echo came back, and a TCP client driven line by line from
stdin.

Every command has a time bound; nothing here talks to anything but the
addresses it is given.
"""

import json
import select
import socket
import sys
import threading
import time

from hosts_common import family, serve_tcp_lines, serve_udp


def udp_echo(host, port, secs):
    """Sends every datagram back as it came. Not waiting: while the path
    back is down, the kernel holds what waits for ARP against the socket's
    buffer."""
    serve_udp(host, port, secs, lambda data, addr: data, socket.MSG_DONTWAIT)


def tcp_echo(host, port, secs):
    """Answers every line on every connection with 'echo LINE'."""
    serve_tcp_lines(host, port, secs, lambda line, addr: b"echo " + line)


def udp_sink(host, port, secs):
    """Binds and never reads: the kernel drops what overflows the socket's
    buffer, and sends no port-unreachable back."""
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    print("listening", flush=True)
    time.sleep(float(secs))


def stdin_stop(secs):
    """A flag set when stdin says anything (or closes), or after secs."""
    stop = threading.Event()

    def watch():
        r, _, _ = select.select([sys.stdin], [], [], float(secs))
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def udp_stream(host, port, rate, secs):
    """Sends numbered datagrams at `rate` a second until stdin says stop (at
    most `secs`), then waits a second for late echoes and prints JSON: how
    many were sent and echoed, and the time (epoch seconds) of each echo."""
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.connect((host, int(port)))
    s.settimeout(0.2)
    stop = stdin_stop(secs)
    echoes = []
    done = threading.Event()

    def receive():
        while not done.is_set():
            try:
                data = s.recv(2048)
            except socket.timeout:
                continue
            except OSError:
                # ICMP errors (unreachable) surface here on a connected socket.
                continue
            if data.startswith(b"seq "):
                echoes.append(time.time())

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    print("streaming", flush=True)
    sent, gap, nxt = 0, 1.0 / float(rate), time.time()
    while not stop.is_set():
        try:
            s.send(b"seq %d " % sent + b"x" * 64)
        except OSError:
            pass
        sent += 1
        nxt += gap
        time.sleep(max(0.0, nxt - time.time()))
    time.sleep(1.0)
    done.set()
    t.join()
    print(json.dumps({"sent": sent, "echoed": len(echoes), "echo_times": echoes}), flush=True)


def tcp_chat(host, port, secs):
    """Connects, says 'connected', then sends each stdin line and prints the
    answer (or 'error: ...'); ends when stdin closes (at most `secs`)."""
    c = socket.create_connection((host, int(port)), timeout=10)
    print("connected", flush=True)
    end = time.time() + float(secs)
    f = c.makefile("rb")
    while time.time() < end:
        line = sys.stdin.readline()
        if not line:
            break
        try:
            c.settimeout(15)
            c.sendall(line.encode())
            answer = f.readline().decode().strip()
            print(answer if answer else "error: closed", flush=True)
        except OSError as e:
            print("error: %s" % e, flush=True)
    c.close()


def main():
    cmds = {
        "udp-echo": udp_echo,
        "tcp-echo": tcp_echo,
        "udp-sink": udp_sink,
        "udp-stream": udp_stream,
        "tcp-chat": tcp_chat,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit("usage: fault_hosts.py %s ARGS" % "|".join(cmds))
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
