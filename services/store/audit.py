"""The audit log: one row per change made through the API.

Rows hold names, never values: the fields changed, not what they were set to, so that no key,
webhook secret or token ever lands here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.store.models import AuditEntry


@dataclass(frozen=True)
class Actor:
    """Who made the change: the admin, or a business's key."""

    kind: str  # admin | key
    api_key_id: int | None = None
    business_id: int | None = None  # a key's business
    client_addr: str | None = None


@dataclass(frozen=True)
class Change:
    """What changed: set by the route that made it."""

    object_type: str
    object_id: str | int | None
    business_id: int | None
    fields: tuple[str, ...] = ()


def record(session: Session, actor: Actor, change: Change, *, method: str, route: str, status: int) -> AuditEntry:
    """Add the row to the session: committed with the change itself, or not at all."""
    entry = AuditEntry(
        actor=actor.kind, api_key_id=actor.api_key_id,
        business_id=change.business_id if change.business_id is not None else actor.business_id,
        method=method, route=route[:200], object_type=change.object_type,
        object_id=None if change.object_id is None else str(change.object_id)[:64],
        fields=sorted(set(change.fields)), status=status, client_addr=(actor.client_addr or "")[:64] or None)
    session.add(entry)
    return entry


def entries(session: Session, *, business_id: int | None, limit: int, offset: int) -> Iterable[AuditEntry]:
    """Newest first (by id: the order rows were written, whatever the clock did); one business's,
    or everyone's when `business_id` is None."""
    stmt = select(AuditEntry)
    if business_id is not None:
        stmt = stmt.where(AuditEntry.business_id == business_id)
    return session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit).offset(offset))
