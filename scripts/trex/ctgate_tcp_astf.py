"""TRex advanced stateful (ASTF) profile: real TCP sessions through ctgate
(connection set-up and tear-down per session: new connections per second).

Clients 192.0.2.10-192.0.2.254 on TRex port 0 (ctgate's inside), servers
198.51.100.10-198.51.100.20 on TRex port 1 (ctgate's outside; with
masquerade/SNAT they see ctgate's outside address). Each session: a 3-way
handshake, a small HTTP-like request and response, FIN both ways.

  sudo ./t-rex-64 --astf -f scripts/trex/ctgate_tcp_astf.py -m 1 -d 30 -t cps=100000
  (or from the console: start -f scripts/trex/ctgate_tcp_astf.py -m 1 -t cps=100000)

Tunables: cps (new sessions per second at -m 1, default 10000),
response (response size in bytes, default 512).
Needs TRex's own Python client (trex.astf.api, shipped with TRex): the PyPI
trex-stl-lib has only the stateless API, so this profile is not validated
by tests/trex_profiles.rs.
"""
from trex.astf.api import (ASTFAssociationRule, ASTFIPGen, ASTFIPGenDist, ASTFIPGenGlobal,
                           ASTFProfile, ASTFProgram, ASTFTCPClientTemplate, ASTFTCPServerTemplate,
                           ASTFTemplate)

REQUEST = b"GET /ctgate HTTP/1.1\r\nHost: 198.51.100.10\r\n\r\n"


class CtgateTcp(object):
    def get_profile(self, tunables=(), cps=10000, response=512, **kwargs):
        # Tunables arrive as a list of strings in newer TRex, as keywords in older ones.
        for t in tunables:
            k, _, v = t.partition("=")
            if k == "cps":
                cps = v
            elif k == "response":
                response = v
        cps, response = float(cps), int(response)
        body = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % response + b"x" * response

        client = ASTFProgram()
        client.send(REQUEST)
        client.recv(len(body))

        server = ASTFProgram()
        server.recv(len(REQUEST))
        server.send(body)

        ip_gen = ASTFIPGen(glob=ASTFIPGenGlobal(ip_offset="0.0.0.1"),
                           dist_client=ASTFIPGenDist(ip_range=["192.0.2.10", "192.0.2.254"], distribution="seq"),
                           dist_server=ASTFIPGenDist(ip_range=["198.51.100.10", "198.51.100.20"], distribution="seq"))
        template = ASTFTemplate(
            client_template=ASTFTCPClientTemplate(program=client, ip_gen=ip_gen, cps=cps, port=80),
            server_template=ASTFTCPServerTemplate(program=server, assoc=ASTFAssociationRule(port=80)))
        return ASTFProfile(default_ip_gen=ip_gen, templates=template)


def register():
    return CtgateTcp()
