"""/api/businesses/<id>/api-keys: a business's keys to the API.

The admin manages any business's keys; a key manages its own business's (to rotate itself) and
gets 403 for any other's, whether that business exists or not.
"""
from __future__ import annotations

import logging

from flask import Blueprint, abort, request, url_for
from sqlalchemy import select

from server import api_answers as answers
from server.api_schemas import ApiKeyCreate, parse
from server.request_db import request_session
from server.routes.api import auditing
from server.routes.api.common import get_or_404, json_object
from server.routes.api.principal import can_see
from services.store import api_keys
from services.store.models import ApiKey, Business

bp = Blueprint("api_keys", __name__, url_prefix="/businesses/<int:business_id>/api-keys")
log = logging.getLogger("api")


@bp.before_request
def _own_business_only() -> None:
    if not can_see(request.view_args.get("business_id")):
        abort(403, "a business's key manages only its own business's keys")


@bp.post("")
def create_key(business_id: int):
    body = parse(ApiKeyCreate, json_object())
    session = request_session()
    get_or_404(session, Business, business_id, "business")
    made = api_keys.create_key(session, business_id, body.name)
    session.flush()
    auditing.note(session, "api_key", made.row.id, business_id, body.given(), status=201)
    session.commit()
    log.info("api key created", extra={"business_id": business_id, "api_key_id": made.row.id})
    return ({**answers.api_key_json(made.row), "key": made.raw}, 201,
            {"Location": url_for(".get_key", business_id=business_id, key_id=made.row.id)})


@bp.get("")
def list_keys(business_id: int):
    session = request_session()
    get_or_404(session, Business, business_id, "business")
    rows = session.scalars(select(ApiKey).where(ApiKey.business_id == business_id).order_by(ApiKey.id))
    return {"api_keys": [answers.api_key_json(k) for k in rows]}


@bp.get("/<int:key_id>")
def get_key(business_id: int, key_id: int):
    return answers.api_key_json(_key_or_404(business_id, key_id))


@bp.delete("/<int:key_id>")
def revoke_key(business_id: int, key_id: int):
    """Revoked, not deleted: the row stays for the list and the audit log. Again is a no-op."""
    session = request_session()
    key = _key_or_404(business_id, key_id)
    revoked = api_keys.revoke(session, key)
    auditing.note(session, "api_key", key.id, business_id, ["revoked"] if revoked else [], status=204)
    session.commit()
    if revoked:
        log.info("api key revoked", extra={"business_id": business_id, "api_key_id": key.id})
    return "", 204


def _key_or_404(business_id: int, key_id: int) -> ApiKey:
    key = request_session().get(ApiKey, key_id)
    if key is None or key.business_id != business_id:
        abort(404, f"api key {key_id} not found")
    return key
