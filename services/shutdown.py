"""The process's graceful stop (a deploy): no new calls, a drain, then a goodbye for each call left.

On the stop signal the process takes no new stream. Live calls get `SHUTDOWN_DRAIN_S` to end by
themselves; then each is told to close (`CallSession.shut_down`: a short goodbye, end reason
`shutdown`, its row and post-call job stored by the call's normal end) and gets the goodbye's
deadline to be heard. A call still live after that is ended at once, still as `shutdown`.
Post-call job workers claim nothing more and have the drain to finish the jobs they are running;
jobs still running then go straight back to the queue for another process.

Everything fits in a budget (gunicorn's graceful_timeout, after which gunicorn kills what is
left): the drain is shortened when the budget would not leave time for the goodbyes.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import gevent

from services.live_calls import LiveCalls
from services.realtime_pool import RealtimePool
from services.settings import Settings
from services.store.end_reasons import EndReason

if TYPE_CHECKING:
    from services.post_call.worker import JobWorker

log = logging.getLogger("shutdown")

# What the stop needs beyond the drain and the goodbye: gunicorn's worker notices the signal
# within a second, calls left over are ended and written, the process exits.
RESERVE_S = 5.0
# Calls ended at once (no goodbye) have this long to store their rows: short, because a quick
# stop (gunicorn's SIGQUIT) gives the worker two seconds.
HARD_END_S = 1.5


def budget_needed_s(settings: Settings) -> float:
    """The shortest graceful_timeout that leaves every call its drain and its goodbye."""
    return settings.shutdown_drain_s + settings.timing.goodbye_timeout_s + RESERVE_S


def check_budget(settings: Settings, graceful_timeout_s: float | None) -> None:
    """At start-up, one line each when a stop would not go as configured."""
    drain_s = settings.shutdown_drain_s
    if settings.timing.max_call_s > drain_s:
        log.warning("a call may outlive the shutdown drain: calls still live at its end hear a goodbye",
                    extra={"call_max_duration_s": settings.timing.max_call_s, "shutdown_drain_s": drain_s})
    if graceful_timeout_s is not None and graceful_timeout_s < budget_needed_s(settings):
        log.error("GRACEFUL_TIMEOUT leaves no time for the goodbye after SHUTDOWN_DRAIN_S: the drain will be "
                  "cut short", extra={"graceful_timeout_s": graceful_timeout_s, "shutdown_drain_s": drain_s,
                                      "goodbye_timeout_s": settings.timing.goodbye_timeout_s,
                                      "needed_s": budget_needed_s(settings)})


class Shutdown:
    """`begin` (from a signal handler too: it only spawns) runs the stop in a greenlet of its own;
    `hurry` ends every call now (a quick stop); `wait` until the stop is over."""

    def __init__(self, live_calls: LiveCalls, settings: Settings, job_worker: JobWorker | None,
                 budget_s: float | None, realtime_pool: RealtimePool | None = None):
        self._live_calls = live_calls
        self._pool = realtime_pool
        self._jobs = job_worker
        self._drain_s = settings.shutdown_drain_s
        self._goodbye_s = settings.timing.goodbye_timeout_s
        self._budget_s = budget_s
        # Written once, by the first `begin` (a signal handler or the dev server's loop).
        self._greenlet: gevent.Greenlet | None = None
        self._started: float | None = None

    @property
    def begun(self) -> bool:
        return self._greenlet is not None

    def begin(self) -> None:
        if self._greenlet is None:
            self._started = time.monotonic()
            self._greenlet = gevent.spawn(self._run)

    def wait(self, timeout: float | None = None) -> bool:
        """Until the stop is over: at most `timeout`, or what is left of the budget (and a second)."""
        if self._greenlet is None:
            return True
        if timeout is None and self._budget_s is not None:
            timeout = max(0.0, self._started + self._budget_s + 1.0 - time.monotonic())
        self._greenlet.join(timeout)
        return self._greenlet.dead

    def hurry(self, timeout: float = HARD_END_S) -> None:
        """A quick stop: every call ends now, without a goodbye (still stored, as `shutdown`), and
        the job workers hand back what they are running."""
        self._live_calls.close()
        self._close_pool()
        count = self._live_calls.end_all(EndReason.SHUTDOWN, timeout)
        if count:
            log.warning("quick stop: live calls ended without a goodbye", extra={"live_calls": count})
        if self._jobs is not None:
            self._jobs.stop(timeout=0.5)

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()  # no new calls here: the connections waiting for them go

    def _run(self) -> None:
        live = self._live_calls
        started = self._started
        live.close()
        self._close_pool()
        # Every call must be over by then, goodbye or not.
        last_end = None if self._budget_s is None else started + self._budget_s - RESERVE_S
        drain_s = self._drain_s
        if last_end is not None:
            drain_s = max(0.0, min(drain_s, last_end - self._goodbye_s - started))
        log.info("shutting down: no new calls; live calls have the drain to end",
                 extra={"live_calls": len(live), "drain_s": drain_s})
        jobs = gevent.spawn(self._jobs.stop, timeout=2.0, grace_s=drain_s) if self._jobs is not None else None
        if not live.wait_until_empty(drain_s):
            told = live.shut_down_all()
            log.info("drain over: the calls left are closing with a goodbye", extra={"live_calls": told})
            goodbye_until = time.monotonic() + self._goodbye_s + 1.0
            if last_end is not None:
                goodbye_until = min(goodbye_until, last_end)
            if not live.wait_until_empty(goodbye_until - time.monotonic()):
                count = live.end_all(EndReason.SHUTDOWN, HARD_END_S)
                log.warning("calls still live after their goodbye: ended now", extra={"live_calls": count})
                live.wait_until_empty(HARD_END_S)
        if jobs is not None:
            jobs.join()
        log.info("shutdown: every call has ended", extra={"live_calls": len(live),
                                                           "after_s": round(time.monotonic() - started, 1)})
