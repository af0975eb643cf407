"""Writes a call's row and turns off the audio path.

The call's greenlets hand over small write operations; one writer greenlet per call
applies them in order, all that are waiting in one transaction (a DB call blocks the
worker's event loop, so fewer and larger is better). A failed write is logged and never
stops the call or the writes after it. The call's end is written with its post-call job.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable

import gevent
from gevent.queue import Queue
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import Database
from server.models import Call, Turn, as_utc
from services.post_call.jobs import enqueue_post_call

Write = Callable[[Session, Call], None]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class CallJournal:
    def __init__(self, db: Database, call_sid: str, log: logging.LoggerAdapter):
        self._db = db
        self._call_sid = call_sid
        self._log = log
        self._queue: Queue = Queue()
        self._writer = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            closing = batch[-1] is None
            writes = [write for write in batch if write is not None]
            if writes and not self._apply(writes):
                for write in writes:  # find the bad one; keep the others
                    self._apply([write])
            if closing:
                return

    def _apply(self, writes: list[Write]) -> bool:
        try:
            with self._db.session() as session:
                call = session.scalar(select(Call).where(Call.call_sid == self._call_sid))
                if call is None:
                    self._log.error("call row missing; writes skipped", extra={"writes": len(writes)})
                    return True
                for write in writes:
                    write(session, call)
            return True
        except Exception:
            self._log.exception("call write failed", extra={"writes": len(writes)})
            return False

    def stream_started(self, stream_sid: str, at: float) -> None:
        def write(session: Session, call: Call) -> None:
            call.stream_sid = stream_sid
            if call.answered_at is None:
                call.answered_at = _utc(at)
            if call.status in ("queued", "initiated", "ringing"):
                call.status = "in-progress"

        self._queue.put(write)

    def prompt_built(self, prompt_info: dict) -> None:
        def write(session: Session, call: Call) -> None:
            call.prompt_info = prompt_info

        self._queue.put(write)

    def add_turn(self, speaker: str, text: str, started_at: float, *, item_id: str | None = None,
                 interrupted: bool = False, latency_ms: float | None = None) -> None:
        def write(session: Session, call: Call) -> None:
            session.add(Turn(call_id=call.id, speaker=speaker, text=text, started_at=_utc(started_at),
                             item_id=item_id, interrupted=interrupted,
                             latency_ms=None if latency_ms is None else round(latency_ms, 1)))

        self._queue.put(write)

    def finish(self, end_reason: str, ended_at: float, metrics: dict, usage: dict, cost_usd: float) -> None:
        def write(session: Session, call: Call) -> None:
            ended = _utc(ended_at)
            if call.end_reason is None or call.end_reason == "caller_hangup":
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

        self._queue.put(write)

    def close(self, timeout: float = 10.0) -> None:
        """Apply every write handed over so far, then stop the writer."""
        self._queue.put(None)
        self._writer.join(timeout)
        if not self._writer.dead:
            self._log.error("call writes still pending at close", extra={"pending": self._queue.qsize()})
            self._writer.kill(block=False)
