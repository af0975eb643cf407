"""/api/businesses: a business's settings and the numbers that ring it.

Listing, creating and deleting businesses is the admin's; a business's key reads and edits its
own business, except what the operator decides: the numbers that route calls to it and its share
of the server's concurrent calls.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from flask import Blueprint, abort, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

import prompts
from server import api_answers as answers
from server.api_schemas import BusinessCreate, BusinessPatch, parse
from server.request_db import request_session
from server.routes.api import auditing
from server.routes.api.principal import current, ensure_visible, require_admin
from services import realtime_settings
from services.logging_setup import mask_number
from services.scheduling import business_today
from services.store.models import Business, PhoneNumber, utcnow
from server.routes.api.common import commit_or_409, flush_or_409, get_or_404, json_object

bp = Blueprint("businesses", __name__, url_prefix="/businesses")
log = logging.getLogger("api")
NUMBER_TAKEN = "a phone number already belongs to another business"
ADMIN_FIELDS = frozenset({"phone_numbers", "max_concurrent_calls"})


@bp.get("")
def list_businesses():
    require_admin()
    rows = request_session().scalars(
        select(Business).options(selectinload(Business.phone_numbers)).order_by(Business.id))
    return {"businesses": [answers.business_json(b) for b in rows]}


@bp.post("")
def create_business():
    require_admin()
    fields = parse(BusinessCreate, json_object()).given()
    given = audited_names(fields)
    session = request_session()
    if "realtime" in fields:
        fields["realtime"] = realtime_settings.merge(None, fields["realtime"])
    numbers = fields.pop("phone_numbers", [])
    _ensure_numbers_free(session, numbers, business_id=None)
    business = Business(**fields, phone_numbers=[PhoneNumber(e164=n) for n in numbers])
    session.add(business)
    flush_or_409(session, NUMBER_TAKEN)
    auditing.note(session, "business", business.id, business.id, given, status=201)
    commit_or_409(session, NUMBER_TAKEN)
    log.info("business created", extra={"business_id": business.id, "numbers": ",".join(map(mask_number, numbers))})
    return answers.business_json(business), 201, {"Location": url_for(".get_business", business_id=business.id)}


@bp.get("/<int:business_id>")
def get_business(business_id: int):
    return answers.business_json(_business_or_404(business_id))


@bp.get("/<int:business_id>/prompt-preview")
def prompt_preview(business_id: int):
    """What a call to this business would be told, layer by layer, with lengths and warnings."""
    direction = request.args.get("direction", "inbound")
    if direction not in ("inbound", "outbound"):
        abort(422, "direction must be inbound or outbound")
    business = _business_or_404(business_id)
    today = business_today(business, datetime.now(timezone.utc))
    return {"business_id": business.id, **prompts.prompt_preview(business, direction, today=today)}


@bp.patch("/<int:business_id>")
def update_business(business_id: int):
    fields = parse(BusinessPatch, json_object()).given()
    changed = audited_names(fields)
    session = request_session()
    business = _business_or_404(business_id)
    if "realtime" in fields:
        fields["realtime"] = realtime_settings.merge(business.realtime, fields["realtime"])
    if not current().is_admin and ADMIN_FIELDS.intersection(fields):
        abort(403, f"only the admin sets {', '.join(sorted(ADMIN_FIELDS.intersection(fields)))}")
    if "phone_numbers" in fields:
        numbers = fields.pop("phone_numbers")
        _ensure_numbers_free(session, numbers, business_id=business.id)
        # Keep the rows of numbers that stay, so their ids (and history) survive.
        kept = {p.e164: p for p in business.phone_numbers}
        business.phone_numbers = [kept.get(n) or PhoneNumber(e164=n) for n in numbers]
    for name, value in fields.items():
        setattr(business, name, value)
    business.updated_at = utcnow()  # also when only the numbers changed
    auditing.note(session, "business", business.id, business.id, changed, status=200)
    commit_or_409(session, NUMBER_TAKEN)
    log.info("business updated", extra={"business_id": business.id, "fields": ",".join(sorted(changed))})
    return answers.business_json(business)


@bp.delete("/<int:business_id>")
def delete_business(business_id: int):
    require_admin()
    session = request_session()
    session.delete(get_or_404(session, Business, business_id, "business"))
    auditing.note(session, "business", business_id, business_id, status=204)
    session.commit()
    log.info("business deleted", extra={"business_id": business_id})
    return "", 204


def audited_names(fields: dict) -> list[str]:
    """The changed fields as the audit log names them: each Realtime setting by its own name."""
    names = [name for name in fields if name != "realtime"]
    if "realtime" in fields:
        chosen = fields["realtime"]  # None resets them all
        names += [f"realtime.{key}" for key in chosen] if chosen else ["realtime"]
    return names


def _ensure_numbers_free(session: Session, numbers: list[str], business_id: int | None) -> None:
    if not numbers:
        return
    query = select(PhoneNumber).where(PhoneNumber.e164.in_(numbers))
    if business_id is not None:
        query = query.where(PhoneNumber.business_id != business_id)
    taken = session.scalars(query).first()
    if taken is not None:
        abort(409, f"{taken.e164} already belongs to business {taken.business_id}")


def _business_or_404(business_id: int) -> Business:
    ensure_visible(business_id, f"business {business_id} not found")
    return get_or_404(request_session(), Business, business_id, "business")
