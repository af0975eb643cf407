"""Warm transfers: the person who answers hears who is calling and why, and presses 1 to take
the call; if nobody does, the caller comes back to the agent, who offers a call back.

The steps, each a Twilio webhook (server/routes/warm_transfer.py), any worker, meeting in the
call's row:
1. the stream ends for a transfer: `<Dial>` the business's number, with a whisper on its leg;
2. the leg answers: the whisper (`whisper_text`), from the stored turns and the lead, in the
   database only: nothing on this path waits on anything but the database;
3. the person presses a key: 1 is stored as `transfer_status = "accepted"` (`accept`);
4. the `<Dial>` is over (`settle`): accepted and completed is a transfer; anything else brings
   the caller back: a call-back request on the lead, the row opened again for a new stream, whose
   session restores the conversation (`earlier_conversation`) as after a Realtime reconnect.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from prompts.tools import call_event
from services.post_call.jobs import POST_CALL
from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import Business, Call, Job, Lead, Turn, utcnow

WARM, COLD = "warm", "cold"
TRANSFER_MODES = (WARM, COLD)
ACCEPTED = "accepted"  # transfer_status while the person who pressed 1 is being bridged
ACCEPT_DIGIT = "1"
GENERIC_WHISPER = "שיחה מועברת אליך מהנציג הדיגיטלי."
_CALLER_TURNS_WHISPERED = 2
_WHISPERED_TURN_CHARS = 140


def is_warm(session: Session, call: Call) -> bool:
    """The agent's own transfer, for a business that has not asked for cold ones. Transfers on
    a deploy or a failure stay cold: there is no agent to come back to."""
    if call.end_reason != EndReason.TRANSFER or not call.transfer_to or call.business_id is None:
        return False
    business = session.get(Business, call.business_id)
    return business is not None and business.transfer_mode != COLD


def caller_number(call: Call) -> str:
    return call.from_number if call.direction == "inbound" else call.to_number


def _lead(session: Session, call: Call) -> Lead | None:
    if call.lead_id is not None:
        return session.get(Lead, call.lead_id)
    return session.scalar(select(Lead).where(Lead.business_id == call.business_id,
                                             Lead.phone == caller_number(call)))


def whisper_text(session: Session, call_sid: str) -> str:
    """A few Hebrew sentences for the person answering: the caller's name if known, their last
    words to the agent. Deterministic, from the row: no model, no waiting."""
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        return GENERIC_WHISPER
    lead = _lead(session, call) if call.business_id is not None else None
    name = (lead.name or "").strip() if lead is not None else ""
    said = session.scalars(select(Turn.text).where(Turn.call_id == call.id, Turn.speaker == "caller",
                                                   Turn.text != "")
                           .order_by(Turn.started_at.desc(), Turn.id.desc()).limit(_CALLER_TURNS_WHISPERED)).all()
    parts = [f"שיחה מועברת אליך מהנציג הדיגיטלי, מ{name}." if name else GENERIC_WHISPER]
    if said:
        words = " ... ".join(_clip(text) for text in reversed(said))
        parts.append(f"המתקשר אמר: {words}.")
    return " ".join(parts)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _WHISPERED_TURN_CHARS else text[:_WHISPERED_TURN_CHARS].rsplit(" ", 1)[0] + "..."


def accept(session: Session, call_sid: str) -> bool:
    """The person pressed 1; False when the call has no row."""
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        return False
    call.transfer_status = ACCEPTED
    return True


@dataclass(frozen=True)
class Settled:
    """How a warm `<Dial>` ended, and what the caller gets next."""

    known: bool
    transferred: bool = False
    back_to_agent: bool = False
    # For a new stream (back_to_agent): the call's own fields, as its first stream had them.
    business_id: int | None = None
    direction: str = ""
    from_number: str = ""
    to_number: str = ""


def settle(session: Session, call_sid: str, dial_status: str, *, caller_gone: bool,
           stream_due_by: datetime) -> Settled:
    """The `<Dial action>`: store how the transfer went; unless it went through (or the caller
    has hung up), store a call-back request and open the row again for a new stream due by
    `stream_due_by`."""
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        return Settled(known=False)
    bridged = dial_status in ("completed", "answered")
    if call.transfer_status == ACCEPTED and bridged:
        call.transfer_status = "completed"
        return Settled(known=True, transferred=True)
    # Answered but not accepted: the whisper's leg hung up (no 1 pressed).
    call.transfer_status = "declined" if bridged else (dial_status or "failed")
    if caller_gone or call.business_id is None:
        return Settled(known=True)
    request_call_back(session, call)
    _open_again(session, call, stream_due_by)
    return Settled(known=True, back_to_agent=True, business_id=call.business_id, direction=call.direction,
                   from_number=call.from_number, to_number=call.to_number)


def request_call_back(session: Session, call: Call) -> Lead:
    """The caller asked for a person and nobody was free: their lead (made if new) is to be called back."""
    phone = caller_number(call)
    lead = session.get(Lead, call.lead_id) if call.lead_id is not None else None
    if lead is None:
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[session.get_bind().dialect.name]
        now = utcnow()
        session.execute(insert(Lead).values(business_id=call.business_id, phone=phone, notes="", created_at=now,
                                            updated_at=now).on_conflict_do_nothing())
        lead = session.scalar(select(Lead).where(Lead.business_id == call.business_id, Lead.phone == phone))
    lead.callback_requested_at = utcnow()
    lead.callback_call_sid = call.call_sid
    call.lead_id = lead.id
    return lead


def _open_again(session: Session, call: Call, stream_due_by: datetime) -> None:
    """The call goes on with a new stream: its end is undone, and its stream is awaited as a new
    call's is (a stream that never comes is closed as `no_stream`, services/call_limits.py)."""
    call.end_reason = call.ended_at = call.duration_s = None
    call.status = "in-progress"
    call.stream_sid = call.stream_claimed_at = None
    call.stream_due_by = stream_due_by
    call.last_seen_at = utcnow()
    # The post-call job comes with the call's real end; one that is running keeps its claim.
    session.execute(delete(Job).where(Job.call_id == call.id, Job.kind == POST_CALL, Job.status != "running")
                    .execution_options(synchronize_session=False))


@dataclass(frozen=True)
class EarlierConversation:
    """What a new stream of a call restores: the conversation, and what the agent says first."""

    said: list[tuple[str, str]]  # (role, text), as `Transcripts.so_far` gives them: "user" | "assistant"
    notice: str


def earlier_conversation(db: Database, call_sid: str) -> EarlierConversation | None:
    """A resumed stream's call: its stored turns, and the notice that the transfer found no one."""
    with db.session() as session:
        call = session.scalar(select(Call).where(Call.call_sid == call_sid))
        if call is None or call.transfer_status is None:
            return None
        turns = session.execute(select(Turn.speaker, Turn.text).where(Turn.call_id == call.id)
                                .order_by(Turn.started_at, Turn.id)).all()
    roles = {"caller": "user", "agent": "assistant"}
    said = [(roles[speaker], text) for speaker, text in turns if speaker in roles and text]
    return EarlierConversation(said=said, notice=call_event("Transfer unanswered"))
