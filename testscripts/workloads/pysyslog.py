"""pysyslog: a Python program logging through logging.handlers.SysLogHandler
to the datagram socket argv[2] (as daemons log to /dev/log). Each check
logs "check N" and reports it; the test reads what the service got. Same
ready/check/verdict protocol as the C workloads."""
import logging
import logging.handlers
import sys

import proto

state, address = sys.argv[1], sys.argv[2]
log = logging.getLogger("pysyslog")
log.addHandler(logging.handlers.SysLogHandler(address=address))
log.setLevel(logging.INFO)
log.info("started")
checks = 0


def check():
    global checks
    checks += 1
    try:
        log.handlers[0].emit(log.makeRecord("pysyslog", logging.INFO, "", 0, f"check {checks}", None, None))
    except OSError as e:
        return f"FAIL {e}"
    return f"OK logged check {checks}"


proto.serve(state, check)
