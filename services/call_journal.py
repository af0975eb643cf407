"""Writes calls' rows and turns off the audio path, and keeps them through database trouble.

A call's greenlets hand over small write operations to its `CallJournal`; one
`JournalWriter` per process applies every call's writes in order, as many as are
waiting in one transaction: a DB call on SQLite blocks the worker's event loop, so at
hundreds of calls few large transactions beat many small ones.

Database trouble (unreachable, restarting, locked): a transaction that fails so is retried
whole, with backoff, until it lands; what calls hand over meanwhile waits in memory, at most
`max_queued` writes per process. Past that a call's turns and prompt notes are dropped
(`journal_dropped_total{reason="queue_full"}`); its start and its end never are, and a call
has one of each. A write that fails by itself (a bug, a value the database refuses) is found
by applying the transaction's writes call by call, then one by one, and is dropped
(`reason="failed"`); a call's end failing so is stored without its figures, so that no call
is left without its end and its post-call job.

Nothing is stored twice. A failed transaction rolled back, so retrying it whole applies each
write once. When the database committed but the journal heard an error (the connection lost
during COMMIT), turns are kept from doubling by their `write_key`, unique in the table: an
insert skips a key already there. The other writes set values, and the post-call job is one
per call (enqueue_post_call).

Every `heartbeat_s` the writer stamps `last_seen_at` on the rows of the calls this process
carries, in one UPDATE: the sweeper (services/call_sweeper.py) tells a lost process's calls by it.
Every STATE_EVERY_S it stores, in one UPDATE too, the `live_state` of the calls whose state
changed (greeting, listening, agent speaking), for the console's live page in any process.
"""
from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable

import gevent
from gevent.event import Event
from gevent.queue import Empty, Queue
from sqlalchemy import exc as sa_exc
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services import metrics
from services.loop_quiet import wait_for_quiet
from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import Call, Turn, as_utc, utcnow
from services.post_call import recording
from services.post_call.jobs import backoff_s, enqueue_post_call

Write = Callable[[Session, Call], None]
# Writes applied in one transaction at most; more wait for the next one.
MAX_BATCH = 500
# A write waits this long for others to share its transaction, unless someone waits for it (a
# call's close, `flush`). On SQLite each transaction blocks the event loop: written at once, a
# call's first writes would run while its greeting is being asked for, and a burst of calls
# would cost one transaction per write.
LINGER_S = 0.1
# Writes waiting per process, beyond which turns are dropped: about 20 MB, and at 200 calls a
# worker's turns for several minutes of database outage.
MAX_QUEUED = 20_000
# A transaction failed on database trouble waits this long before its first retry, doubling to the cap.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# How often a live call's row is stamped; the sweeper allows several missed stamps.
HEARTBEAT_S = 30.0
# How often live calls' changed states are stored (the console's live page looks as often).
STATE_EVERY_S = 1.0

# A live call's `live_state`: the greeting (from the stream's start until it is heard), the
# caller's turn, the agent speaking.
GREETING, LISTENING, SPEAKING = "greeting", "listening", "speaking"

_store_log = logging.getLogger("store")  # lines about the writer, not one call

# Turn inserts that skip a write key already stored (a retry of a commit that did land).
_TURN_INSERTS = {
    "postgresql": postgresql.insert(Turn.__table__).on_conflict_do_nothing(index_elements=["write_key"]),
    "sqlite": sqlite.insert(Turn.__table__).on_conflict_do_nothing(index_elements=["write_key"]),
}

# The live calls' states, one row each: a statement built once (a CASE of as many branches as
# there are calls would be compiled, and cached, anew for every count of them).
_SET_LIVE_STATE = (update(Call.__table__).where(Call.call_sid == bindparam("state_sid"))
                   .values(live_state=bindparam("state")))


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def is_database_trouble(exc: BaseException) -> bool:
    """The database, not the write, failed: retrying the same transaction later may land it."""
    if isinstance(exc, sa_exc.OperationalError):
        # pysqlite reports a statement SQLite cannot run (no such column, ...) as operational too;
        # retried, it would hold every call's writes behind it for good.
        code = getattr(exc.orig, "sqlite_errorcode", None)
        return code is None or code & 0xFF != sqlite3.SQLITE_ERROR
    if isinstance(exc, (sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


class PollerTrouble:
    """A poller's failed reads, logged: a failure of its own each time, database trouble once
    for each spell of it (the poller looks again at its next round). Its greenlet's own."""

    def __init__(self, log: logging.Logger, what: str):
        self._log, self._what = log, what
        self._troubled = False

    def failed(self, exc: BaseException) -> None:
        """In the `except` of the look that failed."""
        if not is_database_trouble(exc):
            self._log.exception(f"{self._what}: the look failed")
        elif not self._troubled:
            self._log.warning(f"{self._what}: database trouble, looking again later",
                              extra={"error": str(exc).splitlines()[0][:300]})
        self._troubled = True

    def looked(self) -> None:
        self._troubled = False


@dataclasses.dataclass(slots=True)
class _Entry:
    call_sid: str
    op: Write | dict | Event  # an update of the call's row, a turn to insert, or a flush marker
    log: logging.LoggerAdapter | None
    ends_call: bool = False
    fallback: Write | None = None  # applied instead if `op` fails by itself


class JournalWriter:
    """The process's one writer greenlet for call rows (started on first use).

    A write is a function of (session, the call's row), or a dict of a turn to insert: turns
    are most of the writes, and inserting them by call id spares loading the call row.
    """

    def __init__(self, db: Database, *, max_queued: int = MAX_QUEUED, heartbeat_s: float = HEARTBEAT_S):
        self._db = db
        self._dialect = db.engine.dialect.name
        self._max_queued = max_queued
        self._heartbeat_s = heartbeat_s
        self._queue: Queue = Queue()  # any call's greenlets put; the writer greenlet gets
        # Guards: _greenlet, _pending, _overflowing, _live, _states. Every call's greenlets submit (the
        # first, or the first after the writer died, starts it); the writer settles.
        self._lock = threading.Lock()
        self._greenlet: gevent.Greenlet | None = None
        self._pending = 0  # writes accepted and neither stored nor dropped yet
        self._overflowing = False  # writes are being dropped since the queue reached its cap
        self._live: set[str] = set()  # calls carried here: stream started, end not yet stored
        self._states: dict[str, str] = {}  # live states changed since the last were stored
        self._call_ids: dict[str, int] = {}  # owned by the writer greenlet; forgotten at flush

    def submit(self, call_sid: str, write: Write | dict, log: logging.LoggerAdapter | None, *,
               essential: bool = False, starts_call: bool = False, ends_call: bool = False,
               fallback: Write | None = None) -> bool:
        """Hand a write over. False: dropped, the queue being full (an essential write never is)."""
        with self._lock:
            self._start_writer()
            accepted = essential or self._pending < self._max_queued
            if accepted:
                self._pending += 1
                if starts_call:
                    self._live.add(call_sid)
            else:
                first_drop, self._overflowing = not self._overflowing, True
        if not accepted:
            metrics.JOURNAL_DROPPED.labels("queue_full").inc()
            if first_drop:
                _store_log.error("journal queue full: call turns are dropped until it drains",
                                 extra={"max_queued": self._max_queued})
            return False
        metrics.JOURNAL_QUEUE_DEPTH.inc()
        self._queue.put(_Entry(call_sid, write, log or _store_log, ends_call, fallback))
        return True

    def flush(self, call_sid: str, timeout: float) -> bool:
        """Wait until everything submitted so far for the call is stored (or dropped)."""
        done = Event()
        with self._lock:
            self._start_writer()
        self._queue.put(_Entry(call_sid, done, None))
        return done.wait(timeout)

    def carrying(self, call_sid: str) -> bool:
        """Whether the call's stream is in this process and its end not yet stored."""
        with self._lock:
            return call_sid in self._live

    def _start_writer(self) -> None:  # under _lock
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    # --- the writer greenlet ----------------------------------------------------------

    def note_state(self, call_sid: str, state: str) -> None:
        """A call's `live_state` changed: kept here, and stored with every other call's changes
        in one transaction at most every STATE_EVERY_S (not a transaction of its own at each change,
        which on SQLite would block the event loop as an agent's audio starts)."""
        with self._lock:
            self._states[call_sid] = state
            self._start_writer()

    def _run(self) -> None:
        beat_due = time.monotonic() + self._heartbeat_s
        states_due = time.monotonic() + STATE_EVERY_S
        while True:
            try:
                first = self._queue.get(timeout=max(0.0, min(beat_due, states_due) - time.monotonic()))
            except Empty:
                first = None
            if first is not None:
                wait_for_quiet()  # what arrives meanwhile joins the batch
                self._write_batch(self._gather(first))
            if time.monotonic() >= states_due:
                self._write_states()
                states_due = time.monotonic() + STATE_EVERY_S
            if time.monotonic() >= beat_due:
                self._heartbeat()
                beat_due = time.monotonic() + self._heartbeat_s

    def _gather(self, first: _Entry) -> list[_Entry]:
        """The writes for one transaction: what comes within LINGER_S of the first, and no later
        than a write someone waits for."""
        batch = [first]
        linger_until = time.monotonic() + LINGER_S
        while len(batch) < MAX_BATCH and not isinstance(batch[-1].op, Event):
            try:
                batch.append(self._queue.get_nowait() if not self._queue.empty() else
                             self._queue.get(timeout=max(0.0, linger_until - time.monotonic())))
            except Empty:
                break
        return batch

    def _write_batch(self, batch: list[_Entry]) -> None:
        writes = [entry for entry in batch if not isinstance(entry.op, Event)]
        try:
            if writes:
                self._settle(writes)
        except Exception:
            # A bug of the writer's own must not stop it, nor keep a call's close waiting its bound.
            _store_log.exception("journal writer failed on a batch", extra={"writes": len(writes)})
        finally:
            for entry in batch:
                if isinstance(entry.op, Event):
                    self._call_ids.pop(entry.call_sid, None)
                    entry.op.set()

    def _settle(self, writes: list[_Entry]) -> None:
        """Store the writes, waiting out database trouble; isolate and drop any failing by itself."""
        error = self._store_patiently(writes)
        if error is None:
            return
        if len(writes) == 1:
            self._failed(writes[0], error)
            return
        by_call: dict[str, list[_Entry]] = {}
        for entry in writes:
            by_call.setdefault(entry.call_sid, []).append(entry)
        for part in by_call.values() if len(by_call) > 1 else [[entry] for entry in writes]:
            self._settle(part)

    def _store_patiently(self, writes: list[_Entry]) -> Exception | None:
        """Retry the transaction while the database is in trouble; the error when it fails by itself."""
        attempt, started = 0, time.monotonic()
        while True:
            try:
                skipped = self._apply(writes)
            except Exception as exc:
                if not is_database_trouble(exc):
                    return exc
                attempt += 1
                metrics.JOURNAL_RETRIES.inc()
                delay = backoff_s(attempt, RETRY_FIRST_S, RETRY_MAX_S)
                if attempt == 1 or attempt % 20 == 0:
                    _store_log.warning("database trouble: call writes kept for a retry", extra={
                        "writes": len(writes), "attempt": attempt, "retry_in_s": round(delay, 2),
                        "error": str(exc).splitlines()[0][:300]})
                gevent.sleep(delay)
                continue
            if attempt:
                _store_log.info("call writes stored after database trouble", extra={
                    "writes": len(writes), "retries": attempt, "waited_s": round(time.monotonic() - started, 1)})
            for entry in skipped:
                entry.log.error("call row missing; write skipped")
                metrics.JOURNAL_DROPPED.labels("no_call_row").inc()
            self._release(writes)
            return None

    def _failed(self, entry: _Entry, error: Exception) -> None:
        if entry.fallback is not None:
            entry.log.error("call end could not be stored as it was; storing it without its figures",
                            exc_info=error)
            self._settle([dataclasses.replace(entry, op=entry.fallback, fallback=None)])
            return
        entry.log.error("call write failed; dropped", exc_info=error)
        metrics.JOURNAL_DROPPED.labels("failed").inc()
        self._release([entry])

    def _release(self, writes: list[_Entry]) -> None:
        """The writes are settled, stored or dropped."""
        with self._lock:
            self._pending -= len(writes)
            for entry in writes:
                if entry.ends_call:
                    self._live.discard(entry.call_sid)
            drained = self._overflowing and self._pending < self._max_queued
            if drained:
                self._overflowing = False
        metrics.JOURNAL_QUEUE_DEPTH.dec(len(writes))
        if drained:
            _store_log.warning("journal queue below its cap again: call turns are kept again")

    def _apply(self, writes: list[_Entry]) -> list[_Entry]:
        """One transaction; returns the writes skipped for want of their call's row."""
        skipped: list[_Entry] = []
        # The write lock (SQLite) and row locks (PostgreSQL) before the reads: a call's end and
        # the sweeper's never interleave.
        with self._db.session(write_lock=True) as session:
            turns = [entry for entry in writes if isinstance(entry.op, dict)]
            if turns:
                skipped += self._insert_turns(session, turns)
            updates = [entry for entry in writes if not isinstance(entry.op, dict)]
            if updates:
                sids = {entry.call_sid for entry in updates}
                calls = {c.call_sid: c for c in session.scalars(
                    select(Call).where(Call.call_sid.in_(sids)).with_for_update())}
                for entry in updates:
                    if entry.call_sid in calls:
                        entry.op(session, calls[entry.call_sid])
                    else:
                        skipped.append(entry)
        return skipped

    def _insert_turns(self, session: Session, turns: list[_Entry]) -> list[_Entry]:
        missing = {entry.call_sid for entry in turns if entry.call_sid not in self._call_ids}
        if missing:
            self._call_ids.update((sid, id_) for id_, sid in session.execute(
                select(Call.id, Call.call_sid).where(Call.call_sid.in_(missing))))
        rows, skipped = [], []
        for entry in turns:
            if entry.call_sid in self._call_ids:
                rows.append({**entry.op, "call_id": self._call_ids[entry.call_sid]})
            else:
                skipped.append(entry)
        if rows:
            # Core executemany on the session's connection: the ORM's bulk path costs more per row.
            session.connection().execute(_TURN_INSERTS.get(self._dialect, insert(Turn.__table__)), rows)
        return skipped

    def _write_states(self) -> None:
        with self._lock:
            states, self._states = self._states, {}
        if not states:
            return
        try:
            with self._db.session() as session:
                session.connection().execute(_SET_LIVE_STATE, [{"state_sid": sid, "state": state}
                                                               for sid, state in states.items()])
        except Exception as exc:  # kept for the next round, unless changed since
            with self._lock:
                self._states = {**states, **self._states}
            _store_log.warning("live calls' states not stored", extra={"calls": len(states),
                                                                       "error": str(exc).splitlines()[0][:300]})

    def _heartbeat(self) -> None:
        with self._lock:
            sids = list(self._live)
        if not sids:
            return
        try:
            with self._db.session() as session:
                session.execute(update(Call).where(Call.call_sid.in_(sids)).values(last_seen_at=utcnow())
                                .execution_options(synchronize_session=False))
        except Exception as exc:  # the next beat tries again
            _store_log.warning("live calls not stamped", extra={"calls": len(sids),
                                                                "error": str(exc).splitlines()[0][:300]})


def _end(call: Call, end_reason: EndReason, ended: datetime) -> None:
    # A row ended by a guess while this process still carried the call: the sweeper's (it had
    # lost sight of it during database trouble), or the limits' `no_stream` (the stream's row was
    # written after its deadline). The call's own end is the truth.
    swept = call.end_reason in (EndReason.PROCESS_LOST, EndReason.NO_STREAM)
    if call.end_reason is None or call.end_reason == EndReason.CALLER_HANGUP or swept:
        call.end_reason = end_reason
    if call.ended_at is None or swept:
        call.ended_at = ended
    if call.status not in ("busy", "no-answer", "failed", "canceled"):
        call.status = "completed"
    start = as_utc(call.answered_at) or as_utc(call.started_at)
    if (call.duration_s is None or swept) and start is not None:
        call.duration_s = round((ended - start).total_seconds(), 3)


class CallJournal:
    """One call's writes, handed to the process's writer."""

    def __init__(self, writer: JournalWriter, call_sid: str, log: logging.LoggerAdapter):
        self._writer = writer
        self._call_sid = call_sid
        self._log = log
        self._turns_dropped = 0

    def _put(self, write: Write) -> None:
        self._writer.submit(self._call_sid, write, self._log)

    def stream_started(self, stream_sid: str, at: float, served_by: str) -> None:
        def write(session: Session, call: Call) -> None:
            call.stream_sid = stream_sid
            call.served_by = served_by
            call.last_seen_at = utcnow()
            call.live_state = GREETING
            if call.answered_at is None:
                call.answered_at = _utc(at)
            if call.end_reason == EndReason.NO_STREAM:  # the guess was wrong: the stream came
                call.end_reason = call.ended_at = None
                call.status = "in-progress"
            if call.status in ("queued", "initiated", "ringing"):
                call.status = "in-progress"

        self._writer.submit(self._call_sid, write, self._log, essential=True, starts_call=True)

    def prompt_built(self, prompt_info: dict) -> None:
        def write(session: Session, call: Call) -> None:
            call.prompt_info = prompt_info

        self._put(write)

    def recording_started(self, recording_sid: str) -> None:
        def write(session: Session, call: Call) -> None:
            recording.remember(session, call.call_sid, recording_sid)

        self._put(write)

    def state_changed(self, state: str) -> None:
        """What the call is doing now (GREETING, LISTENING, SPEAKING), for the console's live page
        in whichever process shows it: told as it changes (an agent item's first frame, its end
        heard), never per frame; stored within STATE_EVERY_S."""
        self._writer.note_state(self._call_sid, state)

    def add_turn(self, speaker: str, text: str, started_at: float, *, item_id: str | None = None,
                 interrupted: bool = False, latency_ms: float | None = None) -> None:
        kept = self._writer.submit(self._call_sid, {
            "speaker": speaker, "text": text, "started_at": _utc(started_at), "item_id": item_id,
            "interrupted": interrupted, "latency_ms": None if latency_ms is None else round(latency_ms, 1),
            "write_key": uuid.uuid4().hex}, self._log)
        if not kept:
            self._turns_dropped += 1
            if self._turns_dropped == 1:
                self._log.warning("turn dropped: the journal's queue is full")

    def finish(self, end_reason: EndReason, ended_at: float, metrics: dict, usage: dict, cost_usd: float) -> None:
        ended = _utc(ended_at)

        def write(session: Session, call: Call) -> None:
            _end(call, end_reason, ended)
            call.metrics = metrics
            call.usage = usage
            call.cost_usd = cost_usd
            # In the same transaction as the call's end: no ended call without its post-call job.
            enqueue_post_call(session, call.id)

        def without_figures(session: Session, call: Call) -> None:
            _end(call, end_reason, ended)
            enqueue_post_call(session, call.id)

        self._writer.submit(self._call_sid, write, self._log, essential=True, ends_call=True,
                            fallback=without_figures)

    def close(self, timeout: float = 10.0) -> bool:
        """Wait until every write handed over so far is stored, for at most `timeout`: past it
        the call goes on closing, and the writer keeps retrying them."""
        if self._writer.flush(self._call_sid, timeout):
            return True
        self._log.error("call writes still pending at close; the journal keeps retrying them",
                        extra={"waited_s": timeout})
        return False
