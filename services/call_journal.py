"""Writes calls' rows and turns off the audio path.

A call's greenlets hand over small write operations to its `CallJournal`; one
`JournalWriter` per process applies every call's writes in order, as many as are
waiting in one transaction: a DB call blocks the worker's event loop, so at hundreds
of calls few large transactions beat many small ones. A failed write is logged and
stops neither its call, nor the writes after it, nor other calls' writes. The call's
end is written with its post-call job.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Callable

import gevent
from gevent.event import Event
from gevent.queue import Queue
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import Call, Turn, as_utc
from services.post_call.jobs import enqueue_post_call

Write = Callable[[Session, Call], None]
# Writes applied in one transaction at most; more wait for the next one.
MAX_BATCH = 500


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class JournalWriter:
    """The process's one writer greenlet for call rows (started on first use).

    A write is a function of (session, the call's row), or a dict of a turn to insert: turns
    are most of the writes, and inserting them by call id spares loading the call row.
    """

    def __init__(self, db: Database):
        self._db = db
        self._queue: Queue = Queue()  # any call's greenlets put; the writer greenlet gets
        # Guards: _greenlet. Every call's greenlets submit, and the first (or the first after the
        # writer died) starts it.
        self._lock = threading.Lock()
        self._greenlet: gevent.Greenlet | None = None
        self._call_ids: dict[str, int] = {}  # owned by the writer greenlet; forgotten at flush

    def submit(self, call_sid: str, write: Write | dict, log: logging.LoggerAdapter | None) -> None:
        with self._lock:
            if self._greenlet is None or self._greenlet.dead:
                self._greenlet = gevent.spawn(self._run)
        self._queue.put((call_sid, write, log))

    def flush(self, call_sid: str, timeout: float) -> bool:
        """Wait until everything submitted so far for the call is applied."""
        done = Event()
        self.submit(call_sid, done, None)
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            writes = [entry for entry in batch if not isinstance(entry[1], Event)]
            if writes and not self._apply(writes):
                self._apply_one_by_one(writes)
            for sid, marker, _ in batch:
                if isinstance(marker, Event):
                    self._call_ids.pop(sid, None)
                    marker.set()

    def _apply_one_by_one(self, writes: list) -> None:
        """A batch failed: apply each call's writes alone, and a failing call's one by one."""
        by_call: dict[str, list] = {}
        for entry in writes:
            by_call.setdefault(entry[0], []).append(entry)
        for entries in by_call.values():
            if not self._apply(entries):
                for entry in entries:
                    self._apply([entry])

    def _apply(self, writes: list) -> bool:
        try:
            with self._db.session() as session:
                turns = [entry for entry in writes if isinstance(entry[1], dict)]
                if turns:
                    self._insert_turns(session, turns)
                updates = [entry for entry in writes if not isinstance(entry[1], dict)]
                if updates:
                    sids = {sid for sid, _, _ in updates}
                    calls = {c.call_sid: c for c in session.scalars(select(Call).where(Call.call_sid.in_(sids)))}
                    for sid, write, log in updates:
                        if sid in calls:
                            write(session, calls[sid])
                        else:
                            log.error("call row missing; write skipped")
            return True
        except Exception:
            if len(writes) == 1:
                writes[0][2].exception("call write failed")
            return False

    def _insert_turns(self, session: Session, turns: list) -> None:
        missing = {sid for sid, _, _ in turns if sid not in self._call_ids}
        if missing:
            self._call_ids.update((sid, id_) for id_, sid in session.execute(
                select(Call.id, Call.call_sid).where(Call.call_sid.in_(missing))))
        rows = []
        for sid, turn, log in turns:
            if sid in self._call_ids:
                rows.append({**turn, "call_id": self._call_ids[sid]})
            else:
                log.error("call row missing; turn skipped")
        if rows:
            # Core executemany on the session's connection: the ORM's bulk path costs more per row.
            session.connection().execute(insert(Turn.__table__), rows)


class CallJournal:
    """One call's writes, handed to the process's writer."""

    def __init__(self, writer: JournalWriter, call_sid: str, log: logging.LoggerAdapter):
        self._writer = writer
        self._call_sid = call_sid
        self._log = log

    def _put(self, write: Write) -> None:
        self._writer.submit(self._call_sid, write, self._log)

    def stream_started(self, stream_sid: str, at: float, served_by: str) -> None:
        def write(session: Session, call: Call) -> None:
            call.stream_sid = stream_sid
            call.served_by = served_by
            if call.answered_at is None:
                call.answered_at = _utc(at)
            if call.status in ("queued", "initiated", "ringing"):
                call.status = "in-progress"

        self._put(write)

    def prompt_built(self, prompt_info: dict) -> None:
        def write(session: Session, call: Call) -> None:
            call.prompt_info = prompt_info

        self._put(write)

    def add_turn(self, speaker: str, text: str, started_at: float, *, item_id: str | None = None,
                 interrupted: bool = False, latency_ms: float | None = None) -> None:
        self._writer.submit(self._call_sid, {
            "speaker": speaker, "text": text, "started_at": _utc(started_at), "item_id": item_id,
            "interrupted": interrupted, "latency_ms": None if latency_ms is None else round(latency_ms, 1)},
            self._log)

    def finish(self, end_reason: EndReason, ended_at: float, metrics: dict, usage: dict, cost_usd: float) -> None:
        def write(session: Session, call: Call) -> None:
            ended = _utc(ended_at)
            if call.end_reason is None or call.end_reason == EndReason.CALLER_HANGUP:
                call.end_reason = end_reason
            if call.ended_at is None:
                call.ended_at = ended
            if call.status not in ("busy", "no-answer", "failed", "canceled"):
                call.status = "completed"
            start = as_utc(call.answered_at) or as_utc(call.started_at)
            if call.duration_s is None and start is not None:
                call.duration_s = round((ended - start).total_seconds(), 3)
            call.metrics = metrics
            call.usage = usage
            call.cost_usd = cost_usd
            # In the same transaction as the call's end: no ended call without its post-call job.
            enqueue_post_call(session, call.id)

        self._put(write)

    def close(self, timeout: float = 10.0) -> None:
        """Wait until every write handed over so far is applied."""
        if not self._writer.flush(self._call_sid, timeout):
            self._log.error("call writes still pending at close", extra={"waited_s": timeout})
