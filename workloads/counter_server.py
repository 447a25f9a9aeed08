#!/usr/bin/env python3
"""A stateful TCP service for demos and tests: every connection keeps a counter.

The client sends lines "<n>\\n"; the server answers "<n> <count>\\n", where count is how many lines that
connection has sent so far. A restarted server (or a new connection) starts again from zero, so a
client that checks n == count sees any reconnect or lost byte at once. Single-threaded on purpose:
a small, quiet process is what CRIU dumps fastest.
"""
import selectors
import socket
import sys


def serve(srv, on_line=None, announce=True):
    """Serves the counter protocol on listening socket `srv` forever; `on_line()` runs once per request."""
    sel = selectors.DefaultSelector()
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ, None)
    state = {}  # socket -> [count, pending bytes]
    while True:
        for key, _ in sel.select():
            if key.data is None:
                conn, addr = srv.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                state[conn] = [0, b""]
                sel.register(conn, selectors.EVENT_READ, "conn")
                if announce:
                    print(f"connection from {addr[0].removeprefix('::ffff:')}:{addr[1]}", flush=True)
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                sel.unregister(conn)
                state.pop(conn, None)
                conn.close()
                continue
            st = state[conn]
            lines = (st[1] + data).split(b"\n")
            st[1] = lines.pop()
            out = []
            for line in lines:
                st[0] += 1
                out.append(line + b" " + str(st[0]).encode() + b"\n")
                if on_line:
                    on_line()
            if out:
                conn.setblocking(True)
                conn.sendall(b"".join(out))
                conn.setblocking(False)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7000
    # "dual": listen on an IPv6 socket that also accepts IPv4, as Go, Node and Java servers do by default.
    dual = len(sys.argv) > 2 and sys.argv[2] == "dual"
    srv = socket.socket(socket.AF_INET6 if dual else socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if dual:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::" if dual else "0.0.0.0", port))
    srv.listen(128)
    print(f"counter server listening on :{port}", flush=True)
    serve(srv)
