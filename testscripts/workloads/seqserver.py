"""seqserver: a TCP service whose clients send a numbered stream.

argv: STATE ADDR [dup]. Listens on ADDR (a free port, in ready as
port=); one client at a time sends lines "1", "2", ...; each is echoed
back as received. The self-check says FAIL if a number ever came out of
order (a byte lost or repeated on the way, or a second copy of this
server answering part of the stream), else "OK last=N". With "dup" it
echoes line 5 twice: the control that shows the client's check can fail."""
import os
import select
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proto  # noqa: E402

state, addr = sys.argv[1], sys.argv[2]
dup = sys.argv[3:] == ["dup"]
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((addr, 0))
ls.listen(4)
port = ls.getsockname()[1]
proto.write(state, "ready", f"pid={os.getpid()}\nport={port}\n")
check_path = os.path.join(state, "check")
conn, buf, last, bad = None, b"", 0, []
while True:
    if os.path.exists(check_path):
        verdict = f"FAIL {bad[0]}" if bad else (f"OK last={last}" if last > 0 else "FAIL nothing received")
        proto.write(state, "verdict", verdict + "\n")
        os.unlink(check_path)
    r, _, _ = select.select([ls] + ([conn] if conn else []), [], [], 0.01)
    if ls in r:
        c, _ = ls.accept()
        if conn is None:
            conn = c
        else:
            c.close()
    if conn is not None and conn in r:
        data = conn.recv(65536)
        if not data:
            print(f"seqserver: the client closed its end after {last}", file=sys.stderr, flush=True)
            conn.close()
            conn, buf = None, b""
            continue
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            n = int(line)
            if n != last + 1 and not bad:
                bad.append(f"got {n} after {last}")
            last = n
            out = line + b"\n"
            if dup and n == 5:
                out += out
            conn.sendall(out)
