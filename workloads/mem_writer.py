#!/usr/bin/env python3
"""A pod with a working set it keeps changing, and that can check its own memory.

usage: mem_writer.py PORT SIZE_MIB RATE_MIB_PER_S

Holds SIZE_MIB of memory in 4 KiB pages; page i always holds its index and a version number, repeated over
the whole page. Every 10 ms it rewrites enough pages (round robin, with a new version) to dirty about
RATE_MIB_PER_S. On PORT, each line "check" is answered with "ok <pages> <writes>" when every page is intact
(header repeated over the page, version not ahead of what was written) or "bad <page>" at the first broken
one, so a migration that lost or mixed up a page shows at once.
"""
import selectors
import socket
import struct
import sys
import time

PAGE = 4096
port, size_mib, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
pages = size_mib * 256
mem = bytearray(pages * PAGE)
version = [0] * pages


def write_page(i, v):
    mem[i * PAGE:(i + 1) * PAGE] = struct.pack("<QQ", i, v) * (PAGE // 16)
    version[i] = v


for i in range(pages):
    write_page(i, 1)

sel = selectors.DefaultSelector()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(16)
srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
print(f"mem_writer: {size_mib} MiB, dirtying {rate} MiB/s, port {port}", flush=True)

per_tick = max(0, int(rate * 256 / 100))
cursor = 0
writes = 0
next_tick = time.monotonic()


def check():
    for i in range(pages):
        chunk = bytes(mem[i * PAGE:(i + 1) * PAGE])
        idx, v = struct.unpack_from("<QQ", chunk)
        if idx != i or v != version[i] or chunk != chunk[:16] * (PAGE // 16):
            return f"bad {i}"
    return f"ok {pages} {writes}"


while True:
    timeout = max(0.0, next_tick - time.monotonic())
    for key, _ in sel.select(timeout):
        if key.fileobj is srv:
            c, _ = srv.accept()
            c.setblocking(True)
            sel.register(c, selectors.EVENT_READ)
            continue
        c = key.fileobj
        line = c.recv(64)
        if not line:
            sel.unregister(c)
            c.close()
            continue
        c.sendall((check() + "\n").encode())
    if time.monotonic() >= next_tick:
        next_tick += 0.01
        for _ in range(per_tick):
            write_page(cursor, version[cursor] + 1)
            cursor = (cursor + 1) % pages
            writes += 1
