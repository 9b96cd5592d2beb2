#!/usr/bin/env python3
"""A child in another language: reports progress to its parent with the documented line
protocol (docs/subprocess.md), like an encoder reporting frames. No Rust in this process.

usage: encoder.py FRAMES [MODE]
MODE: ok (default), garbage (bad lines and a future version first), cancel (stop on cancel),
      flood (as many big reports as possible for FRAMES seconds).
"""
import json
import os
import socket
import sys
import time

frames = int(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else "ok"

addr = os.environ.get("TRACING_PROGRESS_PARENT")
token = os.environ.get("TRACING_PROGRESS_GRAFT")
sock = None
if addr and token:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # "@name" is a Linux abstract socket: a leading NUL byte.
    sock.connect("\0" + addr[1:] if addr.startswith("@") else addr)
    sock.settimeout(0.25)  # a slow parent never blocks the encoding for long


def send(msg):
    global sock
    if sock is None:
        return
    try:
        sock.sendall((json.dumps(msg) + "\n").encode())
    except OSError:
        sock = None  # parent gone: keep working


def send_raw(data):
    if sock is not None:
        sock.sendall(data)


def cancelled():
    if sock is None:
        return False
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        data = b""
    finally:
        sock.settimeout(0.25)
    return any(
        json.loads(line).get("type") == "cancel" for line in data.splitlines() if line.strip()
    )


def node(i, status="running", **extra):
    n = {
        "name": "encode in.wav",
        "level": "encode",
        "status": status,
        "current": i,
        "total": frames,
        "unit": "frames",
        "metadata": {"codec": "flac", "pid": os.getpid()},
    }
    n.update(extra)
    return n


send({"v": 1, "type": "hello", "graft": token, "pid": os.getpid()})

if mode == "garbage":
    send_raw(b"this is not json\n")
    send_raw(b'{"v": 1, "type": "report", "nodes": "not a list"}\n')
    send_raw(b"\xff\xfe binary \x00\n")
    send({"v": 99, "type": "report", "nodes": [node(frames, "failed")]})
    send({"v": 1, "type": "telemetry-from-the-future"})

if mode == "flood":
    big = [
        {"name": "part %d" % i, "current": i, "total": 2000, "message": "x" * 200,
         "children": [{"name": "leaf", "current": 1}]}
        for i in range(1500)
    ]
    oversized = b'{"v":1,"type":"report","nodes":[' + b'{"name":"y"},' * 120000 + b'{"name":"z"}]}\n'
    sock.settimeout(None)  # a flood waits for the parent: it is the parent's bound under test
    end = time.time() + frames
    n = 0
    while time.time() < end and sock is not None:
        n += 1
        if n % 3 == 1:
            send_raw(oversized)
        else:
            send({"v": 1, "type": "report", "nodes": [{"name": "flood", "current": n, "children": big}]})
    sys.exit(0)

for i in range(frames + 1):
    if mode == "cancel" and cancelled():
        send({"v": 1, "type": "report", "nodes": [node(i, "cancelled", completed_at_us=int(time.time() * 1e6))]})
        sys.exit(0)
    eta = (frames - i) * 0.03
    send({"v": 1, "type": "report", "nodes": [node(i, eta_s=eta, rate_per_s=33.0)]})
    time.sleep(0.03)

send({"v": 1, "type": "report", "nodes": [node(frames, "completed", completed_at_us=int(time.time() * 1e6))]})
