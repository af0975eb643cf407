"""Who is asking the API: the admin, or one business through its key, and what each may see.

The admin is whoever shows ADMIN_API_TOKEN (or, with it unset, a loopback peer of a server that
listens on loopback only) and sees every business. A key (services/store/api_keys.py) sees one:
another business's objects answer 404, as if they did not exist, and its lists hold only its own.
A credential that is presented must be right, even where none is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import abort, current_app, g, request
from sqlalchemy import Select

from server.request_db import request_session
from server.security import bearer_credential, loopback_only_refusal, same_secret
from services.store.api_keys import key_for, looks_like_key

WRONG_CREDENTIAL = "missing or wrong bearer token"


@dataclass(frozen=True)
class Principal:
    business_id: int | None = None  # None: the admin
    api_key_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.business_id is None

    @property
    def bucket(self) -> str:
        """Whose rate limit counts this request (the admin token is one bucket)."""
        return "admin" if self.is_admin else f"key:{self.api_key_id}"


ADMIN = Principal()


def principal() -> Principal | None:
    """The request's principal, or None when refused; resolved once per request (the rate
    limiter asks before the API's own check does)."""
    if "api_principal" not in g:
        g.api_principal, g.api_refusal = _resolve()
    return g.api_principal


def refusal() -> tuple[int, str] | None:
    """(status, why) when the request is refused."""
    principal()
    return g.api_refusal


def current() -> Principal:
    """The principal of a request the API's check let in."""
    found = principal()
    assert found is not None, "the API's before_request lets no unauthenticated request through"
    return found


def _resolve() -> tuple[Principal | None, tuple[int, str] | None]:
    settings = current_app.config["SETTINGS"]
    header = request.headers.get("Authorization")
    if header is not None:
        credential = bearer_credential(header)
        if credential is None:
            return None, (401, WRONG_CREDENTIAL)
        if settings.admin_api_token and same_secret(credential, settings.admin_api_token):
            return ADMIN, None
        if looks_like_key(credential):
            key = key_for(request_session(), credential)
            if key is not None:
                return Principal(business_id=key.business_id, api_key_id=key.id), None
        return None, (401, WRONG_CREDENTIAL)
    if settings.admin_api_token:
        return None, (401, WRONG_CREDENTIAL)
    why = loopback_only_refusal(settings.listens_on_loopback_only, request.remote_addr, "ADMIN_API_TOKEN")
    return (None, (403, why)) if why else (ADMIN, None)


# --- what a principal may see -------------------------------------------------------------

def require_admin() -> None:
    if not current().is_admin:
        abort(403, "this needs the admin token, not a business's key")


def scoped(stmt: Select, business_column) -> Select:
    """A list query narrowed to the key's business (the admin's stays whole)."""
    who = current()
    return stmt if who.is_admin else stmt.where(business_column == who.business_id)


def can_see(business_id: int | None) -> bool:
    who = current()
    return who.is_admin or business_id == who.business_id


def ensure_visible(business_id: int | None, not_found: str) -> None:
    """404, worded as for a missing object, for another business's object."""
    if not can_see(business_id):
        abort(404, not_found)
