#!/usr/bin/env python3
"""Measures what an idle WebSocket costs echo-ws: the server's resident memory (RSS) before and
after N clients connect and sit idle. Loopback only; Python 3 standard library only.

    cargo build --release -p echo-ws
    python3 crates/echo-ws/scripts/idle_rss.py target/release/echo-ws 1000 /ws

Starts the server on a free port, reads its RSS from /proc (Linux), opens N connections that do
the WebSocket handshake and then neither read nor write, waits for the server to count them in
/stats, and prints the difference per connection. The server and every
socket are closed at the end, whatever happens.
"""

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_websocket(port, path):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1024)
        if not chunk:
            raise RuntimeError("the server closed the connection during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return sock


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return json.load(response)


def main():
    binary, count, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if count > 10_000:
        sys.exit("at most 10,000 connections")
    server = subprocess.Popen(
        [binary, "--port", "0", "--max-clients", str(count + 1)],
        stdout=subprocess.PIPE, stderr=open(os.environ.get("SERVER_LOG", os.devnull), "w"), text=True,
    )
    sockets = []
    try:
        line = server.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        stats(port)  # one request first, so the runtime's threads and buffers exist
        time.sleep(0.5)
        before = rss_kib(server.pid)
        for _ in range(count):
            sockets.append(open_websocket(port, path))
        field = "clients" if path == "/ws" else "echo_sockets"
        deadline = time.monotonic() + 30
        while stats(port)[field] < count:
            if time.monotonic() > deadline:
                sys.exit("the server did not count every connection within 30 s")
            time.sleep(0.1)
        time.sleep(1)  # let the join notices (room) be written out
        after = rss_kib(server.pid)
        per = (after - before) * 1024 / count
        print(f"{count} idle clients on {path}: RSS {before} KiB -> {after} KiB, "
              f"{per / 1000:.1f} KB per connection")
    finally:
        for sock in sockets:
            sock.close()
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
