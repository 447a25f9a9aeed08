#!/usr/bin/env python3
"""One short exchange with a counter server: connect, send N lines, check every answer. Prints JSON."""
import json
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 5
t0 = time.monotonic()
s = socket.create_connection((host, port), timeout=5)
f = s.makefile("rb")
ok = True
for i in range(1, n + 1):
    s.sendall(f"{i}\n".encode())
    reply = f.readline().decode().split()
    ok = ok and reply == [str(i), str(i)]
s.close()
print(json.dumps({"host": host, "port": port, "lines": n, "ok": ok, "ms": round((time.monotonic() - t0) * 1000, 2)}))
sys.exit(0 if ok else 1)
