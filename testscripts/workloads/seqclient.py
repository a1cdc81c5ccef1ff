"""seqclient: the peer of seqserver, outside the checkpointed process.

argv: READY ADDR DIR. Connects to the server (port from its READY file)
and sends "1", "2", ... every 10 ms, checking that the echoes come back
exactly in order, none lost, none twice; DIR/echoed holds the last echo.
When DIR/stop appears it stops sending, waits for the remaining echoes
and prints "client: OK sent=N" or "client: FAIL ...". Bounded: 15 min."""
import os
import re
import socket
import sys
import time

ready, addr, out = sys.argv[1], sys.argv[2], sys.argv[3]
port = int(re.search(r"port=(\d+)", open(ready).read()).group(1))
deadline = time.monotonic() + 900
s = socket.create_connection((addr, port), timeout=30)
s.setblocking(False)
sent, echoed, buf = 0, 0, b""
stop = os.path.join(out, "stop")
next_send = 0.0


def fail(msg):
    print(f"client: FAIL {msg} (sent={sent} echoed={echoed})", flush=True)
    sys.exit(1)


def note():
    tmp = os.path.join(out, "echoed.tmp")
    with open(tmp, "w") as f:
        f.write(f"{echoed}\n")
    os.rename(tmp, os.path.join(out, "echoed"))


stopping = None
while True:
    now = time.monotonic()
    if now > deadline:
        fail("timed out")
    if stopping is None and os.path.exists(stop):
        stopping = now
    if stopping is None and now >= next_send:
        sent += 1
        try:
            s.sendall(f"{sent}\n".encode())
        except BlockingIOError:
            s.setblocking(True)
            s.sendall(f"{sent}\n".encode())
            s.setblocking(False)
        next_send = now + 0.01
    try:
        data = s.recv(65536)
        if not data:
            fail("the server closed the connection")
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            n = int(line)
            if n != echoed + 1:
                fail(f"echo {n} after {echoed}")
            echoed = n
        note()
    except BlockingIOError:
        pass
    except OSError as e:
        fail(str(e))
    if stopping is not None and echoed == sent:
        print(f"client: OK sent={sent}", flush=True)
        sys.exit(0)
    time.sleep(0.002)
