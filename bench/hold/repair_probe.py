#!/usr/bin/env python3
"""Makes a live TCP socket send the window probe a CRIU-restored socket sends when it leaves repair mode.

Usage: repair_probe.py PID PEER_IP:PORT

Takes the socket of process PID connected to PEER (pidfd_getfd, Linux >= 5.6), sets TCP_REPAIR to 1, then
to 0 (TCP_REPAIR_OFF): the kernel then calls tcp_send_window_probe(), a pure ACK with seq = snd_una - 1 and
the socket's current window -- exactly what CRIU's restore does for every established socket. Prints
{"probeUs": T} with T in CLOCK_MONOTONIC microseconds, taken right after the probe was sent.
"""
import ctypes
import json
import os
import socket
import sys
import time

SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
TCP_REPAIR = 19
TCP_REPAIR_ON, TCP_REPAIR_OFF = 1, 0

libc = ctypes.CDLL(None, use_errno=True)


def syscall(nr, *args):
    r = libc.syscall(nr, *args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def main():
    pid = int(sys.argv[1])
    host, port = sys.argv[2].rsplit(":", 1)
    pidfd = syscall(SYS_PIDFD_OPEN, pid, 0)
    for name in os.listdir(f"/proc/{pid}/fd"):
        if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
            continue
        s = socket.socket(fileno=syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0))
        try:
            if s.getpeername() != (host, int(port)):
                continue
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF)
            print(json.dumps({"probeUs": time.monotonic_ns() // 1000}), flush=True)
            return
        except OSError:
            continue  # a listening socket has no peer
        finally:
            s.close()  # our duplicate only; the server keeps its own descriptor
    sys.exit(f"repair_probe: no socket of pid {pid} is connected to {sys.argv[2]}")


main()
