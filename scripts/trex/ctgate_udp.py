"""TRex stateless (STL) profile: the traffic of scripts/bench.sh for a TRex
box wired to ctgate (TRex port 0 -> ctgate inside port, ctgate outside port
-> TRex port 1).

One-way UDP from the inside: `flows` distinct flows, client addresses
192.0.2.10-192.0.2.249 first, then source ports from 1024 (the flows of
scripts/bench_frames.py), to 198.51.100.10 port 9; frames of `size` bytes on the wire (64..1518, FCS
included) or the simple IMIX (64 / 594 / 1518 bytes at 7:4:1).

  start -f scripts/trex/ctgate_udp.py -m 10mpps --port 0 -t flows=1000000,size=64
  start -f scripts/trex/ctgate_udp.py -m 100% --port 0 -t flows=100000,size=imix

Tunables: flows (default 1000), size (default 64, or "imix"), dst_mac (the
ctgate inside port's MAC; default: TRex's configured destination MAC).
scripts/trex/validate.py builds these streams with trex-stl-lib and replays
their packets through `ctgate replay` (tests/trex_profiles.rs).
"""
from trex_stl_lib.api import STLProfile, STLStream, STLPktBuilder, STLTXCont, STLVM, Ether, IP, UDP

CLIENTS = 240
ETH_LEN = 14
IMIX = [(64, 7), (594, 4), (1518, 1)]


class CtgateUdp(object):
    def flow_vm(self, flows):
        """Source address and port from one tuple generator: exactly `flows` flows."""
        n_addr = min(flows, CLIENTS)
        n_port = (flows + n_addr - 1) // n_addr
        if 1024 + n_port - 1 > 65535:
            raise ValueError("at most %d flows" % (CLIENTS * 64512))
        vm = STLVM()
        vm.tuple_var(name="flow", ip_min="192.0.2.10", ip_max="192.0.2.%d" % (10 + n_addr - 1),
                     port_min=1024, port_max=1024 + n_port - 1, limit_flows=flows)
        # Byte offsets rather than "IP.src" / "UDP.sport": the field names need
        # the offsets TRex's own scapy adds; plain scapy (PyPI) lacks them.
        vm.write(fv_name="flow.ip", pkt_offset=ETH_LEN + 12)  # IPv4 source address
        vm.write(fv_name="flow.port", pkt_offset=ETH_LEN + 20)  # UDP source port
        vm.fix_chksum(offset=ETH_LEN)  # the IPv4 header checksum
        return vm

    def stream(self, size, flows, dst_mac, pps):
        eth = Ether(dst=dst_mac) if dst_mac else Ether()
        base = eth / IP(src="192.0.2.10", dst="198.51.100.10", ttl=64) / UDP(sport=1024, dport=9, chksum=0)
        pad = max(0, size - 4 - len(base))  # size counts the 4-byte FCS
        pkt = STLPktBuilder(pkt=base / ("\x00" * pad), vm=self.flow_vm(flows))
        return STLStream(packet=pkt, mode=STLTXCont(pps=pps))

    def get_streams(self, direction=0, flows=1000, size=64, dst_mac=None, **kwargs):
        flows = int(flows)
        if str(size) == "imix":
            return [self.stream(s, flows, dst_mac, pps=w) for s, w in IMIX]
        size = int(size)
        if not 64 <= size <= 1518:
            raise ValueError("size must be 64..1518 or imix")
        return [self.stream(size, flows, dst_mac, pps=1)]


def register():
    return CtgateUdp()
