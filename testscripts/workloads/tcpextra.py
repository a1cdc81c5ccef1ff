"""tcpextra: a later client of tcpserver. Connects to the port in argv[1]
(the server's ready file) on argv[3] (default 127.0.0.1), once the file
argv[4] (if given) exists; writes argv[2].syn when its SYN is out and
argv[2].connected once connected, then expects the server's greeting and
goodbye, then EOF; prints "extra: OK" or "extra: FAIL ..."."""
import errno, os, re, select, socket, sys, time
port = int(re.search(r"port=(\d+)", open(sys.argv[1]).read()).group(1))
host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
deadline = time.monotonic() + 30
while len(sys.argv) > 4 and not os.path.exists(sys.argv[4]) and time.monotonic() < deadline:
    time.sleep(0.005)
s = socket.socket()
s.setblocking(False)
err = s.connect_ex((host, port))
open(sys.argv[2] + ".syn", "w").close()
if err == errno.EINPROGRESS:
    select.select([], [s], [], 30)
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
if err:
    print(f"extra: FAIL connect: {os.strerror(err)}")
    sys.exit(1)
s.setblocking(True)
s.settimeout(30)
open(sys.argv[2] + ".connected", "w").close()
got = b""
try:
    while True:
        chunk = s.recv(100)
        if not chunk:
            break
        got += chunk
except OSError as e:
    print(f"extra: FAIL {e} after {got!r}")
    sys.exit(1)
print("extra: OK" if got == b"hello-extra\nbye-extra\n" else f"extra: FAIL got {got!r}")
