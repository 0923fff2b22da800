"""The programs of the HA failover test (tests/netns_ha.rs), run in its
client and server namespaces. Each prints progress lines the test reads:

  download-server HOST PORT SECS   accepts connections; streams 8 KiB chunks
                                   every 10 ms to each; prints
                                   "accepted ADDR PORT" and "closed ..." lines
  download-client SRC SPORT HOST PORT SECS
                                   reads the stream; prints "bytes N" every
                                   100 ms and "error ..." if the connection
                                   fails (reset, refused)
  udp-server HOST PORT SECS        answers each datagram; prints "from ADDR
                                   PORT" the first time a source is seen
  udp-client SRC SPORT HOST PORT SECS
                                   one datagram every 20 ms; prints
                                   "udp sent N answered M" every 100 ms
Every program stops after SECS.
"""

import socket
import sys
import threading
import time


def say(*words):
    print(*words, flush=True)


def download_server(host, port, secs):
    end = time.time() + float(secs)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(4)
    s.settimeout(0.5)
    say("listening")
    chunk = b"x" * 8192

    def stream(c, addr):
        c.settimeout(30)
        try:
            while time.time() < end:
                c.sendall(chunk)
                time.sleep(0.01)
        except OSError as e:
            say("closed", addr[0], addr[1], type(e).__name__)
            return
        finally:
            c.close()
        say("closed", addr[0], addr[1], "done")

    while time.time() < end:
        try:
            c, addr = s.accept()
        except socket.timeout:
            continue
        say("accepted", addr[0], addr[1])
        threading.Thread(target=stream, args=(c, addr), daemon=True).start()


def download_client(src, sport, host, port, secs):
    end = time.time() + float(secs)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind((src, int(sport)))
    c.settimeout(2)
    try:
        c.connect((host, int(port)))
    except OSError as e:
        say("error connect", type(e).__name__)
        return
    c.settimeout(0.1)
    total = 0
    last = 0.0
    while time.time() < end:
        try:
            data = c.recv(65536)
            if not data:
                say("error eof")
                return
            total += len(data)
        except socket.timeout:
            pass
        except OSError as e:
            say("error", type(e).__name__)
            return
        if time.time() - last >= 0.1:
            say("bytes", total)
            last = time.time()
    say("bytes", total)
    c.close()


def udp_server(host, port, secs):
    end = time.time() + float(secs)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    s.settimeout(0.5)
    say("listening")
    seen = set()
    while time.time() < end:
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        if addr not in seen:
            seen.add(addr)
            say("from", addr[0], addr[1])
        s.sendto(data, addr)


def udp_client(src, sport, host, port, secs):
    end = time.time() + float(secs)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, int(sport)))
    s.setblocking(False)
    sent = answered = 0
    last = 0.0
    while time.time() < end:
        try:
            s.sendto(b"%d" % sent, (host, int(port)))
            sent += 1
        except OSError:
            pass
        t = time.time() + 0.02
        while time.time() < t:
            try:
                s.recvfrom(2048)
                answered += 1
            except BlockingIOError:
                time.sleep(0.002)
            except OSError:
                time.sleep(0.002)
        if time.time() - last >= 0.1:
            say("udp sent", sent, "answered", answered)
            last = time.time()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "download-server": download_server,
        "download-client": download_client,
        "udp-server": udp_server,
        "udp-client": udp_client,
    }[cmd](*args)


if __name__ == "__main__":
    main()
