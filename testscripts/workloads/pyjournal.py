"""pyjournal: a Python service whose stdout and stderr go to journald the
way systemd connects them: a stream to DIR/stdout (argv[2]) opened with
the journal's header (identifier "pyjournal", priority 5), then dup'd
onto descriptors 1 and 2. Each check prints "check N" and reports it; the
test reads what the journal got. Same ready/check/verdict protocol as the
C workloads."""
import os
import socket
import sys

import proto

state, journal = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.path.join(journal, "stdout"))
s.shutdown(socket.SHUT_RD)
s.sendall(b"pyjournal\n\n5\n0\n0\n0\n0\n")
os.dup2(s.fileno(), 1)
os.dup2(s.fileno(), 2)
s.close()
print("started", flush=True)
checks = 0


def check():
    global checks
    checks += 1
    try:
        print(f"check {checks}", flush=True)
    except OSError as e:
        return f"FAIL {e}"
    return f"OK printed check {checks}"


proto.serve(state, check)
