"""pydict: a python3 workload with a large dict and a background thread,
following the same ready/check/verdict protocol as the C workloads."""
import sys
import threading
import time

import proto

state = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
table = {f"key{i}": i * 7 + 3 for i in range(N)}
ticks = [0]


def worker():
    while True:
        ticks[0] += 1
        time.sleep(0.001)


threading.Thread(target=worker, name="ticker", daemon=True).start()


def check():
    bad = [k for k, v in table.items() if v != int(k[3:]) * 7 + 3]
    if len(table) != N or bad:
        return f"FAIL {len(table)} entries, {len(bad)} wrong"
    if not proto.moves(lambda: ticks[0], 5):
        return "FAIL thread is not advancing"
    return f"OK entries={len(table)} ticks={ticks[0]}"


proto.serve(state, check)
