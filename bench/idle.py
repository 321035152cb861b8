#!/usr/bin/env python3
"""Open N connections to 127.0.0.1:PORT and keep them idle.

    idle.py PORT N HOLD

Connects without blocking (at most 256 handshakes in flight), reads each
greeting (a line starting with 220) and says nothing more. Stops opening
when all N are greeted or when nothing has progressed for 5 s (a server
that serves a fixed number of connections, such as Postfix with one smtpd
process per connection, greets no more once its process limit is reached;
later clients wait in the listen queue). Then holds every connection HOLD
seconds more, closes them and prints how many were greeted.
"""
import errno
import resource
import selectors
import socket
import sys
import time

port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
STALL = 5.0
DEADLINE = 120.0
IN_FLIGHT = 256

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = n + 256
if hard != resource.RLIM_INFINITY:
    want = min(want, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

sel = selectors.DefaultSelector()
connecting = set()
kept = []
greeted = failed = opened = 0
start = last = time.monotonic()


def drop(s):
    global failed
    failed += 1
    try:
        sel.unregister(s)
    except (KeyError, ValueError):
        pass
    s.close()


while greeted + failed < n:
    now = time.monotonic()
    if now - last > STALL or now - start > DEADLINE:
        break
    while opened < n and len(connecting) < IN_FLIGHT:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            # Out of descriptors: stop opening.
            n = opened
            break
        s.setblocking(False)
        opened += 1
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            failed += 1
            s.close()
            continue
        connecting.add(s)
        sel.register(s, selectors.EVENT_WRITE)
    for key, _ in sel.select(0.2):
        s = key.fileobj
        if s in connecting:
            connecting.discard(s)
            last = time.monotonic()
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                drop(s)
            else:
                sel.modify(s, selectors.EVENT_READ)
            continue
        try:
            data = s.recv(512)
        except BlockingIOError:
            continue
        except OSError:
            drop(s)
            continue
        last = time.monotonic()
        sel.unregister(s)
        if data.startswith(b"220"):
            greeted += 1
            kept.append(s)
        else:
            failed += 1
            s.close()

time.sleep(hold)
for s in kept:
    s.close()
for key in list(sel.get_map().values()):
    key.fileobj.close()
print(greeted)
