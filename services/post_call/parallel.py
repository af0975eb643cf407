"""Two or more blocking requests at once, in greenlets of their own."""
from __future__ import annotations

from typing import Any, Callable

import gevent


def in_parallel(*calls: Callable[[], Any]) -> list[Any]:
    """The calls' results, in order; the first failure (in call order) is raised.

    Failures are caught inside each greenlet, so gevent's hub does not also print them as
    unhandled; if the caller is killed, the calls still running are killed with it.
    """
    def capture(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
        try:
            return call(), None
        except Exception as exc:
            return None, exc

    greenlets = [gevent.spawn(capture, call) for call in calls]
    try:
        gevent.joinall(greenlets)
    finally:
        gevent.killall([g for g in greenlets if not g.dead], block=False)
    results = []
    for greenlet in greenlets:
        value, error = greenlet.value
        if error is not None:
            raise error
        results.append(value)
    return results
