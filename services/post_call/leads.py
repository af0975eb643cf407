"""The caller's lead, created or updated from a call's extraction, and linked to the call."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from prompts import usable_name
from services.store.formats import is_e164, israeli_e164
from services.store.models import Call, Lead, as_utc, utcnow


def lead_phone(call: Call, said_phone: str | None) -> str | None:
    """The number the lead is known by: the caller ID (the number that rang us, or that we rang);
    the number the caller said only when there is no caller ID (a withheld number)."""
    own = call.from_number if call.direction == "inbound" else call.to_number
    if is_e164(own):
        return own
    return israeli_e164(said_phone)


def better_name(known: str | None, new: str | None) -> bool:
    """Whether `new` should replace the lead's name: never by nothing, a placeholder or a shorter form.

    A known name is replaced only by one that completes it ("דוד" by "דוד כהן", "דנה לוי" by "דנה לוי-כהן").
    """
    if new is None:
        return False
    current = usable_name(known)
    if current is None:
        return True
    head, rest = new[:len(current)], new[len(current):]
    return head.casefold() == current.casefold() and rest[:1] in (" ", "-") and bool(rest[1:].strip())


def update_lead(session: Session, call: Call, extraction: dict[str, Any]) -> Lead | None:
    phone = lead_phone(call, extraction.get("phone"))
    if phone is None or call.business_id is None:
        return None
    _insert_if_absent(session, call.business_id, phone)
    lead = session.scalar(select(Lead).where(Lead.business_id == call.business_id, Lead.phone == phone))
    name = usable_name(extraction.get("caller_name"))
    if better_name(lead.name, name):
        lead.name = name
    if extraction.get("city"):
        lead.city = extraction["city"][:100]
    ended = as_utc(call.ended_at) or utcnow()
    if lead.last_call_at is None or as_utc(lead.last_call_at) < ended:
        lead.last_call_at = ended
    lead.updated_at = utcnow()
    call.lead_id = lead.id
    return lead


def _insert_if_absent(session: Session, business_id: int, phone: str) -> None:
    """Create the lead unless it exists; two calls from one number may finish at once."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    now = utcnow()
    session.execute(insert(Lead).values(business_id=business_id, phone=phone, notes="", created_at=now,
                                        updated_at=now).on_conflict_do_nothing())
