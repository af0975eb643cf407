"""Per-business API keys: made, found by the key a client presents, revoked.

A key is 32 random bytes (`secrets.token_urlsafe`) behind a marker; only its SHA-256 is stored.
A plain hash is enough for a key that cannot be guessed (no dictionary to try against it), and
keyed with no server secret, so that rotating SECRET_KEY or the credentials it derives from does
not silently void every key. The first characters are kept in the clear to find the row.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.store.models import ApiKey, as_utc, utcnow

log = logging.getLogger("store")
MARKER = "bk_"
PREFIX_LENGTH = len(MARKER) + 8
# How stale last_used_at may get: a busy key writes once a minute, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class NewKey:
    row: ApiKey
    raw: str  # shown once, in the answer that made it


def looks_like_key(text: str) -> bool:
    return text.startswith(MARKER) and len(text) > PREFIX_LENGTH


def create_key(session: Session, business_id: int, name: str = "") -> NewKey:
    """A new key for the business, added to the session (the caller commits)."""
    raw = MARKER + secrets.token_urlsafe(32)
    row = ApiKey(business_id=business_id, name=name, prefix=raw[:PREFIX_LENGTH], key_hash=_hash(raw))
    session.add(row)
    return NewKey(row, raw)


def key_for(session: Session, raw_key: str) -> ApiKey | None:
    """The live (unrevoked) key row `raw_key` is, or None. Stamps its last use (may commit)."""
    if not looks_like_key(raw_key):
        return None
    wanted = _hash(raw_key)
    found = None
    for row in session.scalars(select(ApiKey).where(ApiKey.prefix == raw_key[:PREFIX_LENGTH])):
        # Every candidate compared, in constant time: no early answer to time.
        if hmac.compare_digest(row.key_hash.encode(), wanted.encode()):
            found = row
    if found is None or found.revoked_at is not None:
        return None
    _stamp_use(session, found)
    return found


def business_id_for_key(session: Session, raw_key: str) -> int | None:
    """The business a presented key belongs to; None for an unknown or revoked key.

    Used by the API and the console's sign-in. Stamps the key's last use at most once a minute,
    committing the session when it does.
    """
    row = key_for(session, raw_key)
    return None if row is None else row.business_id


def revoke(session: Session, row: ApiKey) -> bool:
    """Revoke the key (the caller commits); False when it was revoked already."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def _stamp_use(session: Session, row: ApiKey) -> None:
    now = utcnow()
    last = as_utc(row.last_used_at)
    if last is not None and now - last < LAST_USED_RESOLUTION:
        return
    try:
        # Conditional: of several workers seeing the same stale stamp, one writes.
        session.execute(update(ApiKey).where(ApiKey.id == row.id, or_(
            ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION))
            .values(last_used_at=now).execution_options(synchronize_session=False))
        session.commit()
        row.last_used_at = now
    except SQLAlchemyError as exc:
        # A stamp is not worth refusing the request over; the next use tries again.
        session.rollback()
        log.warning("could not stamp an API key's last use", extra={"api_key_id": row.id, "error": str(exc)[:200]})


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()
