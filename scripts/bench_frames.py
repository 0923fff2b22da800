#!/usr/bin/env python3
"""Writes the benchmark source capture: N 60-byte Ethernet/IPv4/UDP frames
(64 bytes on the wire with the FCS) from 192.0.2.10 to 198.51.100.10, to the
MAC given, with N different source ports. Plain Python, no scapy needed."""
import struct
import sys


def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(dst_mac, sport):
    payload = b"\x00" * 18  # 14 + 20 + 8 + 18 = 60 bytes
    udp = struct.pack("!HHHH", sport, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([192, 0, 2, 10]), bytes([198, 51, 100, 10]))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = dst_mac + bytes([0x02, 0, 0, 0, 0, 0x0A]) + b"\x08\x00"
    return eth + ip + udp


def main():
    path, mac, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dst = bytes(int(x, 16) for x in mac.split(":"))
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(n):
            fr = frame(dst, 1024 + i)
            f.write(struct.pack("<IIII", 0, i, len(fr), len(fr)))
            f.write(fr)


if __name__ == "__main__":
    main()
