"""Side work waits its turn: the calls' audio and greetings go first.

A worker's one event loop carries every call's audio and every new call's set-up. Work no
caller waits on (a call's writes, its recording's start) waits until the loop has nothing
else ready to run, or `QUIET_WAIT_S` at the latest: in a burst of arriving calls it moves
out of the way of the greetings instead of lengthening the queue they wait in, and on a
loop with time to spare it runs at once.
"""
from __future__ import annotations

import gevent

QUIET_WAIT_S = 1.0


def wait_for_quiet(max_wait_s: float = QUIET_WAIT_S) -> bool:
    """Return once no other greenlet, socket or timer of the loop is ready, or after
    `max_wait_s`; True if the loop was quiet."""
    with gevent.Timeout(max_wait_s, False):
        gevent.idle()
        return True
    return False
