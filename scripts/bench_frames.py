#!/usr/bin/env python3
"""Writes a benchmark source capture: N 60-byte Ethernet/IPv4/UDP frames (64
bytes on the wire with the FCS), one per flow, to the MAC given. Plain
Python, no scapy needed; a million frames take a few seconds.

Flow i (counting from --first) goes from 192.0.2.(10 + i % 240), source port
1024 + i // 240, to 198.51.100.10 port 9: client addresses first, then
ports (like TRex's tuple generator), up to 15 million distinct flows inside
the TEST-NET ranges. Spreading the flows over 240 clients matters for SNAT:
like the kernel, ctgate picks the translated address by a hash of the
source, so thousands of flows per client would crowd one address's ports.

usage: bench_frames.py OUT.pcap DST_MAC N [--first K] [--reply] [--tcp] [--size B]
  --reply   write each flow's reply instead (198.51.100.10:9 -> the client)
  --tcp     TCP ACK segments of an established connection (fixed sequence
            numbers per flow, window 65535, checksums filled) instead of UDP
  --size B  frame size without FCS (default 60; 60..1514)
  --imix    the simple IMIX instead: 60 / 590 / 1514 bytes (64 / 594 / 1518 on
            the wire) at 7:4:1, flow by flow
"""
import argparse
import struct

CLIENTS = 240


def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def flow(i):
    """(client address bytes, client port) of flow i."""
    if i >= CLIENTS * 64511:
        raise SystemExit("bench_frames: at most %d flows" % (CLIENTS * 64511))
    return bytes([192, 0, 2, 10 + i % CLIENTS]), 1024 + i // CLIENTS


def frame(dst_mac, src_mac, src, dst, sport, dport, size):
    payload = b"\x00" * (size - 42)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + udp


def tcp_frame(dst_mac, src_mac, src, dst, sport, dport, seq, ack, size):
    # A pure ACK (no payload; Ethernet padding up to the size) unless the frame is bigger.
    payload = b"\x00" * max(0, size - 54 - 6)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, 0x10, 65535, 0, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    body = pseudo + tcp + (b"\x00" if len(tcp) % 2 else b"")
    tcp = tcp[:16] + struct.pack("!H", csum(body)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    fr = dst_mac + src_mac + b"\x08\x00" + ip + tcp
    return fr + b"\x00" * (size - len(fr))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("mac")
    ap.add_argument("n", type=int)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--reply", action="store_true")
    ap.add_argument("--tcp", action="store_true")
    ap.add_argument("--size", type=int, default=60)
    ap.add_argument("--imix", action="store_true")
    a = ap.parse_args()
    imix = [60] * 7 + [590] * 4 + [1514]
    if not 60 <= a.size <= 1514:
        raise SystemExit("bench_frames: --size must be 60..1514")
    dst = bytes(int(x, 16) for x in a.mac.split(":"))
    peer_mac = bytes([0x02, 0, 0, 0, 0, 0x0B if a.reply else 0x0A])
    server = bytes([198, 51, 100, 10])
    recs = []
    with open(a.path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for k in range(a.n):
            i = a.first + k
            client, cport = flow(i)
            size = imix[k % len(imix)] if a.imix else a.size
            if a.tcp:
                cseq, sseq = (1000 + 7 * i) & 0xFFFFFFFF, (500000 + 13 * i) & 0xFFFFFFFF
                if a.reply:
                    fr = tcp_frame(dst, peer_mac, server, client, 9, cport, sseq, cseq, size)
                else:
                    fr = tcp_frame(dst, peer_mac, client, server, cport, 9, cseq, sseq, size)
            elif a.reply:
                fr = frame(dst, peer_mac, server, client, 9, cport, size)
            else:
                fr = frame(dst, peer_mac, client, server, cport, 9, size)
            recs.append(struct.pack("<IIII", k // 1000000, k % 1000000, len(fr), len(fr)))
            recs.append(fr)
            if len(recs) >= 65536:
                f.write(b"".join(recs))
                recs.clear()
        f.write(b"".join(recs))


if __name__ == "__main__":
    main()
