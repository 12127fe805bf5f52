#!/usr/bin/env python3
"""memory_flood.py - what the server holds when 100 clients each hold a
10 MiB upload (README, "Memory" and "Fair shares").

usage: bench/memory_flood.py path/to/dae-server distinct|same

Starts the server with its default budgets, opens 100 connections that
announce a 10 MiB body (from 100 loopback addresses, or all from
127.0.0.1), sends all but the last byte on those not refused at once,
and prints how many are held, the server's RSS and what /metrics says is
reserved; then closes them and prints the RSS again.
"""

import socket
import sys
import tempfile
import time

from loop_stall import Server


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) // 1024


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("distinct", "same"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory(prefix="dae-flood.")
    server = Server(sys.argv[1], tmp.name)
    port = server.port
    length = 10 * 1024 * 1024 - 4096
    head = ("POST /denoise HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            "Content-Length: %d\r\n\r\n" % length).encode()
    socks = []
    for i in range(100):
        source = "127.0.1.%d" % (2 + i) if sys.argv[2] == "distinct" else "127.0.0.1"
        s = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
        s.sendall(head)
        socks.append(s)
    time.sleep(0.5)
    held = []
    for s in socks:
        s.setblocking(False)
        try:
            first = s.recv(100)
        except BlockingIOError:
            first = None
        if not first:
            held.append(s)
    for s in held:
        s.setblocking(True)
        try:
            s.sendall(b"\0" * (length - 1))
        except OSError:
            pass
    time.sleep(1)
    metrics = server.text("/metrics")
    reserved = int(float(next(line for line in metrics.splitlines()
                              if line.startswith("dae_memory_reserved_bytes ")).split()[1]))
    print("%s: %d held, %d refused, RSS %d MiB, %.0f MiB reserved"
          % ("100 addresses" if sys.argv[2] == "distinct" else "one address", len(held), 100 - len(held), rss_mib(server.proc.pid), reserved / 1048576))
    for s in socks:
        s.close()
    time.sleep(1.5)
    print("after they left: RSS %d MiB" % rss_mib(server.proc.pid))
    server.stop()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
