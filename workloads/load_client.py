#!/usr/bin/env python3
"""Continuous load on a counter server over N connections, for demos and tests.

usage: load_client.py HOST PORT CONNECTIONS [INTERVAL_MS]

Each connection sends "<n>\\n" and expects "<n> <n>\\n" back (see counter_server.py): a reply out of order,
a lost byte, a reset or a reconnect all show up as an error, and a connection that fails is never reopened.
Commands on stdin, one per line; each answer is one JSON line on stdout:
  mark  - statistics since the previous mark (max stall = longest wait for a reply, per connection and overall)
  stop  - final statistics, then exit
"""
import json
import socket
import sys
import threading
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
interval = (int(sys.argv[4]) if len(sys.argv) > 4 else 5) / 1000.0
lock = threading.Lock()
stop = threading.Event()


class Conn:
    def __init__(self, idx):
        self.idx = idx
        self.sent = 0
        self.errors = []
        self.max_stall = 0.0
        # monotonic time the outstanding request was sent, or None: a wedged connection must show as a stall
        self.pending_since = None
        self.local = None

    def run(self):
        try:
            s = socket.create_connection((host, port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local = "%s:%d" % s.getsockname()
            f = s.makefile("rb")
        except OSError as e:
            self.errors.append("connect: %s" % e)
            return
        while not stop.is_set():
            n = self.sent + 1
            t0 = time.monotonic()
            with lock:
                self.pending_since = t0
            try:
                s.sendall(b"%d\n" % n)
                reply = f.readline()
            except OSError as e:
                with lock:
                    self.errors.append("request %d: %s" % (n, e))
                return
            waited = time.monotonic() - t0
            with lock:
                self.pending_since = None
                self.sent = n
                self.max_stall = max(self.max_stall, waited)
                if reply.split() != [str(n).encode(), str(n).encode()]:
                    self.errors.append("request %d: got %r" % (n, reply[:40]))
                    return
            time.sleep(interval)


conns = [Conn(i) for i in range(count)]
threads = [threading.Thread(target=c.run, daemon=True) for c in conns]
for t in threads:
    t.start()
time.sleep(0.2)
print(json.dumps({"ready": True, "connections": [c.local for c in conns]}), flush=True)


def stall_of(c, now):
    """Longest wait for a reply since the last mark, counting a request still waiting (a wedged connection)."""
    waiting = now - c.pending_since if c.pending_since is not None and not c.errors else 0.0
    return max(c.max_stall, waiting)


def report(final):
    with lock:
        now = time.monotonic()
        out = {
            "connections": count,
            "alive": sum(1 for c in conns if not c.errors),
            "requests": sum(c.sent for c in conns),
            "errors": [e for c in conns for e in c.errors],
            "maxStallMs": round(max(stall_of(c, now) for c in conns) * 1000, 1),
            "perConnection": [{"local": c.local, "requests": c.sent, "maxStallMs": round(stall_of(c, now) * 1000, 1)} for c in conns],
            "final": final,
        }
        for c in conns:
            c.max_stall = 0.0
    print(json.dumps(out), flush=True)


for line in sys.stdin:
    cmd = line.strip()
    if cmd == "mark":
        report(False)
    elif cmd == "stop":
        break
stop.set()
for t in threads:
    t.join(timeout=5)
report(True)
