"""Ends the calls of processes that died carrying them.

A call lives in one process (`served_by`, host:pid), and only that process's journal stores
the call's end and its post-call job. A process killed or crashed mid-call leaves its rows
with a stream and no job (and no end, unless Twilio's status callback stored one). Every
serving process runs a sweeper greenlet that looks, every `interval_s`, at rows with a stream
that their journal stamped (`last_seen_at`) in the last `lookback_s` but not in the last
`grace_s`, and that have no post-call job. A row is lost when:

- its process is on this host: that pid is gone (or it is this process, whose journal does
  not carry the call: a former process with the same pid, as in a restarted container);
- it is on another host: it has not been stamped for `stale_after_s`. A live process stamps
  every HEARTBEAT_S, but none can while the database is away, so this allows for an outage.

A lost row is stored ended (`process_lost`, unless a truer reason is stored; ended at its last
sign of life) with its post-call job, in one transaction that re-reads it under a lock: two
sweepers, or a late end from a process that was not lost after all, never make two jobs.
Rows never stamped (stored before the journal stamped rows) are left alone.
"""
from __future__ import annotations

import logging
import os
import random
import socket
from datetime import datetime, timedelta

import gevent
from flask import Flask
from gevent.event import Event
from sqlalchemy import exists, func, select

from services import metrics
from services.call_journal import HEARTBEAT_S, JournalWriter, is_database_trouble
from services.post_call.jobs import POST_CALL, enqueue_post_call
from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import Call, Job, Turn, as_utc, utcnow

SWEEP_INTERVAL_S = 60.0
GRACE_S = 2 * HEARTBEAT_S
STALE_AFTER_S = 600.0
LOOKBACK_S = 86400.0  # older rows are not looked at again (the query stays on a small index range)
MAX_PER_SWEEP = 200

log = logging.getLogger("sweeper")


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


class CallSweeper:
    def __init__(self, db: Database, journal: JournalWriter, *, interval_s: float = SWEEP_INTERVAL_S,
                 grace_s: float = GRACE_S, stale_after_s: float = STALE_AFTER_S, lookback_s: float = LOOKBACK_S):
        self._db = db
        self._journal = journal
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._stale_after_s = stale_after_s
        self._lookback_s = lookback_s
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = Event()

    def start(self) -> "CallSweeper":
        self._greenlet = gevent.spawn(self._loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._greenlet is not None:
            self._greenlet.kill(timeout=2)

    def _loop(self) -> None:
        # Jittered, so that workers started together do not all sweep at once.
        while not self._stopping.wait(self._interval_s * random.uniform(0.5, 1.5)):
            try:
                self.sweep_once()
            except Exception as exc:
                if is_database_trouble(exc):
                    log.warning("sweep skipped: database trouble", extra={"error": str(exc).splitlines()[0][:300]})
                else:
                    log.exception("sweep failed")

    def sweep_once(self) -> list[str]:
        """Look once; the call sids of the rows ended now."""
        now = utcnow()
        no_job = ~exists().where(Job.call_id == Call.id, Job.kind == POST_CALL)
        with self._db.session() as session:
            rows = session.execute(
                select(Call.id, Call.call_sid, Call.served_by, Call.last_seen_at)
                .where(Call.last_seen_at >= now - timedelta(seconds=self._lookback_s),
                       Call.last_seen_at < now - timedelta(seconds=self._grace_s),
                       Call.stream_sid.is_not(None), Call.served_by.is_not(None), no_job)
                .order_by(Call.last_seen_at).limit(MAX_PER_SWEEP)).all()
        swept = []
        for call_id, call_sid, served_by, seen in rows:
            quiet_s = (now - as_utc(seen)).total_seconds()
            if self._lost(call_sid, served_by, quiet_s) and self._end(call_id, as_utc(seen)):
                swept.append(call_sid)
                metrics.CALLS_SWEPT.inc()
                log.warning("call of a lost process ended", extra={"call_sid": call_sid, "served_by": served_by,
                                                                   "quiet_s": round(quiet_s)})
        return swept

    def _lost(self, call_sid: str, served_by: str, quiet_s: float) -> bool:
        host, _, pid_text = served_by.rpartition(":")
        if host == socket.gethostname() and pid_text.isdigit():
            pid = int(pid_text)
            if pid == os.getpid():
                return not self._journal.carrying(call_sid)
            if not pid_running(pid):
                return True
            # A pid in use may be a new process that took a dead one's number: fall back on staleness.
        return quiet_s >= self._stale_after_s

    def _end(self, call_id: int, seen: datetime) -> bool:
        with self._db.session(write_lock=True) as session:
            call = session.scalar(select(Call).where(Call.id == call_id).with_for_update())
            if call is None or as_utc(call.last_seen_at) != seen:
                return False  # gone, or stamped since: its process is alive after all
            if session.scalar(select(Job.id).where(Job.call_id == call_id, Job.kind == POST_CALL)) is not None:
                return False
            last_turn = as_utc(session.scalar(select(func.max(Turn.started_at)).where(Turn.call_id == call_id)))
            if call.end_reason is None or call.end_reason == EndReason.CALLER_HANGUP:
                call.end_reason = EndReason.PROCESS_LOST
            if call.ended_at is None:
                call.ended_at = max(seen, last_turn) if last_turn is not None else seen
                start = as_utc(call.answered_at) or as_utc(call.started_at)
                if call.duration_s is None and start is not None:
                    call.duration_s = max(0.0, round((as_utc(call.ended_at) - start).total_seconds(), 3))
            if call.status not in ("busy", "no-answer", "failed", "canceled"):
                call.status = "completed"
            enqueue_post_call(session, call.id)
        return True


def start_sweeper(app: Flask) -> CallSweeper:
    """Start this process's sweeper once (with its job workers, from `start_workers`)."""
    if "call_sweeper" not in app.extensions:
        app.extensions["call_sweeper"] = CallSweeper(app.extensions["db"], app.extensions["journal"]).start()
    return app.extensions["call_sweeper"]
