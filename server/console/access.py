"""Who is looking at the console, and what they may see.

A viewer is the admin (ADMIN_API_TOKEN, `business_id` None: every business) or one business
(its own API key). The same rule as the API holds when the token is unset: the console then
opens, as the admin, to loopback peers only, and only when the server listens on loopback only.
Every query of stored rows goes through `scoped`, so a business sees its own rows and no other's.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app, g, request, session
from sqlalchemy import Select
from sqlalchemy.orm import Session

from server.request_db import request_session
# The API's own reading of the Host header and of the peer address: one rule for both doors.
from server.security import host_name, is_loopback
from services.settings import Settings
from services.store import api_keys
from services.store.models import ApiKey

log = logging.getLogger("console")
Query = TypeVar("Query", bound=Select)
NO_TOKEN_HINT = ("ADMIN_API_TOKEN is not set: the console opens to loopback only, when HOST is loopback; "
                 "set ADMIN_API_TOKEN to sign in from elsewhere")


@dataclass(frozen=True)
class Viewer:
    business_id: int | None  # None: the admin, who sees every business
    api_key_id: int | None = None  # the business's key it signed in with

    @property
    def is_admin(self) -> bool:
        return self.business_id is None


def scoped(stmt: Query, business_column, viewer: Viewer) -> Query:
    """`stmt` limited to what `viewer` may see: the one filter every console query passes through."""
    if viewer.business_id is None:
        return stmt
    return stmt.where(business_column == viewer.business_id)


def current_viewer() -> Viewer:
    """The signed-in viewer of this request (set by the console's before_request)."""
    return g.console_viewer


def host_allowed(settings: Settings) -> bool:
    return host_name(request.host) in settings.api_hosts


def viewer_of_request(settings: Settings) -> Viewer | None:
    """The viewer the session cookie (or, without a token, the loopback rule) vouches for, else None."""
    stored = session.get("viewer")
    if isinstance(stored, dict):
        viewer = _checked(settings, stored)
        if viewer is not None:
            return viewer
        session.pop("viewer", None)
    if not settings.admin_api_token and open_on_loopback(settings):
        return Viewer(business_id=None)
    return None


def open_on_loopback(settings: Settings) -> bool:
    """Without ADMIN_API_TOKEN: the admin's console for a loopback peer of a loopback-only server."""
    return settings.listens_on_loopback_only and is_loopback(request.remote_addr)


def sign_in(session_: Session, settings: Settings, secret: str) -> Viewer | None:
    """The viewer `secret` (the admin token or a business's API key) signs in as, else None."""
    token = settings.admin_api_token
    if token and hmac.compare_digest(secret.encode(errors="replace"), token.encode()):
        stored = {"business_id": None, "proof": _admin_proof(token)}
    else:
        key = api_keys.key_for(session_, secret)
        if key is None:
            return None
        stored = {"business_id": key.business_id, "key_id": key.id}
    # A new session (and CSRF token) for the signed-in viewer: nothing planted before survives.
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    session["viewer"] = stored
    session.permanent = True
    return Viewer(business_id=stored["business_id"], api_key_id=stored.get("key_id"))


def sign_out() -> None:
    session.clear()


def _checked(settings: Settings, stored: dict) -> Viewer | None:
    business_id = stored.get("business_id")
    if business_id is None:
        # An admin session lasts as long as the token it was opened with: a changed token ends it.
        token = settings.admin_api_token
        proof = stored.get("proof")
        if token and isinstance(proof, str) and hmac.compare_digest(proof, _admin_proof(token)):
            return Viewer(business_id=None)
        return None
    key_id = stored.get("key_id")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (business_id, key_id)):
        return None
    # A business's session lasts as long as its key: a revoked key ends it at the next page.
    key = request_session().get(ApiKey, key_id)
    if key is None or key.revoked_at is not None or key.business_id != business_id:
        return None
    return Viewer(business_id=business_id, api_key_id=key_id)


def _admin_proof(token: str) -> str:
    """Binds a session to the token it was opened with, without putting the token in the cookie."""
    key = current_app.secret_key
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, b"console-admin\0" + token.encode(), hashlib.sha256).hexdigest()
