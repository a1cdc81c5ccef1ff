"""proto: the ready/check/verdict protocol of workloads/proto.h, for the
Python workloads (imported from the script's own directory)."""
import os
import time


def write(state, name, text):
    """write replaces state/name atomically."""
    tmp = os.path.join(state, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(state, name))


def serve(state, check, extra=""):
    """serve writes state/ready (pid= and extra), then answers every
    state/check with check()'s verdict, forever."""
    write(state, "ready", f"pid={os.getpid()}\n{extra}")
    check_path = os.path.join(state, "check")
    while True:
        if os.path.exists(check_path):
            write(state, "verdict", check() + "\n")
            os.unlink(check_path)
        time.sleep(0.01)


def moves(get, timeout):
    """moves reports whether get() changes within timeout seconds."""
    before = get()
    deadline = time.monotonic() + timeout
    while get() == before and time.monotonic() < deadline:
        time.sleep(0.01)
    return get() != before
