"""A pod that keeps a journal on its volume: it appends a numbered line every few milliseconds to a file it
keeps open, rewrites a small state file in place, and serves its count on a TCP port, so a check can tell
whether every line written before a migration is still there after it, in order.

    volume_writer.py PORT   (the volume's path comes from $PODMOTION_VOLUME_DATA)
"""
import os
import socket
import sys
import threading
import time

port = int(sys.argv[1])
root = os.environ["PODMOTION_VOLUME_DATA"]
journal = open(os.path.join(root, "journal"), "a", buffering=1)
state = os.open(os.path.join(root, "state"), os.O_RDWR | os.O_CREAT, 0o600)
count = sum(1 for _ in open(os.path.join(root, "journal")))
lock = threading.Lock()


def write_forever():
    global count
    while True:
        with lock:
            count += 1
            journal.write(f"{count}\n")
            os.pwrite(state, f"{count:012d}".encode(), 0)
        time.sleep(0.002)


def serve():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        with lock:
            conn.sendall(f"{count}\n".encode())
        conn.close()


threading.Thread(target=write_forever, daemon=True).start()
serve()
