"""pymp: a Python multiprocessing Pool (2 worker processes, fed through
pipes, synchronised with a POSIX semaphore that lives in a deleted
/dev/shm file mapped by every process) and a Value in shared memory
that the workers increment. A thread of the parent keeps mapping work
onto the pool. Same ready/check/verdict protocol as the C workloads.

The check: the results of a fresh map are right, the feeder's rounds
move, and the shared counter equals the number of tasks done (if the
workers' shared memory were private copies after a restore it would
fall behind). ready has addr= (the counter) for a control run."""
import ctypes
import multiprocessing as mp
import sys
import threading
import time

import proto

state = sys.argv[1]


def init(counter):
    global shared
    shared = counter


def square(x):
    with shared.get_lock():
        shared.value += 1
    return x * x


if __name__ == "__main__":
    counter = mp.Value("q", 0)
    pool = mp.Pool(2, initializer=init, initargs=(counter,))
    rounds = [0]
    tasks = [0]
    lock = threading.Lock()

    def feeder():
        while True:
            with lock:
                r = pool.map(square, range(50))
                assert r == [x * x for x in range(50)], r
                tasks[0] += 50
            rounds[0] += 1
            time.sleep(0.02)

    threading.Thread(target=feeder, name="feeder", daemon=True).start()

    def check():
        with lock:
            if pool.map(square, range(7, 17)) != [x * x for x in range(7, 17)]:
                return "FAIL wrong results from the pool"
            tasks[0] += 10
            if counter.value != tasks[0]:
                return f"FAIL shared counter {counter.value}, {tasks[0]} tasks done"
        if not proto.moves(lambda: rounds[0], 10):
            return "FAIL the feeder is stuck"
        return f"OK tasks={tasks[0]} rounds={rounds[0]}"

    addr = ctypes.addressof(counter.get_obj())
    proto.serve(state, check, f"addr={addr:#x}\n")
