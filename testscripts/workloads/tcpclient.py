"""tcpclient: the peer of tcpserver, outside the checkpointed process.

Connects, sends a line the server leaves unread, writes "connected"; when
the file "send-more" appears it sends another line (while the server may
be gone: the network lock must hold it); when "go" appears it reads the
server's greeting and the reply it sends after the restore, and prints
"client: OK" or "client: FAIL ...". Bounded: 60 s in all. argv[2], if
given, is the server's address (default 127.0.0.1); argv[3] "half-close"
shuts down its sending side after the second line (the server's socket
goes to CLOSE_WAIT). RELOCATE_WAIT_SCALE=N stretches its bounds N times."""
import os
import re
import socket
import sys
import time

ready = sys.argv[1]
port = int(re.search(r"port=(\d+)", open(ready).read()).group(1))
scale = max(1, int(os.environ.get("RELOCATE_WAIT_SCALE", "1")))
deadline = time.monotonic() + 60 * scale


def wait_for(path):
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            print(f"client: FAIL timed out waiting for {path}")
            sys.exit(1)
        time.sleep(0.01)


host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
s = socket.create_connection((host, port), timeout=30 * scale)
s.sendall(b"hello-from-client\n")
open("connected", "w").close()
try:
    wait_for("send-more")
    s.sendall(b"more\n")
    if sys.argv[3:] == ["half-close"]:
        s.shutdown(socket.SHUT_WR)
    open("sent-more", "w").close()
    wait_for("go")
    want = b"hello-from-server\nreply-after-restore\n"
    got = b""
    while len(got) < len(want):
        chunk = s.recv(len(want) - len(got))
        if not chunk:
            break
        got += chunk
    print("client: OK" if got == want else f"client: FAIL got {got!r}")
except OSError as e:
    print(f"client: FAIL {e}")
