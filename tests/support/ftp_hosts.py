#!/usr/bin/env python3
"""The programs the helper test (tests/netns_ftp.rs) runs on the Linux hosts
in its network namespaces: an FTP server (pyftpdlib) and a TFTP server
(tftpy), and clients (the standard library's ftplib, tftpy) that fetch a
file in a given mode and print what happened as one JSON line.

Every command has a time bound; nothing here talks to anything but the
addresses it is given.
"""

import hashlib
import json
import logging
import socket
import sys
import time


def ftp_serve(root, port, log):
    """Anonymous read-only FTP on 0.0.0.0:PORT, passive ports 50000-50099.
    pyftpdlib refuses PORT / EPRT to an address other than the control
    connection's peer (permit_foreign_addresses is off): an active transfer
    through NAT works only if the announcement was rewritten. Each
    command is logged to LOG with the peer's address."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    logging.basicConfig(filename=log, level=logging.INFO)
    auth = DummyAuthorizer()
    auth.add_anonymous(root)
    handler = FTPHandler
    handler.authorizer = auth
    handler.passive_ports = range(50000, 50100)
    handler.permit_foreign_addresses = False
    server = FTPServer(("0.0.0.0", int(port)), handler)
    print("listening", flush=True)
    server.serve_forever(timeout=0.5)


def ftp_get(host, port, name, mode):
    """Fetches NAME from HOST:PORT anonymously, the data connection made by
    MODE: pasv (PASV), port (PORT), epsv (EPSV), eprt (EPRT)."""
    import ftplib

    out = {"mode": mode}
    t0 = time.time()
    try:
        ftp = ftplib.FTP()
        ftp.connect(host, int(port), timeout=5)
        ftp.login()
        ftp.voidcmd("TYPE I")
        if mode == "pasv":
            ftp.set_pasv(True)
            conn = ftp.transfercmd("RETR " + name)
        elif mode == "port":
            ftp.set_pasv(False)
            conn = ftp.transfercmd("RETR " + name)
        elif mode == "epsv":
            resp = ftp.sendcmd("EPSV")
            _, dport = ftplib.parse229(resp, ftp.sock.getpeername())
            conn = socket.create_connection((host, dport), timeout=5)
            ftp.sendcmd("RETR " + name)
        elif mode == "eprt":
            lsock = socket.create_server((ftp.sock.getsockname()[0], 0))
            lsock.settimeout(5)
            ftp.sendeprt(*lsock.getsockname()[:2])
            ftp.sendcmd("RETR " + name)
            conn, _ = lsock.accept()
            lsock.close()
        else:
            raise ValueError(mode)
        conn.settimeout(5)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.close()
        ftp.voidresp()
        ftp.quit()
        out.update(ok=True, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    except Exception as e:  # the test prints what went wrong
        out.update(ok=False, error="%s: %s" % (type(e).__name__, e))
    out["secs"] = round(time.time() - t0, 2)
    print(json.dumps(out), flush=True)


def tftp_serve(root, port):
    """TFTP on 0.0.0.0:PORT; each transfer answers from a port of its own."""
    import tftpy

    logging.getLogger("tftpy").setLevel(logging.WARNING)
    server = tftpy.TftpServer(root)
    print("listening", flush=True)
    server.listen("0.0.0.0", int(port))


def tftp_get(host, port, name, dest):
    """Reads NAME from HOST:PORT into DEST."""
    import tftpy

    logging.getLogger("tftpy").setLevel(logging.CRITICAL)
    out = {"mode": "tftp"}
    try:
        tftpy.TftpClient(host, int(port)).download(name, dest, timeout=2, retries=2)
        data = open(dest, "rb").read()
        out.update(ok=True, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    except Exception as e:
        out.update(ok=False, error="%s: %s" % (type(e).__name__, e))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "ftp-serve": ftp_serve,
        "ftp-get": ftp_get,
        "tftp-serve": tftp_serve,
        "tftp-get": tftp_get,
    }[cmd](*args)
