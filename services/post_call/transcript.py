"""The call as the post-call job reads it, and the transcript it analyses.

The transcript is the recording's, transcribed per channel, when the call was recorded
and that worked; otherwise the turns stored live. The job waits a bounded time for a
recording Twilio has not delivered yet.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import selectinload

from services.store.db import Database
from services.store.models import Business, Call, as_utc, utcnow
from services.post_call import jobs, recording
from services.post_call.analysis import Line
from services.post_call.context import JobContext


@dataclass(frozen=True)
class CallFacts:
    call_id: int
    call_sid: str
    direction: str
    caller_number: str  # the other party: who rang us, or whom we rang
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    business: Business | None  # detached
    live: list[Line]
    recording_status: str | None
    recording_url: str | None
    recording_transcript: list[dict[str, Any]] | None


def load_call(db: Database, call_id: int) -> CallFacts | None:
    with db.session() as session:
        call = session.get(Call, call_id, options=[selectinload(Call.turns)])
        if call is None:
            return None
        business = session.get(Business, call.business_id) if call.business_id is not None else None
        if business is not None:
            session.expunge(business)
        return CallFacts(
            call_id=call.id, call_sid=call.call_sid, direction=call.direction,
            caller_number=call.from_number if call.direction == "inbound" else call.to_number,
            started_at=as_utc(call.answered_at or call.started_at), ended_at=as_utc(call.ended_at),
            end_reason=call.end_reason, business=business,
            live=[Line(t.speaker, t.text) for t in call.turns if t.text.strip()],
            recording_status=call.recording_status, recording_url=call.recording_url,
            recording_transcript=call.recording_transcript)


def call_lines(ctx: JobContext, facts: CallFacts, log: logging.LoggerAdapter) -> list[Line]:
    if facts.recording_transcript:
        return _lines(facts.recording_transcript)
    if _recording_pending(facts, ctx.settings.post_call.recording_wait_s):
        raise jobs.Postpone(ctx.settings.post_call.recording_recheck_s, "waiting for the recording")
    if facts.recording_url and facts.recording_status == "completed":
        try:
            turns = recording.transcribe(ctx, facts.recording_url, facts.business)
        except Exception as exc:  # any failure: the live turns are still a transcript
            log.warning("recording not transcribed; using the live turns", extra={"error": str(exc)[:300]})
        else:
            with ctx.db.session() as session:
                session.get(Call, facts.call_id).recording_transcript = turns
            log.info("recording transcribed", extra={"turns": len(turns), "live_turns": len(facts.live)})
            return _lines(turns)
    return facts.live


def _recording_pending(facts: CallFacts, wait_s: float) -> bool:
    """A recording was started and Twilio has not said how it ended, and the wait is not over."""
    if facts.recording_status not in recording.IN_FLIGHT:
        return False
    ended = facts.ended_at or utcnow()
    return (utcnow() - ended).total_seconds() < wait_s


def _lines(turns: list[dict[str, Any]]) -> list[Line]:
    return [Line(t["speaker"], t["text"]) for t in turns if t.get("text")]
