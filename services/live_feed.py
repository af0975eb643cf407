"""The calls in progress on every worker and host, read from the database for the console's live page.

One `LiveFeed` per process, one poller greenlet for all its viewers: every `interval_s` it reads
the live calls (their `live_state`, written by each call's journal as it changes) and the turns
stored since its last look, in ONE query, and hands each viewer (`Subscription`) what that
viewer may see: the admin every business, a business its own calls. The poller starts with the
first viewer and stops when the last one leaves; a viewer joining gets the current calls whole
(`snapshot`), then changes (`update`).

Turn ids come from a sequence, and on PostgreSQL two processes' transactions may commit out of
id order: each look reads again the turns of the last `reread_s` (by id) and keeps those it has
not seen, so that a turn committed late behind a newer id is not skipped.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import gevent
from gevent.queue import Empty, Full, Queue
from sqlalchemy import Select, and_, select
from sqlalchemy.orm import Session

from services.call_journal import HEARTBEAT_S, PollerTrouble
from services.store.db import Database
from services.store.models import Call, Turn, as_utc, utcnow

POLL_S = 1.0
REREAD_S = 5.0
# A quiet stream gets a comment line this often: proxies close connections idle for a minute or so.
HEARTBEAT_COMMENT_S = 15.0
# A row its process stopped stamping this long ago is a lost process's, not a live call (the
# sweeper ends it in time).
STALE_AFTER_S = 3 * HEARTBEAT_S
# Events waiting for one viewer; past it the viewer is dropped (its browser reconnects and gets a
# snapshot): a stalled connection must not hold memory.
QUEUE_MAX = 200

log = logging.getLogger("console")


def _epoch(value: datetime | None) -> float | None:
    value = as_utc(value)
    return None if value is None else round(value.timestamp(), 3)


@dataclass
class LiveCallView:
    """A live call as the page shows it; `turns` as JSON-ready dicts, in the order they were said."""

    call_sid: str
    business_id: int | None
    direction: str
    number: str  # the other party's
    state: str | None
    answered_at: float | None
    end_requested: bool
    turns: list[dict[str, Any]] = field(default_factory=list)

    def meta(self) -> tuple:
        return self.state, self.end_requested, self.answered_at

    def as_json(self, turns: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"call_sid": self.call_sid, "business_id": self.business_id, "direction": self.direction,
                "number": self.number, "state": self.state, "answered_at": self.answered_at,
                "end_requested": self.end_requested, "turns": self.turns if turns is None else turns}


def live_query(floor_turn_id: int, business_id: int | None = None, now: datetime | None = None) -> Select:
    """The live calls (one business's, or all) with their turns past `floor_turn_id`: one row per
    turn, and one with no turn for a call with none past it."""
    now = now or utcnow()
    stmt = (select(Call.call_sid, Call.business_id, Call.direction, Call.from_number, Call.to_number,
                   Call.live_state, Call.answered_at, Call.started_at, Call.end_requested_at,
                   Turn.id.label("turn_id"), Turn.speaker, Turn.text, Turn.interrupted,
                   Turn.started_at.label("turn_at"))
            .select_from(Call)
            .outerjoin(Turn, and_(Turn.call_id == Call.id, Turn.id > floor_turn_id))
            .where(Call.status == "in-progress", Call.ended_at.is_(None), Call.stream_sid.is_not(None),
                   Call.last_seen_at >= now - timedelta(seconds=STALE_AFTER_S))
            .order_by(Call.id, Turn.id))
    if business_id is not None:
        stmt = stmt.where(Call.business_id == business_id)
    return stmt


def read_live_calls(session: Session, floor_turn_id: int = 0, business_id: int | None = None
                    ) -> tuple[dict[str, LiveCallView], int]:
    """(the live calls by call sid, with their turns past the floor; the highest turn id read)."""
    calls: dict[str, LiveCallView] = {}
    top = floor_turn_id
    for row in session.execute(live_query(floor_turn_id, business_id)):
        view = calls.get(row.call_sid)
        if view is None:
            view = calls[row.call_sid] = LiveCallView(
                call_sid=row.call_sid, business_id=row.business_id, direction=row.direction,
                number=row.from_number if row.direction == "inbound" else row.to_number, state=row.live_state,
                answered_at=_epoch(row.answered_at or row.started_at), end_requested=row.end_requested_at is not None)
        if row.turn_id is not None:
            view.turns.append({"id": row.turn_id, "speaker": row.speaker, "text": row.text,
                               "interrupted": bool(row.interrupted), "at": _epoch(row.turn_at)})
            top = max(top, row.turn_id)
    for view in calls.values():
        view.turns.sort(key=lambda turn: (turn["at"] or 0, turn["id"]))
    return calls, top


class Subscription:
    """One viewer's events: ("snapshot" | "update", payload). Written by the feed's poller (and by
    `subscribe`, the snapshot), read by the viewer's response."""

    def __init__(self, business_id: int | None):
        self.business_id = business_id  # None: the admin, every business
        self._queue: Queue = Queue(QUEUE_MAX)
        self.dropped = False  # fell too far behind: its response ends, and the browser reconnects
        self.awaits_snapshot = False  # joined before the poller's first look

    def may_see(self, view: LiveCallView) -> bool:
        return self.business_id is None or view.business_id == self.business_id

    def offer(self, event: tuple[str, dict]) -> bool:
        try:
            self._queue.put_nowait(event)
            return True
        except Full:
            self.dropped = True
            return False

    def next_event(self, timeout: float) -> tuple[str, dict] | None:
        """The next event, or None after `timeout` without one (time for a heartbeat)."""
        try:
            return self._queue.get(timeout=timeout)
        except Empty:
            return None


class LiveFeed:
    def __init__(self, db: Database, *, interval_s: float = POLL_S, reread_s: float = REREAD_S,
                 heartbeat_s: float = HEARTBEAT_COMMENT_S):
        self._db = db
        self.heartbeat_s = heartbeat_s  # how long a viewer's stream may stay silent
        self._interval_s = interval_s
        self._reread_s = reread_s
        # Guards: _subscribers, _calls, _looked, _greenlet, subscriptions' awaits_snapshot. Viewers' responses subscribe and leave; the
        # poller greenlet replaces _calls and fans out under it, so a snapshot and the updates
        # after it never miss or repeat a change.
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._calls: dict[str, LiveCallView] = {}
        self._greenlet: gevent.Greenlet | None = None
        self._looked = False  # _calls holds a look's result (else the poller has not looked since it started)
        # The poller's own: (when, highest turn id read by then), for the floor of the next look.
        self._marks: deque[tuple[float, int]] = deque()
        self._trouble = PollerTrouble(log, "live calls")

    def subscribe(self, business_id: int | None) -> Subscription:
        subscription = Subscription(business_id)
        with self._lock:
            if self._looked:
                self._send_snapshot(subscription)
            else:
                subscription.awaits_snapshot = True  # the poller's first look sends it
            self._subscribers.add(subscription)
            if self._greenlet is None or self._greenlet.dead:
                self._greenlet = gevent.spawn(self._run)
        return subscription

    def leave(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    @property
    def viewers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    # --- the poller greenlet ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._look()
            gevent.sleep(self._interval_s)
            with self._lock:
                if not self._subscribers:
                    self._greenlet = None
                    self._calls, self._looked = {}, False
                    self._marks.clear()
                    return

    def _floor(self, now: float) -> int:
        while len(self._marks) > 1 and self._marks[1][0] <= now - self._reread_s:
            self._marks.popleft()
        return self._marks[0][1] if self._marks and self._marks[0][0] <= now - self._reread_s else 0

    def _look(self) -> None:
        started = time.monotonic()
        floor = self._floor(started)
        try:
            with self._db.session() as session:
                found, top = read_live_calls(session, floor)
        except Exception as exc:
            self._trouble.failed(exc)
            return
        self._trouble.looked()
        self._marks.append((started, max(top, self._marks[-1][1] if self._marks else 0)))
        with self._lock:
            changed, ended = self._merge(found)
            self._looked = True
            for subscription in list(self._subscribers):
                if subscription.awaits_snapshot:
                    subscription.awaits_snapshot = False
                    self._send_snapshot(subscription)
                    continue
                calls = [entry for view, entry in changed if subscription.may_see(view)]
                gone = [sid for sid, view in ended if subscription.may_see(view)]
                if (calls or gone) and not subscription.offer(("update", self._payload(calls, gone))):
                    self._subscribers.discard(subscription)
                    log.info("live calls: a viewer fell behind and was dropped; its browser reconnects")

    def _send_snapshot(self, subscription: Subscription) -> None:  # under _lock
        subscription.offer(("snapshot", self._payload(
            [view.as_json() for view in self._calls.values() if subscription.may_see(view)], [])))

    def _merge(self, found: dict[str, LiveCallView]) -> tuple[list[tuple[LiveCallView, dict]],
                                                              list[tuple[str, LiveCallView]]]:
        """Under _lock: take the look's calls in; (what changed, with only the new turns; what ended)."""
        changed = []
        merged: dict[str, LiveCallView] = {}
        for sid, view in found.items():
            known = self._calls.get(sid)
            if known is None:
                merged[sid] = view
                changed.append((view, view.as_json()))
                continue
            seen = {turn["id"] for turn in known.turns}
            new = [turn for turn in view.turns if turn["id"] not in seen]
            view.turns = sorted(known.turns + new, key=lambda turn: (turn["at"] or 0, turn["id"]))
            merged[sid] = view
            if new or view.meta() != known.meta():
                changed.append((view, view.as_json(new)))
        ended = [(sid, view) for sid, view in self._calls.items() if sid not in merged]
        self._calls = merged
        return changed, ended

    @staticmethod
    def _payload(calls: list[dict], ended: list[str]) -> dict:
        return {"calls": calls, "ended": ended, "now": round(time.time(), 3)}


def sse_event(name: str, data: str) -> str:
    """One Server-Sent Event; `data` is one line (JSON)."""
    return f"event: {name}\ndata: {data}\n\n"


def sse_comment(text: str) -> str:
    """A comment line: ignored by the browser, it keeps proxies from closing an idle stream."""
    return f": {text}\n\n"

