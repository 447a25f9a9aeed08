"""A Redis client that can tell whether anything was lost: over one connection it keeps writing key k:N = N
and incrementing a counter, each acknowledged before the next, for SECONDS; then it reads every key back
and the counter. Prints one JSON line: operations, keys missing or wrong, the counter against the
increments acknowledged, errors, and the longest wait for a reply (the client-visible stall).

    redis_checker.py HOST PORT SECONDS
"""
import json
import socket
import sys
import time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sock = socket.create_connection((host, port), timeout=30)
buf = b""


def command(*args):
    global buf
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return reply()


def line():
    global buf
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    l, buf = buf.split(b"\r\n", 1)
    return l


def reply():
    global buf
    l = line()
    kind, rest = l[:1], l[1:]
    if kind in (b"+", b":"):
        return int(rest) if kind == b":" else rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        while len(buf) < n + 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        v, buf = buf[:n], buf[n + 2:]
        return v.decode()
    if kind == b"*":
        return [reply() for _ in range(int(rest))]
    raise RuntimeError("bad reply %r" % l)


errors = 0
n = 0
incrs = 0
stall = 0.0
start = time.monotonic()
command("DEL", "checker:counter")
while time.monotonic() - start < seconds:
    t0 = time.monotonic()
    try:
        command("SET", "checker:k:%d" % n, n)
        command("INCR", "checker:counter")
        n += 1
        incrs += 1
    except Exception as e:  # a lost connection or an error reply: counted, never retried
        errors += 1
        print(json.dumps({"error": str(e)}), file=sys.stderr)
        break
    stall = max(stall, time.monotonic() - t0)
missing = wrong = 0
for lo in range(0, n, 1000):
    values = command("MGET", *["checker:k:%d" % i for i in range(lo, min(n, lo + 1000))])
    for i, v in zip(range(lo, min(n, lo + 1000)), values):
        if v is None:
            missing += 1
        elif v != str(i):
            wrong += 1
counter = int(command("GET", "checker:counter") or 0)
print(json.dumps({"operations": n * 2, "keys": n, "missing": missing, "wrong": wrong, "counter": counter,
                  "increments": incrs, "errors": errors, "maxWaitMs": round(stall * 1000, 1)}))
