#!/usr/bin/env python3
"""Paced request/response client for a counter server (workloads/counter_server.py), to measure stalls.

Usage: pingpong.py HOST PORT [PACE_MS] [GAP_MS]

Sends "<n>\\n" every PACE_MS (default 1) after the previous answer and checks each answer is "<n> <n>", so a
lost byte or a reconnect shows at once. Prints JSON lines on stdout, times in CLOCK_MONOTONIC microseconds
(the clock of bpf_ktime_get_ns, pm-hold's monoUs and Node's process.hrtime):
  {"connected": {"local": "IP:PORT", "monoUs": T}}
  {"gap": {"startUs": T0, "endUs": T1, "ms": D, "n": N}}   a reply came D ms after the previous one (D > GAP_MS)
  {"summary": {"replies": N, "ok": B, "error": E, "maxGapMs": D, "monoUs": T}}   on SIGTERM/SIGINT or failure
Exit status 0 when every answer was right and the connection never broke.
"""
import json
import signal
import socket
import sys
import time


class Stop(Exception):
    pass


def on_signal(_signum, _frame):
    raise Stop()


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    pace_s = (float(sys.argv[3]) if len(sys.argv) > 3 else 1.0) / 1000
    gap_ns = int((float(sys.argv[4]) if len(sys.argv) > 4 else 20.0) * 1e6)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    local = s.getsockname()
    emit({"connected": {"local": f"{local[0]}:{local[1]}", "monoUs": time.monotonic_ns() // 1000}})
    n, replies, ok, error, max_gap_ns = 0, 0, True, None, 0
    buf = b""
    last = time.monotonic_ns()
    try:
        while True:
            n += 1
            s.sendall(f"{n}\n".encode())
            while b"\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            now = time.monotonic_ns()
            if line.split() != [str(n).encode(), str(n).encode()]:
                ok, error = False, f"answer {line[:40]!r} to request {n}"
                break
            replies += 1
            gap = now - last
            if gap > max_gap_ns:
                max_gap_ns = gap
            if gap > gap_ns:
                emit({"gap": {"startUs": last // 1000, "endUs": now // 1000, "ms": round(gap / 1e6, 3), "n": n}})
            last = now
            time.sleep(pace_s)
    except Stop:
        pass
    except OSError as e:  # ConnectionResetError (an RST) and friends
        ok, error = False, f"{type(e).__name__}: {e}"
    emit({"summary": {"replies": replies, "ok": ok, "error": error, "maxGapMs": round(max_gap_ns / 1e6, 3),
                      "monoUs": time.monotonic_ns() // 1000}})
    sys.exit(0 if ok else 1)


main()
