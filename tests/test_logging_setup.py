"""The one logging configuration costs a call's greenlets nothing it does not show."""
from __future__ import annotations

import threading

import gevent
from gevent.event import Event

from services.logging_setup import call_logger, configure_logging


def test_a_line_logged_from_a_greenlet_leaves_no_thread_object_behind():
    # gevent's threading gives each greenlet that asks for the current thread a dummy one, kept
    # as long as the greenlet; no line shows a thread's name, so logging must not ask.
    configure_logging("INFO")
    log = call_logger("call", "CA" + "0" * 32)
    release = Event()

    def a_call_greenlet() -> None:
        log.info("stream started", extra={"business_id": 1})
        release.wait()

    before = len(threading._active)  # noqa: SLF001 - the registry the dummy threads join
    greenlets = [gevent.spawn(a_call_greenlet) for _ in range(20)]
    try:
        gevent.sleep(0)
        gevent.idle()
        assert all(g.started and not g.dead for g in greenlets)
        assert len(threading._active) == before  # noqa: SLF001
    finally:
        release.set()
        gevent.joinall(greenlets, timeout=30)
