#!/usr/bin/env python3
"""The three containers of a multi-container test pod, one role per process tree:

  app PORT       the counter service ("<n>\\n" -> "<n> <count>\\n" per connection), on 127.0.0.1 only; it
                 appends a line per 100 requests to app.log on the shared volume
  proxy PORT APP a sidecar: accepts on the pod's PORT and forwards each connection to 127.0.0.1:APP, so
                 every client connection is a loopback connection between two containers too; APP may
                 also be HOST:PORT (a Service's ClusterIP: the pod is then a Service client as well)
  shipper        a log shipper: follows app.log on the shared volume and counts the lines it has shipped

Every role keeps a heartbeat (a tick every 5 ms on the monotonic clock) and writes, five times a second,
<role>.hb on the shared volume ($PODMOTION_VOLUME_LOGS): beats, the longest gap between two ticks and the
gaps over 50 ms. A container that was frozen longer than the pod's freeze, or saw another container
frozen or gone, shows it there.
"""
import json
import os
import counter_server  # the app serves the same counter protocol (this directory is on the path)
import socket
import sys
import threading
import time

VOL = os.environ.get("PODMOTION_VOLUME_LOGS", "/tmp")
role = sys.argv[1]
stats = {"role": role, "beats": 0, "maxGapMs": 0.0, "gaps": [], "extra": {}}


def heartbeat():
    last = time.monotonic()
    written = last
    while True:
        time.sleep(0.005)
        now = time.monotonic()
        gap = (now - last) * 1000
        last = now
        stats["beats"] += 1
        if gap > stats["maxGapMs"]:
            stats["maxGapMs"] = round(gap, 1)
        if gap > 50:
            stats["gaps"] = (stats["gaps"] + [{"atMs": round(time.time() * 1000), "gapMs": round(gap, 1)}])[-50:]
        if now - written >= 0.2:
            written = now
            tmp = os.path.join(VOL, f".{role}.hb.tmp")
            with open(tmp, "w") as f:
                json.dump(stats, f)
            os.replace(tmp, os.path.join(VOL, f"{role}.hb"))


threading.Thread(target=heartbeat, daemon=True).start()


def app(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    log = open(os.path.join(VOL, "app.log"), "a", buffering=1)
    print(f"app listening on 127.0.0.1:{port}", flush=True)

    def served():
        n = stats["extra"].get("served", 0) + 1
        stats["extra"]["served"] = n
        if n % 100 == 0:
            log.write(f"served {n}\n")

    counter_server.serve(srv, on_line=served, announce=False)


def pump(src, dst, done):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    # The second direction to end closes both sockets: a proxy must not keep dead connections open.
    with done[0]:
        done[1] += 1
        last = done[1] == 2
    if last:
        src.close()
        dst.close()


def proxy(port, upstream_spec):
    host, _, upstream_port = upstream_spec.rpartition(":")
    target = (host or "127.0.0.1", int(upstream_port))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(128)
    print(f"proxy :{port} -> {target[0]}:{target[1]}", flush=True)
    opened = 0
    while True:
        client, _ = srv.accept()
        try:
            upstream = socket.create_connection(target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opened += 1
        stats["extra"]["connections"] = opened
        done = [threading.Lock(), 0]
        threading.Thread(target=pump, args=(client, upstream, done), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, done), daemon=True).start()


def shipper():
    path = os.path.join(VOL, "app.log")
    while not os.path.exists(path):
        time.sleep(0.05)
    shipped = 0
    with open(path) as f:
        while True:
            line = f.readline()
            if line:
                shipped += 1
                stats["extra"]["shipped"] = shipped
            else:
                time.sleep(0.01)


if role == "app":
    app(int(sys.argv[2]))
elif role == "proxy":
    proxy(int(sys.argv[2]), sys.argv[3])
elif role == "shipper":
    shipper()
else:
    sys.exit(f"unknown role {role}")
