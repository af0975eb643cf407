"""Job workers: greenlets of their own in each process, never a call's greenlets.

Each loops: claim the oldest due job, run its handler, settle it; sleep `poll_s` when
none is due. Queries are short single statements (SQLite's driver blocks the loop
while it runs one; psycopg 3 yields). A job is settled in one of four ways: its
handler completed it; it failed and goes back to the queue after its backoff (or is
given up after `max_attempts`); it asked to wait (`Postpone`); or its worker is
stopping, ran out of the time `stop` gave it, and gives it straight back (another worker
takes it at once, not after the lease).
"""
from __future__ import annotations

import logging

import gevent
import requests
from gevent.event import Event
from flask import Flask
from sqlalchemy import select

from services.call_sweeper import start_sweeper
from services.store.db import Database
from services.logging_setup import call_logger
from services.store.models import Call
from services.settings import Settings
from services.post_call import jobs
from services.post_call.analysis import make_client
from services.post_call.context import JobContext
from services.post_call.process import HANDLERS, LeaseLost

log = logging.getLogger("jobs")


class JobWorker:
    """`count` greenlets sharing one OpenAI client and one HTTP session (both pool connections)."""

    def __init__(self, db: Database, settings: Settings, count: int | None = None):
        self._settings = settings.post_call
        self._count = self._settings.workers if count is None else count
        self.context = JobContext(db=db, settings=settings, openai=make_client(settings), http=requests.Session())
        self._greenlets: list[gevent.Greenlet] = []
        # Set once by `stop`; the worker greenlets wait on it between jobs and leave when it is set.
        self._stopping = Event()
        # Set by `stop` just before it kills the greenlets still in a job: whatever a killed job
        # raises then is the kill, not the job's failure.
        self._killing = False

    def start(self) -> "JobWorker":
        self._greenlets = [gevent.spawn(self._loop) for _ in range(self._count)]
        log.info("job workers started", extra={"greenlets": self._count})
        return self

    def stop(self, timeout: float = 5.0, grace_s: float = 0.0) -> None:
        """Stop the greenlets: none claims another job and idle ones leave at once. One in a job
        has `grace_s` to finish it; then it is killed and the job goes straight back to the queue."""
        if not self._greenlets:
            return  # stopped already, or never started
        self._stopping.set()
        running = [g for g in self._greenlets if not g.dead]
        if grace_s > 0:
            gevent.joinall(running, timeout=grace_s)
        else:
            gevent.sleep(0)
        left = [g for g in running if not g.dead]
        if left:
            self._killing = True
            log.info("job workers stopping: handing back the jobs still running", extra={"jobs": len(left)})
            gevent.killall(left, timeout=timeout)
        self._greenlets = []
        log.info("job workers stopped")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ran = self.run_once()
            except Exception:
                if self._killing:
                    return  # killed inside a query: the driver may turn GreenletExit into its own error
                # The database is unreachable or the like: wait and try again, never die.
                log.exception("job worker error")
                ran = False
            if not ran:
                self._stopping.wait(self._settings.poll_s)

    def run_once(self) -> bool:
        """Claim one due job and run it; False when none was due."""
        claim = jobs.claim_next(self.context.db, self._settings.lease_s)
        if claim is None:
            return False
        job_log = call_logger("jobs", self._call_sid(claim.call_id))
        extra = {"job_id": claim.job_id, "kind": claim.kind, "attempt": claim.attempt}
        try:
            HANDLERS[claim.kind](self.context, claim, job_log)
        except jobs.Postpone as wait:
            jobs.postpone(self.context.db, claim, wait.delay_s, str(wait))
            job_log.debug("job postponed", extra={**extra, "why": str(wait), "delay_s": wait.delay_s})
        except LeaseLost:
            job_log.warning("job outlived its lease; another worker has it, results dropped", extra=extra)
        except gevent.GreenletExit:
            self._hand_back(claim, job_log, extra)
            raise
        except Exception as exc:
            if self._killing:
                self._hand_back(claim, job_log, extra)  # killed mid-request by `stop`: not the job's failure
                raise
            error = f"{type(exc).__name__}: {exc}"
            status = jobs.fail(self.context.db, claim, error, self._settings.max_attempts, self._settings.backoff_s,
                               self._settings.backoff_max_s)
            level = logging.ERROR if status == "failed" else logging.WARNING
            job_log.log(level, "job attempt failed", extra={**extra, "error": error[:300], "now": status})
        else:
            job_log.debug("job done", extra=extra)
        return True

    def _hand_back(self, claim: jobs.Claim, job_log: logging.LoggerAdapter, extra: dict) -> None:
        released = jobs.release(self.context.db, claim)
        job_log.info("job handed back: its worker is stopping", extra={**extra, "released": released})

    def _call_sid(self, call_id: int) -> str | None:
        with self.context.db.session() as session:
            return session.scalar(select(Call.call_sid).where(Call.id == call_id))


def start_workers(app: Flask) -> JobWorker | None:
    """Start this process's job workers once (gunicorn's post_worker_init, `python app.py`).

    Never at import or in `create_app`: tests and one-off commands build apps that must not
    take jobs.
    """
    start_sweeper(app)  # every serving process, whether or not it runs jobs
    if "job_worker" in app.extensions:
        return app.extensions["job_worker"]
    settings: Settings = app.config["SETTINGS"]
    if settings.post_call.workers == 0:
        return None
    worker = JobWorker(app.extensions["db"], settings).start()
    app.extensions["job_worker"] = worker
    return worker
